//! Defenses. V&B's building blocks live in [`vab`], one file per step of method.md; the
//! baselines the paper compares with beside it: [`abl`].

pub mod abl;
pub mod vab;
