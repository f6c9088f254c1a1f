//! End-to-end runs of the `vab` binary on tiny generated data and, when present, real data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vab(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vab")).args(args).env("VAB_CACHE_DIR", cache).output().expect("run vab")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a clean failure: non-zero exit, one `error:` line naming `needle`, no panic.
fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains(needle), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
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

#[test]
fn real_cifar10_archive_loads_with_expected_counts_and_cache() {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join(CIFAR10_JPG);
    if !archive.is_file() {
        eprintln!("skipping: {} is absent", archive.display());
        return;
    }
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
