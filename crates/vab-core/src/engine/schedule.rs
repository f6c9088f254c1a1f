//! Learning-rate schedules, evaluated per epoch (PyTorch's `MultiStepLR` / `CosineAnnealingLR`
//! stepped once per epoch).

/// A learning-rate schedule (config key `train.schedule`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// base · gamma^(number of milestones ≤ epoch).
    Multistep { milestones: Vec<usize>, gamma: f64 },
    /// min + (base - min) · (1 + cos(π · epoch / epochs)) / 2.
    Cosine { min_lr: f64 },
}

impl Schedule {
    /// A finite, positive `gamma`; a finite, non-negative `min_lr`. `key` names the schedule in
    /// the error (e.g. `train.schedule`).
    pub fn validate(&self, key: &str) -> Result<(), String> {
        match *self {
            Schedule::Multistep { gamma, .. } if !(gamma.is_finite() && gamma > 0.0) => Err(format!("{key}.gamma must be a positive number, got {gamma}")),
            Schedule::Cosine { min_lr } if !(min_lr.is_finite() && min_lr >= 0.0) => Err(format!("{key}.min_lr must be a non-negative number, got {min_lr}")),
            _ => Ok(()),
        }
    }

    /// The rate of 0-based `epoch` out of `epochs`.
    pub fn lr(&self, base: f64, epoch: usize, epochs: usize) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Multistep { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|&&m| m <= epoch).count() as i32)
            }
            Schedule::Cosine { min_lr } => {
                let t = epoch as f64 / epochs.max(1) as f64;
                min_lr + (base - min_lr) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistep_divides_at_each_milestone() {
        let s = Schedule::Multistep { milestones: vec![50, 100, 150], gamma: 0.1 };
        let lrs: Vec<f64> = [0, 49, 50, 99, 100, 150, 199].iter().map(|&e| s.lr(0.1, e, 200)).collect();
        let expected = [0.1, 0.1, 0.01, 0.01, 0.001, 0.0001, 0.0001];
        for (got, want) in lrs.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{lrs:?}");
        }
    }

    #[test]
    fn cosine_starts_at_base_halves_midway_and_approaches_min() {
        let s = Schedule::Cosine { min_lr: 0.0 };
        assert_eq!(s.lr(0.1, 0, 10), 0.1);
        assert!((s.lr(0.1, 5, 10) - 0.05).abs() < 1e-12);
        assert!((s.lr(0.1, 9, 10) - 0.1 * (1.0 + (0.9 * std::f64::consts::PI).cos()) / 2.0).abs() < 1e-12);
        assert_eq!(Schedule::Constant.lr(0.3, 7, 10), 0.3);
    }
}
