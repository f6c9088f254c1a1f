//! Line charts as inline SVG, so a report needs no script, font or network to show them.

use std::fmt::Write as _;

/// One named line.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// Colours for up to six series, distinguishable in print.
pub const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#7f7f7f"];

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 130.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 36.0;

/// Axis range of the values, padded when all values are equal; `fixed` overrides it.
fn range(values: impl Iterator<Item = f64>, fixed: Option<(f64, f64)>) -> (f64, f64) {
    if let Some(r) = fixed {
        return r;
    }
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    match (lo.is_finite(), hi > lo) {
        (false, _) => (0.0, 1.0),
        (true, false) => (lo - 1.0, hi + 1.0),
        (true, true) => (lo, hi),
    }
}

/// Maps `v` in `[lo, hi]` to `[a, b]`.
fn scale(v: f64, (lo, hi): (f64, f64), a: f64, b: f64) -> f64 {
    a + (v - lo) / (hi - lo) * (b - a)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An SVG line chart of `series` (points joined in order, each marked) with a legend;
/// `y_range` fixes the vertical axis (e.g. 0-100 for percentages).
pub fn line_chart(title: &str, x_label: &str, series: &[Series], y_range: Option<(f64, f64)>) -> String {
    let xs = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)), None);
    let ys = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)), y_range);
    let x = |v: f64| scale(v, xs, LEFT, WIDTH - RIGHT);
    let y = |v: f64| scale(v, ys, HEIGHT - BOTTOM, TOP);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"11\">\
         <text x=\"{LEFT}\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        escape(title)
    );
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP);
    let _ = write!(svg, "<rect x=\"{x0}\" y=\"{y1}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>", x1 - x0, y0 - y1);
    for i in 0..=4 {
        let v = ys.0 + (ys.1 - ys.0) * i as f64 / 4.0;
        let _ = write!(svg, "<line x1=\"{x0}\" x2=\"{x1}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#eee\"/><text x=\"{1}\" y=\"{2:.1}\" text-anchor=\"end\">{3}</text>", y(v), x0 - 4.0, y(v) + 4.0, tick(v));
        let u = xs.0 + (xs.1 - xs.0) * i as f64 / 4.0;
        let _ = write!(svg, "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>", x(u), y0 + 14.0, tick(u));
    }
    let _ = write!(svg, "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>", (x0 + x1) / 2.0, HEIGHT - 6.0, escape(x_label));
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s.points.iter().map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b))).collect();
        let _ = write!(svg, "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>", s.color, points.join(" "));
        for &(a, b) in &s.points {
            let _ = write!(svg, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"/>", x(a), y(b), s.color);
        }
        let ly = TOP + 14.0 * i as f64 + 8.0;
        let _ = write!(svg, "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>", x1 + 10.0, ly - 4.0, s.color, x1 + 26.0, ly, escape(&s.name));
    }
    svg + "</svg>"
}

/// A short axis label: integers without decimals.
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 { format!("{}", v.round()) } else { format!("{v:.2}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_land_on_the_axes_they_belong_to() {
        let series = [Series { name: "BA <%>".into(), color: COLORS[0], points: vec![(1.0, 0.0), (3.0, 100.0), (5.0, 50.0)] }];
        let svg = line_chart("t", "epoch", &series, Some((0.0, 100.0)));
        // x: 1 → LEFT, 5 → WIDTH - RIGHT = 430; y: 0 → HEIGHT - BOTTOM = 224, 100 → TOP = 28.
        assert!(svg.contains("points=\"52.0,224.0 241.0,28.0 430.0,126.0\""), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("BA &lt;%&gt;") && !svg.contains("BA <%>"), "legend text is escaped");
    }

    #[test]
    fn flat_and_empty_series_still_draw() {
        assert_eq!(range([2.0, 2.0].into_iter(), None), (1.0, 3.0));
        assert_eq!(range(std::iter::empty(), None), (0.0, 1.0));
        let svg = line_chart("t", "x", &[Series { name: "s".into(), color: COLORS[1], points: vec![] }], None);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
