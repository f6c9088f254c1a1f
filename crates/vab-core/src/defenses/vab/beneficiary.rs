//! Method.md §5-§7, the Beneficiary F_b's epochs.
//!
//! Stage 2: every batch holds `views` independently augmented views of credible images with
//! their one-hot labels; a no-grad pass gives the Beneficiary's own final feature maps, from
//! which AttentionMix (or the configured mix) builds mixed images and soft targets; the loss is
//! the soft cross-entropy L_mix.
//!
//! Stage 3 adds, per iteration, a batch of suspicious images without labels: K augmented
//! views, pseudo-labelled by a no-grad pass and suppressed by the Victim
//! ([`super::semi_supervised`]); credible labels are suppressed before mixing. The loss is
//! L = L_mix + α·L_u (eq. 11). The feature pass runs the Beneficiary in train mode, as the
//! authors' code does, or in eval mode (`vab.attention_features`); the pseudo-label pass
//! normalises with the unlabelled batch's statistics as the code does, but on a copy, so that it
//! does not move the running statistics (method.md §8), or with the running statistics
//! (`vab.pseudo_label_norm`).
//!
//! Each group (mixed views, unlabelled views) goes through the network as one batch, so batch
//! norm sees the statistics of the group (the authors' code passes each view separately), or
//! both groups as one batch (`vab.stage3_batch = "joint"`).

use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::attention_mix::attention_maps;
use super::config::{FeatureMode, MixKind, PseudoLabelNorm, Stage3Batch, VabConfig};
use super::mixes;
use super::semi_supervised::{credible_targets, pseudo_labels, unlabelled_batch, unlabelled_batch_size, unlabelled_targets};
use super::victim::Split;
use super::Context;
use crate::config::TrainConfig;
use crate::engine::batches::{derive, epoch_batches, epoch_order, make_views, Batch, Views};
use crate::engine::loss::soft_cross_entropy;
use crate::engine::optim;
use crate::engine::step::check_loss;
use crate::error::Result;
use crate::models::Network;

/// Seed of the Beneficiary's streams, apart from the Victim's.
const STREAM: u64 = 0x6265_6e65_6669;

/// What a stage-3 epoch adds to a stage-2 epoch.
pub struct Suppression {
    /// Weight of the unlabelled loss (eq. 11); `None` trains on the credible set alone (the
    /// ablation without SST).
    pub alpha: Option<f64>,
    /// Suppress credible labels / suspicious pseudo-labels (eq. 10) at this temperature.
    pub credible: Option<f64>,
    /// Suppress only the credible labels among these (the labels the label check found the
    /// poison in; beyond the paper); `None`: every label.
    pub credible_labels: Option<Vec<u16>>,
    pub suspicious: Option<f64>,
}

/// Figures of one Beneficiary epoch.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochStats {
    /// The epoch's learning rate.
    pub lr: f64,
    pub loss: f64,
    /// Images through a training forward pass per second.
    pub img_s: f64,
    /// The mix's mean partner share over the epoch's batches (see [`super::attention_mix::Mixed`]).
    pub mix_partner_share: f64,
    /// Stage 3 only: how the suppression weighed the epoch's targets.
    pub suppression: Option<SuppressionStats>,
}

/// How stage 3's targets were weighed over an epoch (reporting; no poison flags involved).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SuppressionStats {
    /// Mean mass of a credible target after suppression (1 unsuppressed).
    pub credible_weight: f64,
    /// Mean mass of an unlabelled target after suppression; absent without unlabelled samples.
    pub unlabelled_weight: Option<f64>,
    /// Share of unlabelled samples whose pseudo-label is their training label.
    pub pseudo_label_agreement: Option<f64>,
    /// Mean mass of an unlabelled target whose pseudo-label is / is not its training label
    /// (eq. 10 weighs the two kinds differently: the Victim, trained on D_s, is surest of a
    /// clean member's true class); absent when no sample is of that kind.
    #[serde(default)]
    pub agreeing_weight: Option<f64>,
    #[serde(default)]
    pub disagreeing_weight: Option<f64>,
}

/// Sums behind [`SuppressionStats`].
#[derive(Default)]
struct TargetSums {
    credible_mass: f64,
    credible_rows: usize,
    unlabelled_mass: f64,
    unlabelled_rows: usize,
    agreeing: usize,
    pseudo_labelled: usize,
    /// Per-sample target mass (one view) of the agreeing / disagreeing pseudo-labels.
    agreeing_mass: f64,
    disagreeing_mass: f64,
}

impl SuppressionStats {
    /// ", target weights credible 0.84, unlabelled 0.61, pseudo-labels = training labels 71%
    /// (weight 0.52, others 0.83)".
    fn describe(&self) -> String {
        let mut text = format!(", target weights credible {:.2}", self.credible_weight);
        if let (Some(w), Some(a)) = (self.unlabelled_weight, self.pseudo_label_agreement) {
            text += &format!(", unlabelled {w:.2}, pseudo-labels = training labels {:.0}%", 100.0 * a);
            let weight = |w: Option<f64>| w.map_or("—".to_string(), |w| format!("{w:.2}"));
            text += &format!(" (weight {}, others {})", weight(self.agreeing_weight), weight(self.disagreeing_weight));
        }
        text
    }
}

impl TargetSums {
    fn stats(&self) -> SuppressionStats {
        let ratio = |a: f64, b: usize| (b > 0).then(|| a / b as f64);
        SuppressionStats {
            credible_weight: ratio(self.credible_mass, self.credible_rows).unwrap_or(1.0),
            unlabelled_weight: ratio(self.unlabelled_mass, self.unlabelled_rows),
            pseudo_label_agreement: ratio(self.agreeing as f64, self.pseudo_labelled),
            agreeing_weight: ratio(self.agreeing_mass, self.agreeing),
            disagreeing_weight: ratio(self.disagreeing_mass, self.pseudo_labelled - self.agreeing),
        }
    }
}

/// The Beneficiary network and its optimiser.
pub struct Beneficiary {
    pub model: Network,
    pub optim: ModuleOptimizer,
}

impl Beneficiary {
    pub fn new(ctx: &Context, config: &TrainConfig) -> Self {
        let model = Network::new(ctx.arch, ctx.train.images.shape().channels, ctx.train.num_classes, &ctx.device);
        Self { model, optim: optim::build(&config.train.optimizer) }
    }

    /// Trains one epoch (1-based `epoch`, at the learning rate `config.train.schedule` gives it)
    /// on the credible set of `split`; in stage 3 also on its suspicious set, per `suppression`.
    pub fn train_epoch(&mut self, ctx: &Context, config: &TrainConfig, vab: &VabConfig, epoch: usize, split: &Split, suppression: Option<&Suppression>) -> Result<EpochStats> {
        let start = Instant::now();
        let lr = config.train.schedule.lr(config.train.lr, epoch - 1, config.train.epochs);
        let seed = ctx.seed ^ STREAM;
        let batch_size = config.train.batch_size;
        let labelled_batches = split.credible.len().div_ceil(batch_size);
        let alpha = suppression.and_then(|s| s.alpha);
        let unlabelled_size = if alpha.is_some() { unlabelled_batch_size(split.suspicious.len(), labelled_batches) } else { 0 };
        let unlabelled_order = epoch_order(&split.suspicious, seed ^ 1, epoch);
        let samples = split.credible.len() * vab.views + labelled_batches * unlabelled_size * vab.unlabelled_views;
        let stage = if suppression.is_some() { 3 } else { 2 };
        let label = format!("beneficiary epoch {epoch}/{} (stage {stage})", config.train.epochs);
        ctx.progress.start(&label, labelled_batches, samples);
        let (mut loss_sum, mut seen, mut share_sum, mut sums) = (0.0, 0usize, 0.0, TargetSums::default());
        let credible_views = Views { count: vab.views, augment: config.train.augment, norm: ctx.norm.clone() };
        let unlabelled_views = Views { count: vab.unlabelled_views, ..credible_views.clone() };
        let batches = epoch_batches(ctx.train.images.clone(), &split.credible, batch_size, credible_views, seed, epoch);
        for (b, batch) in batches.iter().enumerate() {
            let unlabelled = (unlabelled_size > 0).then(|| {
                let indices = unlabelled_batch(&unlabelled_order, b, unlabelled_size);
                make_views(&ctx.train.images, &indices, &unlabelled_views, seed ^ 2, epoch, b)
            });
            let images = batch.labels.len() + unlabelled.as_ref().map_or(0, |u| u.labels.len());
            let mut rng = ChaCha20Rng::seed_from_u64(derive(seed, epoch, b, 0, 3));
            let (loss, share) = self.step(ctx, vab, batch, unlabelled, split, suppression, alpha.unwrap_or(0.0), lr, &mut rng, &mut sums);
            check_loss(loss, ctx.allow_nan, || format!("beneficiary epoch {epoch}, step {}", b + 1))?;
            loss_sum += loss as f64 * images as f64;
            share_sum += share;
            seen += images;
            ctx.progress.batch(images, loss);
        }
        let stats = EpochStats {
            lr,
            loss: loss_sum / seen.max(1) as f64,
            img_s: seen as f64 / start.elapsed().as_secs_f64(),
            mix_partner_share: share_sum / labelled_batches.max(1) as f64,
            suppression: suppression.map(|_| sums.stats()),
        };
        let weights = stats.suppression.as_ref().map_or(String::new(), SuppressionStats::describe);
        ctx.progress.finish(&format!("{label}: lr {lr:.4} loss {:.4}, mix partner share {:.2}{weights} ({:.0} img/s)", stats.loss, stats.mix_partner_share, stats.img_s));
        Ok(stats)
    }

    /// One optimisation step; returns the loss and the mix's partner share, and adds the
    /// targets' masses to `sums`.
    #[allow(clippy::too_many_arguments)]
    fn step(&mut self, ctx: &Context, vab: &VabConfig, batch: Batch, unlabelled: Option<Batch>, split: &Split, suppression: Option<&Suppression>, alpha: f64, lr: f64, rng: &mut ChaCha20Rng, sums: &mut TargetSums) -> (f32, f64) {
        let k = ctx.train.num_classes;
        let device = &ctx.device;
        let tensor = |images: Vec<f32>, shape: [usize; 4]| Tensor::<4>::from_data(TensorData::new(images, shape), device);
        let suppressed_labels = suppression.and_then(|s| s.credible_labels.as_deref());
        let targets = credible_targets(&batch.labels, &batch.indices, k, split.credible_suppression_logits(), suppression.and_then(|s| s.credible), suppressed_labels);
        sums.credible_mass += targets.iter().map(|&t| t as f64).sum::<f64>();
        sums.credible_rows += batch.labels.len();
        let maps = matches!(vab.mix, MixKind::AttentionMix | MixKind::AttentiveCutmix).then(|| {
            let features = match vab.attention_features {
                FeatureMode::Train => train_mode_features(&self.model, tensor(batch.images.clone(), batch.shape)).into_data(),
                FeatureMode::Eval => {
                    let x = Tensor::<4>::from_data(TensorData::new(batch.images.clone(), batch.shape), &ctx.inference);
                    self.model.valid().features(x).into_data()
                }
            };
            let dims: [usize; 4] = features.shape().as_slice().try_into().expect("feature maps are 4-d");
            attention_maps(&features.try_to_vec::<f32>().expect("f32 features"), dims, [batch.shape[2], batch.shape[3]], vab.attention_upsample)
        });
        let mixed = mixes::apply(vab.mix, &batch.images, batch.shape, &targets, maps.as_deref(), vab.t_m, rng);
        let share = mixed.partner_share;
        let y = Tensor::<2>::from_data(TensorData::new(mixed.targets, [batch.shape[0], k]), device);
        let loss = match unlabelled {
            None => soft_cross_entropy(self.model.forward(tensor(mixed.images, batch.shape)), y),
            Some(u) => {
                let n = u.indices.len() / vab.unlabelled_views;
                let pseudo = pseudo_label_logits(&self.model, &u, vab.pseudo_label_norm, &ctx.device, &ctx.inference);
                let labels = pseudo_labels(&pseudo, n, vab.unlabelled_views, k);
                let targets_u = unlabelled_targets(&labels, &u.indices[..n], vab.unlabelled_views, k, &split.logits, suppression.and_then(|s| s.suspicious));
                for (s, (p, y)) in labels.iter().zip(&u.labels).enumerate() {
                    let mass: f64 = targets_u[s * k..(s + 1) * k].iter().map(|&t| t as f64).sum();
                    if p == y {
                        sums.agreeing += 1;
                        sums.agreeing_mass += mass;
                    } else {
                        sums.disagreeing_mass += mass;
                    }
                }
                sums.pseudo_labelled += n;
                sums.unlabelled_mass += targets_u.iter().map(|&t| t as f64).sum::<f64>();
                sums.unlabelled_rows += u.shape[0];
                let y_u = Tensor::<2>::from_data(TensorData::new(targets_u, [u.shape[0], k]), device);
                let (logits, logits_u) = stage3_logits(&self.model, tensor(mixed.images, batch.shape), tensor(u.images, u.shape), vab.stage3_batch);
                soft_cross_entropy(logits, y) + soft_cross_entropy(logits_u, y_u).mul_scalar(alpha)
            }
        };
        let value = loss.to_data().iter::<f32>().next().unwrap_or(f32::NAN);
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        self.model = self.optim.step(lr, self.model.clone(), grads);
        (value, share)
    }
}

/// The Beneficiary's training-mode logits of a stage-3 step's mixed credible views and
/// unlabelled views, passed as `batching` says.
fn stage3_logits(model: &Network, mixed: Tensor<4>, unlabelled: Tensor<4>, batching: Stage3Batch) -> (Tensor<2>, Tensor<2>) {
    match batching {
        Stage3Batch::Separate => (model.forward(mixed), model.forward(unlabelled)),
        Stage3Batch::Joint => {
            let (m, u) = (mixed.dims()[0], unlabelled.dims()[0]);
            let logits = model.forward(Tensor::cat(vec![mixed, unlabelled], 0));
            (logits.clone().narrow(0, 0, m), logits.narrow(0, m, u))
        }
    }
}

/// `model`'s final feature maps in train mode, without recording an autodiff graph: the clone
/// without gradients shares the running statistics, so they move as a train-mode pass moves
/// them (the authors' code), but no backward state is kept (stage 2 runs about 1.06× faster).
fn train_mode_features(model: &Network, x: Tensor<4>) -> Tensor<4> {
    model.without_grad().features(x)
}

/// The Beneficiary's logits on the unlabelled views, without gradients and without moving its
/// batch-norm running statistics. With `Batch`, a copy in train mode normalises with the views'
/// own statistics (the authors' pseudo-labels); `valid()` gives the copy fresh running-statistic
/// buffers, so its updates are thrown away with it.
/// `device` is the training (autodiff) device, `inference` the plain one.
pub fn pseudo_label_logits(model: &Network, views: &Batch, norm: PseudoLabelNorm, device: &Device, inference: &Device) -> Vec<f32> {
    let input = |device: &Device| Tensor::<4>::from_data(TensorData::new(views.images.clone(), views.shape), device);
    let logits = match norm {
        PseudoLabelNorm::Batch => model.valid().train().no_grad().forward(input(device)),
        PseudoLabelNorm::Running => model.valid().forward(input(inference)),
    };
    logits.into_data().try_to_vec::<f32>().expect("f32 logits")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;

    fn views(n: usize, shift: f32) -> Batch {
        let images = (0..n * 3 * 8 * 8).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 2.0 + shift).collect();
        Batch { images, shape: [n, 3, 8, 8], indices: (0..n).collect(), labels: vec![0; n] }
    }

    #[test]
    fn batch_statistics_pseudo_labels_leave_the_running_statistics_alone() {
        let inference = Device::flex();
        let device = inference.clone().autodiff();
        let model = Network::new(Arch::Small, 3, 4, &device);
        let probe = views(3, 0.0);
        let eval = |m: &Network| pseudo_label_logits(m, &probe, PseudoLabelNorm::Running, &device, &inference);
        let before = eval(&model);
        // Inputs far from the running statistics (mean 0, variance 1 at initialisation).
        let shifted = views(6, 5.0);
        let batch = pseudo_label_logits(&model, &shifted, PseudoLabelNorm::Batch, &device, &inference);
        assert_eq!(eval(&model), before, "the batch-statistics pass moved the running statistics");
        let running = pseudo_label_logits(&model, &shifted, PseudoLabelNorm::Running, &device, &inference);
        assert!(batch.iter().zip(&running).any(|(a, b)| (a - b).abs() > 1e-3), "batch statistics were not used");
        // The same numbers as a train-mode forward of the model itself (which does move them).
        let x = Tensor::<4>::from_data(TensorData::new(shifted.images.clone(), shifted.shape), &device);
        let train_mode: Vec<f32> = model.forward(x).into_data().try_to_vec().unwrap();
        assert!(batch.iter().zip(&train_mode).all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs())));
        assert_ne!(eval(&model), before, "control: a train-mode forward does move them");
    }

    #[test]
    fn suppression_stats_average_per_target_row_and_per_pseudo_labelled_sample() {
        // Three samples in two views: two agreeing ones of mass 0.1 and 0.3, one other of 0.35.
        let sums = TargetSums { credible_mass: 3.0, credible_rows: 4, unlabelled_mass: 1.5, unlabelled_rows: 6, agreeing: 2, pseudo_labelled: 3, agreeing_mass: 0.4, disagreeing_mass: 0.35 };
        let stats = sums.stats();
        assert_eq!((stats.credible_weight, stats.unlabelled_weight), (0.75, Some(0.25)));
        assert!((stats.pseudo_label_agreement.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!((stats.agreeing_weight, stats.disagreeing_weight), (Some(0.2), Some(0.35)));
        assert_eq!(stats.describe(), ", target weights credible 0.75, unlabelled 0.25, pseudo-labels = training labels 67% (weight 0.20, others 0.35)");
        let all_agree = TargetSums { unlabelled_mass: 1.0, unlabelled_rows: 2, agreeing: 2, pseudo_labelled: 2, agreeing_mass: 1.0, ..TargetSums::default() }.stats();
        assert_eq!(all_agree.disagreeing_weight, None);
        assert!(all_agree.describe().ends_with("(weight 0.50, others —)"), "{}", all_agree.describe());
        let credible_only = TargetSums { credible_mass: 2.0, credible_rows: 2, ..TargetSums::default() }.stats();
        assert_eq!((credible_only.unlabelled_weight, credible_only.pseudo_label_agreement, credible_only.agreeing_weight), (None, None, None));
        assert_eq!(credible_only.describe(), ", target weights credible 1.00");
    }

    #[test]
    fn a_joint_stage3_pass_normalises_both_groups_together() {
        let device = Device::flex().autodiff();
        let model = Network::new(Arch::Small, 3, 4, &device);
        let input = |b: &Batch| Tensor::<4>::from_data(TensorData::new(b.images.clone(), b.shape), &device);
        let rows = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
        fn close(a: &[f32], b: &[f32]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()))
        }
        // Two groups with different statistics; fresh copies so no pass sees another's updates.
        let (mixed, unlabelled) = (views(4, 0.0), views(2, 3.0));
        let fresh = || model.valid().train();
        let (joint, joint_u) = stage3_logits(&fresh(), input(&mixed), input(&unlabelled), Stage3Batch::Joint);
        let (separate, separate_u) = stage3_logits(&fresh(), input(&mixed), input(&unlabelled), Stage3Batch::Separate);
        let together = rows(fresh().forward(Tensor::cat(vec![input(&mixed), input(&unlabelled)], 0)));
        let (joint, joint_u, separate, separate_u) = (rows(joint), rows(joint_u), rows(separate), rows(separate_u));
        assert!(close(&joint, &together[..16]) && close(&joint_u, &together[16..]), "joint rows are not those of one pass");
        assert!(close(&separate, &rows(fresh().forward(input(&mixed)))), "separate mixed rows are not a pass of their own");
        assert!(close(&separate_u, &rows(fresh().forward(input(&unlabelled)))), "separate unlabelled rows are not a pass of their own");
        assert!(!close(&joint_u, &separate_u), "the batching made no difference");
    }

    #[test]
    fn untracked_features_equal_a_tracked_pass_and_move_the_running_statistics_alike() {
        let inference = Device::flex();
        let device = inference.clone().autodiff();
        let base = Network::new(Arch::Small, 3, 4, &device);
        // Two copies with their own running statistics (`valid()` gives fresh buffers).
        let fresh = || base.valid().train();
        let (tracked, untracked) = (fresh(), fresh());
        let x = views(5, 2.0);
        let input = || Tensor::<4>::from_data(TensorData::new(x.images.clone(), x.shape), &device);
        let a: Vec<f32> = tracked.features(input()).into_data().try_to_vec().unwrap();
        let b: Vec<f32> = train_mode_features(&untracked, input()).into_data().try_to_vec().unwrap();
        assert!(a == b, "the untracked pass computed other features");
        let probe = views(3, 0.0);
        let eval = |m: &Network| pseudo_label_logits(m, &probe, PseudoLabelNorm::Running, &device, &inference);
        assert_eq!(eval(&tracked), eval(&untracked), "the running statistics moved differently");
        assert_ne!(eval(&untracked), eval(&fresh()), "control: the pass moved the running statistics");
        // The Beneficiary itself still gets gradients after an untracked pass.
        let _ = train_mode_features(&base, input());
        let grads = GradientsParams::from_grads(base.features(input()).sum().backward(), &base);
        assert!(!grads.is_empty(), "the Beneficiary lost its gradients");
    }
}
