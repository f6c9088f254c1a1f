//! The training engine: batches, loss, optimisers, schedules, evaluation, checkpoints and the
//! no-defense run.

pub mod batches;
pub mod checkpoint;
pub mod contrastive_augment;
pub mod eval;
pub mod export;
pub mod loss;
pub mod optim;
pub mod progress;
pub mod run;
pub mod schedule;
pub mod step;
