//! In-memory image sets: u8 pixels in N×C×H×W order, one label per image.

use std::fmt;

/// Most classes a dataset may have (ImageNet-1k).
pub const MAX_CLASSES: usize = 1000;

/// Channels, height and width of every image in a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    /// Bytes of one image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// True for a shape without pixels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for ImageShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}×{}×{}", self.channels, self.height, self.width)
    }
}

/// A set of same-shaped u8 images with class labels.
///
/// Pixels are stored contiguously, image after image, each C×H×W (channel-major, the layout
/// PyTorch and burn expect).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSet {
    shape: ImageShape,
    pixels: Vec<u8>,
    labels: Vec<u16>,
}

impl ImageSet {
    /// Builds a set; `Err` says how `pixels` and `labels` disagree with `shape`, or that the
    /// shape has no pixels (a 0-sized image is never valid input: every loader and the bundle
    /// reader come through here, so nothing downstream divides by an image size of 0).
    pub fn new(shape: ImageShape, pixels: Vec<u8>, labels: Vec<u16>) -> Result<Self, String> {
        if shape.is_empty() {
            return Err(format!("images of size {shape} have no pixels"));
        }
        let expected = shape.len() * labels.len();
        if pixels.len() != expected {
            return Err(format!(
                "{} labels of {shape} images need {expected} pixel bytes, found {}",
                labels.len(),
                pixels.len()
            ));
        }
        Ok(Self { shape, pixels, labels })
    }

    /// An empty set of the given shape.
    pub fn empty(shape: ImageShape) -> Self {
        Self { shape, pixels: Vec::new(), labels: Vec::new() }
    }

    /// Shape of every image.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// All pixels, image after image.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// All labels, in image order.
    pub fn labels(&self) -> &[u16] {
        &self.labels
    }

    /// The C×H×W pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.shape.len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Mutable pixels of image `i` (attacks stamp triggers through this).
    pub fn image_mut(&mut self, i: usize) -> &mut [u8] {
        let n = self.shape.len();
        &mut self.pixels[i * n..(i + 1) * n]
    }

    /// All pixels, mutable (attacks trigger images in parallel through this).
    pub fn pixels_mut(&mut self) -> &mut [u8] {
        &mut self.pixels
    }

    /// Mutable labels (attacks relabel through this).
    pub fn labels_mut(&mut self) -> &mut [u16] {
        &mut self.labels
    }

    /// A new set holding the images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Self {
        let mut pixels = Vec::with_capacity(indices.len() * self.shape.len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Self { shape: self.shape, pixels, labels }
    }

    /// Images per class, for `num_classes` classes.
    pub fn class_counts(&self, num_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; num_classes];
        for &label in &self.labels {
            if let Some(count) = counts.get_mut(label as usize) {
                *count += 1;
            }
        }
        counts
    }

    /// Per-channel mean and standard deviation of the pixels scaled to [0, 1] (the constants
    /// a normalising transform needs).
    pub fn channel_stats(&self) -> Vec<(f64, f64)> {
        let plane = self.shape.height * self.shape.width;
        let mut sums = vec![(0u64, 0u64); self.shape.channels];
        for image in self.pixels.chunks_exact(self.shape.len().max(1)) {
            for (c, channel) in image.chunks_exact(plane.max(1)).enumerate() {
                let (s, s2) = &mut sums[c];
                for &v in channel {
                    *s += v as u64;
                    *s2 += (v as u64) * (v as u64);
                }
            }
        }
        let count = (self.len() * plane) as f64;
        sums.into_iter()
            .map(|(s, s2)| {
                if count == 0.0 {
                    return (0.0, 0.0);
                }
                let mean = s as f64 / count;
                let var = (s2 as f64 / count - mean * mean).max(0.0);
                (mean / 255.0, var.sqrt() / 255.0)
            })
            .collect()
    }
}

/// A labelled dataset: class names plus train and test sets of one image shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    pub class_names: Vec<String>,
    pub train: ImageSet,
    pub test: ImageSet,
    /// The file each training image came from (`train/<class>/<file>`, image folders), so
    /// that results can name the user's files; empty when the source has no file names.
    pub train_files: Vec<String>,
}

impl Dataset {
    /// Builds a dataset, checking the class count, that both splits share one image shape and
    /// that every label names a class. `Err` says what is inconsistent.
    pub fn new(class_names: Vec<String>, train: ImageSet, test: ImageSet) -> Result<Self, String> {
        let k = class_names.len();
        if k == 0 || k > MAX_CLASSES {
            return Err(format!("{k} classes; vab supports 1 to {MAX_CLASSES}"));
        }
        if train.shape() != test.shape() {
            return Err(format!(
                "train images are {} but test images are {}",
                train.shape(),
                test.shape()
            ));
        }
        for (split, set) in [("train", &train), ("test", &test)] {
            if let Some(i) = set.labels().iter().position(|&l| l as usize >= k) {
                return Err(format!(
                    "{split} image {i} has label {} but there are only {k} classes",
                    set.labels()[i]
                ));
            }
        }
        Ok(Self { class_names, train, test, train_files: Vec::new() })
    }

    /// Names the file of every training image; `Err` when there is not one name per image.
    pub fn with_train_files(self, train_files: Vec<String>) -> Result<Self, String> {
        if !train_files.is_empty() && train_files.len() != self.train.len() {
            return Err(format!("{} training file names for {} training images", train_files.len(), self.train.len()));
        }
        Ok(Self { train_files, ..self })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Image shape shared by both splits.
    pub fn shape(&self) -> ImageShape {
        self.train.shape()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(c: usize, h: usize, w: usize) -> ImageShape {
        ImageShape { channels: c, height: h, width: w }
    }

    #[test]
    fn new_rejects_pixel_count_mismatch_and_images_without_pixels() {
        let err = ImageSet::new(shape(3, 0, 0), vec![], vec![0, 1]).unwrap_err();
        assert_eq!(err, "images of size 3×0×0 have no pixels");
        assert!(ImageSet::new(shape(0, 2, 2), vec![], vec![]).is_err());
        let err = ImageSet::new(shape(1, 2, 2), vec![0; 7], vec![0, 1]).unwrap_err();
        assert!(err.contains("need 8 pixel bytes, found 7"), "{err}");
    }

    #[test]
    fn image_and_select_address_the_right_bytes() {
        let set = ImageSet::new(shape(1, 1, 2), vec![1, 2, 3, 4, 5, 6], vec![0, 1, 2]).unwrap();
        assert_eq!(set.image(1), &[3, 4]);
        let picked = set.select(&[2, 0]);
        assert_eq!(picked.pixels(), &[5, 6, 1, 2]);
        assert_eq!(picked.labels(), &[2, 0]);
    }

    #[test]
    fn channel_stats_match_hand_computation() {
        // Channel 0 holds 0 and 255 (mean 0.5, std 0.5); channel 1 holds 51 twice (0.2, 0).
        let set = ImageSet::new(shape(2, 1, 1), vec![0, 51, 255, 51], vec![0, 0]).unwrap();
        let stats = set.channel_stats();
        assert!((stats[0].0 - 0.5).abs() < 1e-12 && (stats[0].1 - 0.5).abs() < 1e-12);
        assert!((stats[1].0 - 0.2).abs() < 1e-12 && stats[1].1.abs() < 1e-9);
    }

    #[test]
    fn dataset_rejects_out_of_range_label_and_shape_mismatch() {
        let train = ImageSet::new(shape(1, 1, 1), vec![0, 0], vec![0, 3]).unwrap();
        let test = ImageSet::empty(shape(1, 1, 1));
        let err = Dataset::new(vec!["a".into(), "b".into()], train.clone(), test).unwrap_err();
        assert!(err.contains("train image 1 has label 3"), "{err}");
        let err = Dataset::new(vec!["a".into(); 4], train, ImageSet::empty(shape(3, 1, 1)))
            .unwrap_err();
        assert!(err.contains("train images are 1×1×1 but test images are 3×1×1"), "{err}");
    }

    #[test]
    fn class_counts_counts_each_label() {
        let set = ImageSet::new(shape(1, 1, 1), vec![0; 4], vec![1, 1, 0, 2]).unwrap();
        assert_eq!(set.class_counts(3), vec![1, 2, 1]);
    }
}
