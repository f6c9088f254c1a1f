//! V&B (method.md §3-§7), one file per step: prediction entropy and the split ([`entropy`]),
//! the warm-up threshold schedules ([`threshold`]), the automatic warm-up's two-component
//! mixture ([`gmm`]), AttentionMix ([`attention_mix`]) and the suppression of eq. 10
//! ([`suppression`]). The stages that drive them (Victim warm-up, Beneficiary training,
//! semi-supervised suppression) are the V&B issue's remaining work.

pub mod attention_mix;
pub mod entropy;
pub mod gmm;
pub mod suppression;
pub mod threshold;
