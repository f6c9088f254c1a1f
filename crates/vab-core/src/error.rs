//! Errors of vab-core: file problems name the file; everything else says what is wrong.

use std::path::PathBuf;

/// Why a training run could not start, continue or finish.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// `error` is deliberately not a `source`: the message already holds it, and a source would
    /// print it twice in an error chain (`error: file: reason: reason`).
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl CoreError {
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        CoreError::Io { path: path.into(), error }
    }

    pub fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        CoreError::File { path: path.into(), message: message.to_string() }
    }
}

/// Result alias of this crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
