//! Method.md §7, the targets of stage 3 (semi-supervised suppression):
//!
//! - credible (labelled) samples: y' = clip(y - softmax(F_v(x)/T), 0, 1) before AttentionMix;
//! - suspicious (unlabelled) samples: ŷ = one-hot argmax of the Beneficiary's softmax averaged
//!   over K augmented views, then y' = clip(ŷ - softmax(F_v(x)/T), 0, 1) (eq. 10); every view
//!   is trained on with y', weighted by α (eq. 11).
//!
//! F_v(x) is the Victim's logits on the un-augmented image, in eval mode: exactly the logits
//! of the last entropy refresh, which the split carries, so no extra Victim pass is needed.
//! Per iteration the authors' code takes |D_s| / (labelled batches) unlabelled samples so both
//! sets are walked once per epoch; it crashes when that is 0, here it is at least 1 while D_s
//! is not empty (the suspicious set is then cycled).

use super::suppression::{pseudo_label, suppress};
use crate::engine::loss::one_hot;

/// One-hot targets of `labels`; suppressed by the Victim's logits of the samples (`indices`
/// into `victim_logits`, rows of `num_classes`) when `temperature` is given, and then only
/// the samples whose label is one of `only_labels` when that is given.
pub fn credible_targets(labels: &[u16], indices: &[usize], num_classes: usize, victim_logits: &[f32], temperature: Option<f64>, only_labels: Option<&[u16]>) -> Vec<f32> {
    let mut targets = one_hot(labels, num_classes);
    if let Some(t) = temperature {
        for ((row, &i), label) in targets.chunks_exact_mut(num_classes).zip(indices).zip(labels) {
            if only_labels.is_some_and(|only| !only.contains(label)) {
                continue;
            }
            let suppressed = suppress(row, &victim_logits[i * num_classes..(i + 1) * num_classes], t);
            row.copy_from_slice(&suppressed);
        }
    }
    targets
}

/// Pseudo-labels of an unlabelled batch of `n` samples seen in `views` views, view after view:
/// the argmax of each sample's softmax averaged over its views' `logits` ([views·n, K]).
pub fn pseudo_labels(logits: &[f32], n: usize, views: usize, num_classes: usize) -> Vec<u16> {
    (0..n)
        .map(|s| {
            let rows: Vec<&[f32]> = (0..views).map(|v| &logits[(v * n + s) * num_classes..(v * n + s + 1) * num_classes]).collect();
            pseudo_label(&rows) as u16
        })
        .collect()
}

/// Targets of an unlabelled batch with pseudo-labels `labels`, suppressed as in
/// [`credible_targets`]; the result has one row per view, view after view.
pub fn unlabelled_targets(labels: &[u16], indices: &[usize], views: usize, num_classes: usize, victim_logits: &[f32], temperature: Option<f64>) -> Vec<f32> {
    credible_targets(labels, indices, num_classes, victim_logits, temperature, None).repeat(views)
}

/// Unlabelled samples per iteration: ⌊|D_s| / labelled batches⌋, at least 1 unless D_s is empty.
pub fn unlabelled_batch_size(suspicious: usize, labelled_batches: usize) -> usize {
    if suspicious == 0 { 0 } else { (suspicious / labelled_batches.max(1)).max(1) }
}

/// The samples of unlabelled batch `b`, taken in turn from `order` (cycling when it runs out).
pub fn unlabelled_batch(order: &[usize], b: usize, size: usize) -> Vec<usize> {
    (0..size).map(|i| order[(b * size + i) % order.len()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credible_targets_are_one_hot_or_suppressed() {
        let victim = [0.0f32, 3.0, 0.0, 0.0, 1.0, 2.0];
        assert_eq!(credible_targets(&[1, 0], &[0, 1], 3, &victim, None, None), vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
        let t = credible_targets(&[1, 0], &[0, 1], 3, &victim, Some(3.0), None);
        // Sample 0, label 1: 1 - softmax((0, 1, 0))_1 = 1 - e/(e + 2).
        let e = 1f64.exp();
        assert!((t[1] as f64 - (1.0 - e / (e + 2.0))).abs() < 1e-6 && t[0] == 0.0 && t[2] == 0.0, "{t:?}");
        // Suppressing label 1 only: sample 0 as above, sample 1 (label 0) one-hot.
        let only = credible_targets(&[1, 0], &[0, 1], 3, &victim, Some(3.0), Some(&[1]));
        assert_eq!((only[..3].to_vec(), &only[3..]), (t[..3].to_vec(), &[1.0, 0.0, 0.0][..]));
    }

    #[test]
    fn pseudo_labels_average_views_and_repeat_per_view() {
        // Two samples, two views: sample 0's views say class 1 on average, sample 1's class 0.
        let logits = [0.0f32, 0.5, 2.0, 0.0, /* view 2 */ 0.0, 2.0, 1.0, 0.0];
        let labels = pseudo_labels(&logits, 2, 2, 2);
        assert_eq!(labels, vec![1, 0]);
        let t = unlabelled_targets(&labels, &[0, 1], 2, 2, &[0.0; 4], None);
        assert_eq!(t, vec![0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
        // Suppressed by a Victim that is sure of class 1 for sample 0 (T = 1).
        let t = unlabelled_targets(&labels, &[0, 1], 2, 2, &[-20.0, 20.0, 0.0, 0.0], Some(1.0));
        assert!(t[1] < 1e-6 && (t[2] - 0.5).abs() < 1e-6, "{t:?}");
    }

    #[test]
    fn unlabelled_batches_walk_and_cycle_the_suspicious_set() {
        assert_eq!(unlabelled_batch_size(1000, 70), 14);
        assert_eq!(unlabelled_batch_size(3, 70), 1, "the authors' code would take 0 and crash");
        assert_eq!(unlabelled_batch_size(0, 70), 0);
        assert_eq!(unlabelled_batch(&[5, 6, 7], 1, 2), vec![7, 5]);
    }
}
