//! V&B (method.md §3-§7), one file per step: prediction entropy and the split ([`entropy`]),
//! the automatic warm-up's two-component mixture ([`gmm`]) and AttentionMix ([`attention_mix`]).
//! The stages that drive them (Victim warm-up, Beneficiary training, suppression) are the V&B
//! issue's remaining work.

pub mod attention_mix;
pub mod entropy;
pub mod gmm;
