//! One module per top-level command, plus the dataset loading they share.

mod bench;
mod data;
mod eval;
mod poison;
mod scan;
mod train;

use std::path::Path;
use std::time::Instant;

use vab_data::{CacheOutcome, Dataset, LoadOptions};

use crate::cli::{Cli, Command, LoadArgs};
use crate::progress::Bar;

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Data(command) => data::run(command),
        Command::Poison(args) => poison::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Bench(command) => bench::run(command),
        Command::Eval(args) => eval::run(&args),
        Command::Scan(args) => scan::run(&args),
        Command::Report { dir } => {
            let path = crate::report::write(&dir)?;
            println!("wrote {}", path.display());
            Ok(())
        }
    }
}

/// Loads a dataset, telling the user where it came from and how long it took.
pub fn load_dataset(path: &Path, args: &LoadArgs) -> anyhow::Result<Dataset> {
    load(path, args, Poisoned::Accept)
}

/// Refuses an output path that is the input itself (`vab poison --data B -o B`): the new bundle
/// would replace the data it was made from.
pub fn refuse_to_overwrite(input: &Path, output: &Path) -> anyhow::Result<()> {
    let same = match (input.canonicalize(), output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    anyhow::ensure!(!same, "{}: the output is the input dataset itself; write the new bundle to another path", output.display());
    Ok(())
}

/// Loads a dataset to make a new bundle from (`vab data bundle`, `vab poison`, a bench's
/// data). A poisoned bundle is refused: as a plain dataset its triggered images and flipped
/// labels would pass for clean ones, and which samples are poisoned would be lost.
pub fn load_source_dataset(path: &Path, args: &LoadArgs) -> anyhow::Result<Dataset> {
    load(path, args, Poisoned::Refuse)
}

/// Whether a poisoned bundle may be loaded as a dataset.
#[derive(PartialEq)]
enum Poisoned {
    Accept,
    Refuse,
}

fn load(path: &Path, args: &LoadArgs, poisoned: Poisoned) -> anyhow::Result<Dataset> {
    let start = Instant::now();
    let options = LoadOptions { resize: args.resize, cache_dir: args.cache_dir.clone(), no_cache: args.no_cache };
    let loaded = vab_data::load(path, &options, &Bar::new())?;
    if let Some(source) = loaded.poisoned_from.as_deref().filter(|_| poisoned == Poisoned::Refuse) {
        anyhow::bail!(
            "{}: a poisoned bundle; made into a new bundle it would lose which samples are poisoned and their true labels. Use the dataset it was made from ({source})",
            path.display()
        );
    }
    let cache = match &loaded.cache {
        CacheOutcome::NotUsed => String::new(),
        CacheOutcome::Hit(p) => format!(" from cache {}", p.display()),
        CacheOutcome::Written(p) => format!("; decoded images cached in {}", p.display()),
        CacheOutcome::WriteFailed(why) => format!("; cache not written ({why})"),
    };
    eprintln!("loaded {} in {:.2} s{cache}", path.display(), start.elapsed().as_secs_f64());
    Ok(loaded.dataset)
}

