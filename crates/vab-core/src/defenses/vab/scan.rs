//! `vab scan`: V&B's Victim alone, to rank a dataset's samples by how likely they are poisoned
//! without training a final network.
//!
//! The Victim warms up as in stage 1 ([`super::victim::warm_up`]); with `refreshes` K it then
//! trains K more epochs on the suspicious set, the split refreshed after each at the warm-up's
//! final t_f, as V&B's stage-2 refreshes do. The cut-off is the configured schedule's final t_f,
//! or with [`Cutoff::Auto`] the automatic warm-up's mixture rule (method.md §4.3) within as
//! many warm-up epochs as the schedule has. Either way the two-component mixture of the final
//! entropies is returned, so the caller can say whether they separate at all. With
//! `label_check`, a checker network then judges which labels hold poison and the suspicious set
//! narrows to those labels ([`super::label_check`], beyond the paper).

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use serde::{Deserialize, Serialize};

use super::gmm::Mixture;
use super::label_check::{check_labels, LabelCheck};
use super::threshold::Warmup;
use super::victim::{warm_up, Split, Victim, EM_ITERATIONS};
use super::{Context, RefreshObserver, Stage};
use crate::backend::Backend;
use crate::config::TrainConfig;
use crate::data::TrainingSet;
use crate::engine::export::{export_pytorch, ModelCard};
use crate::engine::progress::TrainProgress;
use crate::error::{CoreError, Result};

/// How a scan chooses its final cut-off t_f.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cutoff {
    /// The configured warm-up's final t_f (`vab.warmup`).
    Schedule,
    /// The automatic warm-up (method.md §4.3): t_f = μ1 + 0.5σ1 once the entropy mixture
    /// separates, within as many warm-up epochs as the configured schedule has (or its own
    /// `max_epochs` when the configuration already asks for `auto`).
    Auto,
}

/// What a scan found.
pub struct ScanOutcome {
    /// The final split; `members[i]` is the bundle index of sample i.
    pub split: Split,
    pub members: Vec<usize>,
    /// The two-component mixture fitted to the final normalised entropies (`None` for fewer
    /// than two samples).
    pub mixture: Option<Mixture>,
    /// The label check's findings, when it ran; `split` is then already narrowed.
    pub label_check: Option<LabelCheck>,
    pub victim_epochs: usize,
    pub wall_s: f64,
}

/// The warm-up a scan runs for `cutoff`.
pub fn scan_warmup(configured: Warmup, cutoff: Cutoff) -> Warmup {
    match (cutoff, configured) {
        (Cutoff::Schedule, w) | (Cutoff::Auto, w @ Warmup::Auto { .. }) => w,
        (Cutoff::Auto, schedule) => Warmup::Auto { max_epochs: schedule.warmup_epochs().max(1) },
    }
}

/// What a scan does beyond the warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanOptions {
    pub cutoff: Cutoff,
    /// Victim epochs on the suspicious set after warm-up, each followed by a refresh.
    pub refreshes: usize,
    /// Run the label check (`config.train` trains the checker).
    pub label_check: bool,
}

/// Scans `train` with the Victim of `config` (its `[vab]` section) into `dir` (`metrics.jsonl`,
/// `victim.safetensors`), telling `observer` of every refresh.
pub fn scan(config: &TrainConfig, backend: Backend, train: &TrainingSet, dir: &Path, options: ScanOptions, progress: &dyn TrainProgress, observer: &mut dyn RefreshObserver) -> Result<ScanOutcome> {
    let vab = config.vab.as_ref().ok_or_else(|| CoreError::Invalid("a scan needs a [vab] section in the configuration (the Victim's settings; see configs/scan.toml)".into()))?;
    let start = Instant::now();
    std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    let (ctx, members) = Context::new(config, backend, train, None, dir, progress)?;
    let _ = std::fs::remove_file(&ctx.metrics);
    observer.start_after(0)?;
    let warmup = super::config::VabConfig { warmup: scan_warmup(vab.warmup, options.cutoff), ..vab.clone() };
    let mut victim = Victim::new(&ctx, &vab.victim);
    let mut split = warm_up(&mut victim, &ctx, &warmup, observer)?;
    for _ in 0..options.refreshes {
        victim.train_epoch(&ctx, &split.suspicious)?;
        split = victim.resplit(&ctx, vab, split.t_f, Stage::Scan, 0, observer)?;
    }
    let shape = ctx.train.images.shape();
    let card = ModelCard { arch: ctx.arch, in_channels: shape.channels, num_classes: ctx.train.num_classes, normalization: ctx.norm.clone(), image_size: Some([shape.height, shape.width]) };
    export_pytorch(&victim.model.valid(), &card, &dir.join("victim.safetensors"))?;
    let mixture = Mixture::fit(&split.normalised, EM_ITERATIONS);
    let label_check = options.label_check.then(|| check_labels(&ctx, config, &split)).transpose()?;
    if let Some(check) = &label_check {
        split = check.narrow(split, ctx.train.images.labels());
    }
    Ok(ScanOutcome { split, members, mixture, label_check, victim_epochs: victim.state.epochs, wall_s: start.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_as_many_epochs_as_the_schedule() {
        let steps = Warmup::default();
        assert_eq!(scan_warmup(steps, Cutoff::Schedule), steps);
        assert_eq!(scan_warmup(steps, Cutoff::Auto), Warmup::Auto { max_epochs: 2 });
        let linear = Warmup::LinearAfterEpoch0 { end: 0.2, epochs: 3 };
        assert_eq!(scan_warmup(linear, Cutoff::Auto), Warmup::Auto { max_epochs: 3 });
        let auto = Warmup::Auto { max_epochs: 6 };
        assert_eq!(scan_warmup(auto, Cutoff::Auto), auto);
        assert_eq!(scan_warmup(auto, Cutoff::Schedule), auto);
    }
}
