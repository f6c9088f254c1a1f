//! Atomic, resumable checkpoints: each named network (burnpack, which keeps parameter ids so the
//! optimiser state still matches) with its optimiser state if it still trains, and the run's
//! own state as JSON, written to `checkpoint.tmp/` and swapped into `checkpoint/` only when
//! complete. A run killed at any moment leaves either the previous or the new checkpoint intact.

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

/// A checkpoint being written: networks and optimisers go to `checkpoint.tmp/` one by one, and
/// [`Writer::commit`] swaps the directory in with the state. For checkpoints of networks of
/// different types (the dynamic attack's generators and classifier); [`save`] is the
/// one-type shorthand.
pub struct Writer {
    run: PathBuf,
    tmp: PathBuf,
}

impl Writer {
    /// Starts a checkpoint of `run`, discarding any unfinished one.
    pub fn new(run: &Path) -> Result<Self> {
        let (_, tmp, _) = paths(run);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| CoreError::io(&tmp, e))?;
        Ok(Self { run: run.to_path_buf(), tmp })
    }

    /// Adds the network `name` and, if it still trains, its optimiser.
    pub fn network<M: Module>(&self, name: &str, model: &M, optim: Option<&ModuleOptimizer>) -> Result<()> {
        let (model_path, optim_path) = (self.tmp.join(model_file(name)), self.tmp.join(optim_file(name)));
        let mut store = BurnpackStore::from_file(&model_path).overwrite(true);
        // `valid()` folds the last batch-norm update into the running statistics; saving the
        // training module itself would store them one batch behind (burn's `RunningState`).
        model.valid().save_into(&mut store).map_err(|e| CoreError::file(&model_path, format!("cannot save model: {e:?}")))?;
        if let Some(optim) = optim {
            optim.save(&optim_path).map_err(|e| CoreError::file(&optim_path, format!("cannot save optimiser: {e:?}")))?;
        }
        Ok(())
    }

    /// Writes `state` and makes this the run's checkpoint.
    pub fn commit<S: Serialize>(self, state: &S) -> Result<()> {
        let json = serde_json::to_vec(state).expect("state serialises");
        std::fs::write(self.tmp.join(STATE), json).map_err(|e| CoreError::io(self.tmp.join(STATE), e))?;
        // Swap: current → old, tmp → current, drop old. Between the two renames only `old`
        // exists, and `Reader::open` falls back to it.
        let (current, tmp, old) = paths(&self.run);
        let _ = std::fs::remove_dir_all(&old);
        if current.exists() {
            std::fs::rename(&current, &old).map_err(|e| CoreError::io(&current, e))?;
        }
        std::fs::rename(&tmp, &current).map_err(|e| CoreError::io(&tmp, e))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }
}

/// The latest complete checkpoint of a run, read part by part.
pub struct Reader {
    dir: PathBuf,
}

impl Reader {
    /// The run's latest complete checkpoint; `None` when it has none.
    pub fn open(run: &Path) -> Option<Self> {
        let (current, _, old) = paths(run);
        [current, old].into_iter().find(|d| d.join(STATE).is_file()).map(|dir| Self { dir })
    }

    /// The state written with the checkpoint.
    pub fn state<S: DeserializeOwned>(&self) -> Result<S> {
        let path = self.dir.join(STATE);
        let text = std::fs::read_to_string(&path).map_err(|e| CoreError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| CoreError::file(&path, e))
    }

    /// Loads the network `name` into `model` (freshly built with the run's configuration).
    pub fn network<M: Module>(&self, name: &str, mut model: M) -> Result<M> {
        let path = self.dir.join(model_file(name));
        model.load_from(&mut BurnpackStore::from_file(&path)).map_err(|e| CoreError::file(&path, format!("cannot load model: {e:?}")))?;
        Ok(model)
    }

    /// Loads the optimiser state of the network `name` into `optim`.
    pub fn optimizer(&self, name: &str, optim: ModuleOptimizer) -> Result<ModuleOptimizer> {
        let path = self.dir.join(optim_file(name));
        optim.load(&path).map_err(|e| CoreError::file(&path, format!("cannot load optimiser: {e:?}")))
    }
}

/// Writes a checkpoint of the named networks with their optimisers, and `state`, into `run`.
pub fn save<S: Serialize>(run: &Path, parts: &[(&str, &Network, &ModuleOptimizer)], state: &S) -> Result<()> {
    let writer = Writer::new(run)?;
    for (name, model, optim) in parts {
        writer.network(name, *model, Some(optim))?;
    }
    writer.commit(state)
}

/// What `load` returns: the restored (network, optimiser) pairs and the run state.
pub type Restored<S> = (Vec<(Network, ModuleOptimizer)>, S);

/// Loads the latest complete checkpoint of `run` into the named networks and optimisers
/// (freshly built with the run's configuration), in the order given; `None` when the run has
/// no checkpoint.
pub fn load<S: DeserializeOwned>(run: &Path, parts: Vec<(&str, Network, ModuleOptimizer)>) -> Result<Option<Restored<S>>> {
    let Some(reader) = Reader::open(run) else {
        return Ok(None);
    };
    let state = reader.state()?;
    let mut loaded = Vec::with_capacity(parts.len());
    for (name, model, optim) in parts {
        loaded.push((reader.network(name, model)?, reader.optimizer(name, optim)?));
    }
    Ok(Some((loaded, state)))
}
