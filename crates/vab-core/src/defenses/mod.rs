//! Defenses. V&B's building blocks live in [`vab`], one file per step of method.md.

pub mod vab;
