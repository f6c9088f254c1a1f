//! The bundle: one `.safetensors` file holding a (possibly poisoned) dataset, the contract
//! between `vab poison` and every defense. Any safetensors reader (PyTorch, numpy) opens it, and
//! loading it can never execute code.
//!
//! # Tensors
//!
//! | name | dtype | shape | meaning |
//! |---|---|---|---|
//! | `train.images` | U8 | N×C×H×W | training images, poisoned ones with their trigger |
//! | `train.labels` | I64 | N | labels as trained on (poison-label attacks: the target) |
//! | `train.true_labels` | I64 | N | labels before the attack |
//! | `train.poisoned` | BOOL | N | which samples the attack modified (ground truth, reporting only) |
//! | `test.images` | U8 | M×C×H×W | clean test images |
//! | `test.labels` | I64 | M | their labels |
//! | `test_triggered.images` | U8 | T×C×H×W | triggered test images (for ASR and RA) |
//! | `test_triggered.labels` | I64 | T | their true labels |
//! | `test_triggered.index` | I64 | T | index of each in the clean test set |
//! | `attack.*` | F32 | any | optional attack artefacts (e.g. a WaNet warping field) |
//!
//! A clean dataset is a bundle with every flag false, labels equal to true labels and T = 0.
//!
//! # Metadata
//!
//! The safetensors header's `__metadata__` holds one key, `vab`, whose value is the JSON of
//! [`BundleMeta`]: format version, tool version, class names, source description and, for a
//! poisoned bundle, the attack record (name, every parameter, rate and its convention, target,
//! seed) written by vab-attacks, and for data read from an image folder the file of every
//! training image (`train_files`, absent otherwise). One key keeps the file bytes deterministic.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{DataError, Result};
use crate::fsutil;
use crate::image_set::{Dataset, ImageSet, ImageShape};

/// Version of the tensor layout and metadata described above.
pub const FORMAT_VERSION: u32 = 1;
const META_KEY: &str = "vab";

/// One tensor to write: name, dtype, shape and little-endian bytes (borrowed or owned).
type NamedTensor<'a> = (String, Dtype, Vec<usize>, std::borrow::Cow<'a, [u8]>);

/// Bundle metadata, stored as JSON in the safetensors header.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BundleMeta {
    pub format_version: u32,
    /// Version of vab that wrote the file.
    pub tool_version: String,
    pub class_names: Vec<String>,
    /// Where the clean data came from (a path or dataset name).
    pub source: String,
    /// The attack record, `None` for a clean bundle. Its schema belongs to vab-attacks.
    pub attack: Option<serde_json::Value>,
    /// The source file of each training image (image folders; empty when unknown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_files: Vec<String>,
}

/// A float tensor carried along for an attack (`attack.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct F32Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A dataset with the attack's ground truth.
#[derive(Clone, Debug, PartialEq)]
pub struct Bundle {
    pub meta: BundleMeta,
    /// Training images and the labels they are trained on.
    pub train: ImageSet,
    pub train_true_labels: Vec<u16>,
    pub train_poisoned: Vec<bool>,
    /// The clean test set.
    pub test: ImageSet,
    /// Triggered test images with their true labels.
    pub test_triggered: ImageSet,
    /// Index into `test` of each triggered image.
    pub test_triggered_index: Vec<usize>,
    /// Attack artefacts, keyed by tensor name (each starts with `attack.`).
    pub extra: BTreeMap<String, F32Tensor>,
}

impl Bundle {
    /// A clean bundle of `dataset`: no sample poisoned, no triggered test set.
    pub fn clean(dataset: Dataset, source: impl Into<String>) -> Self {
        let n = dataset.train.len();
        let shape = dataset.shape();
        Self {
            meta: BundleMeta {
                format_version: FORMAT_VERSION,
                tool_version: env!("CARGO_PKG_VERSION").to_string(),
                class_names: dataset.class_names,
                source: source.into(),
                attack: None,
                train_files: dataset.train_files,
            },
            train_true_labels: dataset.train.labels().to_vec(),
            train: dataset.train,
            train_poisoned: vec![false; n],
            test: dataset.test,
            test_triggered: ImageSet::empty(shape),
            test_triggered_index: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    /// The train/test part as a plain dataset (train labels as trained on), without copying
    /// the pixels.
    pub fn into_dataset(self) -> Dataset {
        Dataset { class_names: self.meta.class_names, train: self.train, test: self.test, train_files: self.meta.train_files }
    }

    /// The bundle with only the training samples `keep` (in that order), their flags, true
    /// labels and file names; the test sets and the attack record stay as they are.
    pub fn select_train(&self, keep: &[usize]) -> Bundle {
        let files = if self.meta.train_files.is_empty() { Vec::new() } else { keep.iter().map(|&i| self.meta.train_files[i].clone()).collect() };
        Bundle {
            meta: BundleMeta { train_files: files, ..self.meta.clone() },
            train: self.train.select(keep),
            train_true_labels: keep.iter().map(|&i| self.train_true_labels[i]).collect(),
            train_poisoned: keep.iter().map(|&i| self.train_poisoned[i]).collect(),
            test: self.test.clone(),
            test_triggered: self.test_triggered.clone(),
            test_triggered_index: self.test_triggered_index.clone(),
            extra: self.extra.clone(),
        }
    }

    /// Serialises the bundle to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let shape = self.train.shape();
        let dims = |n: usize| vec![n, shape.channels, shape.height, shape.width];
        let labels = |l: &[u16]| -> Vec<u8> { l.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect() };
        let indices: Vec<u8> = self.test_triggered_index.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect();
        let flags: Vec<u8> = self.train_poisoned.iter().map(|&f| f as u8).collect();
        let owned: Vec<NamedTensor> = {
            let mut t = vec![
                ("train.images".into(), Dtype::U8, dims(self.train.len()), self.train.pixels().into()),
                ("train.labels".into(), Dtype::I64, vec![self.train.len()], labels(self.train.labels()).into()),
                ("train.true_labels".into(), Dtype::I64, vec![self.train_true_labels.len()], labels(&self.train_true_labels).into()),
                ("train.poisoned".into(), Dtype::BOOL, vec![flags.len()], flags.into()),
                ("test.images".into(), Dtype::U8, dims(self.test.len()), self.test.pixels().into()),
                ("test.labels".into(), Dtype::I64, vec![self.test.len()], labels(self.test.labels()).into()),
                ("test_triggered.images".into(), Dtype::U8, dims(self.test_triggered.len()), self.test_triggered.pixels().into()),
                ("test_triggered.labels".into(), Dtype::I64, vec![self.test_triggered.len()], labels(self.test_triggered.labels()).into()),
                ("test_triggered.index".into(), Dtype::I64, vec![self.test_triggered_index.len()], indices.into()),
            ];
            for (name, tensor) in &self.extra {
                let bytes: Vec<u8> = tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                t.push((name.clone(), Dtype::F32, tensor.shape.clone(), bytes.into()));
            }
            t
        };
        let views = owned
            .iter()
            .map(|(name, dtype, shape, data)| {
                TensorView::new(*dtype, shape.clone(), data)
                    .map(|v| (name.as_str(), v))
                    .map_err(|e| DataError::invalid(name, format!("inconsistent tensor: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta_json = serde_json::to_string(&self.meta).expect("metadata serialises");
        let meta = Some(std::collections::HashMap::from([(META_KEY.to_string(), meta_json)]));
        safetensors::serialize(views, &meta).map_err(|e| DataError::invalid("bundle", format!("cannot serialise: {e}")))
    }

    /// Writes the bundle to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        fsutil::write_atomic(path, &self.to_bytes()?)
    }

    /// Reads and validates a bundle.
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_bytes(path, &Self::read_bytes(path)?)
    }

    /// The bytes of a bundle file; a directory gets an error saying how to make a bundle.
    pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
        if path.is_dir() {
            return Err(DataError::invalid(path, "a directory, not a bundle; make one with `vab data bundle DIR -o BUNDLE.safetensors` (or `vab poison`)"));
        }
        fsutil::read(path)
    }

    /// Parses and validates bundle bytes; `path` only names the source in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| DataError::invalid(path, m);
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| bad("no `vab` metadata; this safetensors file was not written by vab".into()))?;
        let meta: BundleMeta = serde_json::from_str(meta_json).map_err(|e| bad(format!("bad `vab` metadata: {e}")))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "bundle format version {} but this vab reads version {FORMAT_VERSION}; rewrite the bundle with this vab",
                meta.format_version
            )));
        }
        let k = meta.class_names.len();
        let reader = Reader { path, tensors: &tensors, classes: k };
        let train = reader.images("train")?;
        let n = train.2;
        if !meta.train_files.is_empty() && meta.train_files.len() != n {
            return Err(bad(format!("the metadata names {} training files for {n} training images", meta.train_files.len())));
        }
        let test = reader.images("test")?;
        let triggered = reader.images("test_triggered")?;
        let shape = train.0;
        for (name, other) in [("test", &test), ("test_triggered", &triggered)] {
            if other.0 != shape {
                return Err(bad(format!("{name}.images are {} but train.images are {}", other.0, shape)));
            }
        }
        let train_labels = reader.labels("train.labels", n)?;
        let train_true_labels = reader.labels("train.true_labels", n)?;
        let train_poisoned = reader.flags("train.poisoned", n)?;
        let test_labels = reader.labels("test.labels", test.2)?;
        let triggered_labels = reader.labels("test_triggered.labels", triggered.2)?;
        let test_triggered_index = reader.indices("test_triggered.index", triggered.2, test.2)?;
        let mut extra = BTreeMap::new();
        for (name, view) in tensors.tensors() {
            if name.starts_with("attack.") {
                if view.dtype() != Dtype::F32 {
                    return Err(bad(format!("tensor `{name}` is {:?}, attack tensors must be F32", view.dtype())));
                }
                let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                extra.insert(name, F32Tensor { shape: view.shape().to_vec(), data });
            }
        }
        let set = |(shape, pixels, _): (ImageShape, Vec<u8>, usize), labels| ImageSet::new(shape, pixels, labels).map_err(bad);
        Ok(Self {
            meta,
            train: set(train, train_labels)?,
            train_true_labels,
            train_poisoned,
            test: set(test, test_labels)?,
            test_triggered: set(triggered, triggered_labels)?,
            test_triggered_index,
            extra,
        })
    }
}

/// Typed, validated access to the tensors of one bundle file.
struct Reader<'a> {
    path: &'a Path,
    tensors: &'a SafeTensors<'a>,
    classes: usize,
}

impl Reader<'_> {
    fn tensor(&self, name: &str, dtype: Dtype) -> Result<TensorView<'_>> {
        let view = self.tensors.tensor(name).map_err(|_| {
            DataError::invalid(self.path, format!("missing tensor `{name}`; not a complete vab bundle"))
        })?;
        if view.dtype() != dtype {
            return Err(DataError::invalid(self.path, format!("tensor `{name}` is {:?}, expected {dtype:?}", view.dtype())));
        }
        Ok(view)
    }

    /// `<prefix>.images` as (shape, pixels, count).
    fn images(&self, prefix: &str) -> Result<(ImageShape, Vec<u8>, usize)> {
        let name = format!("{prefix}.images");
        let view = self.tensor(&name, Dtype::U8)?;
        let [n, c, h, w] = view.shape()[..] else {
            return Err(DataError::invalid(self.path, format!("tensor `{name}` has shape {:?}, expected N×C×H×W", view.shape())));
        };
        Ok((ImageShape { channels: c, height: h, width: w }, view.data().to_vec(), n))
    }

    fn vector(&self, name: &str, dtype: Dtype, len: usize) -> Result<TensorView<'_>> {
        let view = self.tensor(name, dtype)?;
        if view.shape() != [len] {
            return Err(DataError::invalid(self.path, format!("tensor `{name}` has shape {:?}, expected [{len}]", view.shape())));
        }
        Ok(view)
    }

    fn i64s(&self, name: &str, len: usize) -> Result<Vec<i64>> {
        let view = self.vector(name, Dtype::I64, len)?;
        Ok(view.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
    }

    fn labels(&self, name: &str, len: usize) -> Result<Vec<u16>> {
        self.bounded(name, len, self.classes, "class count")
            .map(|v| v.into_iter().map(|l| l as u16).collect())
    }

    fn indices(&self, name: &str, len: usize, bound: usize) -> Result<Vec<usize>> {
        self.bounded(name, len, bound, "test-set size")
    }

    fn bounded(&self, name: &str, len: usize, bound: usize, what: &str) -> Result<Vec<usize>> {
        let values = self.i64s(name, len)?;
        if let Some(i) = values.iter().position(|&v| v < 0 || v as usize >= bound) {
            return Err(DataError::invalid(
                self.path,
                format!("tensor `{name}` entry {i} is {}, outside 0..{bound} (the {what})", values[i]),
            ));
        }
        Ok(values.into_iter().map(|v| v as usize).collect())
    }

    fn flags(&self, name: &str, len: usize) -> Result<Vec<bool>> {
        let view = self.vector(name, Dtype::BOOL, len)?;
        Ok(view.data().iter().map(|&b| b != 0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bundle {
        let shape = ImageShape { channels: 1, height: 2, width: 1 };
        let train = ImageSet::new(shape, vec![1, 2, 3, 4, 5, 6], vec![0, 1, 2]).unwrap();
        let test = ImageSet::new(shape, vec![7, 8], vec![2]).unwrap();
        let ds = Dataset::new(vec!["a".into(), "b".into(), "c".into()], train, test).unwrap();
        let mut b = Bundle::clean(ds, "unit");
        b.train_poisoned[1] = true;
        b.test_triggered = ImageSet::new(shape, vec![9, 9], vec![2]).unwrap();
        b.test_triggered_index = vec![0];
        b.extra.insert("attack.field".into(), F32Tensor { shape: vec![2], data: vec![0.5, -1.0] });
        b
    }

    #[test]
    fn round_trips_through_bytes() {
        let b = sample();
        let back = Bundle::from_bytes(Path::new("x"), &b.to_bytes().unwrap()).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn file_names_round_trip_and_follow_a_selection() {
        let mut b = sample();
        b.meta.train_files = vec!["train/a/1.png".into(), "train/b/2.png".into(), "train/c/3.png".into()];
        let back = Bundle::from_bytes(Path::new("x"), &b.to_bytes().unwrap()).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.clone().into_dataset().train_files, b.meta.train_files);
        let kept = b.select_train(&[2, 1]);
        assert_eq!(kept.meta.train_files, vec!["train/c/3.png", "train/b/2.png"]);
        assert_eq!((kept.train.labels(), kept.train_poisoned.as_slice(), kept.train.image(0)), (&[2u16, 1][..], &[false, true][..], &[5u8, 6][..]));
        assert_eq!((kept.test.len(), kept.test_triggered_index.clone()), (1, vec![0]));
        // Names must match the images one to one.
        b.meta.train_files.pop();
        let err = Bundle::from_bytes(Path::new("x"), &b.to_bytes().unwrap()).unwrap_err().to_string();
        assert!(err.contains("names 2 training files for 3 training images"), "{err}");
    }

    #[test]
    fn bytes_are_deterministic() {
        assert_eq!(sample().to_bytes().unwrap(), sample().to_bytes().unwrap());
    }

    #[test]
    fn clean_bundle_has_empty_triggered_set_and_no_flags() {
        let mut b = sample();
        b.test_triggered = ImageSet::empty(b.train.shape());
        b.test_triggered_index.clear();
        let back = Bundle::from_bytes(Path::new("x"), &b.to_bytes().unwrap()).unwrap();
        assert_eq!(back.test_triggered.len(), 0);
    }

    /// Rewrites the sample without `drop` (and with `replace` swapped in).
    fn without(drop: &str) -> Vec<u8> {
        let bytes = sample().to_bytes().unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let kept: Vec<_> = st.tensors().into_iter().filter(|(n, _)| n != drop).collect();
        safetensors::serialize(kept, header.metadata()).unwrap()
    }

    /// Images of size 0 (3×0×0 here) are refused at reading, naming the file, so that no
    /// command gets as far as dividing by an image size of 0 (`vab train` and `vab poison` once
    /// panicked on such a bundle).
    #[test]
    fn images_without_pixels_are_rejected() {
        let bytes = sample().to_bytes().unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let empty: [u8; 0] = [];
        let tensors: Vec<(String, TensorView)> = st
            .tensors()
            .into_iter()
            .map(|(name, view)| match name.strip_suffix(".images") {
                Some(_) => {
                    let n = view.shape()[0];
                    (name, TensorView::new(Dtype::U8, vec![n, 3, 0, 0], &empty).unwrap())
                }
                None => (name, view),
            })
            .collect();
        let zero = safetensors::serialize(tensors, header.metadata()).unwrap();
        let err = Bundle::from_bytes(Path::new("z.safetensors"), &zero).unwrap_err().to_string();
        assert_eq!(err, "z.safetensors: images of size 3×0×0 have no pixels");
    }

    #[test]
    fn a_directory_is_not_a_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let err = Bundle::read(dir.path()).unwrap_err().to_string();
        assert!(err.ends_with("a directory, not a bundle; make one with `vab data bundle DIR -o BUNDLE.safetensors` (or `vab poison`)"), "{err}");
    }

    #[test]
    fn missing_tensor_is_named() {
        let err = Bundle::from_bytes(Path::new("b.safetensors"), &without("train.poisoned")).unwrap_err().to_string();
        assert_eq!(err, "b.safetensors: missing tensor `train.poisoned`; not a complete vab bundle");
    }

    #[test]
    fn label_out_of_range_is_rejected() {
        let mut b = sample();
        b.meta.class_names.pop(); // label 2 no longer names a class
        let err = Bundle::from_bytes(Path::new("b"), &b.to_bytes().unwrap()).unwrap_err().to_string();
        assert!(err.contains("`train.labels` entry 2 is 2, outside 0..2"), "{err}");
    }

    #[test]
    fn garbage_and_foreign_files_are_rejected() {
        let err = Bundle::from_bytes(Path::new("g"), b"hello world").unwrap_err().to_string();
        assert!(err.starts_with("g: not a safetensors file"), "{err}");
        let foreign = safetensors::serialize(Vec::<(&str, TensorView)>::new(), &None).unwrap();
        let err = Bundle::from_bytes(Path::new("f"), &foreign).unwrap_err().to_string();
        assert!(err.contains("no `vab` metadata"), "{err}");
    }
}
