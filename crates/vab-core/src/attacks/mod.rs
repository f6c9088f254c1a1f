//! Attacks that need a model (the rest live in vab-attacks, without a DL framework):
//! [`label_consistent`] (CL-ε), built on [`pgd`], and [`input_aware`] (the dynamic attack).

pub mod input_aware;
pub mod label_consistent;
pub mod pgd;

use sha2::{Digest, Sha256};
use vab_data::ImageSet;

/// Names of the attacks that need a model (`vab poison --attack`), beside vab-attacks' list.
pub const MODEL_ATTACKS: [&str; 2] = ["cl", "dynamic"];

/// Lower-case hex of `bytes` (cache keys).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Cache key of a model an attack trains: what it depends on is its configuration's text,
/// `params` (the attack's own settings, serialised) and the training data, pixels and labels.
fn training_key(config_text: &str, params: &[u8], train: &ImageSet) -> String {
    let mut key = Sha256::new();
    key.update(config_text.as_bytes());
    key.update(params);
    key.update(train.pixels());
    key.update(train.labels().iter().flat_map(|l| l.to_le_bytes()).collect::<Vec<u8>>());
    hex(&key.finalize()[..8])
}
