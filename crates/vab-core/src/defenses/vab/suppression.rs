//! Method.md §7, semi-supervised suppression (paper eq. 10, with the authors' T = 3):
//! the pseudo-label ŷ is the argmax of the Beneficiary's softmax averaged over K augmented views
//! (one-hot, no sharpening), and y' = clip(ŷ - softmax(F_v(x)/T), 0, 1) with the Victim in eval
//! mode on the un-augmented view. For a one-hot ŷ of class c this is (1 - p_v,c)·ŷ: a per-sample
//! weight on c, which [`suppression_weight`] computes directly.

/// softmax(`logits` / `temperature`).
pub fn softmax(logits: &[f32], temperature: f64) -> Vec<f64> {
    let scaled: Vec<f64> = logits.iter().map(|&z| z as f64 / temperature).collect();
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = scaled.iter().map(|z| (z - max).exp()).collect();
    let total: f64 = exp.iter().sum();
    exp.iter().map(|e| e / total).collect()
}

/// The pseudo-label: argmax of the softmax averaged over the views' logits (ties: lowest class).
pub fn pseudo_label(views: &[&[f32]]) -> usize {
    let k = views[0].len();
    let mut mean = vec![0.0; k];
    for view in views {
        for (m, p) in mean.iter_mut().zip(softmax(view, 1.0)) {
            *m += p / views.len() as f64;
        }
    }
    (0..k).fold(0, |best, c| if mean[c] > mean[best] { c } else { best })
}

/// Eq. 10 in its general form: clip(`target` - softmax(`victim_logits`/T), 0, 1).
pub fn suppress(target: &[f32], victim_logits: &[f32], temperature: f64) -> Vec<f32> {
    target.iter().zip(softmax(victim_logits, temperature)).map(|(&y, p)| (y as f64 - p).clamp(0.0, 1.0) as f32).collect()
}

/// Eq. 10 for a one-hot target of `class`: the weight 1 - p_v,class.
pub fn suppression_weight(class: usize, victim_logits: &[f32], temperature: f64) -> f64 {
    1.0 - softmax(victim_logits, temperature)[class]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hot_suppression_equals_the_per_sample_weight() {
        let victim = [2.5f32, -1.0, 0.3, 4.0];
        for class in 0..4 {
            let mut one_hot = [0f32; 4];
            one_hot[class] = 1.0;
            let general = suppress(&one_hot, &victim, 3.0);
            let weight = suppression_weight(class, &victim, 3.0);
            for (k, g) in general.iter().enumerate() {
                let expected = if k == class { weight } else { 0.0 };
                assert!((*g as f64 - expected).abs() < 1e-6, "class {class}: {general:?} vs weight {weight}");
            }
        }
    }

    #[test]
    fn hand_computed_weight_and_temperature() {
        // logits (2, 0, 0), T = 1: p_0 = e²/(e² + 2).
        let e2 = 2f64.exp();
        assert!((suppression_weight(0, &[2.0, 0.0, 0.0], 1.0) - (1.0 - e2 / (e2 + 2.0))).abs() < 1e-12);
        // T = 2 halves the logits: p_0 = e/(e + 2).
        let e1 = 1f64.exp();
        assert!((suppression_weight(0, &[2.0, 0.0, 0.0], 2.0) - (1.0 - e1 / (e1 + 2.0))).abs() < 1e-12);
    }

    #[test]
    fn pseudo_label_averages_the_views() {
        // View 1 prefers class 0 slightly, view 2 prefers class 1 strongly: the average says 1.
        assert_eq!(pseudo_label(&[&[0.2, 0.0], &[0.0, 3.0]]), 1);
        assert_eq!(pseudo_label(&[&[1.0, 1.0]]), 0);
    }
}
