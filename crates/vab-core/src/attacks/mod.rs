//! Attacks that need a trained model (the rest live in vab-attacks, without a DL framework):
//! [`label_consistent`] (CL-ε), built on [`pgd`].

pub mod label_consistent;
pub mod pgd;

/// Names of the attacks that need a model (`vab poison --attack`), beside vab-attacks' list.
pub const MODEL_ATTACKS: [&str; 1] = ["cl"];
