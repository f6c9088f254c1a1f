//! Evaluation (method.md §1): BA on the clean test set, ASR and RA on the triggered non-target
//! test set, and per-class accuracy. Runs the network in inference form (no autodiff, batch
//! norm in eval mode).
//!
//! ASR counts every triggered image sent to the target, also those the model sends there
//! without the trigger (a dog it takes for an airplane anyway). So the same success test is
//! applied to the untriggered originals: the part of ASR that the trigger does not cause.

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vab_attacks::poison::LabelRule;
use vab_data::ImageSet;

use super::batches::{plain_batches, Normalization};
use crate::data::EvalSets;
use crate::models::Network;

/// Test metrics, in percent (0-100).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Benign accuracy.
    pub ba: f64,
    /// Attack success rate (`None` for a clean bundle).
    pub asr: Option<f64>,
    /// The ASR's success test on the same images without the trigger: what the model's
    /// ordinary errors alone would score (`None` for a clean bundle and for a test sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asr_untriggered: Option<f64>,
    /// Robust accuracy: triggered images classified as their true label.
    pub ra: Option<f64>,
    /// Accuracy per class on the clean test set.
    pub per_class: Vec<f64>,
}

/// Runs `model` (inference form, `Module::valid`) over every image of `set` in order, handing
/// each batch's logits to `each`.
fn forward_all(model: &Network, set: &ImageSet, norm: &Normalization, batch_size: usize, device: &Device, mut each: impl FnMut(Tensor<2>)) {
    let indices: Vec<usize> = (0..set.len()).collect();
    for batch in plain_batches(set, &indices, batch_size, norm) {
        let x: Tensor<4> = Tensor::from_data(TensorData::new(batch.images, batch.shape), device);
        each(model.forward(x));
    }
}

/// Predicted classes (argmax of the logits) of `model` for every image of `set`.
pub fn predict(model: &Network, set: &ImageSet, norm: &Normalization, batch_size: usize, device: &Device) -> Vec<u16> {
    let mut predictions = Vec::with_capacity(set.len());
    forward_all(model, set, norm, batch_size, device, |logits| {
        predictions.extend(logits.argmax(1).into_data().iter::<i64>().map(|p| p as u16));
    });
    predictions
}

/// Logits of `model` for every image of `set`, row-major [N, classes].
pub fn logits(model: &Network, set: &ImageSet, norm: &Normalization, batch_size: usize, device: &Device) -> Vec<f32> {
    let mut all = Vec::new();
    forward_all(model, set, norm, batch_size, device, |logits| all.extend(logits.into_data().iter::<f32>()));
    all
}

/// The argmax of each row of a row-major [N, K] logit matrix (the first of equals).
pub fn predicted_labels(logits: &[f32], num_classes: usize) -> Vec<u16> {
    logits.chunks_exact(num_classes).map(|row| (0..num_classes).max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a))).unwrap_or(0) as u16).collect()
}

impl Metrics {
    /// "BA …% ASR …% (…% without the trigger) RA …%" (ASR and RA only when the bundle has an
    /// attack, the untriggered rate when it was measured).
    pub fn describe(&self) -> String {
        let untriggered = self.asr_untriggered.map_or(String::new(), |u| format!(" ({u:.2}% without the trigger)"));
        match (self.asr, self.ra) {
            (Some(asr), Some(ra)) => format!("BA {:.2}% ASR {asr:.2}%{untriggered} RA {ra:.2}%", self.ba),
            _ => format!("BA {:.2}%", self.ba),
        }
    }
}

fn percent(hits: usize, total: usize) -> f64 {
    if total == 0 { 0.0 } else { 100.0 * hits as f64 / total as f64 }
}

/// Scores predictions: BA and per-class accuracy from `clean`, ASR and RA from `triggered`,
/// the untriggered ASR from the predictions in `clean` of the triggered images' originals.
pub fn score(evals: &EvalSets, clean: &[u16], triggered: &[u16]) -> Metrics {
    let labels = evals.test.labels();
    let correct = clean.iter().zip(labels).filter(|(p, l)| p == l).count();
    let per_class = (0..evals.num_classes)
        .map(|k| {
            let members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] as usize == k).collect();
            percent(members.iter().filter(|&&i| clean[i] == labels[i]).count(), members.len())
        })
        .collect();
    let (asr, asr_untriggered, ra) = match evals.attack {
        Some((rule, target)) if !evals.triggered.is_empty() => {
            let truth = evals.triggered.labels();
            let success = |i: usize, prediction: u16| match rule {
                LabelRule::AllToOne => prediction == target,
                LabelRule::AllToAll => prediction as usize == (truth[i] as usize + 1) % evals.num_classes,
            };
            let n = truth.len();
            let rate = |predicted: &dyn Fn(usize) -> u16| percent((0..n).filter(|&i| success(i, predicted(i))).count(), n);
            let untriggered = evals.originals.as_ref().map(|originals| rate(&|i| clean[originals[i]]));
            (Some(rate(&|i| triggered[i])), untriggered, Some(percent((0..n).filter(|&i| triggered[i] == truth[i]).count(), n)))
        }
        _ => (None, None, None),
    };
    Metrics { ba: percent(correct, labels.len()), asr, asr_untriggered, ra, per_class }
}

/// Evaluates `model` (inference form) on every test set.
pub fn evaluate(model: &Network, evals: &EvalSets, norm: &Normalization, batch_size: usize, device: &Device) -> Metrics {
    let clean = predict(model, &evals.test, norm, batch_size, device);
    let triggered = predict(model, &evals.triggered, norm, batch_size, device);
    score(evals, &clean, &triggered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use vab_data::ImageShape;

    fn evals(rule: LabelRule) -> EvalSets {
        let shape = ImageShape { channels: 1, height: 1, width: 1 };
        let set = |labels: Vec<u16>| Arc::new(ImageSet::new(shape, vec![0; labels.len()], labels).unwrap());
        // The triggered images are test images 1, 2 and 3 with a trigger.
        EvalSets { test: set(vec![0, 1, 2, 2]), triggered: set(vec![1, 2, 2]), originals: Some(vec![1, 2, 3].into()), attack: Some((rule, 0)), num_classes: 3 }
    }

    #[test]
    fn predicted_labels_are_row_argmaxes_first_of_equals() {
        let logits = [0.1, 2.0, -1.0, 5.0, 5.0, 0.0, -3.0, -2.0, -2.5];
        assert_eq!(predicted_labels(&logits, 3), vec![1, 0, 1]);
        assert_eq!(predicted_labels(&[], 3), Vec::<u16>::new());
    }

    #[test]
    fn scores_match_hand_counts() {
        let m = score(&evals(LabelRule::AllToOne), &[0, 1, 0, 2], &[0, 2, 0]);
        assert_eq!(m.ba, 75.0);
        assert_eq!(m.per_class, vec![100.0, 100.0, 50.0]);
        assert!((m.asr.unwrap() - 200.0 / 3.0).abs() < 1e-9);
        assert!((m.ra.unwrap() - 100.0 / 3.0).abs() < 1e-9);
        // Untriggered, test image 2 alone goes to the target: 1 of 3.
        assert!((m.asr_untriggered.unwrap() - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(m.describe(), "BA 75.00% ASR 66.67% (33.33% without the trigger) RA 33.33%");
    }

    #[test]
    fn the_untriggered_rate_needs_the_originals() {
        let mut e = evals(LabelRule::AllToOne);
        e.originals = None;
        let m = score(&e, &[0, 1, 0, 2], &[0, 2, 0]);
        assert_eq!(m.asr_untriggered, None);
        assert_eq!(m.describe(), "BA 75.00% ASR 66.67% RA 33.33%");
    }

    #[test]
    fn all_to_all_success_is_the_next_class() {
        let m = score(&evals(LabelRule::AllToAll), &[0, 1, 2, 2], &[2, 0, 0]);
        assert!((m.asr.unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(m.ra, Some(0.0));
        // Originals 1, 2, 2 with true labels 1, 2, 2: only image 1 lands on its next class.
        let untriggered = score(&evals(LabelRule::AllToAll), &[0, 2, 2, 2], &[2, 0, 0]).asr_untriggered.unwrap();
        assert!((untriggered - 100.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn clean_bundle_has_no_asr() {
        let mut e = evals(LabelRule::AllToOne);
        e.attack = None;
        let m = score(&e, &[0, 1, 2, 2], &[]);
        assert_eq!((m.asr, m.asr_untriggered, m.ra, m.ba), (None, None, None, 100.0));
    }
}
