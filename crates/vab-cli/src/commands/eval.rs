//! `vab eval`: a trained network and a bundle in, its test metrics out.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use vab_core::engine::eval::evaluate;
use vab_core::engine::export::import_pytorch;
use vab_data::Bundle;

use super::train::RunInputs;
use crate::cli::EvalArgs;

pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let (model_path, source) = inputs(&args.model, args.bundle.as_deref())?;
    let device = args.compute.backend()?.device().map_err(anyhow::Error::msg)?;
    let (model, card) = import_pytorch(&model_path, &device)?;
    let (bundle, bundle_path) = match source {
        BundleSource::File(path) => (Bundle::read(&path)?, path),
        BundleSource::Run(run) => (run.read_bundle(&args.model)?, run.bundle),
    };
    let classes = bundle.meta.class_names.clone();
    let shape = bundle.test.shape();
    if shape.channels != card.in_channels || classes.len() != card.num_classes {
        bail!(
            "{}: the network takes {} channels and {} classes, the bundle {} has {} and {}; use a bundle of the dataset it was trained on",
            model_path.display(), card.in_channels, card.num_classes, bundle_path.display(), shape.channels, classes.len()
        );
    }
    if let Some([h, w]) = card.image_size.filter(|&size| size != [shape.height, shape.width]) {
        bail!(
            "{}: the network was trained on {h}×{w} images, the bundle {} has {}×{}; use a bundle of the dataset it was trained on",
            model_path.display(), bundle_path.display(), shape.height, shape.width
        );
    }
    if let Some(trained) = trained_class_names(&args.model, args.bundle.is_some())? {
        if trained != classes {
            bail!(
                "{}: the run trained on classes {}, the bundle {} has {}; use a bundle of the dataset it was trained on",
                args.model.display(), trained.join(", "), bundle_path.display(), classes.join(", ")
            );
        }
    }
    let (_, evals, _) = vab_core::data::split(bundle).map_err(|e| anyhow::anyhow!("{}: {e}", bundle_path.display()))?;
    let metrics = evaluate(&model, &evals, &card.normalization, args.batch_size as usize, &device);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&metrics)?);
    } else {
        println!("{} on {}: {}", model_path.display(), bundle_path.display(), metrics.describe());
        for (name, accuracy) in classes.iter().zip(&metrics.per_class) {
            println!("  {name:<12} {accuracy:6.2}%");
        }
    }
    Ok(())
}

/// The class names of the bundle a run directory trained on, when another bundle is to be
/// evaluated (`None` for a model file, which does not record them, or for the run's own bundle).
fn trained_class_names(model: &Path, other_bundle: bool) -> anyhow::Result<Option<Vec<String>>> {
    if !other_bundle || !model.is_dir() {
        return Ok(None);
    }
    let path = model.join("run.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    let run: RunInputs = serde_json::from_str(&text).with_context(|| format!("{}: not a vab run record", path.display()))?;
    // A run whose bundle is gone cannot say; the other checks still apply.
    Ok(run.read_bundle(model).ok().map(|bundle| bundle.meta.class_names))
}

/// Where the test sets come from: a bundle named on the command line, or the run's own.
enum BundleSource {
    File(PathBuf),
    /// The run's `run.json`, whose bundle must still be the file it trained on.
    Run(RunInputs),
}

/// The model file and the bundle: a run directory gives its `model.safetensors` and, unless
/// `bundle` is given, the bundle in its `run.json`.
fn inputs(model: &Path, bundle: Option<&Path>) -> anyhow::Result<(PathBuf, BundleSource)> {
    if !model.is_dir() {
        let Some(bundle) = bundle else {
            bail!("{}: a model file needs --bundle (only a run directory knows its bundle)", model.display());
        };
        return Ok((model.to_path_buf(), BundleSource::File(bundle.to_path_buf())));
    }
    if !model.join("run.json").is_file() {
        bail!("{}: not a vab run directory (no run.json); pass a run directory or a model file with --bundle", model.display());
    }
    let file = model.join("model.safetensors");
    if !file.is_file() {
        bail!("{}: no model.safetensors (the run has not finished; `vab train --resume {}` completes it)", model.display(), model.display());
    }
    let bundle = match bundle {
        Some(b) => BundleSource::File(b.to_path_buf()),
        None => {
            let path = model.join("run.json");
            let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
            BundleSource::Run(serde_json::from_str(&text).with_context(|| format!("{}: not a vab run record; pass --bundle", path.display()))?)
        }
    };
    Ok((file, bundle))
}
