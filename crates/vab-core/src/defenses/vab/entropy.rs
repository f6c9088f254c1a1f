//! Method.md §3: prediction entropy of the Victim and the split into suspicious and credible
//! samples.
//!
//! e_i = -Σ_k p_ik ln p_ik with p_i = softmax(F_v(x_i)) (eval mode, no augmentation; 0·ln 0 = 0).
//! The authors' code divides by K, which min-max normalisation cancels, so it is not done here.
//! Smoothing over refreshes (the authors' code, not the paper): e ← m·e_new + (1-m)·e_prev with
//! m = `entropy_momentum` (0.75), e_prev the previous smoothed, unnormalised value.
//! Normalisation: min-max over the whole training set to [0, 1].
//! Split: suspicious D_s = {e_norm ≤ t_f} (the code's ≤; the paper writes <), credible = the rest.

/// Entropy (nats) of softmax(`logits`), computed stably through log-softmax.
pub fn entropy_of_logits(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_z = max + logits.iter().map(|&z| (z as f64 - max).exp()).sum::<f64>().ln();
    logits
        .iter()
        .map(|&z| {
            let log_p = z as f64 - log_z;
            let p = log_p.exp();
            if p == 0.0 { 0.0 } else { -p * log_p }
        })
        .sum()
}

/// Entropies of a row-major [N, K] logit matrix.
pub fn entropies(logits: &[f32], num_classes: usize) -> Vec<f64> {
    logits.chunks_exact(num_classes).map(entropy_of_logits).collect()
}

/// Smooths fresh entropies with the previous smoothed ones: m·new + (1-m)·previous; the first
/// refresh (no previous values) keeps the fresh ones.
pub fn smooth(new: &[f64], previous: Option<&[f64]>, momentum: f64) -> Vec<f64> {
    match previous {
        Some(prev) => new.iter().zip(prev).map(|(n, p)| momentum * n + (1.0 - momentum) * p).collect(),
        None => new.to_vec(),
    }
}

/// Min-max normalisation to [0, 1]. When every value is equal there is no ranking to use, and
/// every sample gets 1 (nothing is suspicious).
pub fn normalise(values: &[f64]) -> Vec<f64> {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = max - min;
    if range.is_nan() || range <= 1e-12 {
        return vec![1.0; values.len()];
    }
    values.iter().map(|v| (v - min) / (max - min)).collect()
}

/// The split: `true` marks a suspicious sample (normalised entropy ≤ `t_f`).
pub fn suspicious(normalised: &[f64], t_f: f64) -> Vec<bool> {
    normalised.iter().map(|&e| e <= t_f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_matches_hand_values() {
        // Uniform over 4 classes: ln 4. One-hot in the limit: 0.
        assert!((entropy_of_logits(&[0.0; 4]) - 4f64.ln()).abs() < 1e-12);
        assert!(entropy_of_logits(&[1000.0, 0.0, 0.0]) < 1e-12);
        // p = (0.5, 0.25, 0.25) from logits ln p: H = 0.5 ln 2 + 2 · 0.25 ln 4 = 1.5 ln 2.
        let logits = [0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()];
        assert!((entropy_of_logits(&logits) - 1.5 * 2f64.ln()).abs() < 1e-6);
        assert_eq!(entropies(&[0.0, 0.0, 9.0, -9.0], 2).len(), 2);
    }

    #[test]
    fn smoothing_follows_the_authors_momentum() {
        assert_eq!(smooth(&[1.0, 2.0], None, 0.75), vec![1.0, 2.0]);
        assert_eq!(smooth(&[1.0, 2.0], Some(&[3.0, 2.0]), 0.75), vec![1.5, 2.0]);
    }

    #[test]
    fn normalisation_spans_zero_to_one_and_split_uses_less_or_equal() {
        let n = normalise(&[2.0, 4.0, 3.0, 2.5]);
        assert_eq!(n, vec![0.0, 1.0, 0.5, 0.25]);
        assert_eq!(suspicious(&n, 0.25), vec![true, false, false, true]);
        assert_eq!(normalise(&[0.7, 0.7]), vec![1.0, 1.0]);
        assert_eq!(suspicious(&normalise(&[0.7, 0.7]), 0.2), vec![false, false]);
    }
}
