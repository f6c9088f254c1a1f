//! Fine-Pruning (Liu, Dolan-Gavitt and Garg, RAID 2018), a post-training defense that needs a
//! small clean set ([`super::clean_reserve`]). The network first trains as with no defense;
//! then:
//!
//! 1. **Pruning** ([`pruning`]): the mean activation a_c of every channel c of the last
//!    convolutional block's output, over the clean reserve (inference mode, un-augmented), and
//!    the channels cut in increasing order of a_c (a backdoor hides in channels clean inputs
//!    leave dormant), `prune_step` of them at a time, for as long as the reserve's accuracy
//!    stays within `max_accuracy_drop` of the unpruned network's: (acc₀ − acc_k)/acc₀ < drop.
//!    A channel is cut at the input of the final linear layer (its weights set to 0), as
//!    BackdoorBench prunes; the paper cuts the filter.
//! 2. **Fine-tuning**: `finetune_epochs` epochs on the clean reserve, cosine rate from
//!    `finetune_lr`, a new optimiser, the cut weights held at 0 after every step.
//!
//! Defaults and their sources: [`config::FpConfig`]; differences from BackdoorBench's code:
//! docs/baselines.md.

pub mod config;
pub mod pruning;
pub mod train;
