//! Atomic, resumable checkpoints: the network (burnpack, which keeps parameter ids so the
//! optimiser state still matches), the optimiser state and the number of finished epochs, written
//! to `checkpoint.tmp/` and swapped into `checkpoint/` only when complete. A run killed at any
//! moment leaves either the previous or the new checkpoint intact.

use std::path::{Path, PathBuf};

use burn::optim::ModuleOptimizer;
use burn::store::{BurnpackStore, ModuleSnapshot};
use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::models::Network;

/// Progress recorded beside the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Wall time spent so far, over all sessions of the run.
    pub wall_s: f64,
}

const MODEL: &str = "model.bpk";
const OPTIM: &str = "optim.bin";
const STATE: &str = "state.json";

fn paths(run: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (run.join("checkpoint"), run.join("checkpoint.tmp"), run.join("checkpoint.old"))
}

/// Writes a checkpoint of `model`, `optim` and `state` into `run`.
pub fn save(run: &Path, model: &Network, optim: &ModuleOptimizer, state: &CheckpointState) -> Result<()> {
    let (current, tmp, old) = paths(run);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| CoreError::io(&tmp, e))?;
    let mut store = BurnpackStore::from_file(tmp.join(MODEL)).overwrite(true);
    model.save_into(&mut store).map_err(|e| CoreError::file(tmp.join(MODEL), format!("cannot save model: {e:?}")))?;
    optim.save(tmp.join(OPTIM)).map_err(|e| CoreError::file(tmp.join(OPTIM), format!("cannot save optimiser: {e:?}")))?;
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
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

/// Loads the latest complete checkpoint of `run` into `model` and `optim` (freshly built with
/// the run's configuration); `None` when the run has none.
pub fn load(run: &Path, mut model: Network, optim: ModuleOptimizer) -> Result<Option<(Network, ModuleOptimizer, CheckpointState)>> {
    let (current, _, old) = paths(run);
    let Some(dir) = [current, old].into_iter().find(|d| d.join(STATE).is_file()) else {
        return Ok(None);
    };
    let state_path = dir.join(STATE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| CoreError::io(&state_path, e))?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| CoreError::file(&state_path, e))?;
    let mut store = BurnpackStore::from_file(dir.join(MODEL));
    model.load_from(&mut store).map_err(|e| CoreError::file(dir.join(MODEL), format!("cannot load model: {e:?}")))?;
    let optim = optim.load(dir.join(OPTIM)).map_err(|e| CoreError::file(dir.join(OPTIM), format!("cannot load optimiser: {e:?}")))?;
    Ok(Some((model, optim, state)))
}
