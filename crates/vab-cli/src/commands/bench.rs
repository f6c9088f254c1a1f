//! `vab bench MATRIX.toml --out DIR` (a benchmark matrix) and `vab bench step` (throughput).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use vab_attacks::poison::PoisonSpec;
use vab_core::backend::Backend;
use vab_core::config::TrainConfig;
use vab_core::defenses::vab::stage_bench::{self, StageKind};
use vab_data::{Bundle, Dataset};

use super::poison::poison_with;
use super::train::{train_run, RunInputs};
use crate::cli::{BenchArgs, BenchCommand, LoadArgs};
use crate::matrix::{cell_config, same_run, AttackRow, Matrix};
use crate::results::{self, CellResult};

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match (args.command, args.matrix, args.out) {
        (Some(step), _, _) => bench_step(step),
        (None, Some(matrix), Some(out)) => run_matrix(&matrix, &out, &args.load, args.compute.backend()?),
        _ => bail!("give a matrix file and --out DIR, or `vab bench step`"),
    }
}

/// Makes the missing bundles, then runs every cell not finished yet (resuming interrupted
/// ones), rewriting the results after each cell.
fn run_matrix(path: &Path, out: &Path, load: &LoadArgs, backend: Backend) -> anyhow::Result<()> {
    let matrix = Matrix::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let base = std::fs::read_to_string(&matrix.config).with_context(|| format!("{}: cannot read the matrix's config", matrix.config.display()))?;
    let cells = matrix.cells();
    // Every cell's configuration, checked before any bundle is made or cell trained.
    let configs = cells.iter().map(|cell| cell_config(&base, cell.defense, cell.seed)).collect::<Result<Vec<_>, _>>().map_err(|e| anyhow::anyhow!("{}: {e}", matrix.config.display()))?;
    for folder in ["bundles", "cells"] {
        std::fs::create_dir_all(out.join(folder)).with_context(|| format!("{}: cannot create", out.join(folder).display()))?;
    }
    let mut dataset = None;
    for attack in &matrix.attacks {
        ensure_bundle(&matrix, attack, out, load, backend, &mut dataset)?;
    }
    drop(dataset);

    let mut finished = Vec::new();
    for (i, (cell, config)) in cells.iter().zip(configs).enumerate() {
        let dir = cell.dir(out);
        let label = format!("cell {}/{}: {} × {}, seed {}", i + 1, cells.len(), cell.attack.name, cell.defense.name, cell.seed);
        let config_file = dir.join("config.toml");
        let started = dir.join("checkpoint").exists() || dir.join("summary.json").exists();
        let recorded = std::fs::read_to_string(&config_file).unwrap_or_default();
        if started && !same_run(cell.defense.defense(), &recorded, &config) {
            bail!("{}: this cell was run with another configuration; delete it (or use another --out) to run it again", dir.display());
        }
        if dir.join("summary.json").exists() {
            eprintln!("{label}: finished earlier, skipped");
        } else {
            eprintln!("{label}{}", if started { ": resuming" } else { "" });
            if !started && dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("{}: cannot clear", dir.display()))?;
            }
            let bundle = bundle_file(out, cell.attack).canonicalize().context("the bundle made above")?;
            let inputs = RunInputs { bundle, defense: cell.defense.defense().into(), backend, bundle_sha256: None };
            train_run(&inputs, &config, &config_file, &dir, started).with_context(|| format!("{label} failed; run the bench again to resume it"))?;
        }
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json"))?)?;
        finished.push(CellResult::from_summary(&cell.attack.name, &cell.defense.name, cell.seed, &summary).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?);
        let heading = heading(path, &finished, cells.len());
        results::write(out, &heading, &finished).with_context(|| format!("{}: cannot write results", out.display()))?;
    }
    print!("{}", std::fs::read_to_string(out.join("results.md"))?);
    Ok(())
}

/// Where the bench keeps the bundle of `attack`.
fn bundle_file(out: &Path, attack: &AttackRow) -> PathBuf {
    out.join("bundles").join(format!("{}.safetensors", attack.name))
}

/// Writes the attack's bundle unless it exists; an existing one must come from the same
/// attack definition (kept beside it as JSON).
fn ensure_bundle(matrix: &Matrix, attack: &AttackRow, out: &Path, load: &LoadArgs, backend: Backend, dataset: &mut Option<Dataset>) -> anyhow::Result<()> {
    let bundle = bundle_file(out, attack);
    let spec_file = bundle.with_extension("json");
    let spec = serde_json::to_string_pretty(&serde_json::json!({ "data": matrix.data, "attack": attack }))?;
    if bundle.exists() {
        if std::fs::read_to_string(&spec_file).ok().as_deref() != Some(&spec) {
            bail!("{}: made from another attack definition or dataset than the matrix's [[attack]] {:?}; delete it (and its cells) or use another --out", bundle.display(), attack.name);
        }
        return Ok(());
    }
    if dataset.is_none() {
        *dataset = Some(super::load_source_dataset(&matrix.data, load)?);
    }
    let data = dataset.as_ref().expect("loaded above");
    let source = matrix.data.display().to_string();
    let made = match attack.attack() {
        None => Bundle::clean(data.clone(), source),
        Some(name) => {
            let params = serde_json::to_value(&attack.params)?;
            let spec = PoisonSpec { rate: attack.rate, convention: None, label_rule: attack.label_rule, target: attack.target, seed: attack.seed };
            let (bundle, record) = poison_with(data, &source, name, (&params, "its parameters"), &spec, load.cache_dir.as_deref(), backend).with_context(|| format!("[[attack]] {:?}", attack.name))?;
            eprintln!("{}: {} poisoned training samples, {} triggered test images", attack.name, record.poisoned, bundle.test_triggered.len());
            bundle
        }
    };
    made.write(&bundle)?;
    std::fs::write(&spec_file, spec).with_context(|| format!("{}: cannot write", spec_file.display()))?;
    Ok(())
}

/// The lines above the results table: what was run, on what machine, how long it took.
fn heading(matrix: &Path, finished: &[CellResult], total: usize) -> String {
    let wall: f64 = finished.iter().map(|c| c.wall_s).sum();
    format!(
        "# Results of `{}`\n\n{} of {total} cells finished; their runs took {:.1} min in total (sum of the cells' wall times). \
         Measured with vab {} on {}. Figures are percent; a ± column is the mean ± sample standard deviation over seeds. \
         Precision and recall: detection of the poisoned training samples by V&B's final suspicious set, ABL's isolated set or DBD's last unlabelled set.",
        matrix.display(),
        finished.len(),
        wall / 60.0,
        env!("CARGO_PKG_VERSION"),
        machine()
    )
}

/// "CPU model, N threads", or the thread count where the model is unknown.
fn machine() -> String {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{} ({threads} threads available)", vab_core::cpu::model().unwrap_or_else(|| "an unknown CPU".into()))
}

/// `vab bench step`.
fn bench_step(command: BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Step { model, stage, config, unlabelled, batch, infer_batch, size, warmup, steps, json, profile, compute } = command;
    let backend = compute.backend()?;
    anyhow::ensure!(batch > 0 && infer_batch > 0 && steps > 0 && size >= 8, "batch sizes and steps must be positive and size at least 8");
    let arch = |name: &str| serde_json::from_value::<vab_core::models::Arch>(serde_json::Value::String(name.into()));
    if let Some(stage) = stage {
        let stage = serde_json::from_value(serde_json::Value::String(stage))?;
        return bench_stage(stage, config.as_deref(), model.as_deref().map(arch).transpose()?, unlabelled, [3, size, size], warmup, steps, json, backend);
    }
    anyhow::ensure!(config.is_none(), "--config applies to --stage only");
    let arch = arch(model.as_deref().unwrap_or("resnet18"))?;
    let result = vab_core::bench::bench_step(backend, arch, batch, infer_batch, [3, size, size], warmup, steps, profile).map_err(anyhow::Error::msg)?;
    if json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "{:?} batch {batch}: train {:.1} img/s, inference (batch {infer_batch}) {:.1} img/s, {} threads, {} backend, {} ({})",
            result.model,
            result.train_img_s,
            result.infer_img_s,
            result.threads,
            result.backend,
            result.cpu.as_deref().unwrap_or("unknown CPU"),
            result.simd
        );
        if let Some(ops) = &result.profile {
            print_profile(ops, batch as f64 / result.train_img_s);
        }
    }
    Ok(())
}

/// The paper's settings, what `--stage` times unless given another configuration.
const PAPER_CONFIG: &str = include_str!("../../../../configs/paper-cifar10.toml");

/// `vab bench step --stage`.
#[allow(clippy::too_many_arguments)]
fn bench_stage(stage: StageKind, config: Option<&Path>, arch: Option<vab_core::models::Arch>, unlabelled: usize, image: [usize; 3], warmup: usize, steps: usize, json: bool, backend: Backend) -> anyhow::Result<()> {
    let (text, source) = match config {
        Some(path) => (std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?, path.display().to_string()),
        None => (PAPER_CONFIG.to_string(), "configs/paper-cifar10.toml (built in)".to_string()),
    };
    let mut config = TrainConfig::from_toml(&text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    if let Some(arch) = arch {
        config.model.arch = arch;
    }
    anyhow::ensure!(config.vab.is_some(), "{source}: --stage needs a [vab] section");
    let result = stage_bench::bench_stage(&config, backend, stage, image, unlabelled, warmup, steps).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    if json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        let s = &result.settings;
        println!(
            "{:?} ({:?}, batch {}, {} views, {} unlabelled × {} views, {:?}): {:.3} s per batch ({:.1} img/s), {} threads, {} ({}); settings from {source}",
            result.stage, s.model, s.batch, s.views, s.unlabelled, s.unlabelled_views, s.mix, result.median_s, result.img_s, result.threads,
            result.cpu.as_deref().unwrap_or("unknown CPU"),
            result.simd
        );
    }
    Ok(())
}

/// The kernels' share of a training step, largest first, and what is left.
fn print_profile(ops: &[vab_core::models::op_profile::OpTime], step_s: f64) {
    println!("{:>9} {:>6} {:>5}  operation (per training step)", "ms", "%", "calls");
    for op in ops {
        println!("{:>9.1} {:>6.1} {:>5}  {}", 1e3 * op.seconds, 100.0 * op.seconds / step_s, op.calls, op.op);
    }
    let rest = step_s - ops.iter().map(|op| op.seconds).sum::<f64>();
    println!("{:>9.1} {:>6.1} {:>5}  the rest: burn's elementwise operations, optimiser, autodiff graph", 1e3 * rest, 100.0 * rest / step_s, "");
}
