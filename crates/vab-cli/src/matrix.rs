//! A benchmark matrix (`vab bench MATRIX.toml`): one dataset, attacks × defenses × training
//! seeds, every cell a `vab train` run. See bench/cpu-cifar10.toml for a commented example.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vab_attacks::poison::LabelRule;

/// The matrix file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    /// Clean dataset every attack poisons (relative to the matrix file).
    pub data: PathBuf,
    /// Training configuration every cell starts from (relative to the matrix file).
    pub config: PathBuf,
    /// Training seeds (`train.seed`); each attack × defense runs once per seed. The poisoned
    /// samples are the attack's own `seed`, shared by every cell of that attack.
    #[serde(default = "first_seed")]
    pub seeds: Vec<u64>,
    #[serde(rename = "attack")]
    pub attacks: Vec<AttackRow>,
    #[serde(rename = "defense")]
    pub defenses: Vec<DefenseColumn>,
}

fn first_seed() -> Vec<u64> {
    vec![0]
}

/// One attack: a bundle made once and shared by every defense and seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackRow {
    /// Row name in the results (and the bundle's file name).
    pub name: String,
    /// Attack (one of `vab poison --attack`), or `clean` for the unpoisoned dataset
    /// [default: `name`].
    #[serde(default)]
    pub attack: Option<String>,
    #[serde(default = "default_rate")]
    pub rate: f64,
    #[serde(default)]
    pub target: u16,
    #[serde(default = "all_to_one")]
    pub label_rule: LabelRule,
    /// Seed of the poisoning (indices, trigger randomness).
    #[serde(default)]
    pub seed: u64,
    /// Attack parameters, as `vab poison --config` takes them.
    #[serde(default)]
    pub params: toml::Table,
}

fn default_rate() -> f64 {
    0.1
}

fn all_to_one() -> LabelRule {
    LabelRule::AllToOne
}

impl AttackRow {
    /// The attack to run, `None` for the clean dataset.
    pub fn attack(&self) -> Option<&str> {
        Some(self.attack.as_deref().unwrap_or(&self.name)).filter(|a| *a != "clean")
    }
}

/// One defense: `none`, `vab`, `abl`, `fp` or `nad`, with optional overrides of the configuration's `[vab]`
/// section (ablation variants).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefenseColumn {
    /// Column name in the results.
    pub name: String,
    /// `none`, `vab`, `abl`, `fp` or `nad` [default: `name`].
    #[serde(default)]
    pub defense: Option<String>,
    /// Keys replacing those of the configuration's `[vab]` section (tables merge key by key).
    #[serde(default)]
    pub vab: toml::Table,
}

impl DefenseColumn {
    pub fn defense(&self) -> &str {
        self.defense.as_deref().unwrap_or(&self.name)
    }
}

/// One run of the matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell<'a> {
    pub attack: &'a AttackRow,
    pub defense: &'a DefenseColumn,
    pub seed: u64,
}

impl Cell<'_> {
    /// The cell's run directory under the bench directory.
    pub fn dir(&self, bench: &Path) -> PathBuf {
        bench.join("cells").join(&self.attack.name).join(&self.defense.name).join(format!("seed-{}", self.seed))
    }
}

impl Matrix {
    /// Reads and checks a matrix file; relative paths become relative to its folder.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        let mut matrix: Matrix = toml::from_str(&text).map_err(|e| e.to_string())?;
        let folder = path.parent().unwrap_or(Path::new("."));
        matrix.data = tidy(&folder.join(&matrix.data));
        matrix.config = tidy(&folder.join(&matrix.config));
        // A model-based attack's surrogate configuration is a path too.
        for attack in &mut matrix.attacks {
            if let Some(toml::Value::String(path)) = attack.params.get_mut("surrogate") {
                *path = tidy(&folder.join(&*path)).display().to_string();
            }
        }
        matrix.check()?;
        Ok(matrix)
    }

    fn check(&self) -> Result<(), String> {
        if self.attacks.is_empty() || self.defenses.is_empty() || self.seeds.is_empty() {
            return Err("a matrix needs at least one [[attack]], one [[defense]] and one seed".into());
        }
        let names_ok = |names: Vec<&str>, what: &str| -> Result<(), String> {
            for (i, name) in names.iter().enumerate() {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c)) || name.starts_with('.') {
                    return Err(format!("{what} name {name:?}: use letters, digits and - _ . + only (it names a folder)"));
                }
                if names[..i].contains(name) {
                    return Err(format!("{what} name {name:?} appears twice"));
                }
            }
            Ok(())
        };
        names_ok(self.attacks.iter().map(|a| a.name.as_str()).collect(), "attack")?;
        names_ok(self.defenses.iter().map(|d| d.name.as_str()).collect(), "defense")?;
        for attack in &self.attacks {
            if let Some(name) = attack.attack() {
                let known: Vec<&str> = vab_attacks::ATTACKS.iter().chain(&vab_core::attacks::MODEL_ATTACKS).copied().collect();
                if !known.contains(&name) {
                    return Err(format!("attack {:?}: unknown attack {name:?}; use one of {} or clean", attack.name, known.join(", ")));
                }
            }
        }
        for defense in &self.defenses {
            match defense.defense() {
                "vab" => {}
                "none" | "abl" | "fp" | "nad" | "dbd" if defense.vab.is_empty() => {}
                "none" | "abl" | "fp" | "nad" | "dbd" => return Err(format!("defense {:?}: `vab` overrides need defense = \"vab\"", defense.name)),
                other => return Err(format!("defense {:?}: unknown defense {other:?}; use none, vab, abl, fp, nad or dbd", defense.name)),
            }
        }
        let mut seeds = self.seeds.clone();
        seeds.sort_unstable();
        seeds.dedup();
        if seeds.len() != self.seeds.len() {
            return Err("seeds: a seed appears twice".into());
        }
        Ok(())
    }

    /// Every cell, attack by attack, then defense, then seed.
    pub fn cells(&self) -> Vec<Cell<'_>> {
        let mut cells = Vec::new();
        for attack in &self.attacks {
            for defense in &self.defenses {
                for &seed in &self.seeds {
                    cells.push(Cell { attack, defense, seed });
                }
            }
        }
        cells
    }
}

/// `path` without `.` and `name/..` pairs (lexically: bundles record the dataset path, and
/// `bench/../../data` reads worse than `../data`).
fn tidy(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() { PathBuf::from(".") } else { out }
}

/// The configuration of one cell: `base` with `train.seed = seed` and the defense's `[vab]`
/// overrides merged in. The result is what the cell's `config.toml` holds.
pub fn cell_config(base: &str, defense: &DefenseColumn, seed: u64) -> Result<String, String> {
    let mut table: toml::Table = toml::from_str(base).map_err(|e| e.to_string())?;
    let train = table.entry("train").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let train = train.as_table_mut().ok_or("[train] is not a table")?;
    train.insert("seed".into(), toml::Value::Integer(seed as i64));
    if !defense.vab.is_empty() {
        let vab = table.entry("vab").or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let vab = vab.as_table_mut().ok_or("[vab] is not a table")?;
        merge(vab, &defense.vab);
    }
    let text = toml::to_string(&table).map_err(|e| e.to_string())?;
    let config = vab_core::config::TrainConfig::from_toml(&text).map_err(|e| format!("defense {:?}: {e}", defense.name))?;
    let missing = |section: &str| Err(format!("defense {:?} needs a [{section}] section in the configuration (see configs/cpu-cifar10.toml)", defense.name));
    match defense.defense() {
        "vab" if config.vab.is_none() => missing("vab"),
        "fp" if config.fp.is_none() => missing("fp"),
        "nad" if config.nad.is_none() => missing("nad"),
        "dbd" if config.dbd.is_none() => missing("dbd"),
        "abl" => match &config.abl {
            None => missing("abl"),
            Some(abl) => abl.fits(config.train.epochs).map(|()| text).map_err(|e| format!("defense {:?}: {e}", defense.name)),
        },
        _ => Ok(text),
    }
}

/// The configuration sections that belong to one defense each.
const DEFENSE_SECTIONS: [&str; 5] = ["vab", "abl", "fp", "nad", "dbd"];

/// Whether a cell of `defense` recorded with the configuration `recorded` runs as `wanted`
/// does: equal but for the sections of other defenses, so adding or changing `[abl]` in the
/// preset leaves the finished no-defense and V&B cells valid.
pub fn same_run(defense: &str, recorded: &str, wanted: &str) -> bool {
    let relevant = |text: &str| {
        toml::from_str::<toml::Table>(text).ok().map(|mut table| {
            table.retain(|key, _| key == defense || !DEFENSE_SECTIONS.contains(&key));
            table
        })
    };
    matches!((relevant(recorded), relevant(wanted)), (Some(a), Some(b)) if a == b)
}

/// Overwrites `into`'s keys with `from`'s, descending into tables present in both.
fn merge(into: &mut toml::Table, from: &toml::Table) {
    for (key, value) in from {
        match (into.get_mut(key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(update)) => merge(inner, update),
            _ => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[model]\narch = \"small\"\n[train]\nepochs = 4\nbatch_size = 8\nlr = 0.1\nseed = 7\n\
        [train.optimizer]\nkind = \"sgd\"\nmomentum = 0.9\nweight_decay = 0.0005\n\
        [train.schedule]\nkind = \"cosine\"\nmin_lr = 0.0\n[vab]\nstage2_epochs = 2\n[vab.ablation]\nsuppress_credible = true\n";

    fn parse(text: &str) -> Result<Matrix, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, text).unwrap();
        Matrix::read(&path)
    }

    const MATRIX: &str = "data = \"d\"\nconfig = \"c.toml\"\nseeds = [0, 1]\n\
        [[attack]]\nname = \"badnets\"\n[[attack]]\nname = \"plain\"\nattack = \"clean\"\n\
        [[attack]]\nname = \"cl16\"\nattack = \"cl\"\nparams = { surrogate = \"c.toml\" }\n\
        [[defense]]\nname = \"none\"\n[[defense]]\nname = \"vab-mixup\"\ndefense = \"vab\"\nvab = { mix = \"mixup\", ablation = { suppress_credible = false } }\n";

    #[test]
    fn a_cell_ignores_the_sections_of_other_defenses() {
        let base = "[train]\nepochs = 4\n[vab]\nviews = 1\n[abl]\ngamma = 0.5\n";
        let abl_changed = base.replace("gamma = 0.5", "gamma = 0.4");
        assert!(same_run("none", base, &abl_changed) && same_run("vab", base, &abl_changed));
        assert!(!same_run("abl", base, &abl_changed));
        assert!(same_run("none", base, &format!("{base}[fp]\n")), "a new section of another defense");
        assert!(!same_run("vab", base, &base.replace("views = 1", "views = 2")));
        assert!(!same_run("none", base, &base.replace("epochs = 4", "epochs = 5")));
        assert!(!same_run("none", "not toml [", base));
    }

    #[test]
    fn cells_cover_attacks_defenses_and_seeds_in_order() {
        let m = parse(MATRIX).unwrap();
        let cells = m.cells();
        assert_eq!(cells.len(), 12);
        let names: Vec<String> = cells.iter().map(|c| format!("{}/{}/{}", c.attack.name, c.defense.name, c.seed)).collect();
        assert_eq!(names[..3], ["badnets/none/0", "badnets/none/1", "badnets/vab-mixup/0"]);
        assert_eq!(cells[0].attack.attack(), Some("badnets"));
        assert_eq!(cells[7].attack.attack(), None, "attack = clean means no attack");
        assert_eq!(cells[7].dir(Path::new("b")), Path::new("b/cells/plain/vab-mixup/seed-1"));
        let surrogate = m.attacks[2].params["surrogate"].as_str().unwrap();
        assert!(Path::new(surrogate).is_absolute() && surrogate.ends_with("c.toml"), "the surrogate is relative to the matrix file: {surrogate}");
        assert!(m.data.ends_with("d") && m.data.parent().unwrap().is_absolute(), "data is relative to the matrix file");
    }

    #[test]
    fn paths_are_tidied_lexically() {
        assert_eq!(tidy(Path::new("bench/../../shared/d.tar")), Path::new("../shared/d.tar"));
        assert_eq!(tidy(Path::new("./a/./b/../c")), Path::new("a/c"));
        assert_eq!(tidy(Path::new("/x/../y")), Path::new("/y"));
        assert_eq!(tidy(Path::new("a/..")), Path::new("."));
    }

    #[test]
    fn cell_config_sets_the_seed_and_merges_vab_overrides() {
        let m = parse(MATRIX).unwrap();
        let text = cell_config(BASE, &m.defenses[1], 3).unwrap();
        let config = vab_core::config::TrainConfig::from_toml(&text).unwrap();
        assert_eq!(config.train.seed, 3);
        let vab = config.vab.unwrap();
        assert_eq!(vab.stage2_epochs, 2, "keys not overridden stay");
        assert!(!vab.ablation.suppress_credible, "nested tables merge");
        assert!(text.contains("mix = \"mixup\""), "{text}");
        let without_vab = BASE.split("[vab]").next().unwrap();
        assert!(cell_config(without_vab, &m.defenses[0], 3).is_ok(), "no defense needs no [vab]");
        let plain_vab = DefenseColumn { name: "vab".into(), defense: None, vab: toml::Table::new() };
        let err = cell_config(without_vab, &plain_vab, 3).unwrap_err();
        assert!(err.contains("defense \"vab\" needs a [vab] section"), "{err}");
    }

    #[test]
    fn shipped_matrices_their_cells_and_attack_parameters_are_valid() {
        use vab_core::attacks::input_aware::DynamicParams;
        use vab_core::attacks::label_consistent::ClParams;

        let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench");
        let mut checked = 0;
        for entry in std::fs::read_dir(&bench).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let m = Matrix::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let base = std::fs::read_to_string(&m.config).unwrap();
            for cell in m.cells() {
                cell_config(&base, cell.defense, cell.seed).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            for attack in &m.attacks {
                let Some(name) = attack.attack() else { continue };
                let params = serde_json::to_value(&attack.params).unwrap();
                let fail = |e: String| -> ! { panic!("{}: [[attack]] {}: {e}", path.display(), attack.name) };
                let surrogate = match name {
                    "cl" => serde_json::from_value::<ClParams>(params).map(|p| p.surrogate),
                    "dynamic" => serde_json::from_value::<DynamicParams>(params).map(|p| p.surrogate),
                    _ => {
                        let shape = vab_data::ImageShape { channels: 3, height: 32, width: 32 };
                        vab_attacks::build(name, &params, shape, 0).unwrap_or_else(|e| fail(e.to_string()));
                        continue;
                    }
                };
                let surrogate = surrogate.unwrap_or_else(|e| fail(e.to_string()));
                assert!(surrogate.is_file(), "{}: [[attack]] {}: no surrogate configuration {}", path.display(), attack.name, surrogate.display());
            }
            checked += 1;
        }
        assert!(checked >= 3, "bench/cpu-cifar10.toml, bench/ablation-cpu.toml and bench/model-attacks-cpu.toml");
    }

    #[test]
    fn bad_matrices_are_rejected_with_the_reason() {
        let cases = [
            (MATRIX.replace("name = \"plain\"", "name = \"badnets\""), "appears twice"),
            (MATRIX.replace("name = \"plain\"", "name = \"a/b\""), "names a folder"),
            (MATRIX.replace("attack = \"clean\"", "attack = \"nope\""), "unknown attack \"nope\""),
            (MATRIX.replace("defense = \"vab\"", "defense = \"none\""), "need defense = \"vab\""),
            (MATRIX.replace("seeds = [0, 1]", "seeds = [1, 1]"), "a seed appears twice"),
            (MATRIX.replace("seeds = [0, 1]", "seed = [1]"), "unknown field `seed`"),
        ];
        for (text, needle) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let m = parse(MATRIX).unwrap();
        let mut bad = m.defenses[1].clone();
        bad.vab.insert("mix".into(), toml::Value::String("blur".into()));
        assert!(cell_config(BASE, &bad, 0).unwrap_err().contains("vab-mixup"));
    }
}
