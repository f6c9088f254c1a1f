//! Reporting of V&B's splits (runs and scans) against the data's poison flags where it has
//! them: per refresh a line of `refreshes.jsonl` (sizes, t_f, detection precision/recall/FPR,
//! the suspicious set's count per training label) and an entropy histogram
//! `entropy/refresh-NN.png`, clean vs poisoned (like paper Fig. 1 and 4); at the end
//! `suspicious.csv`. The flags stay here; V&B only ever receives the log line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use vab_core::defenses::vab::victim::Split;
use vab_core::defenses::vab::{RefreshEvent, RefreshObserver, Stage};
use vab_core::detection::Detection;
use vab_core::engine::run::{append_jsonl, keep_lines};

use crate::grid::{Canvas, GLYPH};

/// Histogram bins over normalised entropy [0, 1].
const BINS: usize = 50;
const CLEAN: [u8; 3] = [70, 130, 180];
const POISONED: [u8; 3] = [215, 48, 39];

/// One line of `refreshes.jsonl`.
#[derive(Serialize)]
struct RefreshLine {
    refresh: usize,
    stage: Stage,
    victim_epochs: usize,
    beneficiary_epoch: usize,
    t_f: f64,
    /// When the data has poison flags.
    #[serde(flatten)]
    detection: Option<Detection>,
    /// Suspicious samples per training label: an all-to-one attack's poison piles up on the
    /// target label, while clean samples V&B flags tend to gather in a few easy classes.
    suspicious_by_label: Vec<usize>,
}

/// Scores and draws every refresh of one run.
pub struct DetectionLog {
    run: PathBuf,
    /// Poison flag of each training sample V&B sees (aligned with its indices), when known.
    poisoned: Option<Vec<bool>>,
    /// Training label of each of those samples.
    labels: Vec<u16>,
    num_classes: usize,
}

impl DetectionLog {
    /// `poisoned` and `labels` must be aligned with the samples V&B trains on; `poisoned` is
    /// `None` for data without poison flags (a user's own images).
    pub fn new(run: &Path, poisoned: Option<Vec<bool>>, labels: Vec<u16>, num_classes: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(run.join("entropy")).with_context(|| format!("{}: cannot create", run.join("entropy").display()))?;
        Ok(Self { run: run.to_path_buf(), poisoned, labels, num_classes })
    }

    /// Detection figures of `split`, when the data has poison flags.
    pub fn score(&self, split: &Split) -> Option<Detection> {
        self.poisoned.as_ref().map(|poisoned| Detection::score(&split.suspicious_flags(), poisoned))
    }

    /// Writes `suspicious.csv`: every training sample, most suspicious (lowest entropy) first,
    /// with its index in the data, its file (`files`, indexed like the data; empty when there
    /// are none), its label, the Victim's prediction, normalised entropy, split side (1 =
    /// suspicious) and poison flag (empty when unknown). Fields holding a comma or a quote are
    /// quoted.
    pub fn write_suspicious_csv(&self, split: &Split, members: &[usize], files: &[String]) -> anyhow::Result<()> {
        let path = self.run.join("suspicious.csv");
        let flags = split.suspicious_flags();
        let predicted = split.predicted_labels(self.num_classes);
        let mut order: Vec<usize> = (0..split.normalised.len()).collect();
        order.sort_by(|&a, &b| split.normalised[a].total_cmp(&split.normalised[b]));
        let mut out = String::from("index,file,label,predicted,entropy,suspicious,poisoned\n");
        for i in order {
            let file = files.get(members[i]).map_or(String::new(), |f| csv_field(f));
            let poisoned = self.poisoned.as_ref().map_or(String::new(), |p| (p[i] as u8).to_string());
            out.push_str(&format!("{},{file},{},{},{:.6},{},{poisoned}\n", members[i], self.labels[i], predicted[i], split.normalised[i], flags[i] as u8));
        }
        let mut file = std::fs::File::create(&path).with_context(|| format!("{}: cannot create", path.display()))?;
        file.write_all(out.as_bytes()).with_context(|| format!("{}: cannot write", path.display()))
    }
}

impl RefreshObserver for DetectionLog {
    fn start_after(&mut self, refreshes: usize) -> vab_core::Result<()> {
        let path = self.run.join("refreshes.jsonl");
        match refreshes {
            0 => std::fs::remove_file(&path).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(vab_core::CoreError::io(&path, e)) }),
            n => keep_lines(&path, n),
        }
    }

    fn refresh(&mut self, event: &RefreshEvent) -> vab_core::Result<String> {
        let split = event.split;
        let detection = self.score(split);
        let by_label = label_counts(&split.suspicious, &self.labels, self.num_classes);
        let line = RefreshLine { refresh: event.refresh, stage: event.stage, victim_epochs: event.victim_epochs, beneficiary_epoch: event.beneficiary_epoch, t_f: split.t_f, detection: detection.clone(), suspicious_by_label: by_label.clone() };
        append_jsonl(&self.run.join("refreshes.jsonl"), &line)?;
        let png = self.run.join("entropy").join(format!("refresh-{:02}.png", event.refresh));
        let title = format!("refresh {} ({}), Beneficiary epoch {}", event.refresh, event.stage, event.beneficiary_epoch);
        histogram(&split.normalised, self.poisoned.as_deref(), split.t_f, &title).save(&png).map_err(|e| vab_core::CoreError::file(&png, e))?;
        let scores = detection.map_or(String::new(), |d| d.describe());
        let share = largest_label_share(&by_label);
        Ok(if scores.is_empty() { share.trim_start_matches(", ").to_string() } else { scores + &share })
    }
}

/// `field` as one CSV field: quoted (quotes doubled) when it holds a comma, quote or line break.
pub fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// One row of `suspicious.csv`, as the report reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SuspiciousRow {
    pub index: usize,
    pub entropy: f64,
    /// In the final suspicious set.
    pub suspicious: bool,
    /// `None` when the data has no poison flags.
    pub poisoned: Option<bool>,
}

/// Reads `suspicious.csv` (most suspicious first) by its header, so files of earlier vab
/// versions (`index,entropy,suspicious,poisoned`) read too.
pub fn read_suspicious_csv(path: &Path) -> anyhow::Result<Vec<SuspiciousRow>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut lines = text.lines();
    let header = split_csv_line(lines.next().unwrap_or_default());
    let column = |name: &str| header.iter().position(|h| h == name).with_context(|| format!("{}: no `{name}` column", path.display()));
    let (index, entropy, suspicious, poisoned) = (column("index")?, column("entropy")?, column("suspicious")?, column("poisoned")?);
    lines
        .enumerate()
        .map(|(n, line)| {
            let fields = split_csv_line(line);
            let field = |c: usize| fields.get(c).map(String::as_str).unwrap_or_default();
            let row = SuspiciousRow {
                index: field(index).parse()?,
                entropy: field(entropy).parse()?,
                suspicious: field(suspicious) == "1",
                poisoned: match field(poisoned) {
                    "" => None,
                    flag => Some(flag == "1"),
                },
            };
            anyhow::Ok(row).with_context(|| format!("{}: line {} unreadable", path.display(), n + 2))
        })
        .collect()
}

/// The fields of one CSV line, with [`csv_field`]'s quoting undone.
fn split_csv_line(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted, mut chars) = (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// How many of the samples `members` (indices into `labels`) carry each label.
pub fn label_counts(members: &[usize], labels: &[u16], num_classes: usize) -> Vec<usize> {
    let mut counts = vec![0; num_classes];
    for &i in members {
        counts[labels[i] as usize] += 1;
    }
    counts
}

/// ", suspicious set NN% label L" for the most frequent label, or nothing for an empty set.
fn largest_label_share(counts: &[usize]) -> String {
    let total: usize = counts.iter().sum();
    match counts.iter().enumerate().max_by_key(|&(label, &n)| (n, std::cmp::Reverse(label))) {
        Some((label, &n)) if total > 0 => format!(", suspicious set {:.0}% label {label}", 100.0 * n as f64 / total as f64),
        _ => String::new(),
    }
}

/// Counts per bin of the values whose flag equals `which`.
fn counts(values: &[f64], flags: &[bool], which: bool) -> Vec<usize> {
    let mut bins = vec![0; BINS];
    for (v, _) in values.iter().zip(flags).filter(|(_, &f)| f == which) {
        bins[((v * BINS as f64) as usize).min(BINS - 1)] += 1;
    }
    bins
}

/// Clean (blue) and poisoned (red) histograms of normalised entropy side by side in each bin,
/// with the split threshold t_f as a dashed line; without poison flags, one histogram of all
/// samples.
pub fn histogram(values: &[f64], poisoned: Option<&[bool]>, t_f: f64, title: &str) -> Canvas {
    let unknown = vec![false; values.len()];
    let flags = poisoned.unwrap_or(&unknown);
    let (left, top, bin_w, height) = (48, 36, 9, 220);
    let width = left + BINS * bin_w + 24;
    let mut canvas = Canvas::new(width, top + height + 40);
    let (clean, bad) = (counts(values, flags, false), counts(values, flags, true));
    let max = clean.iter().chain(&bad).copied().max().unwrap_or(0).max(1);
    let bar = |count: usize| count * height / max;
    for b in 0..BINS {
        let x = left + b * bin_w;
        canvas.fill(x, top + height - bar(clean[b]), bin_w / 2, bar(clean[b]), CLEAN);
        canvas.fill(x + bin_w / 2, top + height - bar(bad[b]), bin_w / 2, bar(bad[b]), POISONED);
    }
    canvas.fill(left, top + height, BINS * bin_w, 1, [0, 0, 0]);
    canvas.fill(left - 1, top, 1, height, [0, 0, 0]);
    let threshold_x = left + ((t_f.clamp(0.0, 1.0)) * (BINS * bin_w) as f64) as usize;
    for y in (top..top + height).step_by(6) {
        canvas.fill(threshold_x, y, 1, 3, [0, 0, 0]);
    }
    canvas.text(title, 4, 4);
    canvas.text(&format!("{max}"), 4, top);
    canvas.text("0", 4, top + height - GLYPH);
    canvas.text("0", left, top + height + 4);
    canvas.text("1", left + BINS * bin_w - GLYPH, top + height + 4);
    canvas.text(&format!("t_f={t_f:.2}"), threshold_x.saturating_sub(4 * GLYPH).max(left), top + height + 4);
    let legend_y = top + height + 20;
    canvas.fill(left, legend_y, GLYPH, GLYPH, CLEAN);
    if poisoned.is_some() {
        canvas.text("clean", left + 12, legend_y);
        canvas.fill(left + 70, legend_y, GLYPH, GLYPH, POISONED);
        canvas.text("poisoned   x: normalised entropy", left + 82, legend_y);
    } else {
        canvas.text("samples (no poison flags)   x: normalised entropy", left + 12, legend_y);
    }
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_zero_to_one_inclusive() {
        let c = counts(&[0.0, 0.019, 0.02, 0.5, 1.0], &[false, false, false, true, false], false);
        assert_eq!((c[0], c[1], c[BINS - 1]), (2, 1, 1));
        assert_eq!(c.iter().sum::<usize>(), 4);
    }

    #[test]
    fn suspicious_samples_are_counted_per_label() {
        let labels = [2, 0, 2, 1, 2];
        let counts = label_counts(&[0, 2, 3], &labels, 4);
        assert_eq!(counts, vec![0, 1, 2, 0]);
        assert_eq!(largest_label_share(&counts), ", suspicious set 67% label 2");
        // Ties go to the lower label; an empty set says nothing.
        assert_eq!(largest_label_share(&label_counts(&[1, 3], &labels, 4)), ", suspicious set 50% label 0");
        assert_eq!(largest_label_share(&label_counts(&[], &labels, 4)), "");
    }

    #[test]
    fn csv_fields_with_separators_are_quoted() {
        assert_eq!(csv_field("train/cat/1.png"), "train/cat/1.png");
        let awkward = "train/a,b/\"x\".png";
        assert_eq!(csv_field(awkward), "\"train/a,b/\"\"x\"\".png\"");
        assert_eq!(split_csv_line(&format!("3,{},0.5", csv_field(awkward))), vec!["3", awkward, "0.5"]);
    }

    #[test]
    fn suspicious_csv_reads_by_its_header_old_and_new() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("suspicious.csv");
        std::fs::write(&path, "index,entropy,suspicious,poisoned\n7,0.000000,1,1\n2,0.900000,0,0\n").unwrap();
        let old = read_suspicious_csv(&path).unwrap();
        assert_eq!(old, vec![SuspiciousRow { index: 7, entropy: 0.0, suspicious: true, poisoned: Some(true) }, SuspiciousRow { index: 2, entropy: 0.9, suspicious: false, poisoned: Some(false) }]);
        std::fs::write(&path, "index,file,label,predicted,entropy,suspicious,poisoned\n4,\"train/a,b/1.png\",0,0,0.250000,1,\n").unwrap();
        assert_eq!(read_suspicious_csv(&path).unwrap(), vec![SuspiciousRow { index: 4, entropy: 0.25, suspicious: true, poisoned: None }]);
        std::fs::write(&path, "index,entropy,suspicious\n1,0.5,0\n").unwrap();
        assert!(read_suspicious_csv(&path).unwrap_err().to_string().contains("no `poisoned` column"));
    }
}
