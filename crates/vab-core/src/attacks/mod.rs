//! Attacks that need a model (the rest live in vab-attacks, without a DL framework):
//! [`label_consistent`] (CL-ε), built on [`pgd`], and [`input_aware`] (the dynamic attack).

pub mod input_aware;
pub mod label_consistent;
pub mod pgd;

/// Names of the attacks that need a model (`vab poison --attack`), beside vab-attacks' list.
pub const MODEL_ATTACKS: [&str; 2] = ["cl", "dynamic"];

/// Lower-case hex of `bytes` (cache keys).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
