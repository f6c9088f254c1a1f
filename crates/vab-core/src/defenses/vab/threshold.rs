//! Method.md §4.2: the split threshold t_f during the Victim's warm-up.
//!
//! - `steps` (the paper's schedule, as the authors' code writes it): t_f = max(1 - `step`·epoch,
//!   `end`) (CIFAR-10: step 0.4, end 0.2, i.e. 0.6 then 0.2; ImageNet: step 0.1, end 0.4), then
//!   stays at `end`. Epoch 0 on all data is t_f = 1, so 1 → 0.6 → 0.2 is the paper's "1 to 0.2
//!   linearly over 3 epochs" (method.md §4). Formerly named `code_steps`, still accepted.
//! - `linear_after_epoch0` (beyond the paper): t_f falls linearly from 1 to `end` over `epochs`
//!   warm-up epochs *after* epoch 0 (0.733, 0.467, 0.2 for end 0.2 over 3): one Victim epoch
//!   more than the paper's schedule. Formerly named `paper_linear`, still accepted.
//!
//! - `auto` (paper appendix A.3, see [`super::gmm`]): no schedule; a two-component mixture
//!   fitted to the entropies decides when warm-up ends and fixes t_f, within `max_epochs`.
//!
//! Epoch 0 trains the Victim on everything, so the schedules start at warm-up epoch 1.

use serde::{Deserialize, Serialize};

/// How the Victim warms up (config `vab.warmup`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Warmup {
    #[serde(alias = "paper_linear")]
    LinearAfterEpoch0 { end: f64, epochs: usize },
    #[serde(alias = "code_steps")]
    Steps { step: f64, end: f64 },
    Auto { max_epochs: usize },
}

impl Default for Warmup {
    /// The paper's CIFAR-10 schedule (the authors' values).
    fn default() -> Self {
        Warmup::Steps { step: 0.4, end: 0.2 }
    }
}

impl Warmup {
    /// t_f for warm-up epoch `epoch` (1-based); later epochs get the final value. `None` for
    /// `auto`, whose threshold comes from the mixture.
    pub fn t_f(&self, epoch: usize) -> Option<f64> {
        match *self {
            Warmup::LinearAfterEpoch0 { end, epochs } => {
                let progress = epoch.min(epochs.max(1)) as f64 / epochs.max(1) as f64;
                Some(1.0 - (1.0 - end) * progress)
            }
            Warmup::Steps { step, end } => Some((1.0 - step * epoch as f64).max(end)),
            Warmup::Auto { .. } => None,
        }
    }

    /// Warm-up epochs after epoch 0 (for `auto`, the most it may take).
    pub fn warmup_epochs(&self) -> usize {
        match *self {
            Warmup::LinearAfterEpoch0 { epochs, .. } => epochs,
            Warmup::Steps { step, end } => ((1.0 - end) / step - 1e-9).ceil().max(0.0) as usize,
            Warmup::Auto { max_epochs } => max_epochs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_give_the_papers_values() {
        let cifar = Warmup::default();
        let values: Vec<f64> = (1..=4).map(|e| cifar.t_f(e).unwrap()).collect();
        assert!(values.iter().zip([0.6, 0.2, 0.2, 0.2]).all(|(a, b)| (a - b).abs() < 1e-12), "{values:?}");
        assert_eq!(cifar.warmup_epochs(), 2);
        let imagenet = Warmup::Steps { step: 0.1, end: 0.4 };
        assert!((imagenet.t_f(3).unwrap() - 0.7).abs() < 1e-12 && (imagenet.t_f(9).unwrap() - 0.4).abs() < 1e-12);
        assert_eq!(imagenet.warmup_epochs(), 6);
    }

    #[test]
    fn linear_after_epoch0_reaches_the_end_after_its_epochs() {
        let s = Warmup::LinearAfterEpoch0 { end: 0.2, epochs: 3 };
        let values: Vec<f64> = (1..=4).map(|e| s.t_f(e).unwrap()).collect();
        let expected = [1.0 - 0.8 / 3.0, 1.0 - 1.6 / 3.0, 0.2, 0.2];
        assert!(values.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-12), "{values:?}");
        assert_eq!(s.warmup_epochs(), 3);
        assert_eq!(Warmup::Auto { max_epochs: 6 }.t_f(1), None);
    }

    /// The former names still read, as the schedules they always were.
    #[test]
    fn former_names_are_accepted() {
        #[derive(Deserialize)]
        struct Section {
            warmup: Warmup,
        }
        let read = |text: &str| toml::from_str::<Section>(text).expect("parses").warmup;
        assert_eq!(read("warmup = { kind = \"paper_linear\", end = 0.2, epochs = 3 }"), Warmup::LinearAfterEpoch0 { end: 0.2, epochs: 3 });
        assert_eq!(read("warmup = { kind = \"code_steps\", step = 0.4, end = 0.2 }"), Warmup::Steps { step: 0.4, end: 0.2 });
        assert_eq!(read("warmup = { kind = \"steps\", step = 0.4, end = 0.2 }"), Warmup::default());
    }
}
