//! Optimisers built from the configuration, with PyTorch's semantics (burn's defaults differ:
//! SGD momentum dampening 0.1 and Adam epsilon 1e-5, both reset here).

use burn::optim::momentum::MomentumConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, ModuleOptimizer, SgdConfig};

use crate::config::OptimizerConfig;

/// The optimiser of `config`.
pub fn build(config: &OptimizerConfig) -> ModuleOptimizer {
    match *config {
        OptimizerConfig::Sgd { momentum, weight_decay, nesterov } => SgdConfig::new()
            .with_momentum(Some(MomentumConfig { momentum, dampening: 0.0, nesterov }))
            .with_weight_decay((weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32)))
            .init(),
        OptimizerConfig::Adam { weight_decay } => AdamConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay((weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32)))
            .init(),
    }
}
