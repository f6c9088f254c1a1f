//! `vab poison`: dataset + attack configuration → bundle (+ optional preview).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use vab_attacks::poison::{poison, AttackRecord, LabelRule, PoisonSpec};
use vab_core::attacks::input_aware::{input_aware, DynamicParams};
use vab_core::attacks::label_consistent::{label_consistent, ClParams};
use vab_core::backend::Backend;
use vab_data::{Bundle, Dataset};

use crate::cli::PoisonArgs;
use crate::grid::{Canvas, GLYPH};
use crate::progress::EpochBar;

pub fn run(args: &PoisonArgs) -> anyhow::Result<()> {
    super::refuse_to_overwrite(&args.data, &args.output)?;
    let params = attack_params(args.config.as_deref(), &args.set)?;
    let backend = args.compute.backend()?;
    let dataset = super::load_source_dataset(&args.data, &args.load)?;
    let start = Instant::now();
    let spec = PoisonSpec {
        rate: args.rate,
        convention: args.rate_convention,
        label_rule: args.label_rule,
        target: args.target,
        seed: args.seed,
    };
    let from = parameter_source(args.config.as_deref(), &args.set);
    let (bundle, record) = poison_with(&dataset, &args.data.display().to_string(), &args.attack, (&params, &from), &spec, args.load.cache_dir.as_deref(), backend)?;
    bundle.write(&args.output)?;
    print!("{}", summary(&record, &dataset, &bundle));
    println!("wrote {} in {:.2} s", args.output.display(), start.elapsed().as_secs_f64());
    if let Some(png) = &args.preview {
        preview(&dataset, &bundle, png)?;
        println!("wrote preview {}", png.display());
    }
    Ok(())
}

/// Poisons `dataset` with the attack `name`: a trigger from vab-attacks, or a model-based
/// attack from vab-core, which keeps its trained networks under `cache` (default: the
/// decoded-image cache's folder, `attacks/`). `params` comes with where it came from, which
/// errors in it name.
pub fn poison_with(dataset: &Dataset, source: &str, name: &str, (params, from): (&serde_json::Value, &str), spec: &PoisonSpec, cache: Option<&Path>, backend: Backend) -> anyhow::Result<(Bundle, AttackRecord)> {
    let cache = || cache.map_or_else(vab_data::cache::default_cache_dir, Path::to_path_buf).join("attacks");
    match name {
        "cl" => {
            let params: ClParams = serde_json::from_value(params.clone()).with_context(|| format!("{from}: cl takes epsilon, steps, step_size, surrogate (a training configuration file) and trigger"))?;
            let (bundle, record, report) = label_consistent(dataset, source, &params, spec, &cache(), backend, &EpochBar::new())?;
            eprintln!(
                "cl: surrogate BA {:.2}% ({}); PGD moved {} target-class images{}{}",
                report.surrogate_ba,
                report.surrogate_dir.display(),
                report.perturbed,
                report.pgd_success.map(|p| format!(", the surrogate misclassifies {p:.2}% of them")).unwrap_or_default(),
                if report.reused { " (perturbations from the cache)" } else { "" }
            );
            Ok((bundle, record))
        }
        "dynamic" => {
            let params: DynamicParams = serde_json::from_value(params.clone())
                .with_context(|| format!("{from}: dynamic takes surrogate (a training configuration file), width, mask_epochs, mask_density, lambda_div, lambda_norm, generator_lr, attack_ratio, cross_ratio and donors"))?;
            let (bundle, record, report) = input_aware(dataset, source, &params, spec, &cache(), backend, &EpochBar::new())?;
            eprintln!(
                "dynamic: the classifier trained with the generator reaches BA {:.2}% and ASR {:.2}%; masks cover {:.2}% of the pixels ({}{})",
                report.classifier_ba,
                report.classifier_asr,
                report.mask_coverage,
                report.networks_dir.display(),
                if report.reused { ", networks from the cache" } else { "" }
            );
            Ok((bundle, record))
        }
        _ => {
            let attack = vab_attacks::build(name, params, dataset.shape(), spec.seed).with_context(|| from.to_string())?;
            Ok(poison(dataset, source, attack.as_ref(), spec)?)
        }
    }
}

/// Where the attack's parameters came from, for its errors: "parameters from FILE and --set".
fn parameter_source(config: Option<&Path>, sets: &[String]) -> String {
    match (config, sets.is_empty()) {
        (Some(path), true) => format!("attack parameters from {}", path.display()),
        (Some(path), false) => format!("attack parameters from {} and --set", path.display()),
        (None, false) => "attack parameters from --set".into(),
        (None, true) => "attack parameters (defaults)".into(),
    }
}

/// Parameters from the config file, then each `--set`, as one JSON object.
fn attack_params(config: Option<&Path>, sets: &[String]) -> anyhow::Result<serde_json::Value> {
    let mut table = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read config", path.display()))?;
            toml::from_str::<toml::Table>(&text).with_context(|| format!("{}: not a valid TOML table", path.display()))?
        }
        None => toml::Table::new(),
    };
    for set in sets {
        let Some((key, value)) = set.split_once('=') else {
            bail!("--set {set}: expected KEY=VALUE");
        };
        let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        table.insert(key.trim().to_string(), value);
    }
    // JSON has no NaN or infinity: they would reach the attack as `null`.
    if let Some((key, value)) = table.iter().find(|(_, v)| v.as_float().is_some_and(|f| !f.is_finite())) {
        let from = config.map_or(String::new(), |p| format!(" (from --set or {})", p.display()));
        bail!("attack parameter {key} = {value}{from}: not a finite number");
    }
    Ok(serde_json::to_value(table)?)
}

fn summary(record: &AttackRecord, dataset: &Dataset, bundle: &Bundle) -> String {
    let n = dataset.train.len();
    let relabel = match record.label_rule {
        LabelRule::AllToOne => format!("label {} ({})", record.target, dataset.class_names[record.target as usize]),
        LabelRule::AllToAll => "the next class (y+1 mod K)".into(),
    };
    let params = serde_json::to_string(&record.params).expect("json");
    let mut out = format!("{} {params}\n", record.name);
    out += &format!(
        "poisoned {} of {n} training samples (rate {} {}, rounded down); {} relabelled to {relabel}\n",
        record.poisoned, record.rate, record.rate_convention, record.relabelled
    );
    if record.cross > 0 {
        out += &format!("cross (noise) samples, labels kept: {}\n", record.cross);
    }
    let which = match record.label_rule {
        LabelRule::AllToOne => format!("every test image whose true label is not {}", record.target),
        LabelRule::AllToAll => "every test image".into(),
    };
    out += &format!("triggered test images: {} ({which})\n", bundle.test_triggered.len());
    out
}

/// Rows of clean | poisoned | |difference| (scaled so the largest change is white) for eight
/// poisoned training samples spread over the set, so a person can see the trigger.
fn preview(dataset: &Dataset, bundle: &Bundle, output: &Path) -> anyhow::Result<()> {
    let shape = dataset.shape();
    let poisoned: Vec<usize> = (0..bundle.train.len()).filter(|&i| bundle.train_poisoned[i]).collect();
    let step = (poisoned.len() / 8).max(1);
    let rows: Vec<usize> = poisoned.iter().step_by(step).take(8).copied().collect();
    let scale = (128 / shape.height.max(shape.width)).max(1);
    let (cell_w, cell_h) = (shape.width * scale + 8, shape.height * scale + 8);
    let left = 14 * GLYPH;
    let top = 2 * GLYPH;
    let mut canvas = Canvas::new(left + 3 * cell_w, top + rows.len().max(1) * cell_h);
    let diffs: Vec<Vec<u8>> = rows
        .iter()
        .map(|&i| dataset.train.image(i).iter().zip(bundle.train.image(i)).map(|(a, b)| a.abs_diff(*b)).collect())
        .collect();
    let max_diff = diffs.iter().flatten().copied().max().unwrap_or(0).max(1);
    for (col, title) in ["clean", "poisoned", &format!("diff x{:.1}", 255.0 / max_diff as f64)].iter().enumerate() {
        canvas.text(title, left + col * cell_w, GLYPH / 2);
    }
    for (row, (&i, diff)) in rows.iter().zip(&diffs).enumerate() {
        let y = top + row * cell_h;
        let names = &dataset.class_names;
        let (from, to) = (bundle.train_true_labels[i] as usize, bundle.train.labels()[i] as usize);
        canvas.text(&format!("#{i}"), 2, y + 4);
        canvas.text(&format!("{}>{}", trim(&names[from]), trim(&names[to])), 2, y + 4 + GLYPH + 2);
        let magnified: Vec<u8> = diff.iter().map(|&d| (d as u32 * 255 / max_diff as u32) as u8).collect();
        for (col, image) in [dataset.train.image(i), bundle.train.image(i), &magnified].iter().enumerate() {
            canvas.paste(image, shape, left + col * cell_w, y + 4, scale);
        }
    }
    canvas.save(output)
}

fn trim(name: &str) -> String {
    name.chars().take(6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_parse_as_toml_and_fall_back_to_strings() {
        let params = attack_params(None, &["alpha=0.2".into(), "preset=white-3x3-br".into(), "compat_uint8_wrap=true".into(), "k=4".into()]).unwrap();
        assert_eq!(params, serde_json::json!({"alpha": 0.2, "preset": "white-3x3-br", "compat_uint8_wrap": true, "k": 4}));
        assert!(attack_params(None, &["novalue".into()]).unwrap_err().to_string().contains("expected KEY=VALUE"));
        for bad in ["alpha=nan", "alpha=inf", "alpha=-inf"] {
            let err = attack_params(None, &[bad.into()]).unwrap_err().to_string();
            assert!(err.starts_with("attack parameter alpha = ") && err.ends_with("not a finite number"), "{err}");
        }
    }

    #[test]
    fn set_overrides_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "alpha = 0.3\ntrigger_file = \"t.png\"\n").unwrap();
        let params = attack_params(Some(&path), &["alpha=0.5".into()]).unwrap();
        assert_eq!(params, serde_json::json!({"alpha": 0.5, "trigger_file": "t.png"}));
    }

    #[test]
    fn shipped_configs_parse_and_name_existing_surrogates() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut attack_configs = 0;
        for entry in std::fs::read_dir(root.join("configs")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let params = attack_params(Some(&path), &[]).unwrap();
            let surrogate = if name.starts_with("cl") {
                serde_json::from_value::<ClParams>(params).map(|p| p.surrogate)
            } else if name.starts_with("dynamic") {
                serde_json::from_value::<DynamicParams>(params).map(|p| p.surrogate)
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                vab_core::config::TrainConfig::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                continue;
            };
            let surrogate = surrogate.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(root.join(&surrogate).is_file(), "{name}: no {}", surrogate.display());
            attack_configs += 1;
        }
        assert!(attack_configs >= 4, "CL-16 and Dynamic, CPU and paper scale");
    }
}
