//! Method.md §4.3, the automatic warm-up (paper appendix A.3; not in the authors' code): a
//! two-component 1-D Gaussian mixture fitted by EM to the normalised entropies. The low-mean
//! component N(μ1, σ1²) is the suspicious one; warm-up ends once μ1 + 3σ1 < μ2, and the split
//! threshold is then fixed at t_f = μ1 + 0.5σ1.

/// One Gaussian component.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Component {
    pub weight: f64,
    pub mean: f64,
    pub std: f64,
}

/// A fitted two-component mixture, the low-mean component first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mixture {
    pub low: Component,
    pub high: Component,
    /// EM iterations used.
    pub iterations: usize,
}

/// Smallest standard deviation a component may shrink to (keeps EM away from singularities).
const MIN_STD: f64 = 1e-3;

fn density(x: f64, c: &Component) -> f64 {
    let z = (x - c.mean) / c.std;
    c.weight * (-0.5 * z * z).exp() / (c.std * (2.0 * std::f64::consts::PI).sqrt())
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

impl Mixture {
    /// Fits the mixture to `values` by EM, starting from the 25th and 75th percentiles, until
    /// the log-likelihood gains less than 1e-9 per sample or after `max_iterations`.
    /// `None` for fewer than two values.
    pub fn fit(values: &[f64], max_iterations: usize) -> Option<Self> {
        if values.len() < 2 {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt().max(MIN_STD);
        let mut c = [
            Component { weight: 0.5, mean: quantile(&sorted, 0.25), std },
            Component { weight: 0.5, mean: quantile(&sorted, 0.75), std },
        ];
        let mut previous = f64::NEG_INFINITY;
        let mut iterations = 0;
        let mut resp = vec![0f64; values.len()];
        while iterations < max_iterations {
            iterations += 1;
            // E step: responsibility of the first component; log-likelihood.
            let mut log_likelihood = 0.0;
            for (r, &x) in resp.iter_mut().zip(values) {
                let (a, b) = (density(x, &c[0]), density(x, &c[1]));
                let total = (a + b).max(f64::MIN_POSITIVE);
                *r = a / total;
                log_likelihood += total.ln();
            }
            // M step.
            for (k, comp) in c.iter_mut().enumerate() {
                let w: Vec<f64> = resp.iter().map(|&r| if k == 0 { r } else { 1.0 - r }).collect();
                let mass = w.iter().sum::<f64>().max(1e-12);
                let mean = w.iter().zip(values).map(|(w, x)| w * x).sum::<f64>() / mass;
                let var = w.iter().zip(values).map(|(w, x)| w * (x - mean).powi(2)).sum::<f64>() / mass;
                *comp = Component { weight: mass / n, mean, std: var.sqrt().max(MIN_STD) };
            }
            if log_likelihood - previous < 1e-9 * n {
                break;
            }
            previous = log_likelihood;
        }
        let (low, high) = if c[0].mean <= c[1].mean { (c[0], c[1]) } else { (c[1], c[0]) };
        Some(Self { low, high, iterations })
    }

    /// Whether the components have separated: μ1 + 3σ1 < μ2.
    pub fn separated(&self) -> bool {
        self.low.mean + 3.0 * self.low.std < self.high.mean
    }

    /// The fixed split threshold once separated: μ1 + 0.5σ1.
    pub fn threshold(&self) -> f64 {
        self.low.mean + 0.5 * self.low.std
    }

    /// Whether `x` is more likely under the low (suspicious) component.
    pub fn is_low(&self, x: f64) -> bool {
        density(x, &self.low) >= density(x, &self.high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Box-Muller normal samples.
    fn normal(rng: &mut rand_chacha::ChaCha20Rng, mean: f64, std: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let (u, v): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen());
                mean + std * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
            })
            .collect()
    }

    #[test]
    fn recovers_two_known_gaussians() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        let mut values = normal(&mut rng, 0.7, 0.1, 3000);
        values.extend(normal(&mut rng, 0.1, 0.05, 2000));
        let m = Mixture::fit(&values, 500).unwrap();
        assert!((m.low.mean - 0.1).abs() < 0.01 && (m.low.std - 0.05).abs() < 0.01, "{m:?}");
        assert!((m.high.mean - 0.7).abs() < 0.01 && (m.high.std - 0.1).abs() < 0.01, "{m:?}");
        assert!((m.low.weight - 0.4).abs() < 0.02, "{m:?}");
        assert!(m.separated());
        assert!((m.threshold() - (m.low.mean + 0.5 * m.low.std)).abs() < 1e-12);
        assert!(m.is_low(0.12) && !m.is_low(0.65));
    }

    #[test]
    fn one_blob_does_not_separate() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let values = normal(&mut rng, 0.5, 0.1, 3000);
        assert!(!Mixture::fit(&values, 500).unwrap().separated());
        assert!(Mixture::fit(&[0.3], 10).is_none());
    }
}
