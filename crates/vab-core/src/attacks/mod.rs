//! Attacks that need a model (the rest live in vab-attacks, without a DL framework):
//! [`label_consistent`] (CL-ε), built on [`pgd`], and [`input_aware`] (the dynamic attack).

pub mod input_aware;
pub mod label_consistent;
pub mod pgd;

use std::path::Path;

use sha2::{Digest, Sha256};
use vab_data::ImageSet;

use crate::config::TrainConfig;
use crate::error::{CoreError, Result};

/// Names of the attacks that need a model (`vab poison --attack`), beside vab-attacks' list.
pub const MODEL_ATTACKS: [&str; 2] = ["cl", "dynamic"];

/// Lower-case hex of `bytes` (cache keys).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The training configuration of an attack's own classifier (the `surrogate` parameter).
fn surrogate_config(path: &Path) -> Result<TrainConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| CoreError::file(path, format!("cannot read the surrogate's training configuration: {e} (a relative path is read from the working directory)")))?;
    TrainConfig::from_toml(&text).map_err(|e| CoreError::file(path, e))
}

/// Cache key of a model an attack trains: what it depends on is its training configuration
/// (the parsed values, so that editing a comment in the file keeps the cache), `params` (the
/// attack's own settings, serialised) and the training data, pixels and labels.
fn training_key(config: &TrainConfig, params: &[u8], train: &ImageSet) -> String {
    let mut key = Sha256::new();
    key.update(serde_json::to_vec(config).expect("a configuration serialises"));
    key.update(params);
    key.update(train.pixels());
    key.update(train.labels().iter().flat_map(|l| l.to_le_bytes()).collect::<Vec<u8>>());
    hex(&key.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use vab_data::ImageShape;

    #[test]
    fn the_cache_key_follows_the_configuration_values_not_its_comments() {
        let shape = ImageShape { channels: 1, height: 2, width: 2 };
        let train = ImageSet::new(shape, vec![0, 1, 2, 3, 4, 5, 6, 7], vec![0, 1]).unwrap();
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/cpu-surrogate.toml")).unwrap();
        let key = |text: &str| training_key(&TrainConfig::from_toml(text).unwrap(), b"p", &train);
        assert_eq!(key(&text), key(&format!("# another comment\n{text}")));
        assert_ne!(key(&text), key(&text.replace("epochs = 8", "epochs = 9")));
        assert_ne!(key(&text), training_key(&TrainConfig::from_toml(&text).unwrap(), b"q", &train));
        let relabelled = ImageSet::new(shape, vec![0, 1, 2, 3, 4, 5, 6, 7], vec![1, 1]).unwrap();
        assert_ne!(key(&text), training_key(&TrainConfig::from_toml(&text).unwrap(), b"p", &relabelled));
    }
}
