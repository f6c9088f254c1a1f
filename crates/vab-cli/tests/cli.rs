//! End-to-end runs of the `vab` binary on tiny generated data and, when present, real data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vab(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vab")).args(args).env("VAB_CACHE_DIR", cache).output().expect("run vab")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a clean failure: non-zero exit, stderr ending in one `error:` line naming `needle`
/// (progress lines may come before it), no panic.
fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains(needle), "{stderr}");
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}

/// A complete CIFAR-10 binary folder with `per_batch` records per batch file.
fn tiny_cifar10(root: &Path, per_batch: usize) -> PathBuf {
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let batch = |seed: usize| -> Vec<u8> {
        (0..per_batch).flat_map(|i| {
            let mut rec = vec![((i + seed) % 10) as u8];
            rec.extend((0..3072).map(|p| ((p + i * 7 + seed) % 256) as u8));
            rec
        }).collect()
    };
    for i in 1..=5 {
        std::fs::write(dir.join(format!("data_batch_{i}.bin")), batch(i)).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), batch(0)).unwrap();
    dir
}

#[test]
fn info_on_tiny_cifar10_prints_splits_and_counts() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 20);
    let out = vab(&["data", "info", tmp.path().to_str().unwrap()], tmp.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("splits: train 100 images, test 20 images"), "{stdout}");
    assert!(stdout.contains("image shape: 3×32×32"), "{stdout}");
    assert!(stdout.contains("    0  airplane         10        2"), "{stdout}");
}

#[test]
fn random_bytes_of_wrong_length_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let junk: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.join("data_batch_1.bin"), junk).unwrap();
    let out = vab(&["data", "info", tmp.path().to_str().unwrap()], tmp.path());
    assert_clean_error(&out, "data_batch_1.bin: 10000 bytes is not a whole number of 3073-byte records");
}

#[test]
fn missing_path_and_unreachable_mirror_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    assert_clean_error(&vab(&["data", "info", "/nonexistent/vab"], tmp.path()), "no such file");
    let dir = tmp.path().join("dl");
    let out = vab(&["data", "fetch", "mnist", "--dir", dir.to_str().unwrap(), "--mirror", "http://127.0.0.1:9"], tmp.path());
    assert_clean_error(&out, "http://127.0.0.1:9/train-images-idx3-ubyte.gz");
    let left: Vec<_> = std::fs::read_dir(dir.join("mnist")).map(|d| d.collect()).unwrap_or_default();
    assert!(left.is_empty(), "download left files behind: {left:?}");
}

#[test]
fn preview_writes_a_png_with_one_row_per_class() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 20);
    let png = tmp.path().join("grid.png");
    let args = ["data", "preview", tmp.path().to_str().unwrap(), "-o", png.to_str().unwrap(), "--per-class", "3", "--scale", "1"];
    let out = vab(&args, tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let img = image::open(&png).unwrap();
    // 10 rows of 32 + 2 pixels; 16 label characters of 8 px + 4, then 3 cells of 34 px.
    assert_eq!((img.width(), img.height()), (16 * 8 + 4 + 3 * 34, 10 * 34));
}

#[test]
fn clean_bundle_opens_in_python_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 5);
    let bundle = tmp.path().join("clean.safetensors");
    let out = vab(&["data", "bundle", tmp.path().to_str().unwrap(), "-o", bundle.to_str().unwrap()], tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info = text(&vab(&["data", "info", bundle.to_str().unwrap()], tmp.path()).stdout);
    assert!(info.contains("poisoned training samples: 0") && info.contains("attack: none"), "{info}");

    let probe = Command::new("python3").args(["-c", "import safetensors.numpy, numpy"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipping the Python check: python3 with safetensors and numpy is not installed");
        return;
    }
    let script = r#"
import sys, json
from safetensors.numpy import load_file
from safetensors import safe_open
t = load_file(sys.argv[1])
assert t["train.images"].shape == (25, 3, 32, 32) and t["train.images"].dtype.name == "uint8"
assert t["train.labels"].dtype.name == "int64" and t["train.poisoned"].dtype.name == "bool"
assert not t["train.poisoned"].any() and (t["train.labels"] == t["train.true_labels"]).all()
assert t["test_triggered.images"].shape == (0, 3, 32, 32)
meta = json.loads(safe_open(sys.argv[1], "np").metadata()["vab"])
assert meta["class_names"][0] == "airplane" and meta["attack"] is None
print("python ok", int(t["train.labels"].sum()))
"#;
    let out = Command::new("python3").args(["-c", script, bundle.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Labels of the tiny set: record i of batch b has label (i + b) % 10.
    let expected: usize = (1..=5).flat_map(|b| (0..5).map(move |i| (i + b) % 10)).sum();
    assert_eq!(text(&out.stdout).trim(), format!("python ok {expected}"));
}

const CIFAR10_JPG: &str = "../../../shared/data/cifar10-jpg.tar.xz";

/// The real CIFAR-10 archive, or `None` after saying the test is skipped.
fn cifar10_archive() -> Option<PathBuf> {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join(CIFAR10_JPG);
    if !archive.is_file() {
        eprintln!("skipping: {} is absent", archive.display());
        return None;
    }
    Some(archive)
}

#[test]
fn real_cifar10_archive_loads_with_expected_counts_and_cache() {
    let Some(archive) = cifar10_archive() else { return };
    let cache = tempfile::tempdir().unwrap();
    for round in ["first", "cached"] {
        let out = vab(&["data", "info", archive.to_str().unwrap()], cache.path());
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{round}: {}", text(&out.stderr));
        assert!(stdout.contains("splits: train 50000 images, test 10000 images"), "{stdout}");
        assert!(stdout.contains("classes: 10") && stdout.contains("image shape: 3×32×32"), "{stdout}");
        assert_eq!(stdout.matches("   5000     1000").count(), 10, "{stdout}");
    }
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1, "one cache entry expected");
}

#[test]
fn real_fashion_mnist_loads_when_installed() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        eprintln!("skipping: {} is absent (apt-get install -y dataset-fashion-mnist)", dir.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = vab(&["data", "info", dir.to_str().unwrap()], tmp.path());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("splits: train 60000 images, test 10000 images"), "{stdout}");
    assert!(stdout.contains("image shape: 1×28×28") && stdout.contains("Ankle boot"), "{stdout}");
}

fn poison_args<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["poison", "--data", data, "-o", out];
    args.extend_from_slice(extra);
    args
}

#[test]
fn poison_writes_a_bundle_that_info_reads_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 20);
    let data = tmp.path().to_str().unwrap();
    let (a, b, c) = (tmp.path().join("a.safetensors"), tmp.path().join("b.safetensors"), tmp.path().join("c.safetensors"));
    let run = |out: &Path, seed: &str| {
        let out = vab(&poison_args(data, out.to_str().unwrap(), &["--attack", "badnets", "--rate", "0.2", "--seed", seed]), tmp.path());
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let stdout = run(&a, "1");
    assert!(stdout.contains("poisoned 20 of 100 training samples (rate 0.2 of_dataset"), "{stdout}");
    assert!(stdout.contains("triggered test images: 18"), "{stdout}");
    run(&b, "1");
    run(&c, "2");
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    assert_eq!(bytes(&a), bytes(&b), "same seed must give identical bytes");
    let (ba, bc) = (vab_data::Bundle::read(&a).unwrap(), vab_data::Bundle::read(&c).unwrap());
    assert_ne!(ba.train_poisoned, bc.train_poisoned, "another seed must pick other indices");
    let info = text(&vab(&["data", "info", a.to_str().unwrap()], tmp.path()).stdout);
    assert!(info.contains("poisoned training samples: 20"), "{info}");
}

#[test]
fn poison_rejects_bad_requests_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 20);
    let data = tmp.path().to_str().unwrap();
    let out = tmp.path().join("x.safetensors");
    let out = out.to_str().unwrap();
    let surrogate = format!("surrogate={}", Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/cpu-cifar10.toml").display());
    let params = tmp.path().join("blend.toml");
    std::fs::write(&params, "alpha = 0.2\nfoo = 1\n").unwrap();
    let params = params.to_str().unwrap();
    let cases: [(&[&str], &str); 9] = [
        (&["--attack", "badnets", "--rate", "1.5"], "rate must be in [0, 1], got 1.5"),
        (&["--attack", "badnets", "--target", "10"], "target 10 is out of range"),
        (&["--attack", "blend", "--set", "trigger_file=/nonexistent/t.png"], "/nonexistent/t.png: cannot read trigger image"),
        (&["--attack", "badnets", "--set", "row=31"], "does not fit a 32×32 image"),
        (&["--attack", "sig", "--set", "delta=oops"], "sig: bad parameters"),
        (&["--attack", "badnets", "--set", "colour=1"], "attack parameters from --set: badnets: bad parameters: unknown field `colour`"),
        (&["--attack", "blend", "--config", params], &format!("attack parameters from {params}: blend: bad parameters: unknown field `foo`")),
        (&["--attack", "cl", "--config", params, "--set", "steps=3"], &format!("attack parameters from {params} and --set: cl takes epsilon")),
        (&["--attack", "cl", "--set", &surrogate, "--set", "epsilon=-5"], "epsilon must lie in (0, 255]"),
    ];
    for (extra, needle) in cases {
        assert_clean_error(&vab(&poison_args(data, out, extra), tmp.path()), needle);
    }
    assert!(!Path::new(out).exists(), "no bundle may be written on error");
}

#[test]
fn clean_label_attack_on_an_empty_target_class_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_cifar10(tmp.path(), 20);
    // Rewrite the batches so that no training sample has label 9.
    for i in 1..=5 {
        let path = dir.join(format!("data_batch_{i}.bin"));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.chunks_exact_mut(3073).for_each(|rec| rec[0] %= 9);
        std::fs::write(&path, bytes).unwrap();
    }
    let out = tmp.path().join("x.safetensors");
    let args = poison_args(tmp.path().to_str().unwrap(), out.to_str().unwrap(), &["--attack", "sig", "--target", "9"]);
    assert_clean_error(&vab(&args, tmp.path()), "target class 9 has no training samples");
}

#[test]
fn real_cifar10_badnets_and_sig_bundles_match_the_acceptance_figures() {
    let Some(archive) = cifar10_archive() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = archive.to_str().unwrap();
    let badnets = tmp.path().join("b.safetensors");
    let out = vab(&poison_args(data, badnets.to_str().unwrap(), &["--attack", "badnets", "--rate", "0.1", "--target", "0", "--seed", "1"]), tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let b = vab_data::Bundle::read(&badnets).unwrap();
    let flagged: Vec<usize> = (0..b.train.len()).filter(|&i| b.train_poisoned[i]).collect();
    assert_eq!(flagged.len(), 5000);
    assert!(flagged.iter().all(|&i| b.train.labels()[i] == 0));
    let colors = [((4, 4), [180, 249, 112]), ((4, 5), [155, 50, 126]), ((5, 4), [234, 82, 68]), ((5, 5), [187, 201, 219])];
    for &i in flagged.iter().step_by(97) {
        for ((r, c), rgb) in colors {
            let px: Vec<u8> = (0..3).map(|ch| b.train.image(i)[ch * 1024 + r * 32 + c]).collect();
            assert_eq!(px, rgb, "sample {i} pixel ({r},{c})");
        }
    }
    assert_eq!(b.test_triggered.len(), 9000);

    let sig = tmp.path().join("s.safetensors");
    let out = vab(&poison_args(data, sig.to_str().unwrap(), &["--attack", "sig", "--rate", "0.1", "--target", "0", "--seed", "1"]), tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = vab_data::Bundle::read(&sig).unwrap();
    let flagged: Vec<usize> = (0..s.train.len()).filter(|&i| s.train_poisoned[i]).collect();
    assert_eq!(flagged.len(), 500);
    assert!(flagged.iter().all(|&i| s.train_true_labels[i] == 0 && s.train.labels()[i] == 0));
    assert_eq!(s.train.labels(), &s.train_true_labels[..]);
}

/// The CPU preset shortened to one Beneficiary epoch: the warm-up is the preset's own.
fn one_epoch_preset(dir: &Path) -> PathBuf {
    let preset = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/cpu-cifar10.toml")).unwrap();
    let shortened: String = preset
        .lines()
        .map(|line| match line.split_once(" = ") {
            Some((key @ ("epochs" | "stage2_epochs"), _)) => format!("{key} = 1\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    assert_eq!(shortened.matches("epochs = 1\n").count(), 2, "the preset's epoch keys moved; update this test");
    let path = dir.join("one-epoch.toml");
    std::fs::write(&path, shortened).unwrap();
    path
}

#[test]
fn real_cifar10_badnets_vab_warm_up_catches_the_poison_and_the_model_loads_in_pytorch() {
    let Some(archive) = cifar10_archive() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("b.safetensors");
    let out = vab(&poison_args(archive.to_str().unwrap(), bundle.to_str().unwrap(), &["--attack", "badnets", "--rate", "0.1", "--target", "0", "--seed", "1"]), tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = one_epoch_preset(tmp.path());
    let run = tmp.path().join("run");
    let out = vab(&["train", "--bundle", bundle.to_str().unwrap(), "--defense", "vab", "--config", config.to_str().unwrap(), "--out", run.to_str().unwrap()], tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let refreshes = std::fs::read_to_string(run.join("refreshes.jsonl")).unwrap();
    let warm_up: Vec<serde_json::Value> = refreshes.lines().map(|l| serde_json::from_str(l).unwrap()).filter(|v: &serde_json::Value| v["stage"] == "warm_up").collect();
    let recall = warm_up.last().expect("a warm-up refresh")["recall"].as_f64().unwrap();
    eprintln!("BadNets recall after warm-up: {recall:.2}%");
    assert!(recall >= 95.0, "recall after warm-up {recall:.2}% < 95%");
    // The poison carries the target label 0, so the suspicious set piles up there.
    let last = warm_up.last().unwrap();
    let by_label: Vec<u64> = last["suspicious_by_label"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
    assert_eq!((by_label.len(), by_label.iter().sum::<u64>()), (10, last["suspicious"].as_u64().unwrap()));
    assert_eq!(by_label.iter().enumerate().max_by_key(|&(_, n)| n).unwrap().0, 0, "{by_label:?}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert!(summary["ba"].as_f64().unwrap() > 20.0 && summary["detection"]["recall"].as_f64().is_some(), "{summary}");
    // The untriggered originals were found through the bundle's index: a rate was measured.
    assert!(summary["asr_untriggered"].as_f64().is_some_and(|u| (0.0..=100.0).contains(&u)), "{summary}");
    let csv = std::fs::read_to_string(run.join("suspicious.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5_000);
    assert_pytorch_example_agrees(&run, &bundle);
}

fn torch_available() -> bool {
    Command::new("python3").args(["-c", "import torch, numpy, safetensors"]).output().is_ok_and(|o| o.status.success())
}

/// Runs examples/load_in_pytorch.py on a run directory and checks its BA, ASR and RA equal the
/// run's `summary.json` within 0.2 pp; skips with a message when torch is not importable.
fn assert_pytorch_example_agrees(run: &Path, bundle: &Path) {
    if !torch_available() {
        eprintln!("skipping examples/load_in_pytorch.py: python3 cannot import torch, numpy and safetensors");
        return;
    }
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/load_in_pytorch.py");
    let out = Command::new("python3").arg(example).arg(run).arg(bundle).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let torch: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("PyTorch example: {torch}");
    for key in ["ba", "asr", "ra"] {
        let (ours, theirs) = (summary[key].as_f64().unwrap(), torch[key].as_f64().unwrap());
        assert!((ours - theirs).abs() <= 0.2, "{key}: vab {ours} vs PyTorch {theirs}");
    }
}

#[test]
fn bench_runs_a_matrix_skips_finished_cells_and_refuses_a_changed_config() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 20);
    let config = tmp.path().join("tiny.toml");
    let tiny = "[model]\narch = \"small\"\n[train]\nepochs = 2\nbatch_size = 25\nlr = 0.05\n[train.optimizer]\nkind = \"sgd\"\nmomentum = 0.9\nweight_decay = 5e-4\n\
                [train.schedule]\nkind = \"cosine\"\nmin_lr = 0.0\n[data]\neval_batch_size = 64\n[vab]\nstage2_epochs = 1\n";
    std::fs::write(&config, tiny).unwrap();
    let matrix = tmp.path().join("m.toml");
    std::fs::write(&matrix, "data = \"cifar-10-batches-bin\"\nconfig = \"tiny.toml\"\nseeds = [0, 1]\n\
        [[attack]]\nname = \"badnets\"\nrate = 0.2\n[[attack]]\nname = \"clean\"\n\
        [[defense]]\nname = \"none\"\n[[defense]]\nname = \"vab-mixup\"\ndefense = \"vab\"\nvab = { mix = \"mixup\" }\n").unwrap();
    let out = tmp.path().join("bench");
    let bench = || vab(&["bench", matrix.to_str().unwrap(), "--out", out.to_str().unwrap()], tmp.path());

    let first = bench();
    assert!(first.status.success(), "{}", text(&first.stderr));
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 8, "{csv}");
    assert!(csv.lines().nth(1).unwrap().starts_with("badnets,none,0,"), "{csv}");
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("8 of 8 cells finished") && md.contains("| badnets | vab-mixup | 2 |") && md.contains("| clean | none | 2 |"), "{md}");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["aggregates"].as_array().unwrap().len(), 4);
    assert!(results["cells"][2]["recall"].as_f64().is_some(), "V&B cells report detection: {results}");
    let cell_config = std::fs::read_to_string(out.join("cells/badnets/vab-mixup/seed-1/config.toml")).unwrap();
    assert!(cell_config.contains("mix = \"mixup\"") && cell_config.contains("seed = 1"), "{cell_config}");
    let bundle = vab_data::Bundle::read(&out.join("bundles/badnets.safetensors")).unwrap();
    assert_eq!(bundle.train_poisoned.iter().filter(|&&p| p).count(), 20);

    let model = std::fs::read(out.join("cells/badnets/none/seed-0/model.safetensors")).unwrap();
    let again = bench();
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stderr).matches("finished earlier, skipped").count(), 8, "{}", text(&again.stderr));
    assert_eq!(std::fs::read(out.join("cells/badnets/none/seed-0/model.safetensors")).unwrap(), model);
    assert_eq!(std::fs::read_to_string(out.join("results.csv")).unwrap(), csv);

    std::fs::write(&config, tiny.replace("lr = 0.05", "lr = 0.1")).unwrap();
    assert_clean_error(&bench(), "run with another configuration");

    // Reports: self-contained HTML (no reference leaves the file but the SVG namespace).
    let report = |dir: &Path| {
        let out = vab(&["report", dir.to_str().unwrap()], tmp.path());
        assert!(out.status.success(), "{}", text(&out.stderr));
        let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
        let outside = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!outside.contains("http:") && !outside.contains("https:") && !outside.contains("src=\"/"), "external reference in {}", dir.display());
        html
    };
    let cell = out.join("cells/badnets/vab-mixup/seed-0");
    let run_html = report(&cell);
    for needle in ["Beneficiary: test metrics", "Victim: metrics on the test sample", "detection of the poisoned samples per refresh", "32 most suspicious", "32 most credible", "refresh-01"] {
        assert!(run_html.contains(needle), "run report lacks {needle:?}");
    }
    assert!(run_html.matches("data:image/png;base64,").count() >= 3, "histograms and grids are embedded");
    let bench_html = report(&out);
    assert!(bench_html.contains("<h2>badnets × vab-mixup, seed 1</h2>") && bench_html.contains("<td>clean</td><td>none</td><td>2</td>"), "bench report lacks cells or rows");
    assert_clean_error(&vab(&["report", tmp.path().to_str().unwrap()], tmp.path()), "neither a run directory");

    // `vab eval` of a finished run reads its exported model and bundle back and gives the
    // figures its summary recorded.
    let eval = vab(&["eval", cell.to_str().unwrap(), "--json"], tmp.path());
    assert!(eval.status.success(), "{}", text(&eval.stderr));
    let metrics: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cell.join("summary.json")).unwrap()).unwrap();
    for key in ["ba", "asr", "asr_untriggered", "ra", "per_class"] {
        assert!(!summary[key].is_null() && metrics[key] == summary[key], "{key}: eval {} vs summary {}", metrics[key], summary[key]);
    }
    // The batch size is memory, not maths: seven images per pass give the same figures.
    let small_batches = vab(&["eval", cell.to_str().unwrap(), "--json", "--batch-size", "7"], tmp.path());
    assert!(small_batches.status.success(), "{}", text(&small_batches.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&small_batches.stdout).unwrap(), metrics);
    let zero = vab(&["eval", cell.to_str().unwrap(), "--batch-size", "0"], tmp.path());
    assert_eq!(zero.status.code(), Some(2), "clap's usage error");
    assert!(text(&zero.stderr).starts_with("error: invalid value '0' for '--batch-size <N>'"), "{}", text(&zero.stderr));
    let model = cell.join("model.safetensors");
    assert_clean_error(&vab(&["eval", model.to_str().unwrap()], tmp.path()), "needs --bundle");
    assert_clean_error(&vab(&["eval", out.to_str().unwrap()], tmp.path()), "not a vab run directory");
    let config_file = cell.join("config.toml");
    assert_clean_error(&vab(&["eval", config_file.to_str().unwrap(), "--bundle", "x"], tmp.path()), "expected a model.safetensors written by vab");
}

/// `surrogate=FILE` for a model-based attack: a one-epoch small-network configuration in `dir`.
fn one_epoch_surrogate(dir: &Path) -> String {
    let surrogate = dir.join("surrogate.toml");
    std::fs::write(&surrogate, "[model]\narch = \"small\"\n[train]\nepochs = 1\nbatch_size = 50\nlr = 0.05\n[train.optimizer]\nkind = \"sgd\"\nmomentum = 0.9\nweight_decay = 5e-4\n[train.schedule]\nkind = \"cosine\"\nmin_lr = 0.0\n").unwrap();
    format!("surrogate={}", surrogate.display())
}

#[test]
fn label_consistent_attack_trains_a_surrogate_perturbs_within_epsilon_and_caches() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 40);
    let set_surrogate = one_epoch_surrogate(tmp.path());
    let poison = |out: &Path| {
        let extra = ["--attack", "cl", "--rate", "0.5", "--target", "0", "--seed", "3", "--set", &set_surrogate, "--set", "steps=3", "--set", "epsilon=8", "--set", "step_size=4"];
        vab(&poison_args(tmp.path().to_str().unwrap(), out.to_str().unwrap(), &extra), tmp.path())
    };
    let (a, b) = (tmp.path().join("a.safetensors"), tmp.path().join("b.safetensors"));
    let first = poison(&a);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stderr).contains("surrogate BA") && !text(&first.stderr).contains("from the cache"), "{}", text(&first.stderr));
    let second = poison(&b);
    assert!(second.status.success() && text(&second.stderr).contains("perturbations from the cache"), "{}", text(&second.stderr));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "the cached run gives the same bundle");

    let bundle = vab_data::Bundle::read(&a).unwrap();
    let attack = bundle.meta.attack.clone().unwrap();
    assert_eq!(attack["name"], "cl");
    assert_eq!(attack["label_mode"], "clean_label");
    assert!(attack["params"]["surrogate_ba"].is_number() && attack["params"]["pgd_success"].is_number(), "{attack}");
    // Half of the 20 class-0 training images, labels unchanged, pixels within ε = 8 outside the
    // 2×2 trigger at rows/cols 4-5.
    let flagged: Vec<usize> = (0..bundle.train.len()).filter(|&i| bundle.train_poisoned[i]).collect();
    assert_eq!(flagged.len(), 10);
    assert_eq!(bundle.train.labels(), &bundle.train_true_labels[..]);
    let clean = vab_data::Bundle::read(&{
        let c = tmp.path().join("clean.safetensors");
        assert!(vab(&["data", "bundle", tmp.path().to_str().unwrap(), "-o", c.to_str().unwrap()], tmp.path()).status.success());
        c
    }).unwrap();
    let mut moved = 0;
    for &i in &flagged {
        assert_eq!(bundle.train_true_labels[i], 0);
        for (p, (&x, &y)) in clean.train.image(i).iter().zip(bundle.train.image(i)).enumerate() {
            let (row, col) = ((p % 1024) / 32, p % 32);
            if !((4..6).contains(&row) && (4..6).contains(&col)) {
                assert!((x as i32 - y as i32).abs() <= 8, "sample {i} pixel {p}: {x} -> {y}");
                moved += (x != y) as usize;
            }
        }
    }
    assert!(moved > 0, "PGD changed no pixel");
}

#[test]
fn a_missing_surrogate_file_is_named_once_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 4);
    let out = tmp.path().join("out.safetensors");
    for attack in ["cl", "dynamic"] {
        let extra = ["--attack", attack, "--set", "surrogate=configs/absent.toml"];
        let run = vab(&poison_args(tmp.path().to_str().unwrap(), out.to_str().unwrap(), &extra), tmp.path());
        assert_clean_error(&run, "configs/absent.toml: cannot read the surrogate's training configuration");
        let stderr = text(&run.stderr).to_lowercase();
        assert_eq!(stderr.matches("no such file").count(), 1, "{stderr}");
        assert!(stderr.contains("working directory"), "{stderr}");
    }
}

#[test]
fn dynamic_attack_trains_its_generator_poisons_with_cross_samples_and_caches() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 40);
    let set_surrogate = one_epoch_surrogate(tmp.path());
    // Without the norm loss the tiny mask network's masks stay non-empty (with it they collapse
    // to nothing on this data, leaving the images unchanged).
    // The same surrogate configuration under another path is the same surrogate.
    let copy = tmp.path().join("copy.toml");
    std::fs::copy(set_surrogate.trim_start_matches("surrogate="), &copy).unwrap();
    let set_copy = format!("surrogate={}", copy.display());
    let poison_with = |out: &Path, surrogate: &str| {
        let extra = ["--attack", "dynamic", "--rate", "0.1", "--target", "0", "--seed", "3", "--set", surrogate, "--set", "width=4", "--set", "mask_epochs=3", "--set", "lambda_norm=0", "--set", "donors=16"];
        vab(&poison_args(tmp.path().to_str().unwrap(), out.to_str().unwrap(), &extra), tmp.path())
    };
    let poison = |out: &Path| poison_with(out, &set_surrogate);
    let (a, b) = (tmp.path().join("a.safetensors"), tmp.path().join("b.safetensors"));
    let first = poison(&a);
    let stderr = text(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(stderr.contains("the classifier trained with the generator reaches BA") && !stderr.contains("from the cache"), "{stderr}");
    let second = poison(&b);
    assert!(second.status.success() && text(&second.stderr).contains("networks from the cache"), "{}", text(&second.stderr));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "the cached networks give the same bundle");
    let third = poison_with(&tmp.path().join("c.safetensors"), &set_copy);
    assert!(third.status.success() && text(&third.stderr).contains("networks from the cache"), "{}", text(&third.stderr));

    let bundle = vab_data::Bundle::read(&a).unwrap();
    let attack = bundle.meta.attack.clone().unwrap();
    assert_eq!((attack["name"].as_str(), attack["poisoned"].as_u64(), attack["cross"].as_u64()), (Some("dynamic"), Some(20), Some(20)), "{attack}");
    assert!(attack["params"]["classifier_asr"].is_number() && attack["params"]["mask_coverage"].is_number(), "{attack}");
    let clean = vab_data::Bundle::read(&{
        let c = tmp.path().join("clean.safetensors");
        assert!(vab(&["data", "bundle", tmp.path().to_str().unwrap(), "-o", c.to_str().unwrap()], tmp.path()).status.success());
        c
    }).unwrap();
    // Poisoned samples: relabelled to 0 and changed. Cross samples: changed, labels kept, not flagged.
    let changed = |i: usize| clean.train.image(i) != bundle.train.image(i);
    let flagged: Vec<usize> = (0..bundle.train.len()).filter(|&i| bundle.train_poisoned[i]).collect();
    assert!(flagged.iter().all(|&i| bundle.train.labels()[i] == 0 && changed(i)));
    let cross: Vec<usize> = (0..bundle.train.len()).filter(|&i| !bundle.train_poisoned[i] && changed(i)).collect();
    assert!(!cross.is_empty() && cross.len() <= 20, "{} cross samples changed", cross.len());
    assert!(cross.iter().all(|&i| bundle.train.labels()[i] == clean.train.labels()[i]));
    // The triggered test set comes from the generator: every non-target test image, changed,
    // and the triggers differ from image to image.
    assert_eq!(bundle.test_triggered.len(), 36);
    let deltas: Vec<Vec<i16>> = bundle.test_triggered_index.iter().enumerate()
        .map(|(k, &i)| clean.test.image(i).iter().zip(bundle.test_triggered.image(k)).map(|(&x, &y)| y as i16 - x as i16).collect())
        .collect();
    assert!(deltas.iter().all(|d| d.iter().any(|&v| v != 0)), "a triggered test image is unchanged");
    assert!(deltas.windows(2).any(|w| w[0] != w[1]), "every image got the same trigger");
}

/// A BadNets bundle (rate 0.2, poisoning `seed`) of the tiny CIFAR-10 folder in `root`, written
/// to `root/name`.
fn tiny_badnets_bundle(root: &Path, name: &str, seed: &str) -> PathBuf {
    let data = root.join("cifar-10-batches-bin");
    let path = root.join(name);
    let out = vab(&poison_args(data.to_str().unwrap(), path.to_str().unwrap(), &["--attack", "badnets", "--rate", "0.2", "--seed", seed]), root);
    assert!(out.status.success(), "{}", text(&out.stderr));
    path
}

/// A finished one-epoch no-defense run of the small network on `bundle`, in `root/run`.
fn one_epoch_run(root: &Path, bundle: &Path) -> PathBuf {
    let config = root.join("one.toml");
    std::fs::write(&config, "[model]\narch = \"small\"\n[train]\nepochs = 1\nbatch_size = 50\nlr = 0.05\n[train.optimizer]\nkind = \"sgd\"\nmomentum = 0.9\nweight_decay = 5e-4\n[train.schedule]\nkind = \"cosine\"\nmin_lr = 0.0\n").unwrap();
    let run = root.join("run");
    let train = vab(&["train", "--bundle", bundle.to_str().unwrap(), "--config", config.to_str().unwrap(), "--out", run.to_str().unwrap()], root);
    assert!(train.status.success(), "{}", text(&train.stderr));
    run
}

/// `--defense abl` on tiny data: the isolated set in `isolated.csv` and scored in the summary,
/// the report's rows, `vab eval` agreeing with the summary, a bench column; without an `[abl]`
/// section a clean error.
#[test]
fn abl_writes_its_isolated_set_and_runs_in_a_bench() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 20);
    let bundle = tiny_badnets_bundle(tmp.path(), "b.safetensors", "1");
    let plain = "[model]\narch = \"small\"\n[train]\nepochs = 2\nbatch_size = 25\nlr = 0.05\n[train.optimizer]\nkind = \"sgd\"\nmomentum = 0.9\nweight_decay = 5e-4\n[train.schedule]\nkind = \"cosine\"\nmin_lr = 0.0\n";
    let (config, without) = (tmp.path().join("abl.toml"), tmp.path().join("plain.toml"));
    std::fs::write(&config, format!("{plain}[abl]\nisolation_epochs = 1\nisolation_ratio = 0.1\nunlearning_epochs = 1\n")).unwrap();
    std::fs::write(&without, plain).unwrap();
    let train = |config: &Path, run: &Path| vab(&["train", "--bundle", bundle.to_str().unwrap(), "--defense", "abl", "--config", config.to_str().unwrap(), "--out", run.to_str().unwrap()], tmp.path());
    assert_clean_error(&train(&without, &tmp.path().join("no-abl")), "needs an [abl] section");
    let too_long = tmp.path().join("too-long.toml");
    std::fs::write(&too_long, format!("{plain}[abl]\nisolation_epochs = 3\n")).unwrap();
    assert_clean_error(&train(&too_long, &tmp.path().join("too-long")), "abl.isolation_epochs (3) must not exceed train.epochs (2)");

    let run = tmp.path().join("run");
    let out = train(&config, &run);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("isolated 10 samples, precision"), "{}", text(&out.stdout));
    let csv = std::fs::read_to_string(run.join("isolated.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(csv.lines().next(), Some("index,file,label,loss,isolated,poisoned"));
    assert_eq!(rows.len(), 100);
    assert!(rows[..10].iter().all(|r| r[4] == "1") && rows[10..].iter().all(|r| r[4] == "0"), "the ten lowest losses are the isolated ones: {csv}");
    let losses: Vec<f64> = rows.iter().map(|r| r[3].parse().unwrap()).collect();
    assert!(losses.windows(2).all(|w| w[0] <= w[1]), "lowest loss first");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let poisoned_isolated = rows[..10].iter().filter(|r| r[5] == "1").count() as f64;
    assert_eq!(summary["defense"], "abl");
    assert_eq!((summary["isolated"].as_u64(), summary["detection"]["poisoned"].as_u64()), (Some(10), Some(20)));
    assert_eq!(summary["detection"]["precision"].as_f64(), Some(100.0 * poisoned_isolated / 10.0));
    assert!(summary["before_unlearning"]["ba"].is_number(), "{summary}");

    let report = vab(&["report", run.to_str().unwrap()], tmp.path());
    assert!(report.status.success(), "{}", text(&report.stderr));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("isolated / rest") && html.contains("before unlearning"), "the report lacks ABL's rows");
    let eval = vab(&["eval", run.to_str().unwrap(), "--json"], tmp.path());
    assert!(eval.status.success(), "{}", text(&eval.stderr));
    let metrics: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!((&metrics["ba"], &metrics["asr"]), (&summary["ba"], &summary["asr"]));

    let matrix = tmp.path().join("m.toml");
    std::fs::write(&matrix, "data = \"cifar-10-batches-bin\"\nconfig = \"abl.toml\"\nseeds = [0]\n[[attack]]\nname = \"badnets\"\nrate = 0.2\n[[defense]]\nname = \"abl\"\n").unwrap();
    let bench_dir = tmp.path().join("bench");
    let bench = vab(&["bench", matrix.to_str().unwrap(), "--out", bench_dir.to_str().unwrap()], tmp.path());
    assert!(bench.status.success(), "{}", text(&bench.stderr));
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(bench_dir.join("results.json")).unwrap()).unwrap();
    assert!(results["cells"][0]["defense"] == "abl" && results["cells"][0]["recall"].is_number(), "{results}");
}

/// `--defense fp` on tiny data: a clean reserve drawn and recorded, the pruning reported in the
/// summary and the report.
#[test]
fn fine_pruning_draws_a_clean_reserve_and_reports_its_pruning() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 20);
    let bundle = tiny_badnets_bundle(tmp.path(), "b.safetensors", "1");
    let config = tmp.path().join("fp.toml");
    std::fs::write(&config, "[model]\narch = \"small\"\n[train]\nepochs = 1\nbatch_size = 25\nlr = 0.05\n[train.optimizer]\nkind = \"sgd\"\nmomentum = 0.9\nweight_decay = 5e-4\n[train.schedule]\nkind = \"cosine\"\nmin_lr = 0.0\n[fp]\nclean_reserve = 0.1\nfinetune_epochs = 1\n").unwrap();
    let run = tmp.path().join("run");
    let out = vab(&["train", "--bundle", bundle.to_str().unwrap(), "--defense", "fp", "--config", config.to_str().unwrap(), "--out", run.to_str().unwrap()], tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("clean reserve: 10 training samples"), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!((summary["defense"].as_str(), summary["clean_reserve"].as_u64(), summary["channels"].as_u64()), (Some("fp"), Some(10), Some(256)));
    assert!(summary["pruned_channels"].as_u64().unwrap() < 256 && summary["before_pruning"]["ba"].is_number() && summary["after_pruning"]["ba"].is_number(), "{summary}");
    let report = vab(&["report", run.to_str().unwrap()], tmp.path());
    assert!(report.status.success(), "{}", text(&report.stderr));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("after pruning") && html.contains("pruned channels") && html.contains("clean reserve"), "the report lacks FP's rows");
    // More reserve than clean samples: 90 of 100 with 20 poisoned.
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("clean_reserve = 0.1", "clean_reserve = 0.9")).unwrap();
    let again = vab(&["train", "--bundle", bundle.to_str().unwrap(), "--defense", "fp", "--config", config.to_str().unwrap(), "--out", tmp.path().join("big").to_str().unwrap()], tmp.path());
    assert_clean_error(&again, "fp.clean_reserve: a clean reserve of 0.9 of 100 training samples is 90 samples, but 80 are clean");
}

/// `--defense nad` on tiny data: a clean reserve, the teacher's and the backdoored network's
/// metrics in the summary and the report, and a bench column.
#[test]
fn nad_draws_a_clean_reserve_and_reports_its_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 20);
    let bundle = tiny_badnets_bundle(tmp.path(), "b.safetensors", "1");
    let config = tmp.path().join("nad.toml");
    std::fs::write(&config, "[model]\narch = \"small\"\n[train]\nepochs = 1\nbatch_size = 25\nlr = 0.05\n[train.optimizer]\nkind = \"sgd\"\nmomentum = 0.9\nweight_decay = 5e-4\n[train.schedule]\nkind = \"cosine\"\nmin_lr = 0.0\n[nad]\nclean_reserve = 0.1\nteacher_epochs = 1\nepochs = 1\nbatch_size = 5\n").unwrap();
    let run = tmp.path().join("run");
    let out = vab(&["train", "--bundle", bundle.to_str().unwrap(), "--defense", "nad", "--config", config.to_str().unwrap(), "--out", run.to_str().unwrap()], tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("clean reserve: 10 training samples"), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!((summary["defense"].as_str(), summary["clean_reserve"].as_u64(), summary["epochs"].as_u64()), (Some("nad"), Some(10), Some(3)));
    assert!(summary["before_distillation"]["ba"].is_number() && summary["teacher"]["ba"].is_number(), "{summary}");
    let report = vab(&["report", run.to_str().unwrap()], tmp.path());
    assert!(report.status.success(), "{}", text(&report.stderr));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("before distillation") && html.contains("NAD's teacher"), "the report lacks NAD's rows");

    let matrix = tmp.path().join("m.toml");
    std::fs::write(&matrix, "data = \"cifar-10-batches-bin\"\nconfig = \"nad.toml\"\nseeds = [0]\n[[attack]]\nname = \"badnets\"\nrate = 0.2\n[[defense]]\nname = \"nad\"\n").unwrap();
    let bench_dir = tmp.path().join("bench");
    let bench = vab(&["bench", matrix.to_str().unwrap(), "--out", bench_dir.to_str().unwrap()], tmp.path());
    assert!(bench.status.success(), "{}", text(&bench.stderr));
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(bench_dir.join("results.json")).unwrap()).unwrap();
    assert!(results["cells"][0]["defense"] == "nad" && results["cells"][0]["ba"].is_number(), "{results}");
}

/// `--defense dbd` on tiny data: its three phases, the warm-up's metrics and the last split's
/// detection in the summary and the report, and a bench column.
#[test]
fn dbd_runs_its_three_phases_and_reports_its_split() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 20);
    let bundle = tiny_badnets_bundle(tmp.path(), "b.safetensors", "1");
    let config = tmp.path().join("dbd.toml");
    std::fs::write(&config, "[model]\narch = \"small\"\n[train]\nepochs = 1\nbatch_size = 25\nlr = 0.05\n[train.optimizer]\nkind = \"sgd\"\nmomentum = 0.9\nweight_decay = 5e-4\n[train.schedule]\nkind = \"cosine\"\nmin_lr = 0.0\n[dbd]\nsimclr_epochs = 1\nsimclr_batch_size = 50\nwarmup_epochs = 1\nsemi_epochs = 1\nsemi_batch_size = 10\n").unwrap();
    let run = tmp.path().join("run");
    let out = vab(&["train", "--bundle", bundle.to_str().unwrap(), "--defense", "dbd", "--config", config.to_str().unwrap(), "--out", run.to_str().unwrap()], tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("split: 50 labelled"), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!((summary["defense"].as_str(), summary["labelled"].as_u64(), summary["epochs"].as_u64()), (Some("dbd"), Some(50), Some(3)));
    assert!(summary["after_warmup"]["ba"].is_number() && summary["simclr_loss"].is_number() && summary["detection"]["recall"].is_number(), "{summary}");
    let report = vab(&["report", run.to_str().unwrap()], tmp.path());
    assert!(report.status.success(), "{}", text(&report.stderr));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("after DBD's warm-up") && html.contains("last split: unlabelled / labelled") && html.contains("labelled samples per class"), "the report lacks DBD's rows");

    let matrix = tmp.path().join("m.toml");
    std::fs::write(&matrix, "data = \"cifar-10-batches-bin\"\nconfig = \"dbd.toml\"\nseeds = [0]\n[[attack]]\nname = \"badnets\"\nrate = 0.2\n[[defense]]\nname = \"dbd\"\n").unwrap();
    let bench_dir = tmp.path().join("bench");
    let bench = vab(&["bench", matrix.to_str().unwrap(), "--out", bench_dir.to_str().unwrap()], tmp.path());
    assert!(bench.status.success(), "{}", text(&bench.stderr));
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(bench_dir.join("results.json")).unwrap()).unwrap();
    assert!(results["cells"][0]["defense"] == "dbd" && results["cells"][0]["ba"].is_number(), "{results}");
}

/// A run records its bundle's SHA-256: `--resume` and `vab eval` of the run refuse another file
/// put at the bundle's path, naming both, and accept the original again.
#[test]
fn a_run_refuses_another_bundle_at_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 20);
    let (bundle, other) = (tiny_badnets_bundle(tmp.path(), "b.safetensors", "1"), tiny_badnets_bundle(tmp.path(), "other.safetensors", "2"));
    let run = one_epoch_run(tmp.path(), &bundle);
    let recorded: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(recorded["bundle_sha256"].as_str().map(str::len), Some(64), "{recorded}");

    let original = std::fs::read(&bundle).unwrap();
    std::fs::copy(&other, &bundle).unwrap();
    let run_arg = run.to_str().unwrap();
    assert_clean_error(&vab(&["eval", run_arg], tmp.path()), "not the bundle the run");
    assert_clean_error(&vab(&["train", "--resume", run_arg], tmp.path()), "not the bundle the run");
    std::fs::write(&bundle, original).unwrap();
    let eval = vab(&["eval", run_arg], tmp.path());
    assert!(eval.status.success(), "{}", text(&eval.stderr));

    // Another bundle must hold the same image size and classes as the one the run trained on.
    let data = tmp.path().join("cifar-10-batches-bin");
    let (folder, smaller) = (tmp.path().join("folder"), tmp.path().join("small.safetensors"));
    for (split, class) in ["train", "test"].iter().flat_map(|s| (0..10).map(move |c| (s, c))) {
        let dir = folder.join(split).join(format!("class{class}"));
        std::fs::create_dir_all(&dir).unwrap();
        image::RgbImage::from_pixel(16, 16, image::Rgb([class * 20, 0, 0])).save(dir.join("a.png")).unwrap();
    }
    assert!(vab(&["data", "bundle", folder.to_str().unwrap(), "-o", smaller.to_str().unwrap()], tmp.path()).status.success());
    assert_clean_error(&vab(&["eval", run_arg, "--bundle", smaller.to_str().unwrap()], tmp.path()), "trained on 32×32 images, the bundle");
    assert_clean_error(&vab(&["eval", &format!("{run_arg}/model.safetensors"), "--bundle", smaller.to_str().unwrap()], tmp.path()), "trained on 32×32 images");
    std::fs::write(data.join("batches.meta.txt"), "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n").unwrap();
    let renamed = tmp.path().join("renamed.safetensors");
    assert!(vab(&["data", "bundle", data.to_str().unwrap(), "--no-cache", "-o", renamed.to_str().unwrap()], tmp.path()).status.success());
    assert_clean_error(&vab(&["eval", run_arg, "--bundle", renamed.to_str().unwrap()], tmp.path()), "the run trained on classes airplane");
    let same = vab(&["eval", run_arg, "--bundle", other.to_str().unwrap()], tmp.path());
    assert!(same.status.success(), "{}", text(&same.stderr));
}

/// A poisoned bundle is not a dataset to make a new bundle from: `vab data bundle` and
/// `vab poison` refuse it (they would drop its poison flags and true labels) and write nothing;
/// a clean bundle is accepted.
#[test]
fn a_poisoned_bundle_is_not_a_source_for_a_new_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 20);
    let data = tmp.path().join("cifar-10-batches-bin");
    let (poisoned, out) = (tiny_badnets_bundle(tmp.path(), "p.safetensors", "0"), tmp.path().join("out.safetensors"));
    let (p, o) = (poisoned.to_str().unwrap(), out.to_str().unwrap());
    assert_clean_error(&vab(&["data", "bundle", p, "-o", o], tmp.path()), "a poisoned bundle");
    assert_clean_error(&vab(&poison_args(p, o, &["--attack", "blend"]), tmp.path()), "a poisoned bundle");
    assert!(!out.exists(), "nothing written");
    let clean = tmp.path().join("clean.safetensors");
    let c = clean.to_str().unwrap();
    assert!(vab(&["data", "bundle", data.to_str().unwrap(), "-o", c], tmp.path()).status.success());
    let again = vab(&["data", "bundle", c, "-o", o], tmp.path());
    assert!(again.status.success(), "{}", text(&again.stderr));
}

/// Nothing lost: `vab poison` and `vab data bundle` refuse to write over their input, and a
/// write removes the temporary files that killed writers left beside its output (a dead pid in
/// the name) but not those of live processes.
#[test]
fn outputs_never_replace_their_input_and_stale_parts_are_cleaned() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 20);
    let data = tmp.path().join("cifar-10-batches-bin");
    let clean = tmp.path().join("clean.safetensors");
    let (dead, live) = (tmp.path().join(".clean.safetensors.4194303.part"), tmp.path().join(format!(".clean.safetensors.{}.part", std::process::id())));
    std::fs::write(&dead, b"left by a killed write").unwrap();
    std::fs::write(&live, b"being written").unwrap();
    assert!(vab(&["data", "bundle", data.to_str().unwrap(), "-o", clean.to_str().unwrap()], tmp.path()).status.success());
    assert!(!dead.exists(), "the dead writer's part stays behind");
    assert!(live.exists(), "a live writer's part was removed");
    let original = std::fs::read(&clean).unwrap();
    let c = clean.to_str().unwrap();
    assert_clean_error(&vab(&poison_args(c, c, &["--attack", "badnets"]), tmp.path()), "the output is the input dataset itself");
    assert_clean_error(&vab(&["data", "bundle", c, "-o", c], tmp.path()), "the output is the input dataset itself");
    assert_eq!(std::fs::read(&clean).unwrap(), original, "the input changed");
}

/// Two processes never write one run directory: while one holds it, another `vab train`
/// on it is refused with the holder's pid.
#[test]
fn a_run_directory_in_use_is_refused_with_the_holders_pid() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 20);
    let bundle = tiny_badnets_bundle(tmp.path(), "b.safetensors", "1");
    let run = one_epoch_run(tmp.path(), &bundle);
    let mut holder = std::fs::OpenOptions::new().write(true).open(run.join("lock")).unwrap();
    holder.try_lock().unwrap();
    holder.set_len(0).unwrap();
    write!(holder, "{}", std::process::id()).unwrap();
    let run_arg = run.to_str().unwrap();
    assert_clean_error(&vab(&["train", "--resume", run_arg], tmp.path()), &format!("another vab process (pid {}) is using this run directory", std::process::id()));
    drop(holder);
    let resumed = vab(&["train", "--resume", run_arg], tmp.path());
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
}

/// `vab scan` of a poisoned bundle with the built-in preset: every sample ranked once in
/// `suspicious.csv`, `scan.json` consistent with it (sizes, per-label counts, detection
/// figures from the bundle's flags), a report, the credible part as a bundle with its flags
/// and the suspicious part as a list of indices (a CIFAR folder has no file names). A second
/// scan into the same directory and an export over the input are refused.
#[test]
fn scan_ranks_every_sample_and_exports_the_split() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_cifar10(tmp.path(), 20);
    let bundle = tiny_badnets_bundle(tmp.path(), "b.safetensors", "1");
    let (scan, clean, list) = (tmp.path().join("scan"), tmp.path().join("credible.safetensors"), tmp.path().join("suspicious.txt"));
    let args = ["scan", bundle.to_str().unwrap(), "--out", scan.to_str().unwrap(), "--export-clean", clean.to_str().unwrap(), "--export-list", list.to_str().unwrap()];
    let out = vab(&args, tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));

    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(scan.join("scan.json")).unwrap()).unwrap();
    let (n, suspicious) = (summary["samples"].as_u64().unwrap() as usize, summary["suspicious"].as_u64().unwrap() as usize);
    assert_eq!((n, suspicious + summary["credible"].as_u64().unwrap() as usize), (100, 100), "{summary}");
    let labels = summary["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 10);
    assert_eq!(labels.iter().map(|l| l["suspicious"].as_u64().unwrap() as usize).sum::<usize>(), suspicious);
    assert_eq!(labels.iter().map(|l| l["samples"].as_u64().unwrap()).sum::<u64>(), 100);
    assert!(summary["detection"]["recall"].as_f64().is_some(), "the bundle's flags give detection figures: {summary}");
    assert!(summary["mixture"]["low"]["mean"].as_f64().is_some() && summary["verdict"].as_str().is_some_and(|v| v.contains("low-entropy")), "{summary}");

    let bundle_data = vab_data::Bundle::read(&bundle).unwrap();
    let csv = std::fs::read_to_string(scan.join("suspicious.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("index,file,label,predicted,entropy,suspicious,poisoned"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let mut indices: Vec<usize> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    let entropies: Vec<f64> = rows.iter().map(|r| r[4].parse().unwrap()).collect();
    assert!(entropies.windows(2).all(|w| w[0] <= w[1]), "not most suspicious first");
    for r in &rows {
        let i: usize = r[0].parse().unwrap();
        assert_eq!((r[1], r[2].parse::<u16>().unwrap(), r[6] == "1"), ("", bundle_data.train.labels()[i], bundle_data.train_poisoned[i]), "{r:?}");
    }
    assert_eq!(rows.iter().filter(|r| r[5] == "1").count(), suspicious);
    // Each label's `predicted_as` is the most frequent Victim prediction among its suspicious rows.
    for (c, label) in labels.iter().enumerate() {
        let mut counts = [0usize; 10];
        for r in rows.iter().filter(|r| r[5] == "1" && r[2] == c.to_string()) {
            counts[r[3].parse::<usize>().unwrap()] += 1;
        }
        let most = (0..10).max_by_key(|&p| (counts[p], std::cmp::Reverse(p))).unwrap();
        let expected = (counts.iter().sum::<usize>() > 0).then_some(most as u64);
        assert_eq!(label["predicted_as"]["label"].as_u64(), expected, "label {c}: {counts:?} vs {}", label["predicted_as"]);
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..100).collect::<Vec<_>>());
    assert!(scan.join("report.html").is_file() && scan.join("victim.safetensors").is_file() && scan.join("entropy/refresh-01.png").is_file());

    let credible = vab_data::Bundle::read(&clean).unwrap();
    assert_eq!(credible.train.len(), 100 - suspicious);
    let credible_rows: Vec<usize> = rows.iter().filter(|r| r[5] == "0").map(|r| r[0].parse().unwrap()).collect();
    let poisoned_left = credible_rows.iter().filter(|&&i| bundle_data.train_poisoned[i]).count();
    assert_eq!(credible.train_poisoned.iter().filter(|&&p| p).count(), poisoned_left, "the flags did not follow the credible samples");
    assert_eq!((credible.test.len(), credible.meta.attack.is_some()), (bundle_data.test.len(), true));
    let listed: Vec<usize> = std::fs::read_to_string(&list).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    let expected: Vec<usize> = rows.iter().filter(|r| r[5] == "1").map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(listed, expected);

    assert_clean_error(&vab(&args[..4], tmp.path()), "already holds a scan");
    let b = bundle.to_str().unwrap();
    assert_clean_error(&vab(&["scan", b, "--out", tmp.path().join("again").to_str().unwrap(), "--export-clean", b], tmp.path()), "the output is the input dataset itself");
    let no_vab = tmp.path().join("no-vab.toml");
    std::fs::write(&no_vab, "[model]\narch = \"small\"\n[train]\nepochs = 1\nbatch_size = 8\nlr = 0.1\n[train.optimizer]\nkind = \"adam\"\nweight_decay = 0.0\n[train.schedule]\nkind = \"constant\"\n").unwrap();
    assert_clean_error(&vab(&["scan", b, "--out", tmp.path().join("other").to_str().unwrap(), "--config", no_vab.to_str().unwrap()], tmp.path()), "no [vab] section");
}

/// A scan of an image folder names each sample's file in `suspicious.csv` and in the exported
/// list, and, with no poison flags to score against, reports no detection figures. With the
/// label check, every label's line says how many of its suspicious samples the checker
/// rejected, and the final suspicious set holds only labels found to hold poison.
#[test]
fn scan_of_an_image_folder_names_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("pets");
    for (split, class, i) in ["train", "test"].iter().flat_map(|s| ["cat", "dog"].iter().flat_map(move |c| (0..6).map(move |i| (s, c, i)))) {
        let dir = folder.join(split).join(class);
        std::fs::create_dir_all(&dir).unwrap();
        let shade = if *class == "cat" { 40 } else { 200 } + i as u8;
        image::RgbImage::from_pixel(8, 8, image::Rgb([shade, 255 - shade, i as u8 * 9])).save(dir.join(format!("{i}.png"))).unwrap();
    }
    let (scan, list) = (tmp.path().join("scan"), tmp.path().join("list.txt"));
    let out = vab(&["scan", folder.to_str().unwrap(), "--out", scan.to_str().unwrap(), "--export-list", list.to_str().unwrap(), "--cutoff", "auto", "--refreshes", "1", "--label-check"], tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(scan.join("scan.json")).unwrap()).unwrap();
    assert!(summary["detection"].is_null(), "{summary}");
    assert_eq!((summary["cutoff"]["mode"].as_str(), summary["refreshes"].as_u64()), (Some("auto"), Some(1)));
    let labels = summary["labels"].as_array().unwrap();
    let checked: Vec<&serde_json::Value> = labels.iter().map(|l| &l["label_check"]).collect();
    assert_eq!(checked.iter().map(|c| c["victim_suspicious"].as_u64().unwrap()).sum::<u64>(), summary["victim_suspicious"].as_u64().unwrap(), "{summary}");
    for (label, check) in labels.iter().zip(&checked) {
        assert!(check["rejected"].as_u64().unwrap() <= check["victim_suspicious"].as_u64().unwrap(), "{summary}");
        let kept = if check["holds_poison"].as_bool().unwrap() { check["victim_suspicious"].as_u64() } else { Some(0) };
        assert_eq!(label["suspicious"].as_u64(), kept, "{summary}");
    }
    let csv = std::fs::read_to_string(scan.join("suspicious.csv")).unwrap();
    let files: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').nth(1).unwrap()).collect();
    let mut sorted = files.clone();
    sorted.sort_unstable();
    let expected: Vec<String> = ["cat", "dog"].iter().flat_map(|c| (0..6).map(move |i| format!("train/{c}/{i}.png"))).collect();
    assert_eq!(sorted, expected);
    assert!(csv.lines().skip(1).all(|l| l.ends_with(',')), "poison flags written for data without them:\n{csv}");
    let listed = std::fs::read_to_string(&list).unwrap();
    assert_eq!(listed.lines().count() as u64, summary["suspicious"].as_u64().unwrap());
    assert!(listed.lines().all(|l| expected.iter().any(|e| e == l)), "{listed}");
}

/// The issue's user case: an image folder made from the real CIFAR-10 archive in which 5% of
/// the airplane folder (250 of 5,000 images) is replaced by images of the other classes (28 or
/// 27 from each, moved) carrying a 3×3 white patch, is scanned with the built-in preset; the
/// scan must put at least 90% of those 250 files in its suspicious set, naming them by path.
/// Not met yet (issue #32): at 0.5% of the data the Victim's three warm-up epochs do not learn
/// the trigger, and the scan found 50 of 250, chance level (bench/results/scan-cpu.md). Run it
/// with `cargo test --release -p vab-cli --test cli -- --ignored` (about 4 minutes).
#[test]
#[ignore = "target of #32 not met: the Victim does not learn a 0.5% trigger in its warm-up (bench/results/scan-cpu.md)"]
fn real_cifar10_image_folder_with_a_poisoned_class_is_found_by_a_scan() {
    let Some(archive) = cifar10_archive() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let unpacked = tmp.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let tar = Command::new("tar").args(["-xJf", archive.to_str().unwrap(), "-C", unpacked.to_str().unwrap()]).output().unwrap();
    assert!(tar.status.success(), "{}", text(&tar.stderr));
    let root = std::fs::read_dir(&unpacked).unwrap().map(|e| e.unwrap().path()).find(|p| p.join("train").is_dir()).unwrap_or(unpacked.clone());
    let sorted = |dir: &Path| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files
    };
    let classes = sorted(&root.join("train"));
    let target = classes[0].file_name().unwrap().to_str().unwrap().to_string();
    let mut poison = Vec::new();
    for (c, class_dir) in classes.iter().enumerate() {
        let name = class_dir.file_name().unwrap().to_str().unwrap().to_string();
        let files = sorted(class_dir);
        // Airplane gives up 250 images; classes 1-7 lend 28 each and 8-9 lend 27, triggered.
        let lent = match c {
            0 => 250,
            1..=7 => 28,
            _ => 27,
        };
        for file in &files[files.len() - lent..] {
            if c == 0 {
                std::fs::remove_file(file).unwrap();
                continue;
            }
            let mut image = image::open(file).unwrap().to_rgb8();
            let (w, h) = image.dimensions();
            for (x, y) in (w - 4..w - 1).flat_map(|x| (h - 4..h - 1).map(move |y| (x, y))) {
                image.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
            let relative = format!("train/{target}/poison-{name}-{}.png", file.file_stem().unwrap().to_str().unwrap());
            image.save(root.join(&relative)).unwrap();
            std::fs::remove_file(file).unwrap();
            poison.push(relative);
        }
    }
    let folder = root;
    assert_eq!(poison.len(), 250);
    let scan = tmp.path().join("scan");
    let out = vab(&["scan", folder.to_str().unwrap(), "--out", scan.to_str().unwrap()], tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = std::fs::read_to_string(scan.join("suspicious.csv")).unwrap();
    let suspicious: std::collections::HashSet<&str> = csv.lines().skip(1).map(|l| l.split(',').collect::<Vec<_>>()).filter(|f| f[5] == "1").map(|f| f[1]).collect();
    let found = poison.iter().filter(|p| suspicious.contains(p.as_str())).count();
    eprintln!("scan of the poisoned image folder: {found} of 250 poisoned files among {} suspicious of 50,000", suspicious.len());
    assert!(found >= 225, "recall {found}/250 < 90%");
}
