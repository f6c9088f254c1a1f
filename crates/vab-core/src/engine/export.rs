//! `model.safetensors`: the trained network with PyTorch parameter names, plus what is needed to
//! use it outside vab (architecture, input channels, classes, input normalisation) in the
//! metadata key `vab`. `python/vab_models.py` reads both back into a PyTorch module,
//! [`import_pytorch`] into vab (`vab eval`).

use std::path::Path;

use burn::module::Module;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::Device;
use safetensors::SafeTensors;
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
    /// Height and width of the training images, so that `vab eval` refuses other sizes
    /// (absent in models exported before 2026-12-07).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<[usize; 2]>,
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

/// Reads a file written by [`export_pytorch`] back: its card, and the network on `device` in
/// inference form (`Module::valid`: batch norm uses the stored running statistics).
pub fn import_pytorch(path: &Path, device: &Device) -> Result<(Network, ModelCard)> {
    let card = read_card(path)?;
    let mut model = Network::new(card.arch, card.in_channels, card.num_classes, device);
    let mut store = SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter).skip_enum_variants(true);
    model.load_from(&mut store).map_err(|e| CoreError::file(path, format!("cannot load the network (is it a vab model.safetensors?): {e:?}")))?;
    Ok((model.valid(), card))
}

/// The card in the metadata key `vab` of a safetensors file.
fn read_card(path: &Path) -> Result<ModelCard> {
    let not_vab = |why: &str| CoreError::file(path, format!("{why}; expected a model.safetensors written by vab"));
    let bytes = std::fs::read(path).map_err(|e| CoreError::io(path, e))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| not_vab(&format!("not a safetensors file ({e})")))?;
    let card = header.metadata().as_ref().and_then(|m| m.get("vab")).ok_or_else(|| not_vab("no `vab` metadata key"))?;
    serde_json::from_str(card).map_err(|e| not_vab(&format!("unreadable `vab` metadata ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;
    use burn::tensor::{Tensor, TensorData};

    #[test]
    fn an_exported_network_imports_with_its_card_and_computes_the_same_logits() {
        let _rng = crate::models::RNG_TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let device = Device::flex();
        let model = Network::new(Arch::Small, 3, 4, &device);
        let normalization = crate::engine::batches::Normalization { mean: vec![0.5, 0.4, 0.3], std: vec![0.2, 0.25, 0.3] };
        let card = ModelCard { arch: Arch::Small, in_channels: 3, num_classes: 4, normalization, image_size: Some([8, 8]) };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        export_pytorch(&model, &card, &path).unwrap();
        // A fresh network has other weights: the import must replace them all.
        let (imported, read) = import_pytorch(&path, &device).unwrap();
        assert_eq!(read, card);
        let x = || Tensor::<4>::from_data(TensorData::new((0..2 * 3 * 16 * 16).map(|i| (i % 13) as f32 / 6.0 - 1.0).collect::<Vec<f32>>(), [2, 3, 16, 16]), &device);
        let logits = |m: &Network| m.forward(x()).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(logits(&imported), logits(&model.valid()));
        assert_ne!(logits(&Network::new(Arch::Small, 3, 4, &device).valid()), logits(&model.valid()), "control: another network differs");
    }

    #[test]
    fn a_file_without_a_card_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        std::fs::write(&path, b"\x02\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
        let message = import_pytorch(&path, &Device::flex()).unwrap_err().to_string();
        assert!(message.contains("x.safetensors") && message.contains("no `vab` metadata key"), "{message}");
        std::fs::write(&path, b"\xff\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
        let message = import_pytorch(&path, &Device::flex()).unwrap_err().to_string();
        assert!(message.contains("not a safetensors file"), "{message}");
    }
}
