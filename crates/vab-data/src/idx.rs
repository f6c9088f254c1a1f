//! IDX files (MNIST, Fashion-MNIST), plain or gzipped: a 4-byte magic (two zero bytes, the
//! element type, the number of dimensions), big-endian u32 dimensions, then the raw elements.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::fsutil;
use crate::image_set::{Dataset, ImageSet, ImageShape};

/// Fashion-MNIST class names in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
    "Ankle boot",
];

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";
const U8_TYPE: u8 = 0x08;

/// True when `dir` holds the MNIST-style training images (plain or `.gz`).
pub fn is_idx_dir(dir: &Path) -> bool {
    find(dir, TRAIN_IMAGES).is_some()
}

fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [dir.join(stem), dir.join(format!("{stem}.gz"))].into_iter().find(|p| p.is_file())
}

/// Loads the four IDX files of an MNIST-style folder.
///
/// Class names: `classes.txt` in the folder (one per line) when present; otherwise the
/// Fashion-MNIST names when the path mentions "fashion", else the digits 0-9.
pub fn load(dir: &Path) -> Result<Dataset> {
    let require = |stem: &str| {
        find(dir, stem).ok_or_else(|| {
            DataError::invalid(dir.join(stem), "missing (looked for the plain and .gz file)")
        })
    };
    let train = read_pair(&require(TRAIN_IMAGES)?, &require(TRAIN_LABELS)?)?;
    let test = read_pair(&require(TEST_IMAGES)?, &require(TEST_LABELS)?)?;
    let class_names = class_names(dir)?;
    Dataset::new(class_names, train, test).map_err(|m| DataError::invalid(dir, m))
}

fn class_names(dir: &Path) -> Result<Vec<String>> {
    let listed = dir.join("classes.txt");
    if listed.is_file() {
        let text = String::from_utf8(fsutil::read(&listed)?)
            .map_err(|_| DataError::invalid(&listed, "not UTF-8 text"))?;
        return Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect());
    }
    let fashion = dir.to_string_lossy().to_lowercase().contains("fashion");
    Ok(if fashion {
        FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..10).map(|d| d.to_string()).collect()
    })
}

fn read_pair(images_path: &Path, labels_path: &Path) -> Result<ImageSet> {
    let (dims, pixels) = parse(images_path, &fsutil::read_maybe_gz(images_path)?)?;
    let (label_dims, labels) = parse(labels_path, &fsutil::read_maybe_gz(labels_path)?)?;
    let [n, h, w] = dims[..] else {
        return Err(DataError::invalid(images_path, format!("{} dimensions, images need 3", dims.len())));
    };
    if label_dims.len() != 1 {
        return Err(DataError::invalid(labels_path, format!("{} dimensions, labels need 1", label_dims.len())));
    }
    if label_dims[0] != n {
        return Err(DataError::invalid(
            labels_path,
            format!("{} labels but {} holds {n} images", label_dims[0], images_path.display()),
        ));
    }
    let shape = ImageShape { channels: 1, height: h, width: w };
    let labels = labels.iter().map(|&l| l as u16).collect();
    ImageSet::new(shape, pixels, labels).map_err(|m| DataError::invalid(images_path, m))
}

/// Parses an unsigned-byte IDX file into its dimensions and elements.
fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::invalid(
            path,
            format!("wrong magic number {:02x?} at byte offset 0; not an IDX file", &bytes[..bytes.len().min(4)]),
        ));
    }
    if bytes[2] != U8_TYPE {
        return Err(DataError::invalid(
            path,
            format!("element type 0x{:02x} at byte offset 2; vab reads unsigned-byte (0x08) IDX files", bytes[2]),
        ));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(DataError::invalid(path, format!("truncated header: {} bytes, need {header}", bytes.len())));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let body = &bytes[header..];
    if expected != Some(body.len()) {
        return Err(DataError::invalid(
            path,
            format!(
                "dimensions {dims:?} need {} data bytes after the {header}-byte header, found {} \
                 (data ends at byte offset {}); the file is truncated or corrupt",
                expected.map_or("too many".to_string(), |e| e.to_string()),
                body.len(),
                bytes.len()
            ),
        ));
    }
    Ok((dims, body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], body: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, U8_TYPE, dims.len() as u8];
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn parses_dims_and_body() {
        let (dims, body) = parse(Path::new("a"), &idx(&[2, 1, 2], &[1, 2, 3, 4])).unwrap();
        assert_eq!((dims, body), (vec![2, 1, 2], vec![1, 2, 3, 4]));
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let err = parse(Path::new("f.idx"), &[1, 2, 3, 4, 5]).unwrap_err().to_string();
        assert!(err.starts_with("f.idx: wrong magic number"), "{err}");
    }

    #[test]
    fn truncated_body_is_rejected() {
        let err = parse(Path::new("f"), &idx(&[2, 2, 2], &[0; 7])).unwrap_err().to_string();
        assert!(err.contains("need 8 data bytes") && err.contains("found 7"), "{err}");
    }

    #[test]
    fn label_count_must_match_image_count() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join(TRAIN_IMAGES);
        let labels = dir.path().join(TRAIN_LABELS);
        std::fs::write(&images, idx(&[2, 1, 1], &[0, 0])).unwrap();
        std::fs::write(&labels, idx(&[3], &[0, 1, 2])).unwrap();
        let err = read_pair(&images, &labels).unwrap_err().to_string();
        assert!(err.contains("3 labels but") && err.contains("holds 2 images"), "{err}");
    }

    #[test]
    fn loads_gzipped_folder_and_checks_label_range() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let gz = |name: &str, bytes: Vec<u8>| {
            let f = std::fs::File::create(dir.path().join(format!("{name}.gz"))).unwrap();
            let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            enc.write_all(&bytes).unwrap();
            enc.finish().unwrap();
        };
        gz(TRAIN_IMAGES, idx(&[2, 2, 2], &[9; 8]));
        gz(TRAIN_LABELS, idx(&[2], &[3, 4]));
        gz(TEST_IMAGES, idx(&[1, 2, 2], &[1; 4]));
        gz(TEST_LABELS, idx(&[1], &[12]));
        assert!(is_idx_dir(dir.path()));
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("test image 0 has label 12 but there are only 10 classes"), "{err}");
        gz(TEST_LABELS, idx(&[1], &[5]));
        let ds = load(dir.path()).unwrap();
        assert_eq!((ds.train.len(), ds.test.len(), ds.shape().height), (2, 1, 2));
        assert_eq!(ds.train.labels(), &[3, 4]);
    }
}
