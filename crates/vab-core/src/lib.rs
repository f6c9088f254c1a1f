//! # vab-core
//!
//! Models, the training engine and the defenses (V&B first) on burn 0.22. burn 0.22 picks the
//! backend at run time through its `Device` (`Device::flex()` is the pure-Rust CPU backend);
//! autodiff is a property of the device (`Device::flex().autodiff()`), so the code here is
//! written once, without backend generics.
//!
//! - [`models`]: ResNet-18 (CIFAR, ImageNet, PreAct) and a small CPU network.
//! - [`engine`]: batches, soft cross-entropy, optimisers, LR schedules, evaluation (BA, ASR, RA),
//!   checkpoints and the no-defense run.
//! - [`data`]: the split of a bundle into what training may see and the ground truth.
//! - [`config`]: TOML training presets.

pub mod attacks;
pub mod backend;
pub mod bench;
pub mod config;
pub mod cpu;
pub mod data;
pub mod defenses;
pub mod detection;
pub mod engine;
mod error;
pub mod models;

pub use error::{CoreError, Result};
