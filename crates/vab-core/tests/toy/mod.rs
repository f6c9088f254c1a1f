//! A small synthetic poisoned dataset shared by the whole-run tests: 4 classes of 16×16 images,
//! each class a brighter band of rows, and a 3×3 checkerboard trigger.

use std::sync::Arc;

use vab_attacks::poison::LabelRule;
use vab_core::data::{EvalSets, TrainingSet};
use vab_data::{ImageSet, ImageShape};

pub const SHAPE: ImageShape = ImageShape { channels: 3, height: 16, width: 16 };
pub const CLASSES: usize = 4;

/// Class k brightens rows 4k..4k+4 by an amount that differs per image; pixels carry
/// deterministic noise. Poisoned images get a
/// black-and-white 3×3 checkerboard in the top-left corner.
pub fn image(class: usize, salt: usize, poisoned: bool) -> Vec<u8> {
    (0..SHAPE.len())
        .map(|p| {
            let (y, x) = (p / 16 % 16, p % 16);
            if poisoned && y < 3 && x < 3 {
                return if (x + y) % 2 == 0 { 255 } else { 0 };
            }
            let noise = (p * 7919 + salt * 104_729) % 61;
            // Signal strength varies per image, so confidence varies within every class.
            let signal = 10 + salt * 37 % 90;
            (if y / 4 == class { 60 + signal + noise } else { 60 + noise }) as u8
        })
        .collect()
}

pub fn set(images: Vec<Vec<u8>>, labels: Vec<u16>) -> Arc<ImageSet> {
    Arc::new(ImageSet::new(SHAPE, images.concat(), labels).unwrap())
}

/// 800 training samples of which every tenth (not of class 0) is poisoned and relabelled 0.
pub fn data(poison: bool) -> (TrainingSet, EvalSets, Vec<bool>) {
    let n = 800;
    let poisoned: Vec<bool> = (0..n).map(|i| poison && i % 10 == 3 && i % CLASSES != 0).collect();
    let labels: Vec<u16> = (0..n).map(|i| if poisoned[i] { 0 } else { (i % CLASSES) as u16 }).collect();
    let train = set((0..n).map(|i| image(i % CLASSES, i, poisoned[i])).collect(), labels);
    let test = set((0..200).map(|i| image(i % CLASSES, 10_000 + i, false)).collect(), (0..200).map(|i| (i % CLASSES) as u16).collect());
    let triggered_ids: Vec<usize> = (0..200).filter(|i| i % CLASSES != 0).collect();
    let triggered = set(triggered_ids.iter().map(|&i| image(i % CLASSES, 20_000 + i, true)).collect(), triggered_ids.iter().map(|&i| (i % CLASSES) as u16).collect());
    let attack = poison.then_some((LabelRule::AllToOne, 0));
    (TrainingSet { images: train, num_classes: CLASSES }, EvalSets { test, triggered, originals: Some(triggered_ids.into()), attack, num_classes: CLASSES }, poisoned)
}

