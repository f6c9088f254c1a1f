//! DBD, Backdoor Defense via Decoupling the training process (Huang et al., ICLR 2022), a
//! train-time defense that needs no clean data. The network's training is split in three:
//!
//! 1. **SimCLR** ([`simclr`]): the backbone learns from the images alone, self-supervised, so
//!    a poisoned image's label cannot tie its trigger to the target class; poisoned images of
//!    one trigger cluster in feature space away from their target class's clean images.
//! 2. **Warm-up** ([`split`]): a linear head on the frozen backbone, trained with symmetric
//!    cross-entropy; poisoned samples fit it badly and keep a high loss.
//! 3. **Semi-supervised fine-tuning** ([`mixmatch`]): every epoch, the ε share of samples with
//!    the lowest loss keep their labels and the rest are unlabelled; the whole network trains
//!    on both with MixMatch.
//!
//! Defaults and their sources: [`config::DbdConfig`]; differences from the official code and
//! BackdoorBench: docs/baselines.md.

pub mod config;
pub mod mixmatch;
pub mod simclr;
pub mod split;
pub mod train;
