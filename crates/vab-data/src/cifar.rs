//! CIFAR-10 and CIFAR-100 in their official binary layout (`cifar-10-batches-bin/`,
//! `cifar-100-binary/`): fixed-size records of label byte(s) followed by 3×32×32 pixels,
//! channel-major, exactly the layout of [`ImageSet`].

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::fsutil;
use crate::image_set::{Dataset, ImageSet, ImageShape};

/// Shape of every CIFAR image.
pub const CIFAR_SHAPE: ImageShape = ImageShape { channels: 3, height: 32, width: 32 };

/// CIFAR-10 class names in label order.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Which of the two binary layouts a directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarKind {
    Cifar10,
    Cifar100,
}

impl CifarKind {
    /// The folder name of the official archive.
    pub fn folder(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "cifar-10-batches-bin",
            CifarKind::Cifar100 => "cifar-100-binary",
        }
    }

    fn first_file(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "data_batch_1.bin",
            CifarKind::Cifar100 => "train.bin",
        }
    }

    /// Label bytes before each image and which of them is the class (CIFAR-100: coarse, fine).
    fn label_layout(self) -> (usize, usize) {
        match self {
            CifarKind::Cifar10 => (1, 0),
            CifarKind::Cifar100 => (2, 1),
        }
    }

    fn num_classes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 10,
            CifarKind::Cifar100 => 100,
        }
    }
}

/// Finds the CIFAR binary folder in or at `root`: `root/<official folder>/` or `root` itself.
pub fn locate(root: &Path) -> Option<(CifarKind, PathBuf)> {
    [CifarKind::Cifar10, CifarKind::Cifar100].into_iter().find_map(|kind| {
        [root.join(kind.folder()), root.to_path_buf()]
            .into_iter()
            .find(|dir| dir.join(kind.first_file()).is_file())
            .map(|dir| (kind, dir))
    })
}

/// Loads a CIFAR binary folder (the one [`locate`] found).
pub fn load(kind: CifarKind, dir: &Path) -> Result<Dataset> {
    let (train_files, test_file, names_file): (Vec<String>, &str, &str) = match kind {
        CifarKind::Cifar10 => (
            (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            "test_batch.bin",
            "batches.meta.txt",
        ),
        CifarKind::Cifar100 => (vec!["train.bin".into()], "test.bin", "fine_label_names.txt"),
    };
    let mut train = (Vec::new(), Vec::new());
    for name in &train_files {
        let (pixels, labels) = read_batch(kind, &require(dir, name, kind)?)?;
        train.0.extend(pixels);
        train.1.extend(labels);
    }
    let test = read_batch(kind, &require(dir, test_file, kind)?)?;
    let class_names = read_class_names(kind, &dir.join(names_file))?;
    let to_set = |(pixels, labels)| ImageSet::new(CIFAR_SHAPE, pixels, labels);
    let train = to_set(train).map_err(|m| DataError::invalid(dir, m))?;
    let test = to_set(test).map_err(|m| DataError::invalid(dir, m))?;
    Dataset::new(class_names, train, test).map_err(|m| DataError::invalid(dir, m))
}

fn require(dir: &Path, name: &str, kind: CifarKind) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(DataError::invalid(
            &path,
            format!("missing; a {} folder needs every file of the official archive", kind.folder()),
        ))
    }
}

/// Parses one batch file into pixels and labels, checking record alignment and label range.
pub fn read_batch(kind: CifarKind, path: &Path) -> Result<(Vec<u8>, Vec<u16>)> {
    parse_batch(kind, path, &fsutil::read(path)?)
}

fn parse_batch(kind: CifarKind, path: &Path, bytes: &[u8]) -> Result<(Vec<u8>, Vec<u16>)> {
    let (label_bytes, label_at) = kind.label_layout();
    let record = label_bytes + CIFAR_SHAPE.len();
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        let whole = bytes.len() / record;
        return Err(DataError::invalid(
            path,
            format!(
                "{} bytes is not a whole number of {record}-byte records (record {whole} at byte \
                 offset {} is cut short); the file is truncated or not a {} batch",
                bytes.len(),
                whole * record,
                kind.folder()
            ),
        ));
    }
    let n = bytes.len() / record;
    let mut pixels = Vec::with_capacity(n * CIFAR_SHAPE.len());
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let label = rec[label_at];
        if label as usize >= kind.num_classes() {
            return Err(DataError::invalid(
                path,
                format!(
                    "label {label} at byte offset {} is out of range ({} classes); not a {} batch",
                    i * record + label_at,
                    kind.num_classes(),
                    kind.folder()
                ),
            ));
        }
        labels.push(label as u16);
        pixels.extend_from_slice(&rec[label_bytes..]);
    }
    Ok((pixels, labels))
}

/// Class names from the archive's text file; CIFAR-10 falls back to the well-known names,
/// CIFAR-100 to `class_<i>` when the file is absent.
fn read_class_names(kind: CifarKind, path: &Path) -> Result<Vec<String>> {
    if !path.is_file() {
        return Ok(match kind {
            CifarKind::Cifar10 => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
            CifarKind::Cifar100 => (0..100).map(|i| format!("class_{i}")).collect(),
        });
    }
    let text = String::from_utf8(fsutil::read(path)?)
        .map_err(|_| DataError::invalid(path, "class-name file is not UTF-8 text"))?;
    let names: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != kind.num_classes() {
        return Err(DataError::invalid(
            path,
            format!("lists {} class names, expected {}", names.len(), kind.num_classes()),
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: u8, fill: u8) -> Vec<u8> {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(fill, 3072));
        r
    }

    #[test]
    fn parses_records_in_order() {
        let bytes = [record(3, 7), record(9, 1)].concat();
        let (pixels, labels) = parse_batch(CifarKind::Cifar10, Path::new("b.bin"), &bytes).unwrap();
        assert_eq!(labels, vec![3, 9]);
        assert_eq!(pixels.len(), 2 * 3072);
        assert_eq!((pixels[0], pixels[3072]), (7, 1));
    }

    #[test]
    fn truncated_batch_names_file_and_offset() {
        let mut bytes = [record(1, 0), record(2, 0)].concat();
        bytes.truncate(3073 + 100);
        let err = parse_batch(CifarKind::Cifar10, Path::new("x/data_batch_1.bin"), &bytes)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x/data_batch_1.bin: 3173 bytes"), "{err}");
        assert!(err.contains("byte offset 3073"), "{err}");
    }

    #[test]
    fn out_of_range_label_is_rejected_with_offset() {
        let bytes = [record(1, 0), record(10, 0)].concat();
        let err = parse_batch(CifarKind::Cifar10, Path::new("b.bin"), &bytes).unwrap_err();
        assert!(err.to_string().contains("label 10 at byte offset 3073 is out of range"), "{err}");
    }

    #[test]
    fn cifar100_uses_the_fine_label() {
        let mut rec = vec![4u8, 77];
        rec.extend(std::iter::repeat_n(0, 3072));
        let (_, labels) = parse_batch(CifarKind::Cifar100, Path::new("t.bin"), &rec).unwrap();
        assert_eq!(labels, vec![77]);
    }

    #[test]
    fn missing_batch_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("data_batch_1.bin"), record(0, 0)).unwrap();
        let (kind, found) = locate(dir.path()).unwrap();
        assert_eq!((kind, found.clone()), (CifarKind::Cifar10, bin));
        let err = load(kind, &found).unwrap_err().to_string();
        assert!(err.contains("data_batch_2.bin: missing"), "{err}");
    }
}
