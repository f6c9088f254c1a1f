//! The one error type of vab-data: every variant names the file (or URL) it is about.

use std::path::{Path, PathBuf};

/// What went wrong while reading, writing or fetching data.
///
/// Messages are one line, name the file (and the byte offset, entry or image where that helps)
/// and say what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The operating system refused a read or write.
    ///
    /// `error` is deliberately not a `source`: the message already holds it, and a source would
    /// print it twice in an error chain (`error: file: reason: reason`).
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    /// The file exists but its content is not what the format requires.
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    /// A download failed (network, HTTP status, interrupted transfer).
    #[error("{url}: {message}")]
    Download { url: String, message: String },
    /// A downloaded file does not have the published SHA-256.
    #[error("{}: SHA-256 mismatch (expected {expected}, got {actual}); the download is corrupt or the mirror serves another file, nothing was kept", path.display())]
    Checksum { path: PathBuf, expected: String, actual: String },
}

impl DataError {
    /// An `Invalid` error about `path`.
    pub fn invalid(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        DataError::Invalid { path: path.as_ref().to_path_buf(), message: message.into() }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl AsRef<Path>, error: std::io::Error) -> Self {
        DataError::Io { path: path.as_ref().to_path_buf(), error }
    }
}

/// Result alias of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
