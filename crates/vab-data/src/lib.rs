//! # vab-data
//!
//! Image datasets for vab, with no deep-learning framework: in-memory u8 image sets
//! ([`ImageSet`], [`Dataset`]), loaders for the formats people actually have, dataset download
//! with checksums ([`fetch`]), and the poisoned-bundle file format ([`bundle`]) that connects
//! `vab poison` to every defense.
//!
//! ```no_run
//! use vab_data::{load, LoadOptions, NoProgress};
//! let loaded = load(std::path::Path::new("cifar10-jpg.tar.xz"), &LoadOptions::default(), &NoProgress)?;
//! println!("{} training images of {}", loaded.dataset.train.len(), loaded.dataset.shape());
//! # Ok::<(), vab_data::DataError>(())
//! ```
//!
//! Formats ([`detect`] tells them apart):
//! - CIFAR-10 / CIFAR-100 binary (`cifar-10-batches-bin/`, `cifar-100-binary/`): [`cifar`];
//! - IDX (MNIST, Fashion-MNIST), plain or `.gz`: [`idx`];
//! - image folders `root/{train,test}/<class>/*.{png,jpg,jpeg}`, as a directory or a `.tar`,
//!   `.tar.gz` or `.tar.xz` archive, with an optional resize: [`folder`], cached after the first
//!   decode ([`cache`]);
//! - vab bundles (`.safetensors`): [`bundle`].
//!
//! It does not augment or batch images for training; that is vab-core's job.

pub mod bundle;
pub mod cache;
pub mod cifar;
mod error;
pub mod fetch;
pub mod folder;
mod fsutil;
pub mod idx;
mod image_set;
mod progress;

use std::path::{Path, PathBuf};

pub use bundle::Bundle;
pub use error::{DataError, Result};
pub use image_set::{Dataset, ImageSet, ImageShape, MAX_CLASSES};
pub use progress::{NoProgress, Progress};

/// The kinds of source [`load`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A vab bundle file.
    Bundle,
    /// A CIFAR binary folder, at the given directory.
    Cifar(cifar::CifarKind, PathBuf),
    /// An MNIST-style IDX folder.
    Idx,
    /// An image-folder directory.
    Folder,
    /// A tar archive of an image folder.
    Archive,
}

/// Works out what `path` holds, or says what was expected.
pub fn detect(path: &Path) -> Result<SourceKind> {
    if !path.exists() {
        return Err(DataError::invalid(path, "no such file or directory"));
    }
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "safetensors") {
            return Ok(SourceKind::Bundle);
        }
        if folder::is_archive(path) {
            return Ok(SourceKind::Archive);
        }
        return Err(DataError::invalid(
            path,
            "unknown file type; vab reads .safetensors bundles and .tar/.tar.gz/.tar.xz image-folder archives",
        ));
    }
    if let Some((kind, dir)) = cifar::locate(path) {
        return Ok(SourceKind::Cifar(kind, dir));
    }
    if idx::is_idx_dir(path) {
        return Ok(SourceKind::Idx);
    }
    if folder::is_folder_dataset(path) {
        return Ok(SourceKind::Folder);
    }
    Err(DataError::invalid(
        path,
        "not a dataset folder: expected cifar-10-batches-bin/, cifar-100-binary/, MNIST-style IDX files \
         or train/<class>/ image folders",
    ))
}

/// How to load a dataset.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Resize every image to S×S (image folders and archives only).
    pub resize: Option<u32>,
    /// Cache directory for decoded image folders; `None` uses [`cache::default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Skip the decoded cache entirely (neither read nor write it).
    pub no_cache: bool,
}

/// What happened with the decoded cache during a [`load`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The source is not cached (not an image folder, or caching disabled).
    NotUsed,
    /// Read from this cache file.
    Hit(PathBuf),
    /// Decoded and written to this cache file.
    Written(PathBuf),
    /// Decoded, but the cache could not be written (the reason); loading still succeeded.
    WriteFailed(String),
}

/// A loaded dataset and how it was obtained.
#[derive(Debug)]
pub struct Loaded {
    pub dataset: Dataset,
    pub kind: SourceKind,
    pub cache: CacheOutcome,
    /// For a poisoned bundle, the source it was made from: its `dataset` holds triggered
    /// images and flipped labels, and its poison flags are not carried over.
    pub poisoned_from: Option<String>,
}

/// Loads any supported source as a [`Dataset`] (a bundle gives its train labels as trained on).
pub fn load(path: &Path, options: &LoadOptions, progress: &dyn Progress) -> Result<Loaded> {
    let kind = detect(path)?;
    let is_folder = matches!(kind, SourceKind::Folder | SourceKind::Archive);
    if options.resize.is_some() && !is_folder {
        return Err(DataError::invalid(path, "resizing applies to image folders and archives only"));
    }
    let mut poisoned_from = None;
    let (dataset, cache) = match &kind {
        SourceKind::Bundle => {
            let bundle = Bundle::read(path)?;
            poisoned_from = bundle.meta.attack.is_some().then(|| bundle.meta.source.clone());
            (bundle.into_dataset(), CacheOutcome::NotUsed)
        }
        SourceKind::Cifar(cifar_kind, dir) => (cifar::load(*cifar_kind, dir)?, CacheOutcome::NotUsed),
        SourceKind::Idx => (idx::load(path)?, CacheOutcome::NotUsed),
        SourceKind::Folder | SourceKind::Archive if options.no_cache => {
            (folder::load(path, options.resize, progress)?, CacheOutcome::NotUsed)
        }
        SourceKind::Folder | SourceKind::Archive => load_cached(path, options, progress)?,
    };
    Ok(Loaded { dataset, kind, cache, poisoned_from })
}

fn load_cached(path: &Path, options: &LoadOptions, progress: &dyn Progress) -> Result<(Dataset, CacheOutcome)> {
    let dir = options.cache_dir.clone().unwrap_or_else(cache::default_cache_dir);
    let entry = cache::cache_path(&dir, path, options.resize)?;
    if let Some(bundle) = cache::read(&entry) {
        return Ok((bundle.into_dataset(), CacheOutcome::Hit(entry)));
    }
    let dataset = folder::load(path, options.resize, progress)?;
    let bundle = Bundle::clean(dataset, path.display().to_string());
    let outcome = match bundle.write(&entry) {
        Ok(()) => CacheOutcome::Written(entry),
        Err(e) => CacheOutcome::WriteFailed(e.to_string()),
    };
    Ok((bundle.into_dataset(), outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::tests::{png, tree};

    #[test]
    fn second_load_of_a_folder_comes_from_the_cache_and_is_identical() {
        let data = tree(&[("train/a/1.png", png(2, 2, [1, 2, 3])), ("test/a/1.png", png(2, 2, [4, 5, 6]))]);
        let cache = tempfile::tempdir().unwrap();
        let options = LoadOptions { cache_dir: Some(cache.path().into()), ..Default::default() };
        let first = load(data.path(), &options, &NoProgress).unwrap();
        assert!(matches!(first.cache, CacheOutcome::Written(_)), "{:?}", first.cache);
        let second = load(data.path(), &options, &NoProgress).unwrap();
        assert!(matches!(second.cache, CacheOutcome::Hit(_)), "{:?}", second.cache);
        assert_eq!(first.dataset, second.dataset);
    }

    #[test]
    fn detect_explains_what_it_expected() {
        let dir = tempfile::tempdir().unwrap();
        let err = detect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a dataset folder"), "{err}");
        let file = dir.path().join("x.zip");
        std::fs::write(&file, b"").unwrap();
        assert!(detect(&file).unwrap_err().to_string().contains("unknown file type"));
        assert!(detect(&dir.path().join("missing")).unwrap_err().to_string().contains("no such file"));
    }

    #[test]
    fn resize_is_refused_for_fixed_size_formats() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cifar-10-batches-bin")).unwrap();
        std::fs::write(dir.path().join("cifar-10-batches-bin/data_batch_1.bin"), [0u8; 3073]).unwrap();
        let options = LoadOptions { resize: Some(64), ..Default::default() };
        let err = load(dir.path(), &options, &NoProgress).unwrap_err().to_string();
        assert!(err.contains("resizing applies to image folders"), "{err}");
    }
}
