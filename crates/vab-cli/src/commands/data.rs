//! `vab data info | preview | fetch`.

use anyhow::Context;
use vab_data::{bundle::Bundle, Dataset, SourceKind};

use crate::cli::{DataCommand, SourceArgs, Split};
use crate::grid::{Canvas, GLYPH};
use crate::progress::Bar;

pub fn run(command: DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::Info { source } => info(&source),
        DataCommand::Preview { source, output, split, per_class, max_classes, scale } => {
            let loaded = load(&source)?;
            let set = match split {
                Split::Train => &loaded.train,
                Split::Test => &loaded.test,
            };
            preview(&loaded, set, per_class as usize, max_classes as usize, scale as usize, &output)?;
            println!("wrote {}", output.display());
            Ok(())
        }
        DataCommand::Bundle { source, output } => {
            super::refuse_to_overwrite(&source.path, &output)?;
            let dataset = super::load_source_dataset(&source.path, &source.load)?;
            Bundle::clean(dataset, source.path.display().to_string()).write(&output)?;
            println!("wrote {}", output.display());
            Ok(())
        }
        DataCommand::Fetch { name, dir, mirror } => {
            let mut spec = vab_data::fetch::official(&name).with_context(|| format!("unknown dataset {name}"))?;
            if let Some(base) = mirror {
                spec = spec.with_mirror(&base);
            }
            let folder = vab_data::fetch::fetch(&spec, &dir, &Bar::new())?;
            println!("{name} is ready in {}\nnext: vab data info {}", folder.display(), folder.display());
            Ok(())
        }
    }
}

fn load(source: &SourceArgs) -> anyhow::Result<Dataset> {
    super::load_dataset(&source.path, &source.load)
}

fn info(source: &SourceArgs) -> anyhow::Result<()> {
    let (dataset, bundle_lines) = match vab_data::detect(&source.path)? {
        SourceKind::Bundle => {
            let bundle = Bundle::read(&source.path)?;
            let lines = describe_bundle(&bundle);
            (bundle.into_dataset(), lines)
        }
        _ => (load(source)?, String::new()),
    };
    print!("{}{bundle_lines}", describe(&dataset));
    Ok(())
}

/// The human-readable summary `vab data info` prints.
fn describe(ds: &Dataset) -> String {
    let mut out = String::new();
    let k = ds.num_classes();
    out += &format!("image shape: {} (C×H×W)\n", ds.shape());
    out += &format!("splits: train {} images, test {} images\n", ds.train.len(), ds.test.len());
    out += &format!("classes: {k}\n");
    let stats = ds.train.channel_stats();
    let fmt = |f: fn(&(f64, f64)) -> f64| stats.iter().map(|s| format!("{:.4}", f(s))).collect::<Vec<_>>().join(" ");
    out += &format!("per-channel mean (train, 0-1 scale): {}\n", fmt(|s| s.0));
    out += &format!("per-channel std  (train, 0-1 scale): {}\n", fmt(|s| s.1));
    let (train, test) = (ds.train.class_counts(k), ds.test.class_counts(k));
    let width = ds.class_names.iter().map(|n| n.chars().count()).max().unwrap_or(5).max(5);
    out += &format!("{:>5}  {:<width$}  {:>7}  {:>7}\n", "label", "class", "train", "test");
    for (i, name) in ds.class_names.iter().enumerate() {
        out += &format!("{i:>5}  {name:<width$}  {:>7}  {:>7}\n", train[i], test[i]);
    }
    out
}

fn describe_bundle(b: &Bundle) -> String {
    let poisoned = b.train_poisoned.iter().filter(|&&p| p).count();
    let relabelled = b.train.labels().iter().zip(&b.train_true_labels).filter(|(a, t)| a != t).count();
    let mut out = format!(
        "bundle: format {}, written by vab {}, source {}\npoisoned training samples: {poisoned} ({relabelled} relabelled)\ntriggered test images: {}\n",
        b.meta.format_version, b.meta.tool_version, b.meta.source, b.test_triggered.len()
    );
    match &b.meta.attack {
        Some(attack) => out += &format!("attack: {attack}\n"),
        None => out += "attack: none (clean bundle)\n",
    }
    out
}

/// Draws `per_class` images of each of the first `max_classes` classes, one labelled row each.
fn preview(ds: &Dataset, set: &vab_data::ImageSet, per_class: usize, max_classes: usize, scale: usize, output: &std::path::Path) -> anyhow::Result<()> {
    let shape = set.shape();
    let classes = ds.num_classes().min(max_classes);
    let label_chars = 16;
    let (cell_w, cell_h) = (shape.width * scale + 2, (shape.height * scale).max(GLYPH) + 2);
    let left = label_chars * GLYPH + 4;
    let mut canvas = Canvas::new(left + per_class * cell_w, classes * cell_h);
    for class in 0..classes {
        let y = class * cell_h;
        let name: String = format!("{class} {}", ds.class_names[class]).chars().take(label_chars).collect();
        canvas.text(&name, 2, y + cell_h.saturating_sub(GLYPH) / 2);
        let members = set.labels().iter().enumerate().filter(|(_, &l)| l as usize == class).map(|(i, _)| i);
        for (slot, i) in members.take(per_class).enumerate() {
            canvas.paste(set.image(i), shape, left + slot * cell_w + 1, y + 1, scale);
        }
    }
    canvas.save(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vab_data::{ImageSet, ImageShape};

    #[test]
    fn describe_lists_counts_and_stats() {
        let shape = ImageShape { channels: 1, height: 1, width: 2 };
        let train = ImageSet::new(shape, vec![0, 255, 0, 255, 0, 255], vec![0, 1, 1]).unwrap();
        let test = ImageSet::new(shape, vec![0, 0], vec![1]).unwrap();
        let ds = Dataset::new(vec!["cat".into(), "dog".into()], train, test).unwrap();
        let text = describe(&ds);
        assert!(text.contains("image shape: 1×1×2"), "{text}");
        assert!(text.contains("splits: train 3 images, test 1 images"), "{text}");
        assert!(text.contains("per-channel mean (train, 0-1 scale): 0.5000"), "{text}");
        assert!(text.contains("    1  dog          2        1"), "{text}");
    }
}
