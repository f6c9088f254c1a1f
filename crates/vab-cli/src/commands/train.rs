//! `vab train`: a bundle and a configuration in, a run directory out.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vab_core::config::TrainConfig;
use vab_core::data::{EvalSets, GroundTruth, TrainingSet};
use vab_core::defenses::abl::train::{train_abl, Outcome as AblOutcome};
use vab_core::defenses::clean_reserve;
use vab_core::defenses::fine_pruning::train::train_fp;
use vab_core::defenses::dbd::train::train_dbd;
use vab_core::defenses::nad::train::train_nad;
use vab_core::defenses::vab::split_check::split_warnings;
use vab_core::detection::Detection;
use vab_core::engine::eval::Metrics;
use vab_core::defenses::vab::train::train_vab;
use vab_core::engine::run::{config_path, train_baseline, training_members, write_json};
use vab_data::Bundle;

use crate::cli::TrainArgs;
use crate::detection_log::{csv_field, DetectionLog};
use crate::progress::EpochBar;

/// What a run directory records about its inputs (`run.json`), so `--resume` needs nothing else.
#[derive(Clone, Serialize, Deserialize)]
pub struct RunInputs {
    pub bundle: PathBuf,
    /// `none`, `vab`, `abl`, `fp`, `nad` or `dbd`.
    pub defense: String,
    #[serde(default)]
    pub backend: vab_core::backend::Backend,
    /// SHA-256 of the bundle file when the run started, so that `--resume` and `vab eval`
    /// refuse another file put at its path (absent in runs made before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_sha256: Option<String>,
}

impl RunInputs {
    /// Reads the run's bundle; `Err` when its bytes are not those the run in `run_dir` started
    /// with.
    pub fn read_bundle(&self, run_dir: &Path) -> anyhow::Result<Bundle> {
        let (bundle, sha256) = read_bundle(&self.bundle)?;
        if let Some(recorded) = self.bundle_sha256.as_deref().filter(|&r| r != sha256) {
            bail!(
                "{}: not the bundle the run {} started with (SHA-256 {}…, the run recorded {}…); put that bundle back at this path or start a new run",
                self.bundle.display(),
                run_dir.display(),
                &sha256[..12],
                &recorded[..recorded.len().min(12)]
            );
        }
        Ok(bundle)
    }
}

/// A bundle and the SHA-256 of its file, in hex.
pub fn read_bundle(path: &Path) -> anyhow::Result<(Bundle, String)> {
    let bytes = Bundle::read_bytes(path)?;
    let sha256 = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    Ok((Bundle::from_bytes(path, &bytes)?, sha256))
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    match &args.resume {
        Some(dir) => {
            let inputs: RunInputs = serde_json::from_str(&read(&dir.join("run.json"))?)
                .with_context(|| format!("{}: not a vab run directory", dir.display()))?;
            let config_file = config_path(dir);
            train_run(&inputs, &read(&config_file)?, &config_file, dir, true)
        }
        None => {
            let (Some(bundle), Some(config), Some(out)) = (&args.bundle, &args.config, &args.out) else {
                bail!("--bundle, --config and --out are required unless --resume is given");
            };
            if out.join("checkpoint").exists() || out.join("summary.json").exists() {
                bail!("{}: already holds a run; continue it with --resume {} or choose another --out", out.display(), out.display());
            }
            let bundle = bundle.canonicalize().with_context(|| format!("{}: cannot open bundle", bundle.display()))?;
            let inputs = RunInputs { bundle, defense: args.defense.clone(), backend: args.compute.backend()?, bundle_sha256: None };
            train_run(&inputs, &read(config)?, config, out, false)
        }
    }
}

/// Trains `inputs.defense` on `inputs.bundle` with the configuration `config_text` (read from
/// `config_file`, which errors name) into `run_dir`, or continues it there with `resume`.
pub fn train_run(inputs: &RunInputs, config_text: &str, config_file: &Path, run_dir: &Path, resume: bool) -> anyhow::Result<()> {
    let config = TrainConfig::from_toml(config_text).map_err(|e| anyhow::anyhow!("{}: {e}", config_file.display()))?;
    let (bundle, sha256) = match resume {
        true => (inputs.read_bundle(run_dir)?, None),
        false => read_bundle(&inputs.bundle).map(|(bundle, sha256)| (bundle, Some(sha256)))?,
    };
    let (class_names, train_files) = (bundle.meta.class_names.clone(), bundle.meta.train_files.clone());
    let (train, evals, ground_truth) = vab_core::data::split(bundle).map_err(|e| anyhow::anyhow!("{}: {e}", inputs.bundle.display()))?;
    std::fs::create_dir_all(run_dir).with_context(|| format!("{}: cannot create run directory", run_dir.display()))?;
    let _lock = lock_run(run_dir)?;
    if !resume {
        let record = RunInputs { bundle_sha256: sha256, ..inputs.clone() };
        std::fs::write(config_path(run_dir), config_text).with_context(|| format!("{}: cannot write", run_dir.display()))?;
        std::fs::write(run_dir.join("run.json"), serde_json::to_string_pretty(&record)?)?;
    }
    let samples = config.data.train_subset.map_or(train.images.len(), |k| k.min(train.images.len()));
    eprintln!("training {:?} on {} ({samples} of {} training samples), defense {}", config.model.arch, inputs.bundle.display(), train.images.len(), inputs.defense);
    match inputs.defense.as_str() {
        "vab" => return train_vab_run(&config, inputs, &train, &evals, &ground_truth, (&class_names, &train_files), run_dir, resume),
        "abl" => return train_abl_run(&config, inputs, &train, &evals, &ground_truth, &train_files, run_dir, resume),
        "fp" => return train_fp_run(&config, inputs, &train, &evals, &ground_truth, run_dir, resume),
        "nad" => return train_nad_run(&config, inputs, &train, &evals, &ground_truth, run_dir, resume),
        "dbd" => return train_dbd_run(&config, inputs, &train, &evals, &ground_truth, run_dir, resume),
        _ => {}
    }
    let summary = train_baseline(&config, inputs.backend, &train, &evals, run_dir, resume, &EpochBar::new())?;
    println!("{} after {} epochs in {:.0} s; run directory {}", summary.metrics.describe(), summary.epochs, summary.wall_s, run_dir.display());
    Ok(())
}

/// Holds an advisory lock on `run_dir/lock` for as long as the returned file lives (the
/// operating system releases it when the process ends, killed or not), so that two processes
/// never write one run. The file holds the holder's pid, which a refused process names.
pub(crate) fn lock_run(run_dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = run_dir.join("lock");
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).with_context(|| format!("{}: cannot open", path.display()))?;
    if let Err(e) = file.try_lock() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        bail!("{}: another vab process (pid {}) is using this run directory ({e}); wait for it to end or stop it", run_dir.display(), holder.trim());
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// `--defense vab`: the run, then the reporting that needs the poison flags. `names` are the
/// bundle's class names and training files (empty when it has none).
#[allow(clippy::too_many_arguments)]
fn train_vab_run(config: &TrainConfig, inputs: &RunInputs, train: &TrainingSet, evals: &EvalSets, truth: &GroundTruth, names: (&[String], &[String]), run_dir: &Path, resume: bool) -> anyhow::Result<()> {
    let (class_names, train_files) = names;
    let members = training_members(config, train.images.len());
    let labels: Vec<u16> = members.iter().map(|&i| train.images.labels()[i]).collect();
    let mut log = DetectionLog::new(run_dir, Some(members.iter().map(|&i| truth.poisoned[i]).collect()), labels.clone(), train.num_classes)?;
    let outcome = train_vab(config, inputs.backend, train, evals, run_dir, resume, &EpochBar::new(), &mut log)?;
    log.write_suspicious_csv(&outcome.split, &outcome.members, train_files)?;
    let warnings = split_warnings(&outcome.split.suspicious, &labels, class_names);
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    let summary = outcome.summary(log.score(&outcome.split), warnings);
    write_json(&run_dir.join("summary.json"), &summary)?;
    if let Some(m) = &summary.after_stage2 {
        println!("after stage 2: {}", m.describe());
    }
    let detection = summary.detection.as_ref().map_or(String::new(), |d| format!("; detection {}", d.describe()));
    println!("{} after {} epochs in {:.0} s{detection}; run directory {}", summary.summary.metrics.describe(), summary.summary.epochs, summary.summary.wall_s, run_dir.display());
    Ok(())
}

/// `--defense abl`: the run, then `isolated.csv` and the summary with the isolated set scored
/// against the poison flags. `train_files` are the bundle's training files (empty when none).
#[allow(clippy::too_many_arguments)]
fn train_abl_run(config: &TrainConfig, inputs: &RunInputs, train: &TrainingSet, evals: &EvalSets, truth: &GroundTruth, train_files: &[String], run_dir: &Path, resume: bool) -> anyhow::Result<()> {
    let outcome = train_abl(config, inputs.backend, train, evals, run_dir, resume, &EpochBar::new())?;
    let poisoned: Vec<bool> = outcome.members.iter().map(|&i| truth.poisoned[i]).collect();
    let labels: Vec<u16> = outcome.members.iter().map(|&i| train.images.labels()[i]).collect();
    write_isolated_csv(&run_dir.join("isolated.csv"), &outcome, &labels, &poisoned, train_files)?;
    let summary = outcome.summary(Some(Detection::score(&outcome.isolation.flags(), &poisoned)));
    write_json(&run_dir.join("summary.json"), &summary)?;
    print_stages(&[("before unlearning", &summary.before_unlearning)]);
    let detection = summary.detection.as_ref().map_or(String::new(), |d| format!("; isolated {} samples, {}", summary.isolated, d.describe()));
    println!("{} after {} epochs in {:.0} s{detection}; run directory {}", summary.summary.metrics.describe(), summary.summary.epochs, summary.summary.wall_s, run_dir.display());
    Ok(())
}

/// The clean reserve of a post-training defense, `share` (the key `key`) of the training
/// samples drawn from those the bundle marks clean: the defense's extra assumption, so it is
/// printed.
fn draw_reserve(config: &TrainConfig, train: &TrainingSet, truth: &GroundTruth, share: f64, key: &str) -> anyhow::Result<Vec<usize>> {
    let members = training_members(config, train.images.len());
    let poisoned: Vec<bool> = members.iter().map(|&i| truth.poisoned[i]).collect();
    let reserve = clean_reserve::draw(&poisoned, share, config.train.seed).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
    eprintln!("clean reserve: {} training samples the bundle marks clean, with their labels (the defense's assumption)", reserve.len());
    Ok(reserve)
}

/// `--defense fp`: the clean reserve, the run, and its summary.
#[allow(clippy::too_many_arguments)]
fn train_fp_run(config: &TrainConfig, inputs: &RunInputs, train: &TrainingSet, evals: &EvalSets, truth: &GroundTruth, run_dir: &Path, resume: bool) -> anyhow::Result<()> {
    let fp = config.fp.as_ref().context("--defense fp needs an [fp] section in the configuration (see configs/cpu-cifar10.toml)")?;
    let reserve = draw_reserve(config, train, truth, fp.clean_reserve, "fp.clean_reserve")?;
    let outcome = train_fp(config, inputs.backend, train, evals, &reserve, run_dir, resume, &EpochBar::new())?;
    let summary = outcome.summary(reserve.len());
    write_json(&run_dir.join("summary.json"), &summary)?;
    print_stages(&[("before pruning", &summary.before_pruning), ("after pruning", &summary.after_pruning)]);
    println!("{} after {} epochs in {:.0} s; pruned {} of {} channels; run directory {}", summary.summary.metrics.describe(), summary.summary.epochs, summary.summary.wall_s, summary.pruned_channels, summary.channels, run_dir.display());
    Ok(())
}

/// `--defense nad`: the clean reserve, the run, and its summary.
#[allow(clippy::too_many_arguments)]
fn train_nad_run(config: &TrainConfig, inputs: &RunInputs, train: &TrainingSet, evals: &EvalSets, truth: &GroundTruth, run_dir: &Path, resume: bool) -> anyhow::Result<()> {
    let nad = config.nad.as_ref().context("--defense nad needs a [nad] section in the configuration (see configs/cpu-cifar10.toml)")?;
    let reserve = draw_reserve(config, train, truth, nad.clean_reserve, "nad.clean_reserve")?;
    let outcome = train_nad(config, inputs.backend, train, evals, &reserve, run_dir, resume, &EpochBar::new())?;
    let summary = outcome.summary(reserve.len());
    write_json(&run_dir.join("summary.json"), &summary)?;
    print_stages(&[("before distillation", &summary.before_distillation), ("teacher", &summary.teacher)]);
    println!("{} after {} epochs in {:.0} s; run directory {}", summary.summary.metrics.describe(), summary.summary.epochs, summary.summary.wall_s, run_dir.display());
    Ok(())
}

/// `--defense dbd`: the run, and its summary with the last split's unlabelled set scored against
/// the poison flags.
fn train_dbd_run(config: &TrainConfig, inputs: &RunInputs, train: &TrainingSet, evals: &EvalSets, truth: &GroundTruth, run_dir: &Path, resume: bool) -> anyhow::Result<()> {
    let outcome = train_dbd(config, inputs.backend, train, evals, run_dir, resume, &EpochBar::new())?;
    let poisoned: Vec<bool> = outcome.members.iter().map(|&i| truth.poisoned[i]).collect();
    let summary = outcome.summary(Some(Detection::score(&outcome.unlabelled_flags(), &poisoned)));
    write_json(&run_dir.join("summary.json"), &summary)?;
    print_stages(&[("after the warm-up", &summary.after_warmup)]);
    let detection = summary.detection.as_ref().map_or(String::new(), |d| format!("; unlabelled in the last split {}", d.describe()));
    println!("{} after {} epochs in {:.0} s{detection}; run directory {}", summary.summary.metrics.describe(), summary.summary.epochs, summary.summary.wall_s, run_dir.display());
    Ok(())
}

/// Prints the metrics a defense recorded part-way (`when`: e.g. "before pruning"), those it has.
fn print_stages(stages: &[(&str, &Option<Metrics>)]) {
    for (when, metrics) in stages {
        if let Some(m) = metrics {
            println!("{when}: {}", m.describe());
        }
    }
}

/// Writes `isolated.csv`: every training sample, lowest isolation loss first, with its index
/// in the data, its file (empty when none), label, loss, whether ABL isolated it (1) and its
/// poison flag.
fn write_isolated_csv(path: &Path, outcome: &AblOutcome, labels: &[u16], poisoned: &[bool], files: &[String]) -> anyhow::Result<()> {
    let isolation = &outcome.isolation;
    let flags = isolation.flags();
    let mut order: Vec<usize> = (0..isolation.losses.len()).collect();
    order.sort_by(|&a, &b| isolation.losses[a].total_cmp(&isolation.losses[b]).then(a.cmp(&b)));
    let mut out = String::from("index,file,label,loss,isolated,poisoned\n");
    for i in order {
        let index = outcome.members[i];
        let file = files.get(index).map_or(String::new(), |f| csv_field(f));
        out.push_str(&format!("{index},{file},{},{:.6},{},{}\n", labels[i], isolation.losses[i], flags[i] as u8, poisoned[i] as u8));
    }
    std::fs::write(path, out).with_context(|| format!("{}: cannot write", path.display()))
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))
}
