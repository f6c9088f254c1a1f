//! The decoded cache: decoding 60,000 JPEGs takes seconds, reading their pixels back takes a
//! fraction of one. The first load of an image folder or archive writes the decoded dataset as
//! a clean bundle into the cache directory; later loads read it.
//!
//! The key covers the source's canonical path, size and modification time (for a directory:
//! of every file under `train/` and `test/`), the resize and the bundle format version, so any
//! change to the source gives a new entry. A cache file that fails to read is ignored and
//! rewritten.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::bundle::{Bundle, FORMAT_VERSION};
use crate::error::{DataError, Result};

/// Where the cache lives: `$VAB_CACHE_DIR`, else `$XDG_CACHE_HOME/vab`, else `~/.cache/vab`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VAB_CACHE_DIR") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("vab");
    }
    std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from).join(".cache/vab")
}

/// The cache file for `source` loaded with `resize`, under `dir`.
pub fn cache_path(dir: &Path, source: &Path, resize: Option<u32>) -> Result<PathBuf> {
    let canonical = source.canonicalize().map_err(|e| DataError::io(source, e))?;
    let mut hasher = Sha256::new();
    hasher.update(format!("format {FORMAT_VERSION}\nresize {resize:?}\n{}\n", canonical.display()));
    if canonical.is_dir() {
        for split in ["train", "test"] {
            hash_tree(&mut hasher, &canonical.join(split))?;
        }
    } else {
        hash_stat(&mut hasher, &canonical)?;
    }
    let digest = hasher.finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let stem = canonical.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(dir.join(format!("{stem}-{hex}.safetensors")))
}

fn hash_stat(hasher: &mut Sha256, path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    hasher.update(format!("{} {} {}\n", path.display(), meta.len(), mtime.as_nanos()));
    Ok(())
}

fn hash_tree(hasher: &mut Sha256, dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|err| DataError::io(dir, err)))
        .collect::<Result<_>>()?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            hash_tree(hasher, &entry)?;
        } else {
            hash_stat(hasher, &entry)?;
        }
    }
    Ok(())
}

/// Reads a cache entry; `None` when absent or unreadable (it is then rebuilt).
pub fn read(path: &Path) -> Option<Bundle> {
    if !path.is_file() {
        return None;
    }
    Bundle::read(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_resize_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.tar");
        std::fs::write(&file, b"one").unwrap();
        let a = cache_path(dir.path(), &file, None).unwrap();
        assert_eq!(a, cache_path(dir.path(), &file, None).unwrap());
        assert_ne!(a, cache_path(dir.path(), &file, Some(224)).unwrap());
        std::fs::write(&file, b"three").unwrap();
        assert_ne!(a, cache_path(dir.path(), &file, None).unwrap());
    }

    #[test]
    fn directory_key_sees_files_inside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("train/a")).unwrap();
        std::fs::write(dir.path().join("train/a/1.png"), b"x").unwrap();
        let before = cache_path(dir.path(), dir.path(), None).unwrap();
        std::fs::write(dir.path().join("train/a/2.png"), b"y").unwrap();
        assert_ne!(before, cache_path(dir.path(), dir.path(), None).unwrap());
    }

    #[test]
    fn corrupt_entry_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        std::fs::write(&path, b"garbage").unwrap();
        assert!(read(&path).is_none());
    }
}
