//! `vab scan DATA --out SCAN_DIR`: V&B's Victim ranks every training sample of any dataset by
//! its prediction entropy; the scan directory gets `suspicious.csv`, `scan.json` (cut-off,
//! mixture fit, verdict, per-label view, detection figures when the data has poison flags),
//! the entropy histograms, `victim.safetensors`, `report.html` and with `--label-check`
//! `label_check.csv`; optionally the credible part as a bundle and the suspicious part as a
//! list of files.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Serialize;
use vab_core::config::TrainConfig;
use vab_core::data::TrainingSet;
use vab_core::defenses::vab::gmm::Mixture;
use vab_core::defenses::vab::label_check::{LabelCheck, MAX_LABEL_PROBABILITY, MIN_LABEL_SHARE, MIN_REJECTED_SHARE};
use vab_core::defenses::vab::scan::{scan, Cutoff, ScanOptions, ScanOutcome};
use vab_core::defenses::vab::split_check::split_warnings;
use vab_core::detection::Detection;
use vab_core::engine::run::{training_members, write_json};
use vab_data::{Bundle, SourceKind};

use super::{load_dataset, refuse_to_overwrite};
use crate::cli::{LoadArgs, ScanArgs};
use crate::detection_log::{label_counts, DetectionLog};
use crate::progress::EpochBar;

/// The built-in scan preset.
const PRESET: &str = include_str!("../../../../configs/scan.toml");

/// `scan.json`.
#[derive(Serialize)]
pub struct ScanSummary {
    pub data: String,
    pub backend: String,
    /// Samples scanned (all training samples, or the configuration's `data.train_subset`).
    pub samples: usize,
    pub arch: vab_core::models::Arch,
    pub victim: vab_core::defenses::vab::config::VictimParams,
    pub victim_epochs: usize,
    pub refreshes: usize,
    pub cutoff: CutoffRecord,
    /// The two-component mixture of the final normalised entropies.
    pub mixture: Option<MixtureRecord>,
    /// Whether the scan found evidence of poisoning, in one sentence: from the label check when
    /// it ran, else from the mixture.
    pub verdict: String,
    /// The Victim's suspicious set before the label check narrowed it (`--label-check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub victim_suspicious: Option<usize>,
    pub suspicious: usize,
    pub credible: usize,
    /// Per training label, in label order.
    pub labels: Vec<LabelRow>,
    /// The label the Victim predicts most often for the suspicious samples.
    pub suspicious_predicted_as: Option<Predicted>,
    /// Against the data's poison flags (bundles only), in percent.
    pub detection: Option<Detection>,
    /// Signs that the Victim's split failed ([`split_warnings`]; not checked with the label check,
    /// whose verdict says more).
    pub warnings: Vec<String>,
    pub wall_s: f64,
}

/// How the cut-off was chosen.
#[derive(Serialize)]
pub struct CutoffRecord {
    pub mode: Cutoff,
    pub t_f: f64,
    pub rule: String,
}

/// One component of the mixture.
#[derive(Serialize)]
pub struct ComponentRecord {
    pub weight: f64,
    pub mean: f64,
    pub std: f64,
}

/// The mixture fit and what it says.
#[derive(Serialize)]
pub struct MixtureRecord {
    pub low: ComponentRecord,
    pub high: ComponentRecord,
    /// μ1 + 3σ1 < μ2 (the automatic warm-up's rule).
    pub separated: bool,
    /// μ1 + 0.5σ1.
    pub threshold: f64,
}

impl From<&Mixture> for MixtureRecord {
    fn from(m: &Mixture) -> Self {
        let record = |c: &vab_core::defenses::vab::gmm::Component| ComponentRecord { weight: c.weight, mean: c.mean, std: c.std };
        Self { low: record(&m.low), high: record(&m.high), separated: m.separated(), threshold: m.threshold() }
    }
}

/// A predicted label and the share of the samples predicted as it, in percent.
#[derive(Serialize)]
pub struct Predicted {
    pub label: u16,
    pub name: String,
    pub share: f64,
}

/// One training label's part in the split.
#[derive(Serialize)]
pub struct LabelRow {
    pub label: u16,
    pub name: String,
    pub samples: usize,
    pub suspicious: usize,
    /// Percent of the suspicious set with this label.
    pub share_of_suspicious: f64,
    /// Percent of the scanned samples with this label.
    pub share_of_data: f64,
    /// `share_of_suspicious / share_of_data`: far above 1 for a poison-label backdoor's target.
    pub over_representation: f64,
    /// What the Victim predicts for this label's suspicious samples, most often.
    pub predicted_as: Option<Predicted>,
    /// `--label-check`: of the Victim's suspicious samples of this label, how many the checker
    /// rejects (gives their label too little probability), and whether the label holds poison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_check: Option<LabelRecord>,
}

/// One label's line of the label check.
#[derive(Serialize)]
pub struct LabelRecord {
    pub victim_suspicious: usize,
    pub rejected: usize,
    pub holds_poison: bool,
}

pub fn run(args: &ScanArgs) -> anyhow::Result<()> {
    if args.out.join("scan.json").exists() {
        bail!("{}: already holds a scan; choose another --out or remove it", args.out.display());
    }
    for export in [&args.export_clean, &args.export_list].into_iter().flatten() {
        refuse_to_overwrite(&args.data, export)?;
    }
    let (config_text, config_name) = match &args.config {
        Some(path) => (std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?, path.display().to_string()),
        None => (PRESET.to_string(), "the built-in scan preset".to_string()),
    };
    let mut config = TrainConfig::from_toml(&config_text).map_err(|e| anyhow::anyhow!("{config_name}: {e}"))?;
    if config.vab.is_none() {
        bail!("{config_name}: no [vab] section; a scan needs the Victim's settings (see configs/scan.toml)");
    }
    if let Some(seed) = args.seed {
        config.train.seed = seed;
    }
    let cutoff = if args.cutoff == "auto" { Cutoff::Auto } else { Cutoff::Schedule };
    let options = ScanOptions { cutoff, refreshes: args.refreshes, label_check: args.label_check };
    let backend = args.compute.backend()?;
    let (bundle, has_flags) = load_for_scan(&args.data, &args.load)?;
    if bundle.train.is_empty() {
        bail!("{}: no training images to scan", args.data.display());
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}: cannot create scan directory", args.out.display()))?;
    let _lock = super::train::lock_run(&args.out)?;
    std::fs::write(args.out.join("config.toml"), &config_text).with_context(|| format!("{}: cannot write", args.out.display()))?;

    let num_classes = bundle.meta.class_names.len();
    let train = TrainingSet { images: Arc::new(bundle.train.clone()), num_classes };
    let members = training_members(&config, bundle.train.len());
    let labels: Vec<u16> = members.iter().map(|&i| bundle.train.labels()[i]).collect();
    let poisoned = has_flags.then(|| members.iter().map(|&i| bundle.train_poisoned[i]).collect());
    let mut log = DetectionLog::new(&args.out, poisoned, labels.clone(), num_classes)?;
    eprintln!("scanning {} training samples of {} with the {:?} Victim ({})", members.len(), args.data.display(), config.model.arch, config_name);
    let outcome = scan(&config, backend, &train, &args.out, options, &EpochBar::new(), &mut log)?;
    log.write_suspicious_csv(&outcome.split, &outcome.members, &bundle.meta.train_files)?;

    if let Some(check) = &outcome.label_check {
        write_label_check_csv(&args.out.join("label_check.csv"), check, &outcome.members, &bundle, has_flags)?;
    }
    let summary = summarise(args, &config, &bundle, &outcome, &labels, log.score(&outcome.split), cutoff);
    write_json(&args.out.join("scan.json"), &summary)?;
    let report = crate::report::write_scan(&args.out, &bundle.train, &bundle.meta.class_names)?;
    if let Some(path) = &args.export_clean {
        let credible: Vec<usize> = outcome.split.credible.iter().map(|&i| outcome.members[i]).collect();
        bundle.select_train(&credible).write(path)?;
        eprintln!("wrote the {} credible samples as a bundle: {}", credible.len(), path.display());
    }
    if let Some(path) = &args.export_list {
        write_list(path, &outcome, &bundle.meta.train_files)?;
    }
    for warning in &summary.warnings {
        eprintln!("warning: {warning}");
    }
    let detection = summary.detection.as_ref().map_or(String::new(), |d| format!("; detection {}", d.describe()));
    println!(
        "{} of {} samples suspicious (t_f {:.3}, {}){detection}\n{}\nscan directory {} (report {})",
        summary.suspicious,
        summary.samples,
        summary.cutoff.t_f,
        args.cutoff,
        summary.verdict,
        args.out.display(),
        report.display()
    );
    Ok(())
}

/// The data as a bundle, and whether its poison flags are known (bundles only: any other
/// source is a user's data, whose flags vab cannot know).
fn load_for_scan(path: &Path, load: &LoadArgs) -> anyhow::Result<(Bundle, bool)> {
    if vab_data::detect(path)? == SourceKind::Bundle {
        if load.resize.is_some() {
            bail!("{}: --resize applies to image folders and archives only", path.display());
        }
        return Ok((Bundle::read(path)?, true));
    }
    let dataset = load_dataset(path, load)?;
    Ok((Bundle::clean(dataset, path.display().to_string()), false))
}

fn summarise(args: &ScanArgs, config: &TrainConfig, bundle: &Bundle, outcome: &ScanOutcome, labels: &[u16], detection: Option<Detection>, cutoff: Cutoff) -> ScanSummary {
    let names = &bundle.meta.class_names;
    let split = &outcome.split;
    let k = names.len();
    let predicted = split.predicted_labels(k);
    // One pass over the suspicious set: how often each label is predicted as each label.
    let mut predicted_by_label = vec![0usize; k * k];
    for &i in &split.suspicious {
        predicted_by_label[labels[i] as usize * k + predicted[i] as usize] += 1;
    }
    let most_predicted = |counts: &[usize]| -> Option<Predicted> {
        let total: usize = counts.iter().sum();
        let label = (0..k).max_by_key(|&c| (counts[c], std::cmp::Reverse(c)))?;
        (total > 0).then(|| Predicted { label: label as u16, name: names[label].clone(), share: 100.0 * counts[label] as f64 / total as f64 })
    };
    let (in_data, in_suspicious) = (label_counts(&(0..labels.len()).collect::<Vec<_>>(), labels, k), label_counts(&split.suspicious, labels, k));
    let n = labels.len();
    let rows = (0..k)
        .map(|c| {
            let (samples, suspicious) = (in_data[c], in_suspicious[c]);
            let share_of_suspicious = percent(suspicious, split.suspicious.len());
            let share_of_data = percent(samples, n);
            LabelRow {
                label: c as u16,
                name: names[c].clone(),
                samples,
                suspicious,
                share_of_suspicious,
                share_of_data,
                over_representation: if share_of_data > 0.0 { share_of_suspicious / share_of_data } else { 0.0 },
                predicted_as: most_predicted(&predicted_by_label[c * k..(c + 1) * k]),
                label_check: outcome.label_check.as_ref().map(|check| {
                    let f = &check.labels[c];
                    LabelRecord { victim_suspicious: f.suspicious, rejected: f.rejected, holds_poison: f.holds_poison }
                }),
            }
        })
        .collect();
    let all_predicted: Vec<usize> = (0..k).map(|p| (0..k).map(|c| predicted_by_label[c * k + p]).sum()).collect();
    let vab = config.vab.as_ref().expect("scan checked the [vab] section");
    let rule = match cutoff {
        Cutoff::Schedule => format!("the configured warm-up's final t_f ({:?})", vab.warmup),
        Cutoff::Auto => "the automatic warm-up: t_f = μ1 + 0.5σ1 of a two-component Gaussian mixture fitted to the normalised entropies once μ1 + 3σ1 < μ2".to_string(),
    };
    ScanSummary {
        data: args.data.display().to_string(),
        backend: args.compute.backend.to_string(),
        samples: n,
        arch: config.model.arch,
        victim: vab.victim.clone(),
        victim_epochs: outcome.victim_epochs,
        refreshes: args.refreshes,
        cutoff: CutoffRecord { mode: cutoff, t_f: split.t_f, rule },
        mixture: outcome.mixture.as_ref().map(MixtureRecord::from),
        verdict: match &outcome.label_check {
            Some(check) => label_verdict(check, names),
            None => verdict(outcome.mixture.as_ref()),
        },
        victim_suspicious: outcome.label_check.as_ref().map(|check| check.labels.iter().map(|f| f.suspicious).sum()),
        suspicious: split.suspicious.len(),
        credible: split.credible.len(),
        labels: rows,
        suspicious_predicted_as: most_predicted(&all_predicted),
        detection,
        // The label check's verdict replaces the checks of the Victim's split by size and label mix.
        warnings: if outcome.label_check.is_some() { Vec::new() } else { split_warnings(&split.suspicious, labels, names) },
        wall_s: outcome.wall_s,
    }
}

/// What the mixture of the entropies says, in a sentence. A separate low-entropy group is no
/// evidence on its own: the easiest classes form one on clean CIFAR-10 too
/// (bench/results/scan-cpu.md).
fn verdict(mixture: Option<&Mixture>) -> String {
    match mixture {
        Some(m) if m.separated() => format!(
            "a separate group of low-entropy samples (mixture weight {:.1}%, N({:.3}, {:.3}²) against N({:.3}, {:.3}²)): poison or the easiest classes, which form such a group on clean data too; --label-check tells them apart",
            100.0 * m.low.weight, m.low.mean, m.low.std, m.high.mean, m.high.std
        ),
        Some(m) => format!(
            "no evidence of poisoning: the entropies form no separate low-entropy group (mixture N({:.3}, {:.3}²) and N({:.3}, {:.3}²) overlap: μ1 + 3σ1 ≥ μ2)",
            m.low.mean, m.low.std, m.high.mean, m.high.std
        ),
        None => "no evidence either way: fewer than two samples".to_string(),
    }
}

/// The label check's verdict, in a sentence.
fn label_verdict(check: &LabelCheck, names: &[String]) -> String {
    let poisoned: Vec<String> = check
        .labels
        .iter()
        .filter(|f| f.holds_poison)
        .map(|f| format!("{} ({} of its {} suspicious samples)", names[f.label as usize], f.rejected, f.suspicious))
        .collect();
    if !poisoned.is_empty() {
        return format!("evidence of poisoning: a network trained on the credible samples rejects the labels of most suspicious samples of {}", poisoned.join(", "));
    }
    match check.labels.iter().max_by_key(|f| (f.rejected, std::cmp::Reverse(f.label))) {
        Some(f) if f.rejected > 0 => format!(
            "no evidence of poisoning: a network trained on the credible samples confirms the labels of the suspicious samples; it rejects at most {} of {} ({}), less than the {:.0}% (and {:.0}% of the label's samples) that would mark poison",
            f.rejected,
            f.suspicious,
            names[f.label as usize],
            100.0 * MIN_REJECTED_SHARE,
            100.0 * MIN_LABEL_SHARE
        ),
        _ => "no evidence of poisoning: a network trained on the credible samples confirms the label of every suspicious sample".to_string(),
    }
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
}

/// Writes `label_check.csv`: every suspicious sample of the Victim's split, the probability the
/// checker gives its label (corrected for the credible label frequencies, and not), whether
/// that rejects the label, and the poison flag when the data has flags.
fn write_label_check_csv(path: &Path, check: &LabelCheck, members: &[usize], bundle: &Bundle, has_flags: bool) -> anyhow::Result<()> {
    let mut out = String::from("index,file,label,label_probability,label_probability_uncorrected,rejected,poisoned\n");
    for c in &check.checked {
        let index = members[c.index];
        let file = bundle.meta.train_files.get(index).map_or(String::new(), |f| crate::detection_log::csv_field(f));
        let poisoned = if has_flags { (bundle.train_poisoned[index] as u8).to_string() } else { String::new() };
        let rejected = (c.label_probability < MAX_LABEL_PROBABILITY) as u8;
        out.push_str(&format!("{index},{file},{},{:.6},{:.6},{rejected},{poisoned}\n", bundle.train.labels()[index], c.label_probability, c.uncorrected));
    }
    std::fs::write(path, out).with_context(|| format!("{}: cannot write", path.display()))
}

/// The suspicious samples, most suspicious first, one per line: file paths when the data has
/// them, training indices otherwise.
fn write_list(path: &Path, outcome: &ScanOutcome, files: &[String]) -> anyhow::Result<()> {
    let split = &outcome.split;
    let mut order = split.suspicious.clone();
    order.sort_by(|&a, &b| split.normalised[a].total_cmp(&split.normalised[b]));
    let text: String = order.iter().map(|&i| files.get(outcome.members[i]).cloned().unwrap_or_else(|| outcome.members[i].to_string()) + "\n").collect();
    std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))?;
    let what = if files.is_empty() { "training indices (the data has no file names)" } else { "files" };
    eprintln!("wrote the {} suspicious samples' {what} to {}", order.len(), path.display());
    Ok(())
}
