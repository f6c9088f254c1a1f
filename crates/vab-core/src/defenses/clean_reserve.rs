//! The clean reserve of the post-training defenses (FP, NAD): a small set of training samples
//! known to be clean, with their true labels. It is an assumption the train-time defenses (V&B,
//! ABL, DBD) do not make, so vab draws it explicitly from the bundle's poison flags, records it
//! in `summary.json`, and removes it from nothing: the network still trains on every sample.

use rand::seq::index;
use rand::SeedableRng;

/// Positions of ⌊`share`·N⌉ of the N samples `poisoned` flags, drawn uniformly (seeded) from
/// those not poisoned, in increasing order; `Err` when fewer clean samples exist.
pub fn draw(poisoned: &[bool], share: f64, seed: u64) -> Result<Vec<usize>, String> {
    let clean: Vec<usize> = (0..poisoned.len()).filter(|&i| !poisoned[i]).collect();
    let wanted = (share * poisoned.len() as f64).round() as usize;
    if wanted == 0 || wanted > clean.len() {
        return Err(format!("a clean reserve of {share} of {} training samples is {wanted} samples, but {} are clean", poisoned.len(), clean.len()));
    }
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed ^ 0xc1ea_2e5e_27e0);
    let mut picked: Vec<usize> = index::sample(&mut rng, clean.len(), wanted).into_iter().map(|k| clean[k]).collect();
    picked.sort_unstable();
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_holds_only_clean_samples_and_is_seeded() {
        let poisoned: Vec<bool> = (0..1000).map(|i| i % 10 == 3).collect();
        let reserve = draw(&poisoned, 0.05, 7).unwrap();
        assert_eq!(reserve.len(), 50);
        assert!(reserve.iter().all(|&i| !poisoned[i]) && reserve.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(draw(&poisoned, 0.05, 7).unwrap(), reserve);
        assert_ne!(draw(&poisoned, 0.05, 8).unwrap(), reserve);
        assert!(draw(&poisoned, 0.95, 7).unwrap_err().contains("950 samples, but 900 are clean"));
        assert!(draw(&poisoned, 0.0001, 7).is_err());
    }
}
