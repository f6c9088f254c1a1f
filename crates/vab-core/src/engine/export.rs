//! `model.safetensors`: the trained network with PyTorch parameter names, plus what is needed to
//! use it outside vab (architecture, input channels, classes, input normalisation) in the
//! metadata key `vab`. `python/vab_models.py` reads both back into a PyTorch module.

use std::path::Path;

use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};

use super::batches::Normalization;
use crate::error::{CoreError, Result};
use crate::models::{Arch, Network};

/// How to rebuild and feed an exported network: the JSON in the metadata key `vab`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub arch: Arch,
    pub in_channels: usize,
    pub num_classes: usize,
    /// Inputs are `(pixel / 255 - mean[c]) / std[c]`, with the training set's statistics.
    pub normalization: Normalization,
}

/// Saves `model` as safetensors with PyTorch parameter names (`weight`/`bias` of batch norm,
/// `[out, in]` linear weights, `running_mean`/`running_var`) and `card` as metadata. One
/// metadata key only: burn writes metadata from a hash map whose order changes from run to
/// run, which would make the bytes of identical models differ.
pub fn export_pytorch(model: &Network, card: &ModelCard, path: &Path) -> Result<()> {
    let mut store = SafetensorsStore::from_file(path)
        .with_to_adapter(BurnToPyTorchAdapter)
        .skip_enum_variants(true)
        .clear_metadata()
        .metadata("vab", serde_json::to_string(card).expect("card serialises"))
        .overwrite(true);
    model.save_into(&mut store).map_err(|e| CoreError::file(path, format!("cannot export model: {e:?}")))
}
