//! Whole runs of the comparison defenses on the synthetic poisoned set of `toy`: their phases
//! run in order with their epochs recorded, what they isolate or prune is what the
//! configuration asks, and a run killed mid-way resumes to the same model. Their quality is
//! measured on real CIFAR-10 (bench/results/table1-cpu.md).

use std::panic::{catch_unwind, AssertUnwindSafe};

use vab_core::backend::Backend;
use vab_core::config::TrainConfig;
use std::sync::Mutex;

use vab_core::defenses::abl::train::{train_abl, Outcome};
use vab_core::defenses::clean_reserve;
use vab_core::defenses::dbd::train::{train_dbd, Outcome as DbdOutcome};
use vab_core::defenses::fine_pruning::train::{train_fp, Outcome as FpOutcome};
use vab_core::defenses::nad::train::{train_nad, Outcome as NadOutcome};
use vab_core::engine::progress::{Silent, TrainProgress};

mod common;
use common::{KillAt, DEFENSE_BASE};

/// The shared base, evaluating every 3 epochs (so the phases' ends show), with ABL's section.
fn config() -> String {
    DEFENSE_BASE.replace("eval_every = 2", "eval_every = 3") + "[abl]\nisolation_epochs = 2\nisolation_ratio = 0.1\nunlearning_epochs = 2\nunlearning_batch_size = 16\n"
}

/// Runs one at a time: the device's random generator is shared by the whole process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run_with(dir: &std::path::Path, resume: bool, progress: &dyn TrainProgress) -> vab_core::Result<Outcome> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = TrainConfig::from_toml(&config()).unwrap();
    let (train, evals, _) = common::data(true);
    train_abl(&config, Backend::Flex, &train, &evals, dir, resume, progress)
}

#[test]
fn the_phases_run_in_order_and_a_killed_run_resumes_exactly() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let outcome = run_with(a.path(), false, &Silent).unwrap();
    eprintln!("synthetic ABL run: {:?}", outcome.summary.metrics);
    assert_eq!((outcome.summary.epochs, outcome.summary.train_samples), (6, 800));
    // ⌊0.1 · 800⌋ isolated, lowest loss first.
    let isolation = &outcome.isolation;
    assert_eq!(isolation.isolated.len(), 80);
    assert!(isolation.isolated.windows(2).all(|w| isolation.losses[w[0]] <= isolation.losses[w[1]]));
    let highest_isolated = isolation.losses[*isolation.isolated.last().unwrap()];
    assert!(isolation.rest().iter().all(|&i| isolation.losses[i] >= highest_isolated));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(a.path().join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let phases: Vec<&str> = lines.iter().map(|l| l["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["isolation", "isolation", "training", "training", "unlearning", "unlearning"]);
    assert_eq!(lines.iter().map(|l| l["epoch"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    // Unlearning runs at its own rate; the last epoch of every phase is evaluated.
    assert_eq!(lines[4]["lr"].as_f64(), Some(5e-4));
    assert!([1, 3, 5].iter().all(|&i| lines[i]["ba"].is_number()), "{lines:?}");
    assert_eq!(outcome.before_unlearning.as_ref().map(|m| m.ba), lines[3]["ba"].as_f64());
    assert!(a.path().join("model.safetensors").is_file());

    let killed = catch_unwind(AssertUnwindSafe(|| run_with(b.path(), false, &KillAt::new(3))));
    assert!(killed.is_err(), "the simulated kill should stop the run");
    let resumed = run_with(b.path(), true, &Silent).unwrap();
    assert_eq!(resumed.isolation, outcome.isolation);
    assert_eq!((&resumed.summary.metrics, &resumed.before_unlearning), (&outcome.summary.metrics, &outcome.before_unlearning));
    let file = |d: &tempfile::TempDir, name: &str| std::fs::read(d.path().join(name)).unwrap();
    assert_eq!(file(&a, "model.safetensors"), file(&b, "model.safetensors"), "the resumed model differs");
}

/// A NAD run; `reserve_of` draws its clean reserve from the poison flags.
fn nad_run_with(dir: &std::path::Path, resume: bool, progress: &dyn TrainProgress) -> vab_core::Result<NadOutcome> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = TrainConfig::from_toml(&(config() + "[nad]\nteacher_epochs = 2\nepochs = 2\nbatch_size = 16\n")).unwrap();
    let (train, evals, poisoned) = common::data(true);
    let reserve = clean_reserve::draw(&poisoned, 0.05, 3).unwrap();
    train_nad(&config, Backend::Flex, &train, &evals, &reserve, dir, resume, progress)
}

#[test]
fn nad_trains_a_teacher_then_distils_and_a_run_killed_in_either_resumes_exactly() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let outcome = nad_run_with(a.path(), false, &Silent).unwrap();
    eprintln!("synthetic NAD run: before {:?}, teacher {:?}, after {:?}", outcome.before_distillation, outcome.teacher, outcome.summary.metrics);
    assert_eq!(outcome.summary.epochs, 8);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(a.path().join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let phases: Vec<&str> = lines.iter().map(|l| l["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["training", "training", "training", "training", "teacher", "teacher", "distillation", "distillation"]);
    // Both reserve phases at nad.lr on the official schedule: 0.1 for 2 epochs.
    assert!(lines[4..].iter().all(|l| l["lr"].as_f64() == Some(0.1)), "{lines:?}");
    assert_eq!(outcome.before_distillation.as_ref().map(|m| m.ba), lines[3]["ba"].as_f64());
    assert_eq!(outcome.teacher.as_ref().map(|m| m.ba), lines[5]["ba"].as_f64());
    assert_eq!(outcome.summary.metrics.ba, lines[7]["ba"].as_f64().unwrap());

    // Killed in the teacher's second epoch, then in the distillation's second: each resume
    // restores the frozen network of its phase (the backdoored one, then the teacher).
    for (kill, resume) in [(5, false), (2, true)] {
        let killed = catch_unwind(AssertUnwindSafe(|| nad_run_with(b.path(), resume, &KillAt::new(kill))));
        assert!(killed.is_err(), "the simulated kill should stop the run");
    }
    let resumed = nad_run_with(b.path(), true, &Silent).unwrap();
    assert_eq!((&resumed.summary.metrics, &resumed.teacher, &resumed.before_distillation), (&outcome.summary.metrics, &outcome.teacher, &outcome.before_distillation));
    let file = |d: &tempfile::TempDir, name: &str| std::fs::read(d.path().join(name)).unwrap();
    assert_eq!(file(&a, "model.safetensors"), file(&b, "model.safetensors"), "the resumed model differs");
}

fn fp_run_with(dir: &std::path::Path, resume: bool, progress: &dyn TrainProgress) -> vab_core::Result<(FpOutcome, Vec<usize>, Vec<bool>)> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = TrainConfig::from_toml(&(config() + "[fp]\nfinetune_epochs = 2\n")).unwrap();
    let (train, evals, poisoned) = common::data(true);
    let reserve = clean_reserve::draw(&poisoned, 0.05, 3).unwrap();
    let outcome = train_fp(&config, Backend::Flex, &train, &evals, &reserve, dir, resume, progress)?;
    Ok((outcome, reserve, poisoned))
}

#[test]
fn fine_pruning_prunes_within_its_accuracy_bound_and_a_killed_run_resumes_exactly() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (outcome, reserve, poisoned) = fp_run_with(a.path(), false, &Silent).unwrap();
    assert!(reserve.len() == 40 && reserve.iter().all(|&i| !poisoned[i]));
    let pruning = &outcome.pruning;
    eprintln!("synthetic FP run: cut {} of {} channels, sweep {:?}, {:?}", pruning.pruned, pruning.order.len(), pruning.sweep, outcome.summary.metrics);
    // The small network's 256 channels, 3 per step (⌈0.01 · 256⌉); every step kept is within
    // 10 % of the unpruned reserve accuracy, and the sweep stopped at the first that was not.
    assert_eq!(pruning.order.len(), 256);
    let unpruned = pruning.sweep[0].1;
    let kept: Vec<&(usize, f64)> = pruning.sweep.iter().filter(|s| s.0 <= pruning.pruned).collect();
    assert!(kept.iter().all(|s| s.0 % 3 == 0 && (unpruned - s.1) / unpruned < 0.1), "{:?}", pruning.sweep);
    let last = pruning.sweep.last().unwrap();
    assert!(last.0 == pruning.pruned || (unpruned - last.1) / unpruned >= 0.1, "{:?}", pruning.sweep);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(a.path().join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let phases: Vec<&str> = lines.iter().map(|l| l["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["training", "training", "training", "training", "fine_tuning", "fine_tuning"]);
    assert_eq!(outcome.before_pruning.as_ref().map(|m| m.ba), lines[3]["ba"].as_f64());
    assert!(outcome.after_pruning.is_some());

    let killed = catch_unwind(AssertUnwindSafe(|| fp_run_with(b.path(), false, &KillAt::new(5))));
    assert!(killed.is_err(), "the simulated kill should stop the run");
    let (resumed, _, _) = fp_run_with(b.path(), true, &Silent).unwrap();
    assert_eq!(resumed.pruning, outcome.pruning);
    assert_eq!((&resumed.summary.metrics, &resumed.after_pruning), (&outcome.summary.metrics, &outcome.after_pruning));
    let file = |d: &tempfile::TempDir, name: &str| std::fs::read(d.path().join(name)).unwrap();
    assert_eq!(file(&a, "model.safetensors"), file(&b, "model.safetensors"), "the resumed model differs");
}

fn dbd_run_with(dir: &std::path::Path, resume: bool, progress: &dyn TrainProgress) -> vab_core::Result<(DbdOutcome, Vec<bool>)> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dbd = "[dbd]\nsimclr_epochs = 2\nsimclr_batch_size = 64\nwarmup_epochs = 2\nsemi_epochs = 2\nsemi_batch_size = 32\naugment = { crop_padding = 0, flip = true }\n";
    let config = TrainConfig::from_toml(&(config() + dbd)).unwrap();
    let (train, evals, poisoned) = common::data(true);
    Ok((train_dbd(&config, Backend::Flex, &train, &evals, dir, resume, progress)?, poisoned))
}

#[test]
fn dbd_runs_simclr_warmup_and_mixmatch_and_a_run_killed_in_any_resumes_exactly() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (outcome, poisoned) = dbd_run_with(a.path(), false, &Silent).unwrap();
    let unlabelled = outcome.unlabelled_flags();
    let caught = unlabelled.iter().zip(&poisoned).filter(|(u, p)| **u && **p).count();
    eprintln!("synthetic DBD run: SimCLR loss {:?}, after warm-up {:?}, final {:?}; {caught} of {} poisoned unlabelled", outcome.simclr_loss, outcome.after_warmup, outcome.summary.metrics, poisoned.iter().filter(|p| **p).count());
    assert_eq!(outcome.summary.epochs, 6);
    // ⌊0.5 · 800⌋ labelled; the rest unlabelled.
    assert_eq!((outcome.labelled.len(), unlabelled.iter().filter(|u| **u).count()), (400, 400));
    assert_eq!(outcome.labelled_per_class.iter().sum::<usize>(), 400);
    assert!(outcome.simclr_loss.is_some_and(|l| l.is_finite() && l > 0.0), "{:?}", outcome.simclr_loss);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(a.path().join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let phases: Vec<&str> = lines.iter().map(|l| l["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["simclr", "simclr", "warmup", "warmup", "semi", "semi"]);
    // SimCLR's cosine from 0.4; the warm-up and MixMatch at Adam's 0.002.
    assert_eq!((lines[0]["lr"].as_f64(), lines[1]["lr"].as_f64(), lines[3]["lr"].as_f64(), lines[5]["lr"].as_f64()), (Some(0.4), Some(0.2), Some(0.002), Some(0.002)));
    assert_eq!(outcome.after_warmup.as_ref().map(|m| m.ba), lines[3]["ba"].as_f64());

    // Killed in SimCLR's second epoch (the projection head comes back from the checkpoint), in
    // the warm-up's second and in MixMatch's second.
    for (kill, resume) in [(1, false), (2, true), (2, true)] {
        let killed = catch_unwind(AssertUnwindSafe(|| dbd_run_with(b.path(), resume, &KillAt::new(kill))));
        assert!(killed.is_err(), "the simulated kill should stop the run");
    }
    let (resumed, _) = dbd_run_with(b.path(), true, &Silent).unwrap();
    assert_eq!((&resumed.summary.metrics, &resumed.after_warmup, &resumed.labelled), (&outcome.summary.metrics, &outcome.after_warmup, &outcome.labelled));
    let file = |d: &tempfile::TempDir, name: &str| std::fs::read(d.path().join(name)).unwrap();
    assert_eq!(file(&a, "model.safetensors"), file(&b, "model.safetensors"), "the resumed model differs");
}
