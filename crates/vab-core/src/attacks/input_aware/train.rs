//! Training the input-aware attack's networks, in the two stages of Nguyen & Tran (2020):
//!
//! 1. the mask network M alone, for `mask_epochs`:
//!    L_M = λ_norm · mean(relu(m(x) − density)) + λ_div · L_div(x, x', m(x), m(x'))
//! 2. the pattern generator G jointly with a classifier C (M frozen, batch norm in eval mode),
//!    for the classifier configuration's epochs. In each batch a share `attack_ratio` gets its
//!    own trigger and the target label, a share `cross_ratio` gets the trigger of another image
//!    of the batch and keeps its label, the rest stays clean:
//!    L = CE(C(batch)) + λ_div · L_div(x, x', g(x), g(x'))
//!
//! The diversity term L_div(x, x', a, a') = mean_i d(x_i, x'_i) / (d(a_i, a'_i) + ε), with d the
//! root mean square difference of one sample, keeps different images from getting the same
//! trigger. The partner x' of each image is another image of the same shuffled batch.
//!
//! Every epoch ends with a checkpoint, so an interrupted training resumes where it stopped and
//! ends with the networks an uninterrupted one would have (paper-scale training takes hours).

use std::path::Path;
use std::sync::Arc;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vab_data::Dataset;

use super::generator::Generator;
use super::DynamicParams;
use crate::config::TrainConfig;
use crate::engine::batches::{epoch_batches, Normalization, Views};
use crate::engine::checkpoint::{Reader, Writer};
use crate::engine::loss::{one_hot, soft_cross_entropy};
use crate::engine::optim;
use crate::engine::progress::TrainProgress;
use crate::engine::run::training_members;
use crate::error::{CoreError, Result};
use crate::models::Network;

const EPSILON: f64 = 1e-7;
/// Seeds the mask stage's batch order apart from the joint stage's.
const MASK_STAGE: u64 = 0x6d61_736b;

/// The trained networks.
pub struct Trained {
    pub pattern: Generator,
    pub mask: Generator,
    pub classifier: Network,
}

/// Epochs finished, recorded with each checkpoint.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct EpochsDone {
    mask: usize,
    joint: usize,
}

/// Trains M, then G with C, on the training set of `dataset` (the members chosen by
/// `config.data.train_subset`), checkpointing into `run` after every epoch and resuming from its
/// checkpoint if it has one.
pub fn train(dataset: &Dataset, config: &TrainConfig, params: &DynamicParams, target: u16, run: &Path, device: &Device, progress: &dyn TrainProgress) -> Result<Trained> {
    let (images, num_classes) = (Arc::new(dataset.train.clone()), dataset.num_classes());
    device.seed(config.train.seed);
    let shape = images.shape();
    let members = training_members(config, images.len());
    let norm = Normalization::of(&images);
    let (batch_size, augment, seed) = (config.train.batch_size, config.train.augment, config.train.seed);
    let adam = || -> ModuleOptimizer { AdamConfig::new().with_beta_1(0.5).with_beta_2(0.9).with_epsilon(1e-8).init() };
    let batches = members.len().div_ceil(batch_size);

    let mut mask = Generator::new(shape.channels, 1, params.width, device);
    let mut mask_optim = adam();
    let checkpoint = Reader::open(run);
    let mut done = EpochsDone::default();
    if let Some(reader) = &checkpoint {
        done = reader.state()?;
        draw_initial_weights(&mask, shape.channels, device);
        mask = reader.network("mask", mask)?;
        if done.mask < params.mask_epochs {
            mask_optim = reader.optimizer("mask", mask_optim)?;
        }
        progress.finish(&format!("resuming after {} mask network and {} generator epochs ({})", done.mask, done.joint, run.display()));
    }
    for epoch in done.mask..params.mask_epochs {
        progress.start(&format!("mask network, epoch {}/{}", epoch + 1, params.mask_epochs), batches, members.len());
        let mut loss_sum = 0.0;
        for batch in epoch_batches(images.clone(), &members, batch_size, Views::one(augment, norm.clone()), seed ^ MASK_STAGE, epoch).iter() {
            let x: Tensor<4> = Tensor::from_data(TensorData::new(batch.images, batch.shape), device);
            let m = mask.mask(x.clone());
            let norm_loss = relu(m.clone().sub_scalar(params.mask_density)).mean();
            let loss = norm_loss.mul_scalar(params.lambda_norm) + diversity(x.clone(), partners(x), m.clone(), partners(m)).mul_scalar(params.lambda_div);
            let value = finite(scalar(&loss), "mask network", epoch)?;
            let grads = GradientsParams::from_grads(loss.backward(), &mask);
            mask = mask_optim.step(params.generator_lr, mask, grads);
            loss_sum += value as f64 * batch.labels.len() as f64;
            progress.batch(batch.labels.len(), value);
        }
        progress.finish(&format!("mask network, epoch {}/{}: loss {:.4}", epoch + 1, params.mask_epochs, loss_sum / members.len() as f64));
        let writer = Writer::new(run)?;
        writer.network("mask", &mask, Some(&mask_optim))?;
        writer.commit(&EpochsDone { mask: epoch + 1, joint: 0 })?;
    }

    // Frozen M: eval-mode batch norm, outputs detached.
    let frozen = mask.valid().fork(device);
    let mut pattern = Generator::new(shape.channels, shape.channels, params.width, device);
    let mut pattern_optim = adam();
    let mut classifier = Network::new(config.model.arch, shape.channels, num_classes, device);
    let mut classifier_optim = optim::build(&config.train.optimizer);
    if let Some(reader) = checkpoint.as_ref().filter(|_| done.joint > 0) {
        pattern = reader.network("pattern", pattern)?;
        pattern_optim = reader.optimizer("pattern", pattern_optim)?;
        classifier = reader.network("classifier", classifier)?;
        classifier_optim = reader.optimizer("classifier", classifier_optim)?;
    }
    let mean = Tensor::<4>::from_data(TensorData::new(norm.mean.clone(), [1, shape.channels, 1, 1]), device);
    let std = Tensor::<4>::from_data(TensorData::new(norm.std.clone(), [1, shape.channels, 1, 1]), device);
    let epochs = config.train.epochs;
    for epoch in done.joint..epochs {
        let lr = config.train.schedule.lr(config.train.lr, epoch, epochs);
        progress.start(&format!("trigger generator and classifier, epoch {}/{epochs}", epoch + 1), batches, members.len());
        let mut loss_sum = 0.0;
        for batch in epoch_batches(images.clone(), &members, batch_size, Views::one(augment, norm.clone()), seed, epoch).iter() {
            let b = batch.labels.len();
            let (n_bd, n_cross) = shares(b, params.attack_ratio, params.cross_ratio);
            let x: Tensor<4> = Tensor::from_data(TensorData::new(batch.images, batch.shape), device);
            let mut labels = batch.labels.clone();
            labels[..n_bd].fill(target);
            let y = Tensor::<2>::from_data(TensorData::new(one_hot(&labels, num_classes), [b, num_classes]), device);
            let mut loss_terms = None;
            let inputs = if n_bd + n_cross == 0 {
                x
            } else {
                // Trigger sources: the backdoor images themselves, then the cross samples' donors
                // (taken from the clean rest of the batch).
                let own = x.clone().narrow(0, 0, n_bd);
                let cross = x.clone().narrow(0, n_bd, n_cross);
                let donors = x.clone().narrow(0, n_bd + n_cross, n_cross);
                let sources = Tensor::cat(vec![own.clone(), donors.clone()], 0);
                let patterns = (pattern.pattern(sources.clone()) - mean.clone()) / std.clone();
                let masks = frozen.mask(sources).detach();
                let blended = blend(Tensor::cat(vec![own.clone(), cross], 0), patterns.clone(), masks);
                let pairs = n_bd.min(n_cross);
                if pairs > 0 {
                    let (p_own, p_donor) = (patterns.clone().narrow(0, 0, pairs), patterns.narrow(0, n_bd, pairs));
                    loss_terms = Some(diversity(own.narrow(0, 0, pairs), donors.narrow(0, 0, pairs), p_own, p_donor));
                }
                Tensor::cat(vec![blended, x.narrow(0, n_bd + n_cross, b - n_bd - n_cross)], 0)
            };
            let mut loss = soft_cross_entropy(classifier.forward(inputs), y);
            if let Some(div) = loss_terms {
                loss = loss + div.mul_scalar(params.lambda_div);
            }
            let value = finite(scalar(&loss), "trigger generator", epoch)?;
            let mut grads = loss.backward();
            let classifier_grads = GradientsParams::from_module(&mut grads, &classifier);
            let pattern_grads = GradientsParams::from_module(&mut grads, &pattern);
            classifier = classifier_optim.step(lr, classifier, classifier_grads);
            pattern = pattern_optim.step(params.generator_lr, pattern, pattern_grads);
            loss_sum += value as f64 * b as f64;
            progress.batch(b, value);
        }
        progress.finish(&format!("trigger generator and classifier, epoch {}/{epochs}: loss {:.4}", epoch + 1, loss_sum / members.len() as f64));
        let writer = Writer::new(run)?;
        writer.network("mask", &frozen, None)?;
        writer.network("pattern", &pattern, Some(&pattern_optim))?;
        writer.network("classifier", &classifier, Some(&classifier_optim))?;
        writer.commit(&EpochsDone { mask: params.mask_epochs, joint: epoch + 1 })?;
    }
    Ok(Trained { pattern, mask, classifier })
}

/// Draws a fresh network's lazily initialised weights now, as its first forward pass would.
/// Loading a checkpoint into a network whose weights were never drawn skips their random
/// draws, and the networks created after it would then start from other weights than in an
/// uninterrupted training. The pass runs in eval mode: a training-mode pass would leave a
/// pending batch-norm update that `valid()` later folds into the loaded statistics.
fn draw_initial_weights(net: &Generator, channels: usize, device: &Device) {
    let _ = net.valid().fork(device).forward(Tensor::zeros([1, channels, 8, 8], device));
}

/// x + (pattern − x) ⊙ mask, the mask broadcast over channels.
pub fn blend(x: Tensor<4>, pattern: Tensor<4>, mask: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.clone() + (pattern - x) * mask.expand([b, c, h, w])
}

/// How many samples of a batch of `b` get their own trigger, and how many a borrowed one: the
/// shares rounded down, none if the batch is too small to also hold the cross donors.
fn shares(b: usize, attack_ratio: f64, cross_ratio: f64) -> (usize, usize) {
    let n_bd = (attack_ratio * b as f64) as usize;
    let n_cross = (cross_ratio * b as f64) as usize;
    if n_bd + 2 * n_cross > b {
        (0, 0)
    } else {
        (n_bd, n_cross)
    }
}

/// Each sample's partner: the next sample of the batch (the last one's is the first).
fn partners(x: Tensor<4>) -> Tensor<4> {
    let b = x.dims()[0];
    let order = Tensor::<1, Int>::from_data(TensorData::new((0..b).map(|i| ((i + 1) % b) as i64).collect::<Vec<_>>(), [b]), &x.device());
    x.select(0, order)
}

/// L_div = mean_i d(x_i, x'_i) / (d(a_i, a'_i) + ε), d = root mean square difference.
pub fn diversity(x: Tensor<4>, x_partner: Tensor<4>, a: Tensor<4>, a_partner: Tensor<4>) -> Tensor<1> {
    (rms_distance(x, x_partner) / rms_distance(a, a_partner).add_scalar(EPSILON)).mean()
}

/// Root mean square difference per sample. The square root is taken of the mean plus 1e-12:
/// saturated masks can be exactly equal, and √ has an infinite slope at 0, which turned the
/// whole mask network into NaN on real data.
fn rms_distance(a: Tensor<4>, b: Tensor<4>) -> Tensor<1> {
    let n = a.dims()[0];
    (a - b).powi_scalar(2).reshape([n as i32, -1]).mean_dim(1).add_scalar(1e-12).sqrt().reshape([n])
}

/// `loss`, or an error saying which stage diverged.
fn finite(loss: f32, stage: &str, epoch: usize) -> Result<f32> {
    if loss.is_finite() {
        Ok(loss)
    } else {
        Err(CoreError::Invalid(format!("dynamic: the {stage}'s loss became {loss} in epoch {}; try a lower generator_lr", epoch + 1)))
    }
}

fn scalar(t: &Tensor<1>) -> f32 {
    t.to_data().iter::<f32>().next().unwrap_or(f32::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: &[f32], shape: [usize; 4]) -> Tensor<4> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), &Device::flex())
    }

    #[test]
    fn diversity_is_the_mean_ratio_of_rms_distances() {
        // Sample 0: images differ by 2 everywhere (d = 2), patterns by 1 (d = 1) → 2.
        // Sample 1: images d = 1, patterns differ by 4 on one of four values (d = 2) → 0.5.
        let x = tensor(&[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], [2, 1, 2, 2]);
        let xp = tensor(&[2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0], [2, 1, 2, 2]);
        let a = tensor(&[0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0], [2, 1, 2, 2]);
        let ap = tensor(&[-0.5, -0.5, -0.5, -0.5, 4.0, 0.0, 0.0, 0.0], [2, 1, 2, 2]);
        let v = scalar(&diversity(x, xp, a, ap).reshape([1]));
        assert!((v - 1.25).abs() < 1e-5, "{v}");
    }

    #[test]
    fn diversity_has_a_finite_gradient_when_two_masks_are_equal() {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::from_data(TensorData::new(vec![0.0f32, 1.0], [2, 1, 1, 1]), &device);
        let a = Tensor::<4>::from_data(TensorData::new(vec![0.25f32, 0.25], [2, 1, 1, 1]), &device).require_grad();
        let loss = diversity(x.clone(), partners(x), a.clone(), partners(a.clone()));
        let grads = loss.backward();
        let g: Vec<f32> = a.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    }

    #[test]
    fn blending_takes_the_pattern_where_the_mask_is_one() {
        let x = tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [1, 2, 2, 2]);
        let p = tensor(&[0.0; 8], [1, 2, 2, 2]);
        let m = tensor(&[1.0, 0.0, 0.5, 0.0], [1, 1, 2, 2]);
        let out: Vec<f32> = blend(x, p, m).into_data().try_to_vec().unwrap();
        assert_eq!(out, vec![0.0, 2.0, 1.5, 4.0, 0.0, 6.0, 3.5, 8.0]);
    }

    #[test]
    fn shares_round_down_and_need_room_for_donors() {
        assert_eq!(shares(128, 0.1, 0.1), (12, 12));
        assert_eq!(shares(5, 0.1, 0.1), (0, 0));
        assert_eq!(shares(10, 0.5, 0.3), (0, 0));
        assert_eq!(shares(10, 0.4, 0.3), (4, 3));
    }

    #[test]
    fn partners_are_the_next_sample() {
        let x = tensor(&[0.0, 1.0, 2.0], [3, 1, 1, 1]);
        let p: Vec<f32> = partners(x).into_data().try_to_vec().unwrap();
        assert_eq!(p, vec![1.0, 2.0, 0.0]);
    }
}
