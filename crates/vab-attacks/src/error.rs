//! Errors of vab-attacks: bad parameters, unusable trigger files, impossible poisoning requests.

use std::path::PathBuf;

/// Why an attack could not be built or applied.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    /// No attack of that name is registered.
    #[error("unknown attack `{0}`; available: {names}", names = crate::ATTACKS.join(", "))]
    Unknown(String),
    /// A parameter is missing, of the wrong type or out of range.
    #[error("{attack}: {message}")]
    Params { attack: &'static str, message: String },
    /// A trigger or patch image could not be read.
    #[error("{}: {message}", path.display())]
    TriggerFile { path: PathBuf, message: String },
    /// The poisoning request cannot be met (rate, target, empty class, …).
    #[error("{0}")]
    Poisoning(String),
}

impl AttackError {
    /// A `Params` error of `attack`.
    pub fn params(attack: &'static str, message: impl Into<String>) -> Self {
        AttackError::Params { attack, message: message.into() }
    }
}

/// Result alias of this crate.
pub type Result<T, E = AttackError> = std::result::Result<T, E>;
