//! Warnings when V&B's final split looks like it failed, from the training labels alone (no
//! poison flags): the entropy split is tuned to CIFAR-10, and on easier data it can take most
//! clean samples as suspicious (Fashion-MNIST, issue #35: 3,752 of 5,000, BA 88.2 → 59.9).
//!
//! - **Size**: a suspicious set holding more than [`MAX_SUSPICIOUS_SHARE`] of the training set;
//!   poisoning rates are far lower (the paper's: 10%). The CPU preset's BadNets quick start
//!   (seeds 0-2, 2026-12-07) ended at 20.3, 25.2 and 25.3%; the Fashion-MNIST failure at 75%.
//! - **Label mix**: a poison-label backdoor puts its target label in the suspicious set above
//!   the label's share of the training set. When no label reaches [`MIN_LABEL_DOMINANCE`] times
//!   its share, either the data is clean or the split missed the poison. The same three runs'
//!   most over-represented labels reached 2.88×, 2.21× and 2.32×, so the bound is set below
//!   them; it has not been measured on clean data, where easy classes may exceed it.

/// Largest plausible share of the training set in the suspicious set.
pub const MAX_SUSPICIOUS_SHARE: f64 = 0.5;

/// Over-representation (share in the suspicious set / share in the training set) the most
/// over-represented label must reach for the split to look like it caught a target class.
pub const MIN_LABEL_DOMINANCE: f64 = 1.5;

/// One sentence per sign of a failed split, with what the user can do; empty when none.
/// `suspicious` indexes `labels` (the training labels); `class_names` names the labels.
pub fn split_warnings(suspicious: &[usize], labels: &[u16], class_names: &[String]) -> Vec<String> {
    let n = labels.len();
    if n == 0 {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    if suspicious.is_empty() {
        warnings.push("the final suspicious set is empty: no sample was set apart as poisoned (a V&B run then trains the Beneficiary on every sample without suppression); check the entropy histograms (entropy/refresh-*.png)".into());
        return warnings;
    }
    let share = suspicious.len() as f64 / n as f64;
    if share > MAX_SUSPICIOUS_SHARE {
        warnings.push(format!(
            "the final suspicious set holds {:.1}% of the training samples, more than {:.0}%: most of the data was taken as poisoned (a V&B run then trains the Beneficiary on the rest, which costs accuracy). \
             This happens on data easier than CIFAR-10; against a backdoor that relabels its samples, try `[vab] label_check = {{ epochs = 15 }}` (beyond the paper; on Fashion-MNIST it kept no defense's accuracy), and check the entropy histograms (entropy/refresh-*.png)",
            100.0 * share,
            100.0 * MAX_SUSPICIOUS_SHARE
        ));
    }
    let count = |indices: &mut dyn Iterator<Item = usize>| {
        let mut counts = vec![0usize; class_names.len().max(1)];
        for i in indices {
            if let Some(c) = counts.get_mut(labels[i] as usize) {
                *c += 1;
            }
        }
        counts
    };
    let in_training = count(&mut (0..n));
    let in_suspicious = count(&mut suspicious.iter().copied());
    let dominance = |c: usize| (in_suspicious[c] as f64 / suspicious.len() as f64) / (in_training[c].max(1) as f64 / n as f64);
    // The most over-represented label (the first of equals).
    let top = (0..in_training.len()).min_by(|&a, &b| dominance(b).total_cmp(&dominance(a))).unwrap_or(0);
    if dominance(top) < MIN_LABEL_DOMINANCE {
        let name = class_names.get(top).map_or_else(|| top.to_string(), String::clone);
        warnings.push(format!(
            "no label dominates the final suspicious set: the most over-represented, {name}, is {:.1}% of it against {:.1}% of the training set (less than {MIN_LABEL_DOMINANCE}×). \
             A poison-label backdoor puts its target label far above its share, so either this data is clean or the split missed the poison",
            100.0 * in_suspicious[top] as f64 / suspicious.len() as f64,
            100.0 * in_training[top] as f64 / n as f64
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["a", "b", "c", "d"].map(String::from).to_vec()
    }

    /// 100 samples, 25 per label (label = index % 4).
    fn labels() -> Vec<u16> {
        (0..100).map(|i| (i % 4) as u16).collect()
    }

    #[test]
    fn a_small_split_dominated_by_one_label_passes() {
        // 12 suspicious: 10 of label 0 (83% against 25%: 3.3×), 2 of label 1.
        let suspicious: Vec<usize> = (0..40).step_by(4).chain([1, 5]).collect();
        assert!(split_warnings(&suspicious, &labels(), &names()).is_empty());
    }

    #[test]
    fn a_split_holding_most_of_the_data_is_named() {
        // 60 of 100, all of labels 0 and 1 and 10 of label 2: too big, and labels 0 and 1 are
        // only 1.67× over-represented (passes).
        let suspicious: Vec<usize> = (0..100).filter(|i| i % 4 < 2 || (i % 4 == 2 && *i < 40)).collect();
        let warnings = split_warnings(&suspicious, &labels(), &names());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("the final suspicious set holds 60.0% of the training samples, more than 50%"), "{}", warnings[0]);
        // 80 of 100: every label but 3 in full, 5 of label 3; label 0 is 1.25×.
        let most: Vec<usize> = (0..100).filter(|i| i % 4 < 3 || *i < 20).collect();
        let warnings = split_warnings(&most, &labels(), &names());
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[1].contains("the most over-represented, a, is 31.2% of it against 25.0% of the training set"), "{}", warnings[1]);
    }

    #[test]
    fn a_flat_label_mix_and_an_empty_set_are_named() {
        let flat: Vec<usize> = (0..20).collect();
        let warnings = split_warnings(&flat, &labels(), &names());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("no label dominates the final suspicious set"), "{}", warnings[0]);
        let empty = split_warnings(&[], &labels(), &names());
        assert!(empty.len() == 1 && empty[0].starts_with("the final suspicious set is empty"), "{empty:?}");
    }
}
