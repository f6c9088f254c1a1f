//! ABL, Anti-Backdoor Learning (Li et al., NeurIPS 2021), a train-time defense that needs no
//! clean data. One network goes through three phases:
//!
//! 1. **Isolation** ([`isolation`]): `isolation_epochs` epochs on every training sample with
//!    the local gradient ascent loss L_LGA = sign(L − γ)·L, where L is the batch's mean
//!    cross-entropy. The loss of samples the network learns quickly (a backdoor's poison) is held
//!    near γ while that of the rest stays above it; afterwards the `isolation_ratio` share of
//!    samples with the lowest loss is isolated as D̂_b.
//! 2. **Training on the rest**: the remaining epochs of `[train]` on D \ D̂_b with plain
//!    cross-entropy (a new optimiser, as the official code's second script starts one).
//! 3. **Unlearning**: `unlearning_epochs` epochs of gradient ascent, maximising the
//!    cross-entropy on D̂_b: L_ABL = −CE(f(x), y) for (x, y) ∈ D̂_b.
//!
//! Defaults and their sources: [`config::AblConfig`]. Differences from the official code
//! (github.com/bboylyg/ABL), recorded in docs/method-as-implemented.md: it feeds the isolation
//! epochs in the dataset's fixed order (its loader does not shuffle), vab shuffles them as every
//! other pass; its training on the rest adds Cutout (one 2×2 hole), vab uses `[train]`'s
//! augmentation; the loss of each sample is taken in inference mode on un-augmented images, as
//! there.

pub mod config;
pub mod isolation;
pub mod train;
