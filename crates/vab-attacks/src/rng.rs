//! One `--seed` drives every random choice; each purpose draws from its own ChaCha20 stream, so
//! adding randomness to one step never shifts another.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// What a random stream is used for (its stream number).
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
pub enum Purpose {
    /// Which training samples are poisoned.
    PoisonIndices = 1,
    /// Which training samples become cross (noise) samples.
    CrossIndices = 2,
    /// The per-sample noise of cross samples.
    CrossNoise = 3,
    /// The WaNet warping field.
    WarpField = 4,
}

/// The random stream of `purpose` under `seed`.
pub fn stream(seed: u64, purpose: Purpose) -> ChaCha20Rng {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(purpose as u64);
    rng
}
