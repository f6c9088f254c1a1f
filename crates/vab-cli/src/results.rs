//! A bench's results: one row per cell read from its `summary.json`, the mean ± standard
//! deviation over seeds per attack × defense, written as `results.json`, `results.csv` and
//! `results.md`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

/// One finished cell.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CellResult {
    pub attack: String,
    pub defense: String,
    pub seed: u64,
    pub ba: f64,
    pub asr: Option<f64>,
    /// The ASR's success test on the untriggered originals (absent from older summaries).
    pub asr_untriggered: Option<f64>,
    pub ra: Option<f64>,
    /// Detection of the poisoned training samples by the final split (V&B only).
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub wall_s: f64,
}

impl CellResult {
    /// The cell's figures from its run's `summary.json`.
    pub fn from_summary(attack: &str, defense: &str, seed: u64, summary: &serde_json::Value) -> Result<Self, String> {
        let number = |key: &str| summary[key].as_f64();
        let detection = |key: &str| summary["detection"][key].as_f64();
        Ok(CellResult {
            attack: attack.into(),
            defense: defense.into(),
            seed,
            ba: number("ba").ok_or("summary.json has no `ba`")?,
            asr: number("asr"),
            asr_untriggered: number("asr_untriggered"),
            ra: number("ra"),
            precision: detection("precision"),
            recall: detection("recall"),
            wall_s: number("wall_s").ok_or("summary.json has no `wall_s`")?,
        })
    }
}

/// Mean and sample standard deviation (0 for a single value).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
}

impl Stat {
    /// `None` when any value is missing (e.g. ASR on a clean bundle).
    fn of(values: &[Option<f64>]) -> Option<Stat> {
        let values: Vec<f64> = values.iter().copied().collect::<Option<_>>()?;
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() > 1 { (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
        Some(Stat { mean, std })
    }

    fn show(stat: Option<Stat>, seeds: usize, decimals: usize) -> String {
        match stat {
            None => "—".into(),
            Some(s) if seeds > 1 => format!("{:.decimals$} ± {:.decimals$}", s.mean, s.std),
            Some(s) => format!("{:.decimals$}", s.mean),
        }
    }
}

/// One attack × defense over its seeds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Aggregate {
    pub attack: String,
    pub defense: String,
    pub seeds: usize,
    pub ba: Stat,
    pub asr: Option<Stat>,
    pub asr_untriggered: Option<Stat>,
    pub ra: Option<Stat>,
    pub precision: Option<Stat>,
    pub recall: Option<Stat>,
    pub wall_s: Stat,
}

/// Groups cells by attack × defense, in the order they first appear.
pub fn aggregate(cells: &[CellResult]) -> Vec<Aggregate> {
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for c in cells {
        if !keys.contains(&(&c.attack, &c.defense)) {
            keys.push((&c.attack, &c.defense));
        }
    }
    keys.into_iter()
        .map(|(attack, defense)| {
            let group: Vec<&CellResult> = cells.iter().filter(|c| c.attack == attack && c.defense == defense).collect();
            let stat = |f: fn(&CellResult) -> Option<f64>| Stat::of(&group.iter().map(|c| f(c)).collect::<Vec<_>>());
            Aggregate {
                attack: attack.into(),
                defense: defense.into(),
                seeds: group.len(),
                ba: stat(|c| Some(c.ba)).expect("BA is always present"),
                asr: stat(|c| c.asr),
                asr_untriggered: stat(|c| c.asr_untriggered),
                ra: stat(|c| c.ra),
                precision: stat(|c| c.precision),
                recall: stat(|c| c.recall),
                wall_s: stat(|c| Some(c.wall_s)).expect("wall time is always present"),
            }
        })
        .collect()
}

/// The Markdown table of `rows`, under `heading` (a few lines saying what and where).
pub fn markdown(heading: &str, rows: &[Aggregate]) -> String {
    let mut out = format!("{heading}\n\n| attack | defense | seeds | BA % | ASR % | ASR w/o trigger % | RA % | precision % | recall % | wall s |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let show = |s: Option<Stat>, d: usize| Stat::show(s, r.seeds, d);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.attack, r.defense, r.seeds, show(Some(r.ba), 2), show(r.asr, 2), show(r.asr_untriggered, 2), show(r.ra, 2), show(r.precision, 1), show(r.recall, 1), show(Some(r.wall_s), 0)
        );
    }
    out
}

/// One line per cell.
pub fn csv(cells: &[CellResult]) -> String {
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    let mut out = String::from("attack,defense,seed,ba,asr,asr_untriggered,ra,precision,recall,wall_s\n");
    for c in cells {
        let _ = writeln!(out, "{},{},{},{},{},{},{},{},{},{}", c.attack, c.defense, c.seed, c.ba, opt(c.asr), opt(c.asr_untriggered), opt(c.ra), opt(c.precision), opt(c.recall), c.wall_s);
    }
    out
}

/// Writes `results.json` (cells and aggregates), `results.csv` and `results.md` into `dir`.
pub fn write(dir: &Path, heading: &str, cells: &[CellResult]) -> std::io::Result<Vec<Aggregate>> {
    let rows = aggregate(cells);
    let json = serde_json::json!({ "cells": cells, "aggregates": rows });
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&json).expect("serialises"))?;
    std::fs::write(dir.join("results.csv"), csv(cells))?;
    std::fs::write(dir.join("results.md"), markdown(heading, &rows))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(attack: &str, defense: &str, seed: u64, ba: f64, asr: Option<f64>, recall: Option<f64>) -> CellResult {
        CellResult { attack: attack.into(), defense: defense.into(), seed, ba, asr, asr_untriggered: asr.map(|a| a / 2.0), ra: asr.map(|a| 100.0 - a), precision: recall, recall, wall_s: 10.0 * (seed + 1) as f64 }
    }

    #[test]
    fn aggregates_are_mean_and_sample_std_per_attack_and_defense() {
        let cells = [
            cell("badnets", "vab", 0, 60.0, Some(2.0), Some(90.0)),
            cell("badnets", "none", 0, 70.0, Some(99.0), None),
            cell("badnets", "vab", 1, 64.0, Some(4.0), Some(100.0)),
            cell("clean", "vab", 0, 66.0, None, None),
        ];
        let rows = aggregate(&cells);
        assert_eq!(rows.iter().map(|r| (r.attack.as_str(), r.defense.as_str(), r.seeds)).collect::<Vec<_>>(), [("badnets", "vab", 2), ("badnets", "none", 1), ("clean", "vab", 1)]);
        // Mean 62, sample std sqrt(((60-62)² + (64-62)²) / 1) = 2.828…
        assert_eq!(rows[0].ba.mean, 62.0);
        assert!((rows[0].ba.std - 8f64.sqrt()).abs() < 1e-12);
        assert_eq!(rows[0].asr, Some(Stat { mean: 3.0, std: 2f64.sqrt() }));
        assert_eq!(rows[0].wall_s.mean, 15.0);
        assert_eq!(rows[1].ba, Stat { mean: 70.0, std: 0.0 });
        assert_eq!(rows[1].recall, None);
        assert_eq!(rows[2].asr, None);

        let md = markdown("# t", &rows);
        assert_eq!(rows[0].asr_untriggered, Some(Stat { mean: 1.5, std: 0.5f64.sqrt() }));
        assert!(md.contains("| badnets | vab | 2 | 62.00 ± 2.83 | 3.00 ± 1.41 | 1.50 ± 0.71 | 97.00 ± 1.41 | 95.0 ± 7.1 | 95.0 ± 7.1 | 15 ± 7 |"), "{md}");
        assert!(md.contains("| clean | vab | 1 | 66.00 | — | — | — | — | — | 10 |"), "{md}");
        let csv = csv(&cells);
        assert_eq!(csv.lines().nth(1), Some("badnets,vab,0,60,2,1,98,90,90,10"));
        assert_eq!(csv.lines().nth(4), Some("clean,vab,0,66,,,,,,10"));
    }

    #[test]
    fn cells_read_their_summaries() {
        let summary = serde_json::json!({"ba": 56.85, "asr": 1.94, "asr_untriggered": 1.5, "ra": 58.2, "wall_s": 580.0, "detection": {"precision": 98.0, "recall": 100.0}});
        let c = CellResult::from_summary("badnets", "vab", 0, &summary).unwrap();
        assert_eq!((c.ba, c.asr, c.asr_untriggered, c.precision, c.recall, c.wall_s), (56.85, Some(1.94), Some(1.5), Some(98.0), Some(100.0), 580.0));
        let none = serde_json::json!({"ba": 67.0, "asr": null, "ra": null, "wall_s": 200.0});
        assert_eq!(CellResult::from_summary("clean", "none", 0, &none).unwrap().recall, None);
        assert!(CellResult::from_summary("x", "y", 0, &serde_json::json!({"ba": 1.0})).unwrap_err().contains("wall_s"));
    }
}
