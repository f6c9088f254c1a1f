//! `vab poison --attack dynamic` killed while training its networks and run again resumes from
//! the checkpoint in the attack cache and ends with exactly the networks of an uninterrupted
//! run (compared on their raw outputs: these tiny networks' masks are all zero, so the bundles
//! alone would not tell).
//! Its own test binary: burn's random stream is process-wide, and networks draw their initial
//! weights lazily, so a test running beside it would move the weights it draws.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use burn::module::Module;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Device, Tensor, TensorData};
use vab_attacks::poison::{LabelRule, PoisonSpec};
use vab_core::attacks::input_aware::{input_aware, DynamicParams, Generator};
use vab_core::backend::Backend;
use vab_core::engine::progress::{Silent, TrainProgress};
use vab_data::{Bundle, Dataset, ImageSet, ImageShape};

mod common;
use common::{KillAt, CONFIG};

/// Epochs of both stages: 2 of the mask network, then `CONFIG`'s 3 of the generator.
const EPOCHS: usize = 5;

fn dataset() -> Dataset {
    let shape = ImageShape { channels: 3, height: 8, width: 8 };
    let set = |n: usize, salt: usize| {
        let pixels = (0..n * shape.len()).map(|p| ((p * 7_919 + salt) % 251) as u8).collect();
        ImageSet::new(shape, pixels, (0..n).map(|i| (i % 2) as u16).collect()).unwrap()
    };
    Dataset::new(vec!["a".into(), "b".into()], set(32, 1), set(16, 2)).unwrap()
}

fn poison(dataset: &Dataset, params: &DynamicParams, cache: &Path, progress: &dyn TrainProgress) -> Bundle {
    let spec = PoisonSpec { rate: 0.25, convention: None, label_rule: LabelRule::AllToOne, target: 0, seed: 3 };
    input_aware(dataset, "unit", params, &spec, cache, Backend::Flex, progress).unwrap().0
}

/// The cached networks' raw outputs on a fixed input, and the classifier's recorded figures.
fn networks(cache: &Path) -> (Vec<f32>, String) {
    let dir = std::fs::read_dir(cache).unwrap().next().unwrap().unwrap().path();
    assert!(!dir.join("checkpoint").exists(), "the finished networks left their checkpoint behind in {}", dir.display());
    let device = Device::flex();
    let x = Tensor::<4>::from_data(TensorData::new((0..2 * 3 * 8 * 8).map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0).collect::<Vec<_>>(), [2, 3, 8, 8]), &device);
    let mut outputs = Vec::new();
    for (file, out_channels) in [("pattern.bpk", 3), ("mask.bpk", 1)] {
        let mut net = Generator::new(3, out_channels, 4, &device);
        net.load_from(&mut BurnpackStore::from_file(dir.join(file))).unwrap();
        outputs.extend(net.valid().forward(x.clone()).into_data().iter::<f32>());
    }
    (outputs, std::fs::read_to_string(dir.join("classifier.json")).unwrap())
}

#[test]
fn killed_generator_training_resumes_to_the_uninterrupted_networks() {
    let dir = tempfile::tempdir().unwrap();
    let surrogate = dir.path().join("classifier.toml");
    std::fs::write(&surrogate, CONFIG).unwrap();
    let params = DynamicParams { surrogate: surrogate.clone(), width: 4, mask_epochs: 2, mask_density: 0.032, lambda_div: 1.0, lambda_norm: 100.0, generator_lr: 0.01, attack_ratio: 0.1, cross_ratio: 0.1, donors: 4 };
    let data = dataset();
    let straight_cache = dir.path().join("cache-straight");
    let straight = poison(&data, &params, &straight_cache, &Silent);
    let expected = networks(&straight_cache);
    // Epoch 1 starts after a mask epoch, 2 after the mask stage, 3 and 4 after generator epochs.
    for at in 1..EPOCHS {
        let cache: PathBuf = dir.path().join(format!("cache-killed-{at}"));
        let killed = catch_unwind(AssertUnwindSafe(|| poison(&data, &params, &cache, &KillAt::new(at))));
        assert!(killed.is_err(), "the kill at epoch {at} did not happen");
        let partial = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
        assert!(partial.join("checkpoint").is_dir(), "no checkpoint in {}", partial.display());
        // Counts the epochs the second run starts (it never reaches usize::MAX).
        let counter = KillAt::new(usize::MAX);
        let resumed = poison(&data, &params, &cache, &counter);
        assert_eq!(counter.1.load(Ordering::SeqCst), EPOCHS - at, "killed when epoch {at} started: the second run did not resume");
        assert!(networks(&cache) == expected, "killed when epoch {at} started: other networks");
        assert!(resumed.train.pixels() == straight.train.pixels() && resumed.test_triggered.pixels() == straight.test_triggered.pixels(), "killed when epoch {at} started: other images");
    }
}
