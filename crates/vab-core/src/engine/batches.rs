//! Training batches from u8 images: a seeded per-epoch order, random crop (zero padding) and
//! horizontal flip applied on u8 in parallel (or contrastive learning's strong augmentation,
//! [`super::contrastive_augment`]), one conversion to normalised f32 per batch, and a prefetch
//! thread that builds the next batch while the model computes.
//!
//! Every random choice comes from (seed, epoch, batch index), so the same seed gives the same
//! batches, whatever the thread timing, and a resumed run sees the batches an uninterrupted run
//! would have seen.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use vab_data::{ImageSet, ImageShape};

use super::contrastive_augment::ContrastiveAugment;

/// Augmentation applied to each training image.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Zero padding before a random crop back to H×W (0 = no crop).
    pub crop_padding: usize,
    /// Random horizontal flip with probability 1/2.
    pub flip: bool,
    /// Contrastive learning's strong augmentation (DBD's SimCLR stage) in place of the crop;
    /// the flip still follows `flip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contrastive: Option<ContrastiveAugment>,
}

impl Augment {
    /// No augmentation.
    pub const NONE: Augment = Augment { crop_padding: 0, flip: false, contrastive: None };
    /// Random crop with padding 4 and horizontal flip (the CIFAR standard).
    pub const CROP_FLIP: Augment = Augment { crop_padding: 4, flip: true, contrastive: None };
}

/// Per-channel normalisation: x ↦ (x/255 - mean) / std.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// The training set's own per-channel statistics.
    pub fn of(set: &ImageSet) -> Self {
        let stats = set.channel_stats();
        Self {
            mean: stats.iter().map(|s| s.0 as f32).collect(),
            std: stats.iter().map(|s| (s.1 as f32).max(1e-3)).collect(),
        }
    }

    /// One pixel value `p` of channel `c`, normalised.
    pub fn pixel(&self, c: usize, p: u8) -> f32 {
        (p as f32 / 255.0 - self.mean[c]) / self.std[c]
    }

    /// Whole C×H×W u8 images, back to back, normalised (no augmentation).
    pub fn images(&self, pixels: &[u8], shape: ImageShape) -> Vec<f32> {
        let plane = shape.height * shape.width;
        pixels.iter().enumerate().map(|(i, &p)| self.pixel((i / plane) % shape.channels, p)).collect()
    }
}

/// One batch, ready to become tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Normalised pixels, [batch, C, H, W] row-major.
    pub images: Vec<f32>,
    pub shape: [usize; 4],
    /// Indices of the samples in the image set.
    pub indices: Vec<usize>,
    /// Their labels.
    pub labels: Vec<u16>,
}

/// Crop offset (dy, dx) in 0..=2p and flip flag for one sample.
type Jitter = (usize, usize, bool);

/// Applies crop + flip to one C×H×W u8 image, writing normalised f32 into `out`.
fn augment_into(image: &[u8], shape: ImageShape, padding: usize, (dy, dx, flip): Jitter, norm: &Normalization, out: &mut [f32]) {
    let (h, w) = (shape.height, shape.width);
    for c in 0..shape.channels {
        let zero = norm.pixel(c, 0);
        for y in 0..h {
            let sy = (y + dy) as isize - padding as isize;
            for x in 0..w {
                let xx = if flip { w - 1 - x } else { x };
                let sx = (xx + dx) as isize - padding as isize;
                out[c * h * w + y * w + x] = if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                    zero
                } else {
                    norm.pixel(c, image[c * h * w + sy as usize * w + sx as usize])
                };
            }
        }
    }
}

/// Builds the batch of `indices`, augmenting with randomness from `seed`.
pub fn make_batch(set: &ImageSet, indices: &[usize], augment: Augment, norm: &Normalization, seed: u64) -> Batch {
    let shape = set.shape();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut images = vec![0f32; indices.len() * shape.len()];
    if let Some(contrastive) = augment.contrastive {
        let seeds: Vec<u64> = indices.iter().map(|_| rng.gen()).collect();
        images.par_chunks_exact_mut(shape.len()).zip(indices.par_iter().zip(&seeds)).for_each(|(out, (&i, &s))| {
            contrastive.apply(set.image(i), shape, augment.flip, s, norm, out);
        });
    } else {
        let span = 2 * augment.crop_padding + 1;
        let jitter: Vec<Jitter> = indices
            .iter()
            .map(|_| (rng.gen_range(0..span), rng.gen_range(0..span), augment.flip && rng.gen_bool(0.5)))
            .collect();
        images.par_chunks_exact_mut(shape.len()).zip(indices.par_iter().zip(&jitter)).for_each(|(out, (&i, &j))| {
            augment_into(set.image(i), shape, augment.crop_padding, j, norm, out);
        });
    }
    Batch {
        images,
        shape: [indices.len(), shape.channels, shape.height, shape.width],
        labels: indices.iter().map(|&i| set.labels()[i]).collect(),
        indices: indices.to_vec(),
    }
}

/// A seed for one random stream of (epoch, batch, view, kind) under `seed`; the four fields sit
/// in disjoint bit ranges of the ChaCha stream number, so no two streams coincide.
pub fn derive(seed: u64, epoch: usize, batch: usize, view: usize, kind: u64) -> u64 {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream((epoch as u64) << 40 | (batch as u64) << 16 | (view as u64) << 8 | kind);
    rng.gen()
}

/// The order in which epoch `epoch` visits `members` (a seeded shuffle).
pub fn epoch_order(members: &[usize], seed: u64, epoch: usize) -> Vec<usize> {
    let mut order = members.to_vec();
    order.shuffle(&mut ChaCha20Rng::seed_from_u64(derive(seed, epoch, 0, 0, 1)));
    order
}

/// How a training batch turns each chosen image into input rows: `count` independently
/// augmented views, each normalised.
#[derive(Clone, Debug, PartialEq)]
pub struct Views {
    pub count: usize,
    pub augment: Augment,
    pub norm: Normalization,
}

impl Views {
    /// One augmented view per image.
    pub fn one(augment: Augment, norm: Normalization) -> Self {
        Self { count: 1, augment, norm }
    }
}

/// The batch of `indices` in `views.count` independently augmented views, view after view:
/// images [count·n, C, H, W], labels and indices repeated per view. Batch `batch` of `epoch`
/// draws its randomness from those numbers, so it is the same whatever thread builds it.
pub fn make_views(set: &ImageSet, indices: &[usize], views: &Views, seed: u64, epoch: usize, batch: usize) -> Batch {
    let mut all = make_batch(set, indices, views.augment, &views.norm, derive(seed, epoch, batch, 0, 2));
    for view in 1..views.count {
        let next = make_batch(set, indices, views.augment, &views.norm, derive(seed, epoch, batch, view, 2));
        all.images.extend(next.images);
        all.labels.extend(next.labels);
        all.indices.extend(next.indices);
        all.shape[0] += indices.len();
    }
    all
}

/// Batches of one epoch over `members` ([`make_views`] of `batch_size` members each), built on a
/// background thread two batches ahead.
pub fn epoch_batches(set: Arc<ImageSet>, members: &[usize], batch_size: usize, views: Views, seed: u64, epoch: usize) -> Receiver<Batch> {
    let order = epoch_order(members, seed, epoch);
    let (tx, rx) = sync_channel(2);
    std::thread::spawn(move || {
        for (b, chunk) in order.chunks(batch_size.max(1)).enumerate() {
            let batch = make_views(&set, chunk, &views, seed, epoch, b);
            if tx.send(batch).is_err() {
                return; // the consumer stopped early
            }
        }
    });
    rx
}

/// Consecutive un-augmented batches over `indices` (evaluation and no-grad passes).
pub fn plain_batches<'a>(set: &'a ImageSet, indices: &'a [usize], batch_size: usize, norm: &'a Normalization) -> impl Iterator<Item = Batch> + 'a {
    indices.chunks(batch_size.max(1)).map(move |chunk| make_batch(set, chunk, Augment::NONE, norm, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> Arc<ImageSet> {
        let shape = ImageShape { channels: 1, height: 3, width: 3 };
        let pixels = (0..10 * 9).map(|i| (i * 3 % 256) as u8).collect();
        Arc::new(ImageSet::new(shape, pixels, (0..10).map(|i| (i % 3) as u16).collect()).unwrap())
    }

    fn unit() -> Normalization {
        Normalization { mean: vec![0.0], std: vec![1.0 / 255.0] }
    }

    #[test]
    fn same_seed_same_batches_other_seed_other_batches() {
        let members: Vec<usize> = (0..10).collect();
        let collect = |seed| epoch_batches(set(), &members, 4, Views::one(Augment::CROP_FLIP, unit()), seed, 3).iter().collect::<Vec<_>>();
        let a = collect(7);
        assert_eq!(a, collect(7));
        assert_ne!(a, collect(8));
        assert_eq!(a.iter().map(|b| b.indices.len()).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut seen: Vec<usize> = a.iter().flat_map(|b| b.indices.clone()).collect();
        seen.sort();
        assert_eq!(seen, members, "an epoch visits every member once");
    }

    #[test]
    fn views_repeat_the_samples_with_their_own_augmentation() {
        let set = set();
        let jitter = Augment { crop_padding: 1, flip: true, contrastive: None };
        let views = |count| Views { count, augment: jitter, norm: unit() };
        let two = make_views(&set, &[1, 4], &views(2), 9, 0, 5);
        assert_eq!(two.shape, [4, 1, 3, 3]);
        assert_eq!((two.indices, two.labels), (vec![1, 4, 1, 4], vec![1, 1, 1, 1]));
        assert_eq!(two.images[..18], make_views(&set, &[1, 4], &views(1), 9, 0, 5).images[..]);
        assert_ne!(two.images[..18], two.images[18..], "views are augmented independently");
    }

    #[test]
    fn contrastive_views_are_seeded_and_independent() {
        let shape = ImageShape { channels: 3, height: 8, width: 8 };
        let set = ImageSet::new(shape, (0..4 * 192).map(|i| (i * 7 % 256) as u8).collect(), vec![0, 1, 0, 1]).unwrap();
        let norm = Normalization { mean: vec![0.0; 3], std: vec![1.0; 3] };
        let strong = Views { count: 2, augment: Augment { crop_padding: 0, flip: true, contrastive: Some(ContrastiveAugment::default()) }, norm };
        let two = make_views(&set, &[0, 3], &strong, 1, 0, 0);
        assert_eq!((two.shape, two.indices.clone()), ([4, 3, 8, 8], vec![0, 3, 0, 3]));
        assert_eq!(two, make_views(&set, &[0, 3], &strong, 1, 0, 0));
        assert_ne!(two.images[..192], two.images[2 * 192..3 * 192], "an image's two views differ");
        assert!(two.images.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn no_augmentation_reproduces_the_pixels_and_flip_mirrors_them() {
        let set = set();
        let plain = make_batch(&set, &[2], Augment::NONE, &unit(), 0);
        let expected: Vec<f32> = set.image(2).iter().map(|&v| v as f32).collect();
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
        assert!(close(&plain.images, &expected), "{:?}", plain.images);
        // Crop offset (p, p) = identity crop; flip mirrors each row.
        let mut out = vec![0f32; 9];
        augment_into(set.image(2), set.shape(), 4, (4, 4, true), &unit(), &mut out);
        assert!(close(&out[0..3], &[expected[2], expected[1], expected[0]]), "{out:?}");
        // Offset (0, 0) with padding 1 shifts the image down-right, filling zeros.
        augment_into(set.image(2), set.shape(), 1, (0, 0, false), &unit(), &mut out);
        assert_eq!(&out[0..4], &[0.0, 0.0, 0.0, 0.0]);
        assert!(close(&out[4..5], &expected[0..1]), "{out:?}");
    }

    #[test]
    fn normalisation_uses_the_statistics() {
        let norm = Normalization { mean: vec![0.5], std: vec![0.25] };
        let set = set();
        let batch = make_batch(&set, &[0], Augment::NONE, &norm, 0);
        let v = set.image(0)[1] as f32 / 255.0;
        assert!((batch.images[1] - (v - 0.5) / 0.25).abs() < 1e-6);
        // Whole images, channel by channel: 255 and 0 in a 2-channel 1×1 image.
        let two = Normalization { mean: vec![0.5, 0.0], std: vec![0.25, 0.5] };
        assert_eq!(two.images(&[255, 0, 0, 255], ImageShape { channels: 2, height: 1, width: 1 }), vec![2.0, 0.0, -2.0, 2.0]);
    }
}
