//! `vab`: train clean image classifiers on poisoned data. This binary is thin glue over the
//! vab crates: argument parsing, progress display and printing.

mod allocator;
mod cli;
mod commands;
mod detection_log;
mod grid;
mod matrix;
mod progress;
mod report;
mod results;

use clap::Parser;

fn main() {
    allocator::keep_freed_memory();
    let args = cli::Cli::parse();
    if let Err(err) = commands::run(args) {
        // One clean line (with its causes), never a backtrace: errors here are about the
        // user's input or environment, not bugs.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
