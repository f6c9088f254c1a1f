//! Atomic, resumable checkpoints: each named network (burnpack, which keeps parameter ids so the
//! optimiser state still matches) with its optimiser state, and the run's own state as JSON,
//! written to `checkpoint.tmp/` and swapped into `checkpoint/` only when complete. A run killed
//! at any moment leaves either the previous or the new checkpoint intact.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::{BurnpackStore, ModuleSnapshot};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::models::Network;

/// Progress of a no-defense run, recorded beside the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Wall time spent so far, over all sessions of the run.
    pub wall_s: f64,
}

const STATE: &str = "state.json";

fn model_file(name: &str) -> String {
    format!("{name}.bpk")
}

fn optim_file(name: &str) -> String {
    format!("{name}.optim.bin")
}

fn paths(run: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (run.join("checkpoint"), run.join("checkpoint.tmp"), run.join("checkpoint.old"))
}

/// Writes a checkpoint of the named networks with their optimisers, and `state`, into `run`.
pub fn save<S: Serialize>(run: &Path, parts: &[(&str, &Network, &ModuleOptimizer)], state: &S) -> Result<()> {
    let (current, tmp, old) = paths(run);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| CoreError::io(&tmp, e))?;
    for (name, model, optim) in parts {
        let (model_path, optim_path) = (tmp.join(model_file(name)), tmp.join(optim_file(name)));
        let mut store = BurnpackStore::from_file(&model_path).overwrite(true);
        // `valid()` folds the last batch-norm update into the running statistics; saving the
        // training module itself would store them one batch behind (burn's `RunningState`).
        model.valid().save_into(&mut store).map_err(|e| CoreError::file(&model_path, format!("cannot save model: {e:?}")))?;
        optim.save(&optim_path).map_err(|e| CoreError::file(&optim_path, format!("cannot save optimiser: {e:?}")))?;
    }
    let json = serde_json::to_vec(state).expect("state serialises");
    std::fs::write(tmp.join(STATE), json).map_err(|e| CoreError::io(tmp.join(STATE), e))?;
    // Swap: current → old, tmp → current, drop old. Between the two renames only `old` exists,
    // and `load` falls back to it.
    let _ = std::fs::remove_dir_all(&old);
    if current.exists() {
        std::fs::rename(&current, &old).map_err(|e| CoreError::io(&current, e))?;
    }
    std::fs::rename(&tmp, &current).map_err(|e| CoreError::io(&tmp, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// What `load` returns: the restored (network, optimiser) pairs and the run state.
pub type Restored<S> = (Vec<(Network, ModuleOptimizer)>, S);

/// Loads the latest complete checkpoint of `run` into the named networks and optimisers
/// (freshly built with the run's configuration), in the order given; `None` when the run has
/// no checkpoint.
pub fn load<S: DeserializeOwned>(run: &Path, parts: Vec<(&str, Network, ModuleOptimizer)>) -> Result<Option<Restored<S>>> {
    let (current, _, old) = paths(run);
    let Some(dir) = [current, old].into_iter().find(|d| d.join(STATE).is_file()) else {
        return Ok(None);
    };
    let state_path = dir.join(STATE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| CoreError::io(&state_path, e))?;
    let state: S = serde_json::from_str(&text).map_err(|e| CoreError::file(&state_path, e))?;
    let mut loaded = Vec::with_capacity(parts.len());
    for (name, mut model, optim) in parts {
        let (model_path, optim_path) = (dir.join(model_file(name)), dir.join(optim_file(name)));
        let mut store = BurnpackStore::from_file(&model_path);
        model.load_from(&mut store).map_err(|e| CoreError::file(&model_path, format!("cannot load model: {e:?}")))?;
        let optim = optim.load(&optim_path).map_err(|e| CoreError::file(&optim_path, format!("cannot load optimiser: {e:?}")))?;
        loaded.push((model, optim));
    }
    Ok(Some((loaded, state)))
}
