//! `vab report RUN_DIR|BENCH_DIR`: one self-contained `report.html` (charts as inline SVG,
//! images as embedded PNG), readable in a browser with no network.
//!
//! A run directory gives: the summary, BA/ASR/RA per evaluated epoch, the training loss of
//! both networks, and for V&B the suspicious/credible sizes and detection precision/recall per
//! refresh, the entropy histograms and grids of the 32 most suspicious and 32 most credible
//! training images. A bench directory gives its results table and, per cell, the charts.

mod chart;
mod scan;

pub use scan::write_scan;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use serde_json::Value;
use vab_data::Bundle;

use crate::detection_log::SuspiciousRow;
use crate::grid::Canvas;
use chart::{line_chart, Series, COLORS};

/// Writes `report.html` into `dir` (a run or a bench directory) and returns its path.
pub fn write(dir: &Path) -> anyhow::Result<PathBuf> {
    let body = if dir.join("results.json").is_file() {
        bench_body(dir)?
    } else if dir.join("summary.json").is_file() {
        run_body(dir, true)?
    } else if dir.join("scan.json").is_file() {
        anyhow::bail!("{}: a scan directory; `vab scan` wrote its report.html already", dir.display());
    } else {
        anyhow::bail!("{}: neither a run directory (no summary.json) nor a bench directory (no results.json); finish the run or bench first", dir.display());
    };
    write_page(dir, &format!("vab report: {}", dir.display()), &body)
}

/// Writes `dir/report.html`: a page titled `title` around `body`.
fn write_page(dir: &Path, title: &str, body: &str) -> anyhow::Result<PathBuf> {
    let html = format!("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>{body}</body></html>\n", escape(title), escape(title));
    let path = dir.join("report.html");
    std::fs::write(&path, html).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(path)
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}\
    table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
    th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:8px}\
    img{image-rendering:pixelated}figure{display:inline-block;margin:4px}figcaption{font-size:12px;color:#555}";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

/// Every line of a JSON-lines file (none when it is missing).
fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Value>> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(Vec::new()) };
    text.lines().enumerate().map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}: line {} is not valid JSON", path.display(), i + 1))).collect()
}

fn img(png: &[u8], alt: &str) -> String {
    format!("<img alt=\"{}\" src=\"data:image/png;base64,{}\">", escape(alt), base64::engine::general_purpose::STANDARD.encode(png))
}

fn percent(v: &Value) -> String {
    v.as_f64().map_or("—".into(), |v| format!("{v:.2}"))
}

/// The series `keys` of `records` against `x_key`, skipping records without the value.
fn series(records: &[&Value], x_key: &str, keys: &[(&str, &str)]) -> Vec<Series> {
    keys.iter()
        .enumerate()
        .map(|(i, (key, name))| Series {
            name: name.to_string(),
            color: COLORS[i % COLORS.len()],
            points: records.iter().filter_map(|r| Some((r[x_key].as_f64()?, r[*key].as_f64()?))).collect(),
        })
        .collect()
}

/// The report of one run directory; `images` adds the entropy histograms and sample grids.
fn run_body(dir: &Path, images: bool) -> anyhow::Result<String> {
    let summary = read_json(&dir.join("summary.json"))?;
    let metrics = read_jsonl(&dir.join("metrics.jsonl"))?;
    let refreshes = read_jsonl(&dir.join("refreshes.jsonl"))?;
    let vab = summary["defense"] == "vab";
    let mut out = summary_table(&summary);

    // Epoch records: V&B tags each line with an event, the baseline's lines are all epochs.
    let network: Vec<&Value> = metrics.iter().filter(|m| m.get("event").is_none() || m["event"] == "beneficiary").collect();
    let victim: Vec<&Value> = metrics.iter().filter(|m| m["event"] == "victim").collect();
    let who = if vab { "Beneficiary" } else { "network" };
    out += "<div class=\"charts\">";
    let test_metrics = [("ba", "BA %"), ("asr", "ASR %"), ("asr_untriggered", "ASR without the trigger %"), ("ra", "RA %")];
    out += &line_chart(&format!("{who}: test metrics (evaluated epochs)"), "epoch", &series(&network, "epoch", &test_metrics), Some((0.0, 100.0)));
    if victim.iter().any(|v| v.get("ba").is_some()) {
        out += &line_chart("Victim: metrics on the test sample (vab.victim_eval_samples)", "Victim epoch", &series(&victim, "epoch", &test_metrics), Some((0.0, 100.0)));
    }
    let mut losses = series(&network, "epoch", &[("loss", &format!("{who} loss"))]);
    if vab {
        let victim_loss = series(&victim, "epoch", &[("loss", "Victim loss")]).remove(0);
        losses.push(Series { color: COLORS[1], ..victim_loss });
    }
    out += &line_chart("training loss per epoch", "each network's epoch", &losses, None);
    if !refreshes.is_empty() {
        let r: Vec<&Value> = refreshes.iter().collect();
        out += &line_chart("split sizes per refresh", "refresh", &series(&r, "refresh", &[("suspicious", "suspicious"), ("credible", "credible")]), None);
        out += &line_chart("detection of the poisoned samples per refresh", "refresh", &series(&r, "refresh", &[("precision", "precision %"), ("recall", "recall %"), ("fpr", "FPR %")]), Some((0.0, 100.0)));
    }
    out += "</div>";
    if !refreshes.is_empty() {
        out += &refresh_table(&refreshes);
    }
    if images && vab {
        out += &entropy_histograms(dir)?;
        out += &sample_grids(dir)?;
    }
    Ok(out)
}

fn summary_table(s: &Value) -> String {
    let mut rows = vec![
        ("defense".to_string(), s["defense"].as_str().unwrap_or("?").to_string()),
        ("BA / ASR / ASR without the trigger / RA %".to_string(), format!("{} / {} / {} / {}", percent(&s["ba"]), percent(&s["asr"]), percent(&s["asr_untriggered"]), percent(&s["ra"]))),
        ("epochs, training samples".to_string(), format!("{}, {}", s["epochs"], s["train_samples"])),
        ("wall time".to_string(), format!("{:.0} s", s["wall_s"].as_f64().unwrap_or(0.0))),
    ];
    // V&B's Beneficiary after stage 2; ABL's network before unlearning; FP's around pruning;
    // NAD's network before distillation and its teacher; DBD's linear head after its warm-up.
    let stages = [("after_stage2", "after stage 2"), ("before_unlearning", "before unlearning"), ("before_pruning", "before pruning"), ("after_pruning", "after pruning"), ("before_distillation", "before distillation"), ("teacher", "NAD's teacher"), ("after_warmup", "after DBD's warm-up")];
    for (key, when) in stages {
        let m = &s[key];
        if m.is_object() {
            rows.push((format!("{when}: BA / ASR / ASR without the trigger / RA %"), format!("{} / {} / {} / {}", percent(&m["ba"]), percent(&m["asr"]), percent(&m["asr_untriggered"]), percent(&m["ra"]))));
        }
    }
    if let (Some(pruned), Some(channels)) = (s["pruned_channels"].as_u64(), s["channels"].as_u64()) {
        rows.push(("pruned channels".into(), format!("{pruned} of {channels}")));
    }
    if let Some(reserve) = s["clean_reserve"].as_u64() {
        rows.push(("clean reserve (known clean, with labels)".into(), format!("{reserve} samples")));
    }
    let d = &s["detection"];
    if d.is_object() {
        let sets = match s["defense"].as_str() {
            Some("abl") => "isolated / rest",
            Some("dbd") => "last split: unlabelled / labelled",
            _ => "final split: suspicious / credible",
        };
        rows.push((sets.to_string(), format!("{} / {}", d["suspicious"], d["credible"])));
        rows.push(("detection precision / recall / FPR %".to_string(), format!("{} / {} / {}", percent(&d["precision"]), percent(&d["recall"]), percent(&d["fpr"]))));
    }
    if let Some(counts) = s["labelled_per_class"].as_array() {
        let counts: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
        rows.push(("labelled samples per class".to_string(), counts.join(", ")));
    }
    if let Some(stages) = s["stages"].as_array() {
        let times: Vec<String> = stages.iter().map(|t| format!("{} {:.0} s", t["stage"].as_str().unwrap_or("?"), t["wall_s"].as_f64().unwrap_or(0.0))).collect();
        rows.push(("stage wall times".to_string(), times.join(", ")));
    }
    for warning in s["warnings"].as_array().into_iter().flatten() {
        rows.push(("warning: the split may have failed".to_string(), warning.as_str().unwrap_or("?").to_string()));
    }
    let mut out = String::from("<table>");
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(&k), escape(&v));
    }
    out + "</table>"
}

fn refresh_table(refreshes: &[Value]) -> String {
    let mut out = String::from("<h3>Refreshes</h3><table><tr><th>refresh</th><th>stage</th><th>Beneficiary epoch</th><th>t_f</th><th>suspicious</th><th>credible</th><th>precision %</th><th>recall %</th><th>FPR %</th></tr>");
    for r in refreshes {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r["refresh"], escape(r["stage"].as_str().unwrap_or("?")), r["beneficiary_epoch"], r["t_f"].as_f64().unwrap_or(f64::NAN), r["suspicious"], r["credible"],
            percent(&r["precision"]), percent(&r["recall"]), percent(&r["fpr"])
        );
    }
    out + "</table>"
}

fn entropy_histograms(dir: &Path) -> anyhow::Result<String> {
    let folder = dir.join("entropy");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&folder) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "png")).collect(),
        Err(_) => return Ok(String::new()),
    };
    files.sort();
    let mut out = String::from("<h2>Normalised entropy of clean and poisoned training samples, per refresh</h2>");
    for file in files {
        let png = std::fs::read(&file).with_context(|| format!("{}: cannot read", file.display()))?;
        let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let _ = write!(out, "<figure>{}<figcaption>{}</figcaption></figure>", img(&png, &name), escape(&name));
    }
    Ok(out)
}

/// Grids of the 32 most suspicious and the 32 most credible samples of the final split, read
/// from `suspicious.csv` (most suspicious first) and the run's bundle. A red frame marks a
/// sample the attack poisoned, green a clean one.
fn sample_grids(dir: &Path) -> anyhow::Result<String> {
    let csv = dir.join("suspicious.csv");
    if !csv.is_file() {
        return Ok(String::new());
    }
    let rows = crate::detection_log::read_suspicious_csv(&csv)?;
    let run: Value = read_json(&dir.join("run.json"))?;
    let bundle_path = PathBuf::from(run["bundle"].as_str().unwrap_or_default());
    let bundle = match Bundle::read(&bundle_path) {
        Ok(b) => b,
        Err(e) => return Ok(format!("<p>Sample grids left out: the run's bundle cannot be read ({}).</p>", escape(&e.to_string()))),
    };
    let tile = |row: &SuspiciousRow| -> anyhow::Result<Tile> {
        anyhow::ensure!(row.index < bundle.train.len(), "suspicious.csv names sample {}, but the bundle has {} training samples", row.index, bundle.train.len());
        let label = bundle.train.labels()[row.index] as usize;
        let caption = bundle.meta.class_names.get(label).map_or(label.to_string(), |n| n.chars().take(8).collect());
        Ok(Tile { index: row.index, frame: truth_frame(row.poisoned), caption })
    };
    let most_suspicious: Vec<Tile> = rows.iter().take(32).map(tile).collect::<anyhow::Result<_>>()?;
    let most_credible: Vec<Tile> = rows.iter().rev().take(32).map(tile).collect::<anyhow::Result<_>>()?;
    let mut out = String::from("<h2>Training samples of the final split</h2><p>Red frame: poisoned by the attack (ground truth, reporting only); green: clean. The label shown is the one trained on.</p>");
    for (title, tiles) in [("32 most suspicious (lowest entropy)", &most_suspicious), ("32 most credible (highest entropy)", &most_credible)] {
        let png = grid(&bundle.train, tiles)?;
        let _ = write!(out, "<figure>{}<figcaption>{title}</figcaption></figure>", img(&png, title));
    }
    Ok(out)
}

/// One image of a grid: its index in the training set, the colour of its frame, the text
/// under it (8 characters fit).
struct Tile {
    index: usize,
    frame: [u8; 3],
    caption: String,
}

/// Red for a poisoned sample, green for a clean one, grey when the data has no flags.
fn truth_frame(poisoned: Option<bool>) -> [u8; 3] {
    match poisoned {
        Some(true) => [214, 39, 40],
        Some(false) => [44, 160, 44],
        None => [170, 170, 170],
    }
}

/// Eight tiles a row, each image magnified to about 64 pixels.
fn grid(images: &vab_data::ImageSet, tiles: &[Tile]) -> anyhow::Result<Vec<u8>> {
    let shape = images.shape();
    let scale = (64 / shape.height.max(shape.width)).max(1);
    let (w, h) = (shape.width * scale + 6, shape.height * scale + 6 + crate::grid::GLYPH + 2);
    let columns = 8;
    let mut canvas = Canvas::new(columns * w, tiles.len().div_ceil(columns).max(1) * h);
    for (i, tile) in tiles.iter().enumerate() {
        let (x, y) = ((i % columns) * w, (i / columns) * h);
        canvas.fill(x + 1, y + 1, w - 2, shape.height * scale + 4, tile.frame);
        canvas.paste(images.image(tile.index), shape, x + 3, y + 3, scale);
        canvas.text(&tile.caption, x + 3, y + shape.height * scale + 7);
    }
    canvas.png()
}

/// The report of a bench directory: its results table, then each cell's charts.
fn bench_body(dir: &Path) -> anyhow::Result<String> {
    let results = read_json(&dir.join("results.json"))?;
    let md = std::fs::read_to_string(dir.join("results.md")).unwrap_or_default();
    let mut out = String::new();
    for line in md.lines().filter(|l| !l.starts_with('|') && !l.starts_with('#') && !l.is_empty()) {
        let _ = write!(out, "<p>{}</p>", escape(line));
    }
    out += "<h2>Results</h2><table><tr><th>attack</th><th>defense</th><th>seeds</th><th>BA %</th><th>ASR %</th><th>ASR w/o trigger %</th><th>RA %</th><th>precision %</th><th>recall %</th><th>wall s</th></tr>";
    // Decimals as in results.md.
    let stat = |v: &Value, seeds: u64, d: usize| match (v["mean"].as_f64(), v["std"].as_f64()) {
        (Some(m), Some(s)) if seeds > 1 => format!("{m:.d$} ± {s:.d$}"),
        (Some(m), _) => format!("{m:.d$}"),
        _ => "—".into(),
    };
    for a in results["aggregates"].as_array().into_iter().flatten() {
        let seeds = a["seeds"].as_u64().unwrap_or(1);
        let _ = write!(out, "<tr><td>{}</td><td>{}</td><td>{seeds}</td>", escape(a["attack"].as_str().unwrap_or("?")), escape(a["defense"].as_str().unwrap_or("?")));
        for (key, decimals) in [("ba", 2), ("asr", 2), ("asr_untriggered", 2), ("ra", 2), ("precision", 1), ("recall", 1), ("wall_s", 0)] {
            let _ = write!(out, "<td>{}</td>", stat(&a[key], seeds, decimals));
        }
        out += "</tr>";
    }
    out += "</table>";
    for c in results["cells"].as_array().into_iter().flatten() {
        let (attack, defense, seed) = (c["attack"].as_str().unwrap_or("?"), c["defense"].as_str().unwrap_or("?"), c["seed"].as_u64().unwrap_or(0));
        let cell = dir.join("cells").join(attack).join(defense).join(format!("seed-{seed}"));
        let _ = write!(out, "<h2>{} × {}, seed {seed}</h2>", escape(attack), escape(defense));
        out += &run_body(&cell, false)?;
    }
    Ok(out)
}
