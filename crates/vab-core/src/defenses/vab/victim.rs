//! Method.md §3-§4: the Victim F_v, its entropy refresh and stage 1 (warming up).
//!
//! The Victim trains with Adam at a constant rate on hard labels, without augmentation (the
//! authors' code). A refresh computes e_i = -Σ_k p_ik ln p_ik for every training sample with
//! the Victim in eval mode (or, with `victim.entropy_norm = batch`, on the statistics of random
//! batches) on the un-augmented image, smooths it over refreshes
//! (e ← m·e_new + (1-m)·e_prev), min-max normalises it and splits at t_f:
//! suspicious D_s = {e_norm ≤ t_f}, credible D_c = the rest.
//!
//! Stage 1: epoch 0 trains on everything; each warm-up epoch w ≥ 1 refreshes with the
//! schedule's t_f(w) and trains on D_s; a last refresh at the final t_f gives the split stage 2
//! starts from. With `auto`, each refresh fits a two-component mixture to the normalised
//! entropies instead: once μ1 + 3σ1 < μ2, t_f = μ1 + 0.5σ1 is fixed; until then the Victim
//! trains on the samples the low component claims.

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vab_data::ImageSet;

use super::config::{EntropyNorm, VabConfig, VictimParams};
use super::entropy;
use super::gmm::Mixture;
use super::threshold::Warmup;
use super::{Context, Event, RefreshEvent, RefreshObserver, Stage};
use crate::config::OptimizerConfig;
use crate::engine::batches::{epoch_batches, epoch_order, plain_batches, Normalization, Views};
use crate::engine::eval::{evaluate, logits};
use crate::engine::optim;
use crate::engine::step::{train_pass, train_step};
use crate::error::Result;
use crate::models::Network;

/// EM iterations allowed per mixture fit.
pub const EM_ITERATIONS: usize = 500;

/// The current split of the training set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub t_f: f64,
    /// Normalised (smoothed) entropy of every training sample.
    pub normalised: Vec<f64>,
    /// The Victim's logits for every training sample (un-augmented), row-major [N, K]; the
    /// suppression of stage 3 reads them.
    pub logits: Vec<f32>,
    /// Logits for the suppression of credible labels where they differ from `logits`
    /// (`entropy_norm = "batch_split"`).
    #[serde(default)]
    pub credible_logits: Option<Vec<f32>>,
    pub suspicious: Vec<usize>,
    pub credible: Vec<usize>,
}

impl Split {
    /// The split with only the suspicious samples i for which `suspect(i)` holds left
    /// suspicious; the others join the credible set (kept in index order).
    pub fn narrow_to(self, suspect: impl Fn(usize) -> bool) -> Split {
        let (suspicious, cleared): (Vec<usize>, Vec<usize>) = self.suspicious.iter().partition(|&&i| suspect(i));
        let mut credible = self.credible;
        credible.extend(cleared);
        credible.sort_unstable();
        Split { suspicious, credible, ..self }
    }
}

/// What one refresh of the Victim computes over the training set.
pub struct Refresh {
    /// Normalised (smoothed) entropy of every training sample.
    pub normalised: Vec<f64>,
    /// The logits the entropies come from.
    pub logits: Vec<f32>,
    /// Eval-mode logits for the suppression of credible labels, when `logits` are not.
    pub credible_logits: Option<Vec<f32>>,
}

impl Split {
    /// Splits at `t_f`.
    pub fn at(t_f: f64, refresh: Refresh) -> Self {
        let Refresh { normalised, logits, credible_logits } = refresh;
        let flags = entropy::suspicious(&normalised, t_f);
        let (suspicious, credible) = (0..flags.len()).partition(|&i| flags[i]);
        Self { t_f, normalised, logits, credible_logits, suspicious, credible }
    }

    /// The logits that suppress credible labels.
    pub fn credible_suppression_logits(&self) -> &[f32] {
        self.credible_logits.as_deref().unwrap_or(&self.logits)
    }

    /// The Victim's predicted label of every sample (argmax of its logits, the first of
    /// equals).
    pub fn predicted_labels(&self, num_classes: usize) -> Vec<u16> {
        crate::engine::eval::predicted_labels(&self.logits, num_classes)
    }

    /// One flag per training sample: true when it is in the suspicious set.
    pub fn suspicious_flags(&self) -> Vec<bool> {
        let mut flags = vec![false; self.normalised.len()];
        for &i in &self.suspicious {
            flags[i] = true;
        }
        flags
    }
}

/// The Victim network and the state its refreshes carry.
pub struct Victim {
    pub model: Network,
    pub optim: ModuleOptimizer,
    params: VictimParams,
    pub state: VictimState,
}

/// What the Victim carries from one refresh to the next (checkpointed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VictimState {
    /// Smoothed, unnormalised entropies of the last refresh.
    pub smoothed: Option<Vec<f64>>,
    /// Epochs trained so far (numbers the batch streams).
    pub epochs: usize,
    /// Refreshes so far.
    pub refreshes: usize,
}

/// Seed of the Victim's batch streams, apart from the Beneficiary's.
const STREAM: u64 = 0x7669_6374_696d;

impl Victim {
    /// A fresh Victim of the configured architecture.
    pub fn new(ctx: &Context, params: &VictimParams) -> Self {
        let model = Network::new(ctx.arch, ctx.train.images.shape().channels, ctx.train.num_classes, &ctx.device);
        let optim = optim::build(&OptimizerConfig::Adam { weight_decay: params.weight_decay });
        Self { model, optim, params: params.clone(), state: VictimState::default() }
    }

    /// One epoch of cross-entropy on `members` (indices into the training set).
    pub fn train_epoch(&mut self, ctx: &Context, members: &[usize]) -> Result<()> {
        let label = format!("victim epoch {} ({} samples)", self.state.epochs, members.len());
        ctx.progress.start(&label, members.len().div_ceil(self.params.batch_size), members.len());
        let batches = epoch_batches(ctx.train.images.clone(), members, self.params.batch_size, Views::one(self.params.augment, ctx.norm.clone()), ctx.seed ^ STREAM, self.state.epochs);
        let pass = format!("victim epoch {}", self.state.epochs);
        let loss;
        (self.model, loss) = train_pass(self.model.clone(), batches, ctx.allow_nan, &pass, ctx.progress, |m, b| train_step(m, &mut self.optim, b, ctx.train.num_classes, self.params.lr, &ctx.device))?;
        let metrics = ctx.victim_eval.as_ref().map(|sample| evaluate(&self.model.valid(), sample, &ctx.norm, ctx.eval_batch_size, &ctx.inference));
        let scores = metrics.as_ref().map_or(String::new(), |m| format!("; on the test sample {}", m.describe()));
        ctx.progress.finish(&format!("{label}: loss {loss:.4}{scores}"));
        ctx.record(&Event::Victim { epoch: self.state.epochs, samples: members.len(), loss, metrics })?;
        self.state.epochs += 1;
        Ok(())
    }

    /// Entropies of every training sample under the current Victim: smoothed with the previous
    /// refresh and min-max normalised, with the logits stage 3's suppression reads.
    pub fn refresh(&mut self, ctx: &Context, momentum: f64) -> Refresh {
        let eval_mode = || logits(&self.model.valid(), &ctx.train.images, &ctx.norm, ctx.eval_batch_size, &ctx.inference);
        let batch_statistics = || {
            let order = epoch_order(&(0..ctx.train.images.len()).collect::<Vec<_>>(), ctx.seed ^ STREAM, self.state.refreshes);
            batch_statistics_logits(&self.model, &ctx.train.images, &order, &ctx.norm, ctx.eval_batch_size, ctx.train.num_classes, &ctx.device)
        };
        let (logits, credible_logits) = match self.params.entropy_norm {
            EntropyNorm::Running => (eval_mode(), None),
            EntropyNorm::Batch => (batch_statistics(), None),
            EntropyNorm::BatchSplit => (batch_statistics(), Some(eval_mode())),
        };
        let fresh = entropy::entropies(&logits, ctx.train.num_classes);
        let smoothed = entropy::smooth(&fresh, self.state.smoothed.as_deref(), momentum);
        let normalised = entropy::normalise(&smoothed);
        self.state.smoothed = Some(smoothed);
        self.state.refreshes += 1;
        Refresh { normalised, logits, credible_logits }
    }

    /// Refreshes and splits at `t_f`, telling `observer`.
    pub fn resplit(&mut self, ctx: &Context, config: &VabConfig, t_f: f64, stage: Stage, beneficiary_epoch: usize, observer: &mut dyn RefreshObserver) -> Result<Split> {
        let split = self.split_at(ctx, config, t_f);
        self.tell(ctx, observer, &split, stage, beneficiary_epoch)?;
        Ok(split)
    }

    /// Refreshes and splits at `t_f`, telling no one (the caller tells the split it uses).
    pub fn split_at(&mut self, ctx: &Context, config: &VabConfig, t_f: f64) -> Split {
        Split::at(t_f, self.refresh(ctx, config.entropy_momentum))
    }

    /// Records the refresh that made `split` and tells `observer`.
    pub fn tell(&self, ctx: &Context, observer: &mut dyn RefreshObserver, split: &Split, stage: Stage, beneficiary_epoch: usize) -> Result<()> {
        let (t_f, suspicious, credible) = (split.t_f, split.suspicious.len(), split.credible.len());
        ctx.record(&Event::Refresh { refresh: self.state.refreshes, stage, beneficiary_epoch, t_f, suspicious, credible })?;
        let event = RefreshEvent { refresh: self.state.refreshes, stage, victim_epochs: self.state.epochs, beneficiary_epoch, split };
        let line = observer.refresh(&event)?;
        ctx.progress.finish(&format!(
            "refresh {} ({stage}): t_f {:.3}, {} suspicious / {} credible{}{line}",
            self.state.refreshes,
            split.t_f,
            split.suspicious.len(),
            split.credible.len(),
            if line.is_empty() { "" } else { "; " },
        ));
        Ok(())
    }
}

/// Logits of every image of `set` with batch norm on the statistics of each batch, the batches
/// taken in `order`; rows come back in the set's order. A throw-away copy in train mode
/// without gradient tracking computes them, so `model`'s running statistics do not move and no
/// graph is recorded. `device` is the autodiff device.
fn batch_statistics_logits(model: &Network, set: &ImageSet, order: &[usize], norm: &Normalization, batch_size: usize, classes: usize, device: &Device) -> Vec<f32> {
    let copy = model.valid().train().no_grad();
    let mut all = vec![0.0f32; set.len() * classes];
    for batch in plain_batches(set, order, batch_size, norm) {
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), device);
        let rows = copy.forward(x).detach().into_data().try_to_vec::<f32>().expect("f32 logits");
        for (row, &i) in rows.chunks_exact(classes).zip(&batch.indices) {
            all[i * classes..(i + 1) * classes].copy_from_slice(row);
        }
    }
    all
}

/// Stage 1: warms the Victim up and returns the split stage 2 starts from.
pub fn warm_up(victim: &mut Victim, ctx: &Context, config: &VabConfig, observer: &mut dyn RefreshObserver) -> Result<Split> {
    let everyone: Vec<usize> = (0..ctx.train.images.len()).collect();
    victim.train_epoch(ctx, &everyone)?;
    match config.warmup {
        Warmup::Auto { max_epochs } => auto_warm_up(victim, ctx, config, max_epochs, observer),
        schedule => {
            for w in 1..=schedule.warmup_epochs() {
                let t_f = schedule.t_f(w).expect("a scheduled warm-up has thresholds");
                let split = victim.resplit(ctx, config, t_f, Stage::WarmUp, 0, observer)?;
                victim.train_epoch(ctx, &split.suspicious)?;
            }
            let t_f = schedule.t_f(schedule.warmup_epochs() + 1).expect("a scheduled warm-up has thresholds");
            victim.resplit(ctx, config, t_f, Stage::WarmUp, 0, observer)
        }
    }
}

/// The automatic warm-up (method.md §4.3).
fn auto_warm_up(victim: &mut Victim, ctx: &Context, config: &VabConfig, max_epochs: usize, observer: &mut dyn RefreshObserver) -> Result<Split> {
    for w in 1..=max_epochs + 1 {
        let refresh = victim.refresh(ctx, config.entropy_momentum);
        let Some(mixture) = Mixture::fit(&refresh.normalised, EM_ITERATIONS) else {
            // Fewer than two samples: nothing to separate.
            let split = Split::at(0.0, refresh);
            victim.tell(ctx, observer, &split, Stage::WarmUp, 0)?;
            return Ok(split);
        };
        let fit = format!("low N({:.3}, {:.3}²), high N({:.3}, {:.3}²)", mixture.low.mean, mixture.low.std, mixture.high.mean, mixture.high.std);
        if mixture.separated() || w > max_epochs {
            if !mixture.separated() {
                ctx.progress.finish(&format!(
                    "warning: automatic warm-up: the entropy mixture did not separate in {max_epochs} epochs ({fit}; needs μ1 + 3σ1 < μ2). \
                     The training set may hold no poison; continuing with t_f = μ1 + 0.5σ1 = {:.3}. Raise vab.warmup.max_epochs or use a scheduled warm-up to change this.",
                    mixture.threshold()
                ));
            }
            let split = Split::at(mixture.threshold(), refresh);
            victim.tell(ctx, observer, &split, Stage::WarmUp, 0)?;
            return Ok(split);
        }
        let low: Vec<usize> = (0..refresh.normalised.len()).filter(|&i| mixture.is_low(refresh.normalised[i])).collect();
        ctx.progress.finish(&format!("warm-up {w}: not separated yet ({fit}); training the Victim on the {} samples of the low component", low.len()));
        victim.train_epoch(ctx, &low)?;
    }
    unreachable!("the loop returns by its last iteration")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;
    use vab_data::ImageShape;

    fn set(n: usize) -> ImageSet {
        let shape = ImageShape { channels: 3, height: 8, width: 8 };
        let pixels = (0..n * shape.len()).map(|i| ((i * 37 + i / 192 * 11) % 256) as u8).collect();
        ImageSet::new(shape, pixels, vec![0; n]).unwrap()
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4)
    }

    #[test]
    fn batch_statistics_logits_come_back_in_the_sets_order_and_leave_the_running_statistics_alone() {
        let inference = Device::flex();
        let device = inference.clone().autodiff();
        let model = Network::new(Arch::Small, 3, 4, &device);
        let (set, norm) = (set(6), Normalization { mean: vec![0.5; 3], std: vec![0.25; 3] });
        let natural: Vec<usize> = (0..6).collect();
        let eval_before = logits(&model.valid(), &set, &norm, 6, &inference);

        // One batch holding every image: the statistics do not depend on the order, so a
        // shuffled order must give the rows of the natural one.
        let in_order = batch_statistics_logits(&model, &set, &natural, &norm, 6, 4, &device);
        let shuffled = batch_statistics_logits(&model, &set, &[4, 1, 5, 0, 3, 2], &norm, 6, 4, &device);
        assert!(close(&in_order, &shuffled), "{in_order:?} vs {shuffled:?}");
        // Batch statistics differ from the (initial) running ones: the mode is not a no-op.
        assert!(!close(&in_order, &eval_before));
        // Two batches of three normalise differently from one batch of six.
        assert!(!close(&batch_statistics_logits(&model, &set, &natural, &norm, 3, 4, &device), &in_order));
        assert_eq!(logits(&model.valid(), &set, &norm, 6, &inference), eval_before, "the running statistics moved");
    }
}
