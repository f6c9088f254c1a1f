//! Defenses. V&B's building blocks live in [`vab`], one file per step of method.md; the
//! baselines the paper compares with beside it ([`abl`], [`dbd`], [`fine_pruning`], [`nad`]), on the loop they
//! share ([`phased`]); the post-training ones need a [`clean_reserve`].

pub mod abl;
pub mod clean_reserve;
pub mod dbd;
pub mod fine_pruning;
pub mod nad;
pub mod phased;
pub mod vab;
