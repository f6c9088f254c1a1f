//! Command-line grammar of `vab` (clap derive); each command's behaviour lives in `commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// vab: train clean image classifiers on poisoned data (V&B, ICCV 2023), with real dataset
/// loaders, a reproducible attack suite and evaluation.
#[derive(Parser, Debug)]
#[command(name = "vab", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect, preview and download datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Poison a dataset with a backdoor attack and write the result as a bundle.
    Poison(PoisonArgs),
    /// Train a classifier on a bundle, with or without a defense, into a run directory.
    Train(TrainArgs),
    /// Write a self-contained report.html (charts, entropy histograms, sample grids, results)
    /// for a run directory or a bench directory.
    Report {
        /// A run directory (`vab train --out`) or a bench directory (`vab bench --out`).
        #[arg(value_name = "RUN_DIR|BENCH_DIR")]
        dir: PathBuf,
    },
    /// Run a benchmark matrix (attacks × defenses × seeds) into a results table, or time the
    /// training step (`vab bench step`).
    Bench(BenchArgs),
    /// Evaluate a trained network (a run's `model.safetensors`) on a bundle's test sets: BA,
    /// ASR, ASR without the trigger, RA and per-class accuracy.
    Eval(EvalArgs),
    /// Find the poisoned samples of a dataset with V&B's Victim, without training a final
    /// network: a ranked list, per-label counts, a report and optionally a cleaned copy.
    Scan(ScanArgs),
}

/// `vab scan`.
#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Data to scan: a bundle, a CIFAR binary folder, an MNIST-style IDX folder, an image
    /// folder (train/<class>/*.jpg) or a .tar/.tar.gz/.tar.xz of one. Its training split is scanned.
    #[arg(value_name = "DATA")]
    pub data: PathBuf,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Scan directory to create: suspicious.csv, scan.json, report.html, entropy histograms.
    #[arg(long, value_name = "SCAN_DIR")]
    pub out: PathBuf,
    /// Configuration whose [model], train.seed, [data] and [vab] Victim keys the scan uses
    /// [default: the built-in preset, configs/scan.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seed of the Victim's initialisation and batch order [default: the configuration's
    /// train.seed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Victim epochs on the suspicious set after warm-up, each followed by a refresh of the split.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub refreshes: usize,
    /// The cut-off: `schedule` (the configured warm-up's final t_f) or `auto` (a two-component
    /// mixture fitted to the entropies; says so when they do not separate).
    #[arg(long, default_value = "schedule", value_parser = ["schedule", "auto"])]
    pub cutoff: String,
    /// Beyond the paper: train a checker network (the configuration's [train] section) on the
    /// credible samples and keep as suspicious only the labels whose suspicious samples it
    /// rejects in bulk. Finds poison-label attacks and tells clean data from poisoned; misses
    /// clean-label attacks (SIG, CL).
    #[arg(long)]
    pub label_check: bool,
    /// Also write the credible samples as a bundle (poison flags carried over, for evaluation).
    #[arg(long, value_name = "BUNDLE")]
    pub export_clean: Option<PathBuf>,
    /// Also write the suspicious samples as a plain list, one per line, most suspicious first:
    /// file paths for image folders, training indices otherwise.
    #[arg(long, value_name = "FILE")]
    pub export_list: Option<PathBuf>,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// `vab eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run directory (its `model.safetensors`) or a `.safetensors` file written by vab.
    #[arg(value_name = "RUN_DIR|MODEL")]
    pub model: PathBuf,
    /// Bundle whose test sets to use; defaults to the run's own (its `run.json`). Another
    /// bundle of the same dataset tests the network against another attack's trigger.
    #[arg(long, value_name = "BUNDLE")]
    pub bundle: Option<PathBuf>,
    /// Print the metrics as JSON (the fields of `summary.json`) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Test images per forward pass; lower it when memory is short (e.g. 224-pixel images).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// Where networks are computed: `--backend` and `--device`.
#[derive(Args, Debug, Clone)]
pub struct ComputeArgs {
    /// Compute backend: flex (built in), tch (libtorch on the CPU), wgpu (a GPU through Vulkan,
    /// Metal or DX12) or cuda; all but flex need a build with `--features <name>`.
    #[arg(long, default_value = "flex")]
    pub backend: vab_core::backend::Backend,
    /// Which GPU, with --backend wgpu or cuda (0 = the first one found).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub device: usize,
}

impl ComputeArgs {
    /// The backend on the chosen device.
    pub fn backend(&self) -> anyhow::Result<vab_core::backend::Backend> {
        self.backend.on_device(self.device).map_err(anyhow::Error::msg)
    }
}

/// `vab train`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["bundle", "resume"])))]
pub struct TrainArgs {
    /// Bundle to train on (from `vab poison` or `vab data bundle`).
    #[arg(long, value_name = "BUNDLE", requires_all = ["config", "out"])]
    pub bundle: Option<PathBuf>,
    /// Defense: `none` trains on the bundle as labelled; `vab` runs V&B (needs the
    /// configuration's `[vab]` section); `abl` runs Anti-Backdoor Learning (its `[abl]` section);
    /// `fp` runs Fine-Pruning (its `[fp]` section; draws a clean reserve from the poison flags).
    /// `nad` runs Neural Attention Distillation (its `[nad]` section; draws a clean reserve).
    /// `dbd` runs Backdoor Defense via Decoupling (its `[dbd]` section).
    #[arg(long, default_value = "none", value_parser = ["none", "vab", "abl", "fp", "nad", "dbd"])]
    pub defense: String,
    /// Training configuration (TOML; see configs/).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run directory to create (metrics.jsonl, summary.json, checkpoints, model.safetensors).
    #[arg(long, value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["bundle", "config", "out"])]
    pub resume: Option<PathBuf>,
    /// A resumed run keeps the backend and device it started with.
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// `vab bench MATRIX.toml --out DIR`, or `vab bench step …`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// Matrix file (TOML; see bench/cpu-cifar10.toml).
    #[arg(value_name = "MATRIX.toml", required = true)]
    pub matrix: Option<PathBuf>,
    /// Bench directory: bundles, one run directory per cell, results.{json,csv,md}. Running
    /// the same matrix into it again skips finished cells and resumes interrupted ones.
    #[arg(long, value_name = "DIR", required = true)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// `vab bench step`.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Images per second of one SGD training step and of inference, on synthetic data.
    Step {
        /// Network to time [default: resnet18, or the configuration's with --stage].
        #[arg(long, value_parser = ["resnet18", "resnet18-imagenet", "preact-resnet18", "small"])]
        model: Option<String>,
        /// Time one V&B stage per batch instead of a plain SGD step: the Victim's batch, the
        /// entropy pass (per batch of images), a stage-2 or a stage-3 iteration.
        #[arg(long, value_parser = ["victim", "refresh", "stage2", "stage3"])]
        stage: Option<String>,
        /// With --stage: the training configuration whose settings are timed [default: the
        /// paper's, configs/paper-cifar10.toml].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// With --stage stage3: suspicious images per iteration (the authors' code on CIFAR-10:
        /// about 14 beside each batch of 128 credible ones).
        #[arg(long, default_value_t = 14)]
        unlabelled: usize,
        /// Training batch size.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Inference batch size.
        #[arg(long, default_value_t = 256)]
        infer_batch: usize,
        /// Image size (square, 3 channels).
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Timed steps (the median is reported).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Print one JSON object instead of a sentence.
        #[arg(long)]
        json: bool,
        /// Also time vab's kernels per operation and geometry during the timed training steps.
        #[arg(long)]
        profile: bool,
        #[command(flatten)]
        compute: ComputeArgs,
    },
}

/// `vab poison`: the attack, its parameters and the poisoning request.
#[derive(Args, Debug)]
pub struct PoisonArgs {
    /// Clean dataset (any format `vab data info` reads).
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Attack name (`cl` trains a surrogate first; see README, "Attacks").
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(vab_attacks::ATTACKS.iter().chain(&vab_core::attacks::MODEL_ATTACKS)))]
    pub attack: String,
    /// TOML file of attack parameters (flat `key = value` lines; see README, "Attacks").
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one attack parameter, e.g. `--set preset=white-3x3-br --set alpha=0.2`
    /// (values are TOML: numbers, true/false, quoted or bare strings).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Poisoning rate, in [0, 1].
    #[arg(long, default_value_t = 0.1)]
    pub rate: f64,
    /// What the rate is a fraction of: of_dataset or of_target_class
    /// [default: of_dataset for poison-label attacks, of_target_class for clean-label ones].
    #[arg(long, value_name = "CONVENTION")]
    pub rate_convention: Option<vab_attacks::select::RateConvention>,
    /// Target class (label index).
    #[arg(long, default_value_t = 0)]
    pub target: u16,
    /// all_to_one (poisoned samples get the target label) or all_to_all (y → y+1 mod K).
    #[arg(long, default_value = "all_to_one", value_name = "RULE")]
    pub label_rule: vab_attacks::poison::LabelRule,
    /// Seed of every random choice (indices, warping field, noise).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output bundle (.safetensors).
    #[arg(short, long, value_name = "BUNDLE")]
    pub output: PathBuf,
    /// Also write a PNG of clean/poisoned pairs and their magnified difference.
    #[arg(long, value_name = "PNG")]
    pub preview: Option<PathBuf>,
    /// Where the attacks that train networks (cl, dynamic) compute.
    #[command(flatten)]
    pub compute: ComputeArgs,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Print splits, class names and counts, image shape and per-channel mean/std.
    Info {
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Write a labelled grid of sample images (a few per class) as a PNG.
    Preview {
        #[command(flatten)]
        source: SourceArgs,
        /// Output PNG file.
        #[arg(short, long)]
        output: PathBuf,
        /// Which split to show.
        #[arg(long, value_enum, default_value_t = Split::Train)]
        split: Split,
        /// Images per class (one row per class).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
        per_class: u32,
        /// Show at most this many classes (the first ones).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        max_classes: u32,
        /// Magnification of each image (1 = original pixels).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
        scale: u32,
    },
    /// Write a dataset as a clean vab bundle (.safetensors; no sample poisoned).
    Bundle {
        #[command(flatten)]
        source: SourceArgs,
        /// Output bundle file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Download a dataset from its official URL, verify its SHA-256 and unpack it.
    Fetch {
        /// Dataset to download.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(vab_data::fetch::DATASETS))]
        name: String,
        /// Directory to download into.
        #[arg(long, default_value = "data")]
        dir: PathBuf,
        /// Fetch the same files from this base URL instead (a mirror); checksums still apply.
        #[arg(long, value_name = "URL")]
        mirror: Option<String>,
    },
}

/// Where to read a dataset from, and how.
#[derive(Args, Debug)]
pub struct SourceArgs {
    /// Dataset: a CIFAR binary folder, an MNIST-style IDX folder, an image folder
    /// (train/<class>/*.jpg, test/<class>/*.jpg) or a .tar/.tar.gz/.tar.xz of one, or a vab bundle.
    pub path: PathBuf,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// How to load a dataset.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Resize every image to S×S pixels (image folders and archives only).
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub resize: Option<u32>,
    /// Directory of the decoded-image cache [default: $VAB_CACHE_DIR, $XDG_CACHE_HOME/vab or ~/.cache/vab].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Neither read nor write the decoded-image cache.
    #[arg(long)]
    pub no_cache: bool,
}

/// A dataset split.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `vab …` lines of the fenced `sh` blocks of `text`, continuation lines joined and
    /// trailing comments dropped, split into words (the README quotes nothing).
    fn vab_commands(text: &str) -> Vec<Vec<String>> {
        let mut commands = Vec::new();
        let mut in_sh = false;
        let mut pending = String::new();
        for line in text.lines() {
            match line.trim() {
                "```sh" => in_sh = true,
                "```" => in_sh = false,
                _ if in_sh => {
                    let code = line.split(" #").next().unwrap_or("").trim_end();
                    if let Some(head) = code.strip_suffix('\\') {
                        pending.push_str(head);
                        continue;
                    }
                    pending.push_str(code);
                    let words: Vec<String> = pending.split_whitespace().map(String::from).collect();
                    if words.first().is_some_and(|w| w == "vab" || w.ends_with("/vab")) {
                        commands.push(words);
                    }
                    pending.clear();
                }
                _ => {}
            }
        }
        commands
    }

    /// Every command the README and docs show parses as a vab invocation, so they cannot
    /// drift from the CLI.
    #[test]
    fn every_documented_command_parses() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = vec![root.join("README.md")];
        files.extend(std::fs::read_dir(root.join("docs")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "md")));
        let mut checked = 0;
        for file in &files {
            for words in vab_commands(&std::fs::read_to_string(file).unwrap()) {
                if let Err(e) = Cli::try_parse_from(&words) {
                    panic!("{}: `{}` does not parse:\n{e}", file.display(), words.join(" "));
                }
                checked += 1;
            }
        }
        assert!(checked >= 8, "only {checked} documented commands found; did the README's code blocks change form?");
    }

    #[test]
    fn commands_are_extracted_with_continuations_and_without_comments() {
        let text = "```sh\nvab train --resume r   # note\ncargo build\nvab poison --data d \\\n  --attack badnets -o b\n```\nvab outside\n";
        let words = vab_commands(text);
        assert_eq!(words, vec![vec!["vab", "train", "--resume", "r"], vec!["vab", "poison", "--data", "d", "--attack", "badnets", "-o", "b"]]);
    }
}
