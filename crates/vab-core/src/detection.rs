//! Detection figures of a split against the bundle's poison flags (method.md §1). Reporting
//! only: the training code never receives the flags (see [`crate::data`]).

use serde::{Deserialize, Serialize};

/// How well a suspicious set matches the truly poisoned samples, in percent (0-100).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub suspicious: usize,
    pub credible: usize,
    pub poisoned: usize,
    /// Poisoned samples among the suspicious ones (`None` when nothing is suspicious).
    pub precision: Option<f64>,
    /// Poisoned samples caught (`None` when nothing is poisoned).
    pub recall: Option<f64>,
    /// Clean samples flagged suspicious (`None` when nothing is clean).
    pub fpr: Option<f64>,
    /// Poisoned samples left in the credible set, as a share of it.
    pub poisoned_in_credible: Option<f64>,
}

fn percent(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

impl Detection {
    /// Scores `suspicious[i]` against `poisoned[i]`.
    pub fn score(suspicious: &[bool], poisoned: &[bool]) -> Self {
        let count = |s: bool, p: bool| suspicious.iter().zip(poisoned).filter(|&(&a, &b)| a == s && b == p).count();
        let (tp, fp, fn_, tn) = (count(true, true), count(true, false), count(false, true), count(false, false));
        Self {
            suspicious: tp + fp,
            credible: fn_ + tn,
            poisoned: tp + fn_,
            precision: percent(tp, tp + fp),
            recall: percent(tp, tp + fn_),
            fpr: percent(fp, fp + tn),
            poisoned_in_credible: percent(fn_, fn_ + tn),
        }
    }

    /// "precision …% recall …% FPR …%".
    pub fn describe(&self) -> String {
        let show = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}%"));
        format!("precision {} recall {} FPR {}", show(self.precision), show(self.recall), show(self.fpr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_counted_confusion() {
        // 2 TP, 1 FP, 1 FN, 4 TN.
        let s = [true, true, true, false, false, false, false, false];
        let p = [true, true, false, true, false, false, false, false];
        let d = Detection::score(&s, &p);
        assert_eq!((d.suspicious, d.credible, d.poisoned), (3, 5, 3));
        assert!((d.precision.unwrap() - 200.0 / 3.0).abs() < 1e-9);
        assert!((d.recall.unwrap() - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(d.fpr, Some(20.0));
        assert_eq!(d.poisoned_in_credible, Some(20.0));
    }

    #[test]
    fn clean_data_has_no_recall() {
        let d = Detection::score(&[false, true], &[false, false]);
        assert_eq!((d.recall, d.precision, d.fpr), (None, Some(0.0), Some(50.0)));
    }
}
