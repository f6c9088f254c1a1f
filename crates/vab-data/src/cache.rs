//! The decoded cache: decoding 60,000 JPEGs takes seconds, reading their pixels back takes a
//! fraction of one. The first load of an image folder or archive writes the decoded dataset as
//! a clean bundle into the cache directory; later loads read it.
//!
//! The key covers the source's bytes (for a directory: every file under `train/` and `test/`
//! with its path inside the directory), the resize and the bundle format version, so any change
//! to the data gives a new entry, while a copy, a move or a fresh modification time (a workplace
//! that copies the archive anew) keeps it. Hashing an 18 MB archive takes a fraction of the
//! seconds its decoding does. A cache file that fails to read is ignored and rewritten.

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
    hasher.update(format!("format {FORMAT_VERSION} with train_files\nresize {resize:?}\n"));
    if canonical.is_dir() {
        for split in ["train", "test"] {
            hash_tree(&mut hasher, &canonical, &canonical.join(split))?;
        }
    } else {
        hash_file(&mut hasher, &canonical, Path::new(""))?;
    }
    let digest = hasher.finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let stem = canonical.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(dir.join(format!("{stem}-{hex}.safetensors")))
}

/// Adds `name`, the length and the bytes of the file at `path`.
fn hash_file(hasher: &mut Sha256, path: &Path, name: &Path) -> Result<()> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut content = Sha256::new();
    let len = std::io::copy(&mut file, &mut content).map_err(|e| DataError::io(path, e))?;
    hasher.update(format!("{} {len} ", name.display()));
    hasher.update(content.finalize());
    Ok(())
}

/// Adds every file under `dir`, in sorted order, named by its path inside `root`.
fn hash_tree(hasher: &mut Sha256, root: &Path, dir: &Path) -> Result<()> {
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
            hash_tree(hasher, root, &entry)?;
        } else {
            hash_file(hasher, &entry, entry.strip_prefix(root).unwrap_or(&entry))?;
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
    fn key_follows_the_bytes_not_the_place_or_the_time() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&first).unwrap();
        std::fs::create_dir_all(&second).unwrap();
        std::fs::write(first.join("data.tar"), b"same bytes").unwrap();
        std::fs::write(second.join("data.tar"), b"same bytes").unwrap();
        let earlier = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        std::fs::File::options().write(true).open(second.join("data.tar")).unwrap().set_modified(earlier).unwrap();
        let key = |path: &Path| cache_path(dir.path(), path, None).unwrap();
        assert_eq!(key(&first.join("data.tar")), key(&second.join("data.tar")));
        std::fs::write(second.join("data.tar"), b"same bytez").unwrap();
        assert_ne!(key(&first.join("data.tar")), key(&second.join("data.tar")));
    }

    #[test]
    fn directory_key_sees_files_and_their_names_inside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("train/a")).unwrap();
        std::fs::write(dir.path().join("train/a/1.png"), b"x").unwrap();
        let before = cache_path(dir.path(), dir.path(), None).unwrap();
        std::fs::write(dir.path().join("train/a/2.png"), b"y").unwrap();
        let added = cache_path(dir.path(), dir.path(), None).unwrap();
        assert_ne!(before, added);
        std::fs::rename(dir.path().join("train/a"), dir.path().join("train/b")).unwrap();
        assert_ne!(added, cache_path(dir.path(), dir.path(), None).unwrap());
    }

    #[test]
    fn corrupt_entry_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        std::fs::write(&path, b"garbage").unwrap();
        assert!(read(&path).is_none());
    }
}
