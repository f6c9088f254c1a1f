//! The report of a scan directory (`vab scan`): the scan's figures from `scan.json`, its
//! per-label view, the entropy histograms and, per label, the most suspicious images. The scan
//! writes it while it holds the images.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vab_core::defenses::vab::label_check::{MAX_LABEL_PROBABILITY, MIN_LABEL_SHARE, MIN_REJECTED_SHARE};
use vab_data::ImageSet;

use super::{entropy_histograms, escape, grid, img, percent, read_json, truth_frame, write_page, Tile};
use crate::detection_log::read_suspicious_csv;

/// Labels shown with image grids, the most suspicious first.
const GRID_LABELS: usize = 20;
/// Images per label grid.
const PER_LABEL: usize = 16;

/// Writes `report.html` into the scan directory `dir`; `images` and `class_names` are the
/// scanned training set's.
pub fn write_scan(dir: &Path, images: &ImageSet, class_names: &[String]) -> anyhow::Result<PathBuf> {
    let summary = read_json(&dir.join("scan.json"))?;
    let mut body = summary_table(&summary);
    body += &label_table(&summary);
    body += &entropy_histograms(dir)?;
    body += &label_grids(dir, &summary, images, class_names)?;
    write_page(dir, &format!("vab scan: {}", summary["data"].as_str().unwrap_or("?")), &body)
}

fn summary_table(s: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let mut rows = vec![
        ("data", text(&s["data"])),
        ("verdict", text(&s["verdict"])),
        ("suspicious / credible", format!("{} / {} of {}", s["suspicious"], s["credible"], s["samples"])),
        ("cut-off", format!("t_f {:.3}: {}", s["cutoff"]["t_f"].as_f64().unwrap_or(f64::NAN), text(&s["cutoff"]["rule"]))),
        ("Victim", format!("{} network, {} epochs, batch {}, lr {}", text(&s["arch"]), s["victim_epochs"], s["victim"]["batch_size"], s["victim"]["lr"])),
        ("wall time", format!("{:.0} s ({})", s["wall_s"].as_f64().unwrap_or(0.0), text(&s["backend"]))),
    ];
    let p = &s["suspicious_predicted_as"];
    if p.is_object() {
        rows.push(("the Victim predicts the suspicious samples as", format!("{} ({}% of them)", text(&p["name"]), percent(&p["share"]))));
    }
    let d = &s["detection"];
    if d.is_object() {
        rows.push(("detection precision / recall / FPR % (the bundle's poison flags)", format!("{} / {} / {}", percent(&d["precision"]), percent(&d["recall"]), percent(&d["fpr"]))));
    }
    for warning in s["warnings"].as_array().into_iter().flatten() {
        rows.push(("warning", text(warning)));
    }
    let mut out = String::from("<table>");
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(&v));
    }
    out + "</table>"
}

fn label_table(s: &Value) -> String {
    let rows = s["labels"].as_array().map_or(&[][..], Vec::as_slice);
    let checked = rows.iter().any(|r| r["label_check"].is_object());
    let mut out = String::from("<h2>Per label</h2><p>A poison-label backdoor shows as one label far above its share of the data, its suspicious samples predicted as that label.");
    if checked {
        let _ = write!(
            out,
            " Label check: of the Victim's suspicious samples of each label, how many a network trained on the credible samples rejects (gives their label less than {MAX_LABEL_PROBABILITY} probability; label_check.csv has each); a label holds poison when that is at least {:.0}% of them and at least {:.0}% of the label's samples.",
            100.0 * MIN_REJECTED_SHARE,
            100.0 * MIN_LABEL_SHARE
        );
    }
    out += "</p><table><tr><th>label</th><th>samples</th><th>suspicious</th><th>% of the suspicious set</th><th>% of the data</th><th>over-representation</th><th>suspicious ones predicted as</th>";
    if checked {
        out += "<th>Victim's suspicious</th><th>rejected by the checker</th><th>holds poison</th>";
    }
    out += "</tr>";
    for row in rows {
        let predicted = &row["predicted_as"];
        let predicted = if predicted.is_object() { format!("{} ({}%)", predicted["name"].as_str().unwrap_or("?"), percent(&predicted["share"])) } else { "—".into() };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}×</td><td>{}</td>",
            escape(row["name"].as_str().unwrap_or("?")), row["samples"], row["suspicious"], percent(&row["share_of_suspicious"]), percent(&row["share_of_data"]),
            row["over_representation"].as_f64().unwrap_or(0.0), escape(&predicted)
        );
        let check = &row["label_check"];
        if check.is_object() {
            let holds = if check["holds_poison"].as_bool() == Some(true) { "yes" } else { "no" };
            let _ = write!(out, "<td>{}</td><td>{}</td><td>{holds}</td>", check["victim_suspicious"], check["rejected"]);
        }
        out += "</tr>";
    }
    out + "</table>"
}

/// For the labels with the most suspicious samples, their most suspicious images.
fn label_grids(dir: &Path, s: &Value, images: &ImageSet, class_names: &[String]) -> anyhow::Result<String> {
    let rows = read_suspicious_csv(&dir.join("suspicious.csv"))?;
    let mut labels: Vec<(u64, u64)> = s["labels"].as_array().into_iter().flatten().filter_map(|r| Some((r["label"].as_u64()?, r["suspicious"].as_u64()?))).filter(|&(_, n)| n > 0).collect();
    labels.sort_by_key(|&(label, n)| (std::cmp::Reverse(n), label));
    let flags = if rows.iter().any(|r| r.poisoned.is_some()) { "Red frame: poisoned (the bundle's flags); green: clean." } else { "The data has no poison flags." };
    let mut out = format!("<h2>The most suspicious images per label</h2><p>Lowest entropy first; the number is the training index (suspicious.csv names the file). {flags}</p>");
    for &(label, count) in labels.iter().take(GRID_LABELS) {
        let tiles: Vec<Tile> = rows
            .iter()
            .filter(|r| r.suspicious && r.index < images.len() && images.labels()[r.index] as u64 == label)
            .take(PER_LABEL)
            .map(|r| Tile { index: r.index, frame: truth_frame(r.poisoned), caption: r.index.to_string() })
            .collect();
        let name = class_names.get(label as usize).map_or_else(|| label.to_string(), String::clone);
        let title = format!("{name}: {count} suspicious");
        let _ = write!(out, "<figure>{}<figcaption>{}</figcaption></figure>", img(&grid(images, &tiles)?, &title), escape(&title));
    }
    Ok(out)
}
