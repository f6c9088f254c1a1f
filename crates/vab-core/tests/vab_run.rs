//! Whole V&B runs on a small synthetic poisoned set: the run finishes with every output and
//! event, a run killed mid-way resumes to the same models, a tiny suspicious set does not crash
//! stage 3, and the automatic warm-up ends within its cap. Detection quality is checked on real CIFAR-10
//! (vab-cli's tests): on toy data whole classes are learnt with near-zero entropy, which min-max
//! normalisation cannot separate from the trigger.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use vab_core::backend::Backend;
use vab_core::config::TrainConfig;
use vab_core::defenses::vab::train::{train_vab, Outcome};
use vab_core::defenses::vab::Unobserved;
use vab_core::detection::Detection;
use vab_core::engine::progress::{Silent, TrainProgress};

mod common;
use common::{data, DEFENSE_BASE};

/// The shared base with V&B's section.
fn config() -> String {
    format!("{DEFENSE_BASE}{}", r#"[vab]
stage2_epochs = 2
refresh_every = 1
views = 2
[vab.victim]
lr = 1e-3
weight_decay = 5e-4
batch_size = 32
augment = { crop_padding = 0, flip = false }
"#)
}

/// Runs one at a time: the device's random generator is shared by the whole process, so two
/// runs on parallel test threads would interleave their draws.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(config: &str, poison: bool, dir: &std::path::Path) -> (Outcome, Vec<bool>) {
    run_with(config, poison, dir, false, &Silent).unwrap()
}

fn run_with(config: &str, poison: bool, dir: &std::path::Path, resume: bool, progress: &dyn TrainProgress) -> vab_core::Result<(Outcome, Vec<bool>)> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = TrainConfig::from_toml(config).unwrap();
    let (train, evals, poisoned) = data(poison);
    let outcome = train_vab(&config, Backend::Flex, &train, &evals, dir, resume, progress, &mut Unobserved)?;
    Ok((outcome, poisoned))
}

/// Panics when Beneficiary epoch 3 starts, as a kill would stop the process.
struct KillAtBeneficiaryEpoch3;

impl TrainProgress for KillAtBeneficiaryEpoch3 {
    fn start(&self, label: &str, _: usize, _: usize) {
        if label.starts_with("beneficiary epoch 3/") {
            panic!("simulated kill");
        }
    }
    fn batch(&self, _: usize, _: f32) {}
    fn finish(&self, _: &str) {}
}

#[test]
fn a_poisoned_run_finishes_with_every_output_and_a_killed_run_resumes_exactly() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (outcome, poisoned) = run(&config(), true, a.path());
    let detection = Detection::score(&outcome.split.suspicious_flags(), &poisoned);
    eprintln!("synthetic run: {:?}, detection {}", outcome.summary, detection.describe());
    assert_eq!(outcome.split.suspicious.len() + outcome.split.credible.len(), 800);
    assert_eq!((outcome.summary.epochs, outcome.summary.train_samples), (4, 800));
    assert!(outcome.after_stage2.is_some() && outcome.stages.len() == 3);
    let metrics = std::fs::read_to_string(a.path().join("metrics.jsonl")).unwrap();
    // Victim: epoch 0, 2 warm-up epochs, then one per Beneficiary epoch (refresh_every 1);
    // refreshes: 3 in warm-up, then one per Beneficiary epoch.
    assert_eq!(metrics.matches("\"event\":\"victim\"").count(), 3 + 4);
    assert_eq!(metrics.matches("\"event\":\"refresh\"").count(), 3 + 4);
    assert_eq!(metrics.matches("\"event\":\"beneficiary\"").count(), 4);
    assert!(a.path().join("model.safetensors").is_file() && a.path().join("victim.safetensors").is_file());
    let killed = catch_unwind(AssertUnwindSafe(|| run_with(&config(), true, b.path(), false, &KillAtBeneficiaryEpoch3)));
    assert!(killed.is_err(), "the simulated kill should stop the run");
    let (resumed, _) = run_with(&config(), true, b.path(), true, &Silent).unwrap();
    assert!(resumed.split == outcome.split, "the resumed run ends with another split");
    assert_eq!((&resumed.summary.metrics, &resumed.after_stage2), (&outcome.summary.metrics, &outcome.after_stage2));
    let file = |d: &tempfile::TempDir, name: &str| std::fs::read(d.path().join(name)).unwrap();
    assert_eq!(file(&a, "model.safetensors"), file(&b, "model.safetensors"), "the resumed Beneficiary differs");
    assert_eq!(file(&a, "victim.safetensors"), file(&b, "victim.safetensors"), "the resumed Victim differs");
    // The same events with the same figures, throughput aside.
    let events = |d: &tempfile::TempDir| {
        let text = String::from_utf8(file(d, "metrics.jsonl")).unwrap();
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("img_s");
                v
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(events(&a), events(&b), "metrics.jsonl of the resumed run differs");
}

#[test]
fn a_single_suspicious_sample_and_clean_data_do_not_break_stage_3() {
    // t_f = 0 after warm-up: only the lowest-entropy sample is suspicious; its unlabelled batch
    // of one is cycled through every iteration.
    let dir = tempfile::tempdir().unwrap();
    let config = config().replace("views = 2", "views = 1\nwarmup = { kind = \"steps\", step = 1.0, end = 0.0 }");
    let (outcome, _) = run(&config, false, dir.path());
    eprintln!("t_f 0: {} suspicious", outcome.split.suspicious.len());
    assert!(outcome.split.suspicious.len() < 80, "{}", outcome.split.suspicious.len());
    assert!(outcome.summary.metrics.ba > 50.0, "{:?}", outcome.summary);
    assert_eq!(outcome.summary.metrics.asr, None);
    assert!(dir.path().join("victim.safetensors").is_file());
}

#[test]
fn automatic_warm_up_ends_with_a_threshold_from_the_mixture() {
    let dir = tempfile::tempdir().unwrap();
    let config = config().replace("views = 2", "views = 1\nwarmup = { kind = \"auto\", max_epochs = 3 }");
    let (outcome, _) = run(&config, true, dir.path());
    eprintln!("auto warm-up: t_f {:.3}, {} suspicious", outcome.split.t_f, outcome.split.suspicious.len());
    assert!(outcome.split.t_f > 0.0 && outcome.split.t_f < 1.0, "t_f {}", outcome.split.t_f);
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let warm_up_epochs = metrics.matches("\"event\":\"victim\"").count() - 4;
    assert!((1..=4).contains(&warm_up_epochs), "epoch 0 plus at most max_epochs: {warm_up_epochs}");
}

#[test]
fn batch_split_splits_as_batch_and_suppresses_credible_labels_with_eval_mode_logits() {
    let with = |norm: &str| config().replace("views = 2", "views = 1") + &format!("entropy_norm = \"{norm}\"\n");
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (batch, _) = run(&with("batch"), true, a.path());
    let (batch_split, _) = run(&with("batch_split"), true, b.path());
    // The Victim never sees the Beneficiary, so both runs split alike.
    assert_eq!((&batch_split.split.suspicious, &batch_split.split.logits), (&batch.split.suspicious, &batch.split.logits));
    assert_eq!(batch.split.credible_logits, None);
    let credible = batch_split.split.credible_logits.as_ref().expect("eval-mode logits for the credible labels");
    assert_eq!(credible.len(), batch_split.split.logits.len());
    assert_ne!(credible, &batch_split.split.logits, "eval-mode logits should differ from batch-statistics ones");
    assert_eq!(batch_split.split.credible_suppression_logits(), credible.as_slice());
}

/// On the toy data the Victim is sure of every class-0 sample, so the poison's share of
/// label 0's suspicious samples stays below the check's bar: the check runs, rejects label 0's
/// samples only (the poison is relabelled 0) and leaves the split as the entropy made it; a
/// killed run resumes exactly. The narrowing itself is tested in `label_check.rs`.
#[test]
fn the_label_check_rejects_the_poisoned_label_and_a_killed_run_resumes_exactly() {
    let config = config().replace("views = 2", "views = 1\nwarmup = { kind = \"steps\", step = 1.0, end = 0.05 }\nlabel_check = { epochs = 20 }");
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (outcome, _) = run(&config, true, a.path());
    let metrics = std::fs::read_to_string(a.path().join("metrics.jsonl")).unwrap();
    let check: serde_json::Value = metrics.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|e| e["event"] == "label_check").expect("a label_check event");
    let rejected: Vec<u64> = check["labels"].as_array().unwrap().iter().map(|f| f["rejected"].as_u64().unwrap()).collect();
    assert!(rejected[0] > 0 && rejected[1..].iter().all(|&r| r == 0), "the checker should reject label 0's samples only: {check}");
    let killed = catch_unwind(AssertUnwindSafe(|| run_with(&config, true, b.path(), false, &KillAtBeneficiaryEpoch3)));
    assert!(killed.is_err(), "the simulated kill should stop the run");
    let (resumed, _) = run_with(&config, true, b.path(), true, &Silent).unwrap();
    assert!(resumed.split == outcome.split, "the resumed run ends with another split");
    assert_eq!(resumed.summary.metrics, outcome.summary.metrics);
}
