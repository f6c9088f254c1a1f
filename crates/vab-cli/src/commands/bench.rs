//! `vab bench step`.

use crate::cli::BenchCommand;

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Step { model, batch, infer_batch, size, warmup, steps, json, backend } => {
            anyhow::ensure!(batch > 0 && infer_batch > 0 && steps > 0 && size >= 8, "batch sizes and steps must be positive and size at least 8");
            let arch = serde_json::from_value(serde_json::Value::String(model))?;
            let result = vab_core::bench::bench_step(backend, arch, batch, infer_batch, [3, size, size], warmup, steps).map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                println!(
                    "{:?} batch {batch}: train {:.1} img/s, inference (batch {infer_batch}) {:.1} img/s, {} threads, {} backend",
                    result.model, result.train_img_s, result.infer_img_s, result.threads, result.backend.name()
                );
            }
            Ok(())
        }
    }
}
