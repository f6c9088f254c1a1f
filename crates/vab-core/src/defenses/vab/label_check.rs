//! Beyond the paper, for `vab scan --label-check` and V&B's `[vab] label_check` option: which
//! labels the poison sits in.
//!
//! A poison-label backdoor gives its samples a label their content does not show. V&B's
//! Victim, having learned the trigger, is as sure of them as of an easy class's clean samples,
//! so the entropy alone cannot tell the two apart (on CIFAR-10 the Victim's suspicious set holds
//! automobiles and trucks beside the poison, and as many on clean data:
//! bench/results/scan-cpu.md). A checker network of the same architecture, trained with the
//! configuration's `[train]` section on the credible set only (nearly free of poison, so it
//! does not learn the trigger), predicts every suspicious sample: it confirms the label of a
//! clean sample and rejects that of a poisoned one: it rejects a label when its probability
//! is below [`MAX_LABEL_PROBABILITY`] (confusable clean classes, automobile and truck, keep a
//! fair share; a deer labelled airplane does not). The credible set lacks most of an easy
//! class's samples (the Victim took them as suspicious), so the checker's prediction is
//! corrected for the credible set's label frequencies π: argmax_c (z_c − ln π_c) (logit
//! adjustment, Menon et al., ICLR 2021); uncorrected, it sent 2,408 of 3,674 suspicious
//! automobiles of a Blend bundle to "truck", and the label looked poisoned. A label holds poison when the checker
//! rejects at least [`MIN_REJECTED_SHARE`] of its suspicious samples and these make at least
//! [`MIN_LABEL_SHARE`] of the label's samples; the suspicious set narrows to the suspicious
//! samples of such labels. Clean-label attacks (SIG, CL) keep labels that match the content, so
//! this check does not see them.

use std::sync::Arc;

use burn::module::Module;
use serde::{Deserialize, Serialize};

use super::suppression::softmax;
use super::victim::Split;
use super::Context;
use crate::config::TrainConfig;
use crate::engine::batches::{epoch_batches, Views};
use crate::engine::eval::logits;
use crate::engine::optim;
use crate::engine::step::{train_pass, train_step};
use crate::error::Result;
use crate::models::Network;

/// The checker rejects a sample's label when it gives the label less than this probability.
pub const MAX_LABEL_PROBABILITY: f64 = 0.1;

/// Share of a label's suspicious samples the checker must reject for the label to hold poison.
/// Measured on CIFAR-10 (scan preset): the BadNets and Blend targets at 70-73%, no clean label
/// above 0.35 of this bar (bench/results/scan-cpu.md).
pub const MIN_REJECTED_SHARE: f64 = 0.5;

/// Share of a label's samples the rejected ones must make for it to hold poison, so that a few
/// hard samples of a label (clean CIFAR-10: 66 cats, 1.3% of them) do not count. It is also the
/// smallest poisoning of one label the check can find.
pub const MIN_LABEL_SHARE: f64 = 0.05;

/// Seed of the checker's batch streams, apart from the Victim's.
const STREAM: u64 = 0x0063_6865_636b_6572;

/// One label's samples as the checker judged them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelFinding {
    pub label: u16,
    pub samples: usize,
    /// In the Victim's suspicious set.
    pub suspicious: usize,
    /// Suspicious samples whose label the checker rejects (gives it less than
    /// [`MAX_LABEL_PROBABILITY`]).
    pub rejected: usize,
    pub holds_poison: bool,
}

/// One suspicious sample as the checker saw it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checked {
    /// Index in the scanned set.
    pub index: usize,
    /// The probability the checker gives the sample's label, corrected for the credible
    /// set's label frequencies (what the check reads).
    pub label_probability: f64,
    /// The same without the correction (reporting only).
    pub uncorrected: f64,
}

/// The checker's findings, per label in label order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelCheck {
    pub labels: Vec<LabelFinding>,
    /// Every suspicious sample of the Victim's split, in its order, as the checker saw it.
    pub checked: Vec<Checked>,
}

impl LabelCheck {
    /// Judges each label from the training `labels` and the checker's view of the suspicious
    /// samples.
    pub fn judge(labels: &[u16], num_classes: usize, checked: Vec<Checked>) -> Self {
        let mut findings: Vec<LabelFinding> = (0..num_classes).map(|c| LabelFinding { label: c as u16, samples: 0, suspicious: 0, rejected: 0, holds_poison: false }).collect();
        for &l in labels {
            findings[l as usize].samples += 1;
        }
        for c in &checked {
            let finding = &mut findings[labels[c.index] as usize];
            finding.suspicious += 1;
            finding.rejected += usize::from(c.label_probability < MAX_LABEL_PROBABILITY);
        }
        for f in &mut findings {
            f.holds_poison = f.rejected > 0 && f.rejected as f64 >= MIN_REJECTED_SHARE * f.suspicious as f64 && f.rejected as f64 >= MIN_LABEL_SHARE * f.samples as f64;
        }
        Self { labels: findings, checked }
    }

    /// The labels that hold poison, in label order.
    pub fn poisoned_labels(&self) -> Vec<u16> {
        self.labels.iter().filter(|f| f.holds_poison).map(|f| f.label).collect()
    }

    /// `split` with only the suspicious samples whose label holds poison left suspicious.
    pub fn narrow(&self, split: Split, labels: &[u16]) -> Split {
        let poisoned = self.poisoned_labels();
        split.narrow_to(|i| poisoned.contains(&labels[i]))
    }

    /// What V&B's `[vab] label_check` keeps of every later split: the labels that hold poison,
    /// less the samples of them whose label the checker confirmed; `None` when no label holds
    /// poison.
    pub fn filter(&self) -> Option<LabelFilter> {
        let labels = self.poisoned_labels();
        let mut confirmed: Vec<usize> = self.checked.iter().filter(|c| c.label_probability >= MAX_LABEL_PROBABILITY).map(|c| c.index).collect();
        confirmed.sort_unstable();
        (!labels.is_empty()).then_some(LabelFilter { labels, confirmed })
    }
}

/// The samples a split may keep suspicious after the label check: those of `labels`, except
/// the `confirmed` ones (the checker gave their label at least [`MAX_LABEL_PROBABILITY`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelFilter {
    pub labels: Vec<u16>,
    /// Sorted sample indices.
    pub confirmed: Vec<usize>,
}

impl LabelFilter {
    /// Whether sample `i` (label `labels[i]`) may stay suspicious.
    pub fn suspects(&self, i: usize, labels: &[u16]) -> bool {
        self.labels.contains(&labels[i]) && self.confirmed.binary_search(&i).is_err()
    }
}

/// Trains the checker on `split.credible` with `config.train` (its optimiser, schedule,
/// augmentation, batch size and epochs) and judges every label by its predictions for
/// `split.suspicious`.
pub fn check_labels(ctx: &Context, config: &TrainConfig, split: &Split) -> Result<LabelCheck> {
    let train = &config.train;
    let (images, classes) = (&ctx.train.images, ctx.train.num_classes);
    let mut model = Network::new(ctx.arch, images.shape().channels, classes, &ctx.device);
    let mut optim = optim::build(&train.optimizer);
    for epoch in 0..train.epochs {
        let pass = format!("label check epoch {}/{} ({} credible samples)", epoch + 1, train.epochs, split.credible.len());
        ctx.progress.start(&pass, split.credible.len().div_ceil(train.batch_size), split.credible.len());
        let batches = epoch_batches(images.clone(), &split.credible, train.batch_size, Views::one(train.augment, ctx.norm.clone()), ctx.seed ^ STREAM, epoch);
        let lr = train.schedule.lr(train.lr, epoch, train.epochs);
        let loss;
        (model, loss) = train_pass(model, batches, ctx.allow_nan, &pass, ctx.progress, |m, b| train_step(m, &mut optim, b, classes, lr, &ctx.device))?;
        ctx.progress.finish(&format!("{pass}: loss {loss:.4}"));
    }
    let suspicious = Arc::new(images.select(&split.suspicious));
    let raw = logits(&model.valid(), &suspicious, &ctx.norm, ctx.eval_batch_size, &ctx.inference);
    let mut adjusted = raw.clone();
    adjust_for_prior(&mut adjusted, &label_frequencies(images.labels(), &split.credible, classes));
    let checked = split.suspicious.iter().enumerate().map(|(row, &index)| {
        let label = images.labels()[index] as usize;
        let probability = |z: &[f32]| softmax(&z[row * classes..(row + 1) * classes], 1.0)[label];
        Checked { index, label_probability: probability(&adjusted), uncorrected: probability(&raw) }
    });
    Ok(LabelCheck::judge(images.labels(), classes, checked.collect()))
}

/// The share of each label among `members` (a label without members counts as one sample, so
/// its logarithm stays finite).
fn label_frequencies(labels: &[u16], members: &[usize], classes: usize) -> Vec<f64> {
    let mut counts = vec![0usize; classes];
    for &i in members {
        counts[labels[i] as usize] += 1;
    }
    let total = members.len().max(1) as f64;
    counts.iter().map(|&n| n.max(1) as f64 / total).collect()
}

/// Logit adjustment: z_c − ln π_c for every row of a row-major [N, K] logit matrix.
fn adjust_for_prior(logits: &mut [f32], prior: &[f64]) {
    for row in logits.chunks_exact_mut(prior.len()) {
        for (z, p) in row.iter_mut().zip(prior) {
            *z -= p.ln() as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker's view of the samples `indices`: (corrected, uncorrected) probability each.
    fn checked(indices: &[usize], probability: &[(f64, f64)]) -> Vec<Checked> {
        indices.iter().zip(probability).map(|(&index, &(label_probability, uncorrected))| Checked { index, label_probability, uncorrected }).collect()
    }

    /// Labels 0-2, 40 samples each; label 0 is the target of 30 poisoned samples.
    fn labels() -> Vec<u16> {
        (0..120).map(|i| (i / 40) as u16).collect()
    }

    #[test]
    fn a_label_holds_poison_when_its_suspicious_samples_are_rejected_in_bulk() {
        let labels = labels();
        // Suspicious: 30 of label 0 (25 rejected: the checker gives their label 0.02 < 0.1; the
        // uncorrected probability is not read), 10 of label 1 (1 rejected), 4 of label 2 (all
        // rejected: 4 of 4, and 4 ≥ 5% of 40).
        let suspicious: Vec<usize> = (0..30).chain(40..50).chain(80..84).collect();
        let p = |rejected: bool| if rejected { (0.02, 0.5) } else { (0.9, 0.01) };
        let probability: Vec<(f64, f64)> = (0..30).map(|i| p(i < 25)).chain((0..10).map(|i| p(i == 0))).chain([p(true); 4]).collect();
        let check = LabelCheck::judge(&labels, 3, checked(&suspicious, &probability));
        let summary: Vec<(usize, usize, usize, bool)> = check.labels.iter().map(|f| (f.samples, f.suspicious, f.rejected, f.holds_poison)).collect();
        assert_eq!(summary, vec![(40, 30, 25, true), (40, 10, 1, false), (40, 4, 4, true)]);

        // Too few rejections for the label's size: 1 of 40 is under 5%, though all are rejected.
        let check = LabelCheck::judge(&labels, 3, checked(&[80], &[(0.0, 0.0)]));
        assert!(!check.labels[2].holds_poison && check.labels[2].rejected == 1);
        // Half rejected is enough; fewer is not.
        let half = LabelCheck::judge(&labels, 3, checked(&[0, 1, 2, 3], &[(0.0, 0.0), (0.09, 0.0), (0.1, 0.0), (1.0, 0.0)]));
        let less = LabelCheck::judge(&labels, 3, checked(&[0, 1, 2, 3, 4], &[(0.0, 0.0), (0.09, 0.0), (0.1, 0.0), (1.0, 0.0), (0.5, 0.0)]));
        assert!(half.labels[0].holds_poison && !less.labels[0].holds_poison);
    }

    #[test]
    fn the_prediction_is_corrected_for_the_credible_label_frequencies() {
        // Credible: 3 of label 0, 1 of label 1, none of label 2 (counted as 1).
        let labels = [0u16, 0, 0, 1, 2];
        let prior = label_frequencies(&labels, &[0, 1, 2, 3], 3);
        assert_eq!(prior, vec![0.75, 0.25, 0.25]);
        // z = (1, 0.2, 0): unadjusted label 0; adjusted 1 - ln 0.75 = 1.288 against
        // 0.2 - ln 0.25 = 1.586: label 1.
        let mut logits = vec![1.0f32, 0.2, 0.0];
        adjust_for_prior(&mut logits, &prior);
        let expected = [1.0 - 0.75f64.ln(), 0.2 - 0.25f64.ln(), -(0.25f64.ln())];
        assert!(logits.iter().zip(expected).all(|(a, b)| (*a as f64 - b).abs() < 1e-6), "{logits:?}");
        assert_eq!(crate::engine::eval::predicted_labels(&logits, 3), vec![1]);
        let p = softmax(&logits, 1.0);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12 && p[1] > p[2] && p[2] > p[0], "{p:?}");
    }

    #[test]
    fn narrowing_keeps_the_suspicious_samples_of_poisoned_labels_only() {
        let labels = labels();
        let split = Split { t_f: 0.2, normalised: vec![0.5; 120], logits: vec![0.0; 360], credible_logits: None, suspicious: vec![3, 45, 7, 90], credible: (0..120).filter(|i| ![3, 45, 7, 90].contains(i)).collect() };
        let check = LabelCheck::judge(&labels, 3, checked(&split.suspicious, &[(0.0, 0.0), (0.5, 0.0), (0.0, 0.0), (0.5, 0.0)]));
        assert_eq!(check.labels.iter().map(|f| f.holds_poison).collect::<Vec<_>>(), vec![true, false, false]);
        let narrowed = check.narrow(split, &labels);
        assert_eq!(narrowed.suspicious, vec![3, 7]);
        assert_eq!(narrowed.credible.len(), 118);
        assert!(narrowed.credible.windows(2).all(|w| w[0] < w[1]) && narrowed.credible.contains(&45) && narrowed.credible.contains(&90));
    }

    #[test]
    fn the_filter_suspects_the_poisoned_labels_less_their_confirmed_samples() {
        let labels = labels();
        // Label 0: samples 0-2 rejected, 3 confirmed (0.1 is not below the bar); label 1: 40
        // rejected of one suspicious, too few for its 40 samples.
        let check = LabelCheck::judge(&labels, 3, checked(&[0, 1, 2, 3, 40], &[(0.0, 0.0), (0.05, 0.0), (0.0, 0.0), (0.1, 0.0), (0.0, 0.0)]));
        let filter = check.filter().expect("label 0 holds poison");
        assert_eq!(filter, LabelFilter { labels: vec![0], confirmed: vec![3] });
        let suspected: Vec<usize> = (0..120).filter(|&i| filter.suspects(i, &labels)).collect();
        assert_eq!(suspected, (0..40).filter(|&i| i != 3).collect::<Vec<_>>(), "label 0 but its confirmed sample");
        assert_eq!(LabelCheck::judge(&labels, 3, checked(&[40], &[(0.0, 0.0)])).filter(), None);
    }
}
