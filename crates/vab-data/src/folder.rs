//! Image folders `root/{train,test}/<class>/*.{png,jpg,jpeg}`, read from a directory or straight
//! from a `.tar`, `.tar.gz`/`.tgz` or `.tar.xz` archive of one, decoded in parallel.
//!
//! Order is stable: split, class name, file name; each training image's path inside the source
//! is kept ([`Dataset::train_files`]). Classes are the training split's class
//! folders in name order; the test split may only use those. Images must share one size unless
//! a resize is requested (then every image is resized to S×S with a triangle filter). The set
//! is 1-channel when every image is grayscale, else RGB.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Component, Path};

use image::DynamicImage;
use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::image_set::{Dataset, ImageSet, ImageShape};
use crate::progress::{CountingReader, Progress};

const SPLITS: [&str; 2] = ["train", "test"];
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// True when `path` names an archive this module reads.
pub fn is_archive(path: &Path) -> bool {
    let name = path.to_string_lossy().to_lowercase();
    [".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz"].iter().any(|ext| name.ends_with(ext))
}

/// True when `dir` has a `train/` sub-folder.
pub fn is_folder_dataset(dir: &Path) -> bool {
    dir.join("train").is_dir()
}

/// One encoded image found in the source.
struct RawImage {
    split: usize,
    class: String,
    name: String,
    bytes: Vec<u8>,
}

impl RawImage {
    fn rel_path(&self) -> String {
        format!("{}/{}/{}", SPLITS[self.split], self.class, self.name)
    }
}

/// Everything listed in a source: encoded images and every class folder seen (even empty ones).
#[derive(Default)]
struct Listing {
    images: Vec<RawImage>,
    class_dirs: [BTreeSet<String>; 2],
}

impl Listing {
    /// Files as `[.., split, class, file]` and folders as `[.., split, class]`; all else ignored.
    fn add(&mut self, parts: &[String], is_dir: bool, bytes: impl FnOnce() -> std::io::Result<Vec<u8>>) -> std::io::Result<()> {
        let split_of = |s: &str| SPLITS.iter().position(|x| *x == s);
        match (is_dir, parts) {
            (true, [.., split, class]) => {
                if let Some(s) = split_of(split) {
                    self.class_dirs[s].insert(class.clone());
                }
            }
            (false, [.., split, class, name]) if has_image_extension(name) => {
                if let Some(s) = split_of(split) {
                    self.class_dirs[s].insert(class.clone());
                    self.images.push(RawImage { split: s, class: class.clone(), name: name.clone(), bytes: bytes()? });
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn has_image_extension(name: &str) -> bool {
    let lower = name.to_lowercase();
    !lower.starts_with('.')
        && IMAGE_EXTENSIONS.iter().any(|ext| lower.rsplit_once('.').is_some_and(|(_, e)| e == *ext))
}

/// Loads an image-folder dataset from a directory or archive.
pub fn load(path: &Path, resize: Option<u32>, progress: &dyn Progress) -> Result<Dataset> {
    let listing = if path.is_dir() { list_dir(path)? } else { list_archive(path, progress)? };
    build(path, listing, resize, progress)
}

fn list_dir(root: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    for split in SPLITS {
        let split_dir = root.join(split);
        if !split_dir.is_dir() {
            continue;
        }
        for class_entry in read_dir_sorted(&split_dir)? {
            if !class_entry.is_dir() {
                continue;
            }
            let class = file_name(&class_entry);
            listing.add(&[split.into(), class.clone()], true, || Ok(Vec::new())).map_err(|e| DataError::io(&class_entry, e))?;
            for file in read_dir_sorted(&class_entry)? {
                if file.is_file() {
                    let parts = [split.to_string(), class.clone(), file_name(&file)];
                    listing.add(&parts, false, || std::fs::read(&file)).map_err(|e| DataError::io(&file, e))?;
                }
            }
        }
    }
    Ok(listing)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .and_then(|it| it.map(|e| e.map(|e| e.path())).collect::<std::io::Result<Vec<_>>>())
        .map_err(|e| DataError::io(dir, e))?;
    entries.sort();
    Ok(entries)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn list_archive(path: &Path, progress: &dyn Progress) -> Result<Listing> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    progress.start("reading archive", size);
    let counted = CountingReader { inner: std::io::BufReader::new(file), progress };
    let name = path.to_string_lossy().to_lowercase();
    let reader: Box<dyn Read + '_> = if name.ends_with(".xz") || name.ends_with(".txz") {
        Box::new(liblzma::read::XzDecoder::new(counted))
    } else if name.ends_with(".gz") || name.ends_with(".tgz") {
        Box::new(flate2::read::GzDecoder::new(counted))
    } else {
        Box::new(counted)
    };
    let mut archive = tar::Archive::new(reader);
    let mut listing = Listing::default();
    let broken = |e: std::io::Error| DataError::invalid(path, format!("cannot read archive: {e}"));
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        let entry_path = entry.path().map_err(broken)?.into_owned();
        let parts: Vec<String> = entry_path
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let kind = entry.header().entry_type();
        if !(kind.is_dir() || kind.is_file()) {
            continue;
        }
        listing
            .add(&parts, kind.is_dir(), || {
                let size = entry.size();
                let mut bytes = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut bytes)?;
                if bytes.len() as u64 != size {
                    let msg = format!("archive ends after {} of {size} bytes", bytes.len());
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, msg));
                }
                Ok(bytes)
            })
            .map_err(|e| DataError::invalid(path, format!("{}: cannot read entry: {e}", entry_path.display())))?;
    }
    progress.finish();
    Ok(listing)
}

fn build(source: &Path, mut listing: Listing, resize: Option<u32>, progress: &dyn Progress) -> Result<Dataset> {
    let classes: Vec<String> = listing.class_dirs[0].iter().cloned().collect();
    if listing.images.iter().all(|im| im.split != 0) {
        return Err(DataError::invalid(
            source,
            "no images under train/<class>/; expected root/{train,test}/<class>/*.{png,jpg,jpeg}",
        ));
    }
    for (split, dirs) in listing.class_dirs.iter().enumerate() {
        for class in dirs {
            if !listing.images.iter().any(|im| im.split == split && &im.class == class) {
                return Err(DataError::invalid(
                    source,
                    format!("class folder {}/{class} holds no png/jpg image; remove it or add images", SPLITS[split]),
                ));
            }
            if classes.binary_search(class).is_err() {
                return Err(DataError::invalid(
                    source,
                    format!("class folder {}/{class} has no counterpart under train/", SPLITS[split]),
                ));
            }
        }
    }
    listing.images.sort_by(|a, b| (a.split, &a.class, &a.name).cmp(&(b.split, &b.class, &b.name)));

    progress.start("decoding images", listing.images.len() as u64);
    let decoded: Vec<Result<DynamicImage>> = listing
        .images
        .par_iter()
        .map(|raw| {
            let image = image::load_from_memory(&raw.bytes)
                .map_err(|e| DataError::invalid(source, format!("{}: cannot decode image: {e}", raw.rel_path())))?;
            progress.advance(1);
            Ok(match resize {
                Some(s) => image.resize_exact(s, s, image::imageops::FilterType::Triangle),
                None => image,
            })
        })
        .collect();
    progress.finish();
    let decoded: Vec<DynamicImage> = decoded.into_iter().collect::<Result<_>>()?;

    let first = &decoded[0];
    let channels = if decoded.iter().all(|im| !im.color().has_color()) { 1 } else { 3 };
    let shape = ImageShape { channels, height: first.height() as usize, width: first.width() as usize };
    let mut sets = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
    for (raw, image) in listing.images.iter().zip(&decoded) {
        if (image.width() as usize, image.height() as usize) != (shape.width, shape.height) {
            return Err(DataError::invalid(
                source,
                format!(
                    "{} is {}×{} but {} is {}×{}; pass a resize (e.g. --resize 224) to load images of mixed sizes",
                    raw.rel_path(),
                    image.width(),
                    image.height(),
                    listing.images[0].rel_path(),
                    shape.width,
                    shape.height
                ),
            ));
        }
        let (pixels, labels) = &mut sets[raw.split];
        push_chw(pixels, image, channels);
        let label = classes.binary_search(&raw.class).expect("class validated above");
        labels.push(label as u16);
    }
    let [train, test] = sets.map(|(pixels, labels)| ImageSet::new(shape, pixels, labels));
    let invalid = |m| DataError::invalid(source, m);
    let train_files = listing.images.iter().filter(|raw| raw.split == 0).map(RawImage::rel_path).collect();
    Dataset::new(classes, train.map_err(invalid)?, test.map_err(invalid)?).and_then(|d| d.with_train_files(train_files)).map_err(invalid)
}

/// Appends `image` as channel-major (C×H×W) bytes.
fn push_chw(pixels: &mut Vec<u8>, image: &DynamicImage, channels: usize) {
    if channels == 1 {
        pixels.extend_from_slice(image.to_luma8().as_raw());
        return;
    }
    let rgb = image.to_rgb8();
    let hwc = rgb.as_raw();
    for c in 0..3 {
        pixels.extend(hwc.iter().skip(c).step_by(3));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::progress::NoProgress;

    /// Encodes a solid-colour `w`×`h` RGB PNG.
    pub(crate) fn png(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// Writes `files` (relative path → bytes) under a new temporary directory.
    pub(crate) fn tree(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, bytes) in files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        dir
    }

    fn small_tree() -> tempfile::TempDir {
        tree(&[
            ("train/dog/b.png", png(2, 2, [1, 2, 3])),
            ("train/dog/a.png", png(2, 2, [4, 5, 6])),
            ("train/cat/z.png", png(2, 2, [7, 8, 9])),
            ("test/dog/q.png", png(2, 2, [10, 11, 12])),
        ])
    }

    #[test]
    fn loads_directory_in_class_then_name_order_as_chw() {
        let dir = small_tree();
        let ds = load(dir.path(), None, &NoProgress).unwrap();
        assert_eq!(ds.class_names, vec!["cat", "dog"]);
        assert_eq!(ds.train.labels(), &[0, 1, 1]);
        // dog/a.png (4,5,6) comes before dog/b.png; CHW: four 4s, four 5s, four 6s.
        assert_eq!(ds.train.image(1), &[4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6]);
        assert_eq!((ds.test.len(), ds.test.labels()[0]), (1, 1));
        assert_eq!(ds.train_files, vec!["train/cat/z.png", "train/dog/a.png", "train/dog/b.png"]);
    }

    #[test]
    fn tar_gz_archive_gives_the_same_dataset_as_the_directory() {
        let dir = small_tree();
        let out = tempfile::tempdir().unwrap();
        let archive = out.path().join("data.tar.gz");
        let file = std::fs::File::create(&archive).unwrap();
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()));
        builder.append_dir_all("root", dir.path()).unwrap();
        builder.into_inner().unwrap().finish().unwrap();
        let from_archive = load(&archive, None, &NoProgress).unwrap();
        assert_eq!(from_archive, load(dir.path(), None, &NoProgress).unwrap());
    }

    #[test]
    fn resize_gives_fixed_size_and_mixed_sizes_need_it() {
        let dir = tree(&[("train/a/1.png", png(4, 4, [9, 9, 9])), ("train/a/2.png", png(3, 5, [9, 9, 9])), ("test/a/1.png", png(4, 4, [0, 0, 0]))]);
        let err = load(dir.path(), None, &NoProgress).unwrap_err().to_string();
        assert!(err.contains("train/a/2.png is 3×5 but train/a/1.png is 4×4") && err.contains("--resize"), "{err}");
        let ds = load(dir.path(), Some(6), &NoProgress).unwrap();
        assert_eq!((ds.shape().height, ds.shape().width, ds.shape().channels), (6, 6, 3));
    }

    #[test]
    fn undecodable_image_is_named() {
        let dir = tree(&[("train/a/ok.png", png(2, 2, [0, 0, 0])), ("train/a/bad.jpg", b"not a jpeg".to_vec()), ("test/a/t.png", png(2, 2, [0, 0, 0]))]);
        let err = load(dir.path(), None, &NoProgress).unwrap_err().to_string();
        assert!(err.contains("train/a/bad.jpg: cannot decode image"), "{err}");
    }

    #[test]
    fn empty_class_folder_is_rejected() {
        let dir = small_tree();
        std::fs::create_dir_all(dir.path().join("train/empty")).unwrap();
        let err = load(dir.path(), None, &NoProgress).unwrap_err().to_string();
        assert!(err.contains("class folder train/empty holds no png/jpg image"), "{err}");
    }

    #[test]
    fn test_class_unknown_to_train_is_rejected() {
        let dir = tree(&[("train/a/1.png", png(2, 2, [0, 0, 0])), ("test/b/1.png", png(2, 2, [0, 0, 0]))]);
        let err = load(dir.path(), None, &NoProgress).unwrap_err().to_string();
        assert!(err.contains("test/b has no counterpart under train/"), "{err}");
    }

    #[test]
    fn truncated_archive_is_an_error_not_a_panic() {
        let dir = small_tree();
        let out = tempfile::tempdir().unwrap();
        let archive = out.path().join("d.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&archive).unwrap());
        builder.append_dir_all("root", dir.path()).unwrap();
        builder.into_inner().unwrap();
        let bytes = std::fs::read(&archive).unwrap();
        // Cut inside the second entry's data: the archive ends mid-file.
        std::fs::write(&archive, &bytes[..512 * 5 + 40]).unwrap();
        let err = load(&archive, None, &NoProgress).unwrap_err().to_string();
        assert!(err.starts_with(&archive.display().to_string()) && err.contains("cannot read"), "{err}");
    }
}
