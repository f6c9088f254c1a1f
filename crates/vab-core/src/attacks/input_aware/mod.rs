//! The input-aware dynamic attack (Nguyen & Tran 2020; method.md §9, "Dynamic"): a trained
//! generator gives every image its own trigger. [`train`] fits the mask network, then the
//! pattern generator jointly with a classifier on the clean training set; the poisoned bundle
//! then holds
//! - poisoned samples x + (G(x) − x) ⊙ M(x), relabelled to the target (rate as for BadNets);
//! - cross samples x + (G(x') − x) ⊙ M(x') with the trigger of another training image x',
//!   labels kept (`cross_ratio` of the training set), which teach that a trigger only works on
//!   its own image;
//! - the triggered test set, made by the same generator.
//!
//! The trained networks are cached (burnpack files under the attack cache), keyed by the data,
//! the classifier configuration, the attack parameters and the target, so poisoning again
//! reuses them; an interrupted training resumes from its checkpoint in the same directory.

mod generator;
mod train;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::module::Module;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use vab_attacks::poison::{poison, AttackRecord, PoisonSpec};
use vab_attacks::{Attack, LabelMode};
use vab_data::{Bundle, Dataset, ImageShape};

pub use generator::{upsample2x_bilinear, Generator};

use super::{surrogate_config, training_key};
use crate::backend::Backend;
use crate::engine::batches::Normalization;
use crate::engine::eval::evaluate;
use crate::engine::progress::TrainProgress;
use crate::error::{CoreError, Result};

/// The attack's parameters (`vab poison --attack dynamic --set …`); defaults are the paper's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicParams {
    /// Training configuration (TOML file) of the classifier trained with the generator: its
    /// architecture, epochs, batch size, optimiser, schedule and training subset.
    pub surrogate: PathBuf,
    /// Base width of the generator and the mask network (widths w, 2w, 4w).
    #[serde(default = "defaults::width")]
    pub width: usize,
    /// Epochs of the mask network's own stage.
    #[serde(default = "defaults::mask_epochs")]
    pub mask_epochs: usize,
    /// Mask density the norm loss pushes the mask below.
    #[serde(default = "defaults::mask_density")]
    pub mask_density: f64,
    #[serde(default = "defaults::lambda_div")]
    pub lambda_div: f64,
    #[serde(default = "defaults::lambda_norm")]
    pub lambda_norm: f64,
    /// Adam learning rate of both networks (β = 0.5, 0.9).
    #[serde(default = "defaults::generator_lr")]
    pub generator_lr: f64,
    /// Share of each training batch given its own trigger while training the generator.
    #[serde(default = "defaults::ratio")]
    pub attack_ratio: f64,
    /// Share of cross samples, both in the generator's batches and in the bundle.
    #[serde(default = "defaults::ratio")]
    pub cross_ratio: f64,
    /// How many training images lend their trigger to the bundle's cross samples.
    #[serde(default = "defaults::donors")]
    pub donors: usize,
}

mod defaults {
    pub fn width() -> usize {
        32
    }
    pub fn mask_epochs() -> usize {
        25
    }
    pub fn mask_density() -> f64 {
        0.032
    }
    pub fn lambda_div() -> f64 {
        1.0
    }
    pub fn lambda_norm() -> f64 {
        100.0
    }
    pub fn generator_lr() -> f64 {
        0.01
    }
    pub fn ratio() -> f64 {
        0.1
    }
    pub fn donors() -> usize {
        1024
    }
}

/// What generating the poison measured (also recorded in the bundle's attack parameters).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynamicReport {
    /// The jointly trained classifier's clean test accuracy, percent.
    pub classifier_ba: f64,
    /// Its attack success rate on the generator's triggered test set, percent.
    pub classifier_asr: f64,
    /// Share of pixels the mask selects (mask > 0.5) on the donor images, percent.
    pub mask_coverage: f64,
    pub networks_dir: PathBuf,
    /// Whether the networks came from the cache.
    pub reused: bool,
}

/// The trained generator and mask network as an [`Attack`], on the inference device.
struct GeneratedTrigger {
    networks: Mutex<(Generator, Generator)>,
    shape: ImageShape,
    norm: Normalization,
    device: Device,
    /// (pattern, mask) of the donor images, in pixel units, for the cross samples.
    donors: Vec<(Vec<f32>, Vec<f32>)>,
    cross_ratio: f64,
    params: serde_json::Value,
}

const BATCH: usize = 256;

impl GeneratedTrigger {
    /// Patterns [n, C, H, W] and masks [n, 1, H, W] of `images` (u8, back to back), in pixel units.
    fn triggers(&self, images: &[u8], shape: ImageShape) -> (Vec<f32>, Vec<f32>) {
        let networks = self.networks.lock().expect("the generator lock is never poisoned");
        let (mut patterns, mut masks) = (Vec::new(), Vec::new());
        for chunk in images.chunks(BATCH * shape.len()) {
            let n = chunk.len() / shape.len();
            let x = self.norm.images(chunk, shape);
            let x = Tensor::<4>::from_data(TensorData::new(x, [n, shape.channels, shape.height, shape.width]), &self.device);
            patterns.extend(networks.0.pattern(x.clone()).into_data().iter::<f32>());
            masks.extend(networks.1.mask(x).into_data().iter::<f32>());
        }
        (patterns, masks)
    }
}

/// Stamps one image: x + (pattern − x) ⊙ mask in pixel units, rounded back to u8.
fn stamp(image: &mut [u8], pattern: &[f32], mask: &[f32]) {
    let plane = mask.len();
    for (i, p) in image.iter_mut().enumerate() {
        let x = *p as f32 / 255.0;
        let m = mask[i % plane];
        *p = ((x + (pattern[i] - x) * m) * 255.0).round().clamp(0.0, 255.0) as u8;
    }
}

impl Attack for GeneratedTrigger {
    fn name(&self) -> &'static str {
        "dynamic"
    }
    fn label_mode(&self) -> LabelMode {
        LabelMode::PoisonLabel
    }
    fn apply(&self, image: &mut [u8]) {
        self.apply_all(image, self.shape);
    }
    fn apply_all(&self, images: &mut [u8], shape: ImageShape) {
        let (patterns, masks) = self.triggers(images, shape);
        let plane = shape.height * shape.width;
        for (k, image) in images.chunks_exact_mut(shape.len()).enumerate() {
            stamp(image, &patterns[k * shape.len()..(k + 1) * shape.len()], &masks[k * plane..(k + 1) * plane]);
        }
    }
    fn params(&self) -> serde_json::Value {
        self.params.clone()
    }
    fn cross_ratio(&self) -> f64 {
        self.cross_ratio
    }
    fn apply_cross(&self, image: &mut [u8], rng: &mut ChaCha20Rng) {
        let (pattern, mask) = &self.donors[rng.gen_range(0..self.donors.len())];
        stamp(image, pattern, mask);
    }
}

/// Saves a network taken out of training with `valid()`, which folds the last batch-norm update
/// into the running statistics (the training module itself would store them one batch behind).
fn save(net: &Generator, file: &Path) -> Result<()> {
    let mut store = BurnpackStore::from_file(file).overwrite(true);
    net.save_into(&mut store).map_err(|e| CoreError::file(file, format!("cannot save: {e:?}")))
}

/// Poisons `dataset` with the input-aware attack, training (or reusing from `cache`) its
/// networks on `backend`.
pub fn input_aware(dataset: &Dataset, source: &str, params: &DynamicParams, spec: &PoisonSpec, cache: &Path, backend: Backend, progress: &dyn TrainProgress) -> Result<(Bundle, AttackRecord, DynamicReport)> {
    let config = surrogate_config(&params.surrogate)?;
    for (name, ratio) in [("attack_ratio", params.attack_ratio), ("cross_ratio", params.cross_ratio)] {
        if !(0.0..0.5).contains(&ratio) {
            return Err(CoreError::Invalid(format!("dynamic: {name} = {ratio} must be in [0, 0.5)")));
        }
    }
    if params.width == 0 || params.donors == 0 {
        return Err(CoreError::Invalid("dynamic: width and donors must be positive".into()));
    }
    let shape = dataset.shape();
    if !shape.height.is_multiple_of(8) || !shape.width.is_multiple_of(8) {
        return Err(CoreError::Invalid(format!("dynamic: the generator needs image sides divisible by 8, not {}×{}", shape.height, shape.width)));
    }
    // The key holds the surrogate configuration's values, not its path.
    let keyed = DynamicParams { surrogate: PathBuf::new(), ..params.clone() };
    let key = training_key(&config, &serde_json::to_vec(&(keyed, spec.target)).expect("serialises"), &dataset.train);
    let dir = cache.join(format!("dynamic-{key}"));
    let inference = backend.device().map_err(CoreError::Invalid)?;
    let files = ["pattern.bpk", "mask.bpk"].map(|f| dir.join(f));
    let reused = files.iter().all(|f| f.is_file()) && dir.join("classifier.json").is_file();
    let (networks, classifier) = if reused {
        let mut nets = [Generator::new(shape.channels, shape.channels, params.width, &inference), Generator::new(shape.channels, 1, params.width, &inference)];
        for (net, file) in nets.iter_mut().zip(&files) {
            net.load_from(&mut BurnpackStore::from_file(file)).map_err(|e| CoreError::file(file, format!("cannot load: {e:?}")))?;
        }
        let [pattern, mask] = nets;
        (Mutex::new((pattern.valid(), mask.valid())), None)
    } else {
        let device = inference.clone().autodiff();
        std::fs::create_dir_all(&dir).map_err(|e| CoreError::io(&dir, e))?;
        let trained = train::train(dataset, &config, params, spec.target, &dir, &device, progress)?;
        let (pattern, mask) = (trained.pattern.valid(), trained.mask.valid());
        for (net, file) in [&pattern, &mask].into_iter().zip(&files) {
            save(net, file)?;
        }
        // The finished networks replace the checkpoint (it also holds the optimiser states).
        let _ = std::fs::remove_dir_all(dir.join("checkpoint"));
        (Mutex::new((pattern, mask)), Some(trained.classifier.valid()))
    };

    let norm = Normalization::of(&dataset.train);
    let mut trigger = GeneratedTrigger { networks, shape, norm, device: inference.clone(), donors: Vec::new(), cross_ratio: params.cross_ratio, params: serde_json::Value::Null };
    let mut rng = ChaCha20Rng::seed_from_u64(spec.seed ^ 0xd0_4045);
    let chosen = index::sample(&mut rng, dataset.train.len(), params.donors.min(dataset.train.len())).into_vec();
    let donor_images: Vec<u8> = chosen.iter().flat_map(|&i| dataset.train.image(i).iter().copied()).collect();
    let (patterns, masks) = trigger.triggers(&donor_images, shape);
    let plane = shape.height * shape.width;
    trigger.donors = (0..chosen.len()).map(|k| (patterns[k * shape.len()..(k + 1) * shape.len()].to_vec(), masks[k * plane..(k + 1) * plane].to_vec())).collect();

    // The classifier's figures: measured once, when the networks are trained, and cached.
    let report_file = dir.join("classifier.json");
    let mut recorded = serde_json::json!({ "params": params, "surrogate_config": config, "networks": dir.file_name().map(|n| n.to_string_lossy().into_owned()) });
    trigger.params = recorded.clone();
    let (bundle, record) = poison(dataset, source, &trigger, spec).map_err(|e| CoreError::Invalid(e.to_string()))?;
    let (classifier_ba, classifier_asr) = match classifier {
        Some(model) => {
            let (_, evals, _) = crate::data::split(bundle.clone()).map_err(CoreError::Invalid)?;
            let m = evaluate(&model, &evals, &trigger.norm, config.data.eval_batch_size, &inference);
            let figures = (m.ba, m.asr.unwrap_or(0.0));
            std::fs::write(&report_file, serde_json::to_vec(&figures).expect("serialises")).map_err(|e| CoreError::io(&report_file, e))?;
            figures
        }
        None => {
            let text = std::fs::read(&report_file).map_err(|e| CoreError::io(&report_file, e))?;
            serde_json::from_slice(&text).map_err(|e| CoreError::file(&report_file, e))?
        }
    };
    let report = DynamicReport {
        classifier_ba,
        classifier_asr,
        mask_coverage: 100.0 * masks.iter().filter(|&&m| m > 0.5).count() as f64 / masks.len().max(1) as f64,
        networks_dir: dir,
        reused,
    };
    recorded["classifier_ba"] = report.classifier_ba.into();
    recorded["classifier_asr"] = report.classifier_asr.into();
    recorded["mask_coverage"] = report.mask_coverage.into();
    let (mut bundle, mut record) = (bundle, record);
    record.params = recorded;
    bundle.meta.attack = Some(serde_json::to_value(&record).expect("record serialises"));
    Ok((bundle, record, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn saved_networks_load_back_with_the_same_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let device = Device::flex().autodiff();
        let net = Generator::new(3, 3, 4, &device);
        // A training-mode pass moves the batch-norm running statistics.
        let _ = net.forward(Tensor::random([4, 3, 8, 8], Distribution::Normal(0.5, 2.0), &device));
        let file = dir.path().join("g.bpk");
        save(&net.valid(), &file).unwrap();
        let inference = Device::flex();
        let mut loaded = Generator::new(3, 3, 4, &inference);
        loaded.load_from(&mut BurnpackStore::from_file(&file)).unwrap();
        let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &inference);
        let a: Vec<f32> = net.valid().pattern(x.clone()).into_data().try_to_vec().unwrap();
        let b: Vec<f32> = loaded.valid().pattern(x).into_data().try_to_vec().unwrap();
        let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-6, "loaded network differs by {worst}");
    }
}
