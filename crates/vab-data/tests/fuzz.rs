//! Mutation fuzzing of every dataset reader on stable Rust: valid inputs (IDX, CIFAR binary, a
//! tar of PNGs, a bundle) get bit flips, truncations, splices, inserted bytes and huge counts
//! written over their headers, and each reader must return `Ok` or `Err`: never panic, and never
//! allocate more than [`allowance`] for its input in one piece (no header can make vab ask for
//! gigabytes).
//!
//! Seeded; `VAB_FUZZ_CASES` cases per reader (default 300, a few seconds in all in release). The
//! longer runs recorded in the issue notes set it to 1,000,000.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use vab_data::{cifar, folder, idx, Bundle, Dataset, ImageSet, ImageShape, NoProgress};

/// Records the largest single allocation of the current thread while armed.
struct Watch;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note(size: usize) {
    // `try_with`: the thread-locals may be gone while a thread shuts down.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
        }
    });
}

#[global_allocator]
static WATCH: Watch = Watch;

/// The most one allocation may take for an input of `len` bytes: a fixed 8 MiB for buffers
/// (decompression windows, image decoders, JSON) plus 64 times the input, which covers a PNG or
/// gzip stream that legitimately expands.
fn allowance(len: usize) -> usize {
    (8 << 20) + 64 * len
}

/// xorshift64*: small and seeded; the cases must not depend on the rand crate's versions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random mutation of `input`.
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    match rng.below(6) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(out.len());
                out[at] ^= 1 << rng.below(8);
            }
        }
        1 => out.truncate(rng.below(out.len())),
        2 => {
            // Splice: copy a chunk of the input over another place.
            let (from, to, len) = (rng.below(input.len()), rng.below(out.len()), 1 + rng.below(64));
            let len = len.min(input.len() - from).min(out.len() - to);
            out[to..to + len].copy_from_slice(&input[from..from + len]);
        }
        3 => {
            let at = rng.below(out.len() + 1);
            let extra: Vec<u8> = (0..1 + rng.below(32)).map(|_| rng.next() as u8).collect();
            out.splice(at..at, extra);
        }
        _ => {
            // A huge or random count over a 4-byte field near the start (headers live there).
            let at = 4 * rng.below(out.len().min(64) / 4);
            let value: u32 = if rng.below(2) == 0 { u32::MAX - rng.below(4) as u32 } else { rng.next() as u32 };
            if at + 4 <= out.len() {
                out[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
        }
    }
    out
}

fn cases() -> usize {
    std::env::var("VAB_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

/// Runs `read` on `cases()` mutations of `input` (`write` puts the bytes where `read` looks);
/// asserts no panic and no oversized allocation, and returns how many were accepted.
fn fuzz(name: &str, seed: u64, input: &[u8], write: &dyn Fn(&[u8]), read: &dyn Fn() -> bool) -> usize {
    let mut rng = Rng(seed);
    let (mut accepted, mut panics) = (0, Vec::new());
    for case in 0..cases() {
        let bytes = mutate(input, &mut rng);
        write(&bytes);
        LARGEST.with(|l| l.set(0));
        ARMED.with(|a| a.set(true));
        let outcome = catch_unwind(AssertUnwindSafe(read));
        ARMED.with(|a| a.set(false));
        let largest = LARGEST.with(Cell::get);
        assert!(largest <= allowance(bytes.len()), "{name}, case {case}: one allocation of {largest} bytes for a {}-byte input", bytes.len());
        match outcome {
            Ok(ok) => accepted += ok as usize,
            Err(_) => panics.push(case),
        }
    }
    assert!(panics.is_empty(), "{name}: {} panics, first at case {} (seed {seed})", panics.len(), panics[0]);
    eprintln!("{name}: {} cases, {accepted} accepted, 0 panics", cases());
    accepted
}

fn quiet_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}

fn idx_file(dtype_dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dtype_dims.len() as u8];
    for d in dtype_dims {
        out.extend(d.to_be_bytes());
    }
    out.extend(payload);
    out
}

#[test]
fn idx_reader_survives_mutations() {
    quiet_panics();
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = (idx_file(&[3, 2, 2], &[7; 12]), idx_file(&[3], &[0, 1, 2]));
    for (name, bytes) in [("train-labels-idx1-ubyte", &labels), ("t10k-images-idx3-ubyte", &images), ("t10k-labels-idx1-ubyte", &labels)] {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let target = dir.path().join("train-images-idx3-ubyte");
    let write = |b: &[u8]| std::fs::write(&target, b).unwrap();
    let accepted = fuzz("IDX images", 1, &images, &write, &|| idx::load(dir.path()).is_ok());
    let target = dir.path().join("train-labels-idx1-ubyte");
    std::fs::write(dir.path().join("train-images-idx3-ubyte"), &images).unwrap();
    let write = |b: &[u8]| std::fs::write(&target, b).unwrap();
    fuzz("IDX labels", 2, &labels, &write, &|| idx::load(dir.path()).is_ok());
    assert!(accepted < cases(), "every mutation was accepted: the reader checks nothing");
}

#[test]
fn gzip_idx_reader_survives_mutations() {
    quiet_panics();
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = (idx_file(&[3, 2, 2], &[7; 12]), idx_file(&[3], &[0, 1, 2]));
    let gz = |bytes: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    for (name, bytes) in [("train-labels-idx1-ubyte", &labels), ("t10k-images-idx3-ubyte", &images), ("t10k-labels-idx1-ubyte", &labels)] {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let target = dir.path().join("train-images-idx3-ubyte.gz");
    let write = |b: &[u8]| std::fs::write(&target, b).unwrap();
    fuzz("IDX images, gzip", 3, &gz(&images), &write, &|| idx::load(dir.path()).is_ok());
}

#[test]
fn cifar_reader_survives_mutations() {
    quiet_panics();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&bin).unwrap();
    let batch: Vec<u8> = (0..3).flat_map(|i| std::iter::once(i as u8).chain(std::iter::repeat_n(9, 3072))).collect();
    for i in 2..=5 {
        std::fs::write(bin.join(format!("data_batch_{i}.bin")), &batch).unwrap();
    }
    std::fs::write(bin.join("test_batch.bin"), &batch).unwrap();
    let meta = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    let target = bin.join("data_batch_1.bin");
    let write = |b: &[u8]| std::fs::write(&target, b).unwrap();
    let read = || cifar::load(cifar::CifarKind::Cifar10, &bin).is_ok();
    std::fs::write(bin.join("batches.meta.txt"), meta).unwrap();
    fuzz("CIFAR batch", 4, &batch, &write, &read);
    std::fs::write(&target, &batch).unwrap();
    let target = bin.join("batches.meta.txt");
    let write = |b: &[u8]| std::fs::write(&target, b).unwrap();
    fuzz("CIFAR class names", 5, meta, &write, &read);
}

/// A tar of a train/ and test/ folder with two 2×2 PNGs each.
fn png_tar() -> Vec<u8> {
    let png = |v: u8| {
        let mut out = Vec::new();
        image::RgbImage::from_pixel(2, 2, image::Rgb([v, v, v])).write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    };
    let mut builder = tar::Builder::new(Vec::new());
    for (path, v) in [("train/cat/a.png", 10), ("train/dog/b.png", 200), ("test/cat/c.png", 20), ("test/dog/d.png", 190)] {
        let data = png(v);
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, &data[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn image_archive_reader_survives_mutations() {
    quiet_panics();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("data.tar");
    let write = |b: &[u8]| std::fs::write(&target, b).unwrap();
    let accepted = fuzz("image tar", 6, &png_tar(), &write, &|| folder::load(&target, None, &NoProgress).is_ok());
    assert!(accepted > 0, "no mutation was accepted: the valid archive itself may not load");
}

#[test]
fn bundle_reader_survives_mutations() {
    quiet_panics();
    let shape = ImageShape { channels: 3, height: 2, width: 2 };
    let set = |n: usize| ImageSet::new(shape, vec![5; n * shape.len()], (0..n).map(|i| (i % 2) as u16).collect()).unwrap();
    let bundle = Bundle::clean(Dataset::new(vec!["a".into(), "b".into()], set(4), set(2)).unwrap(), "fuzz");
    let bytes = bundle.to_bytes().unwrap();
    let current = std::cell::RefCell::new(Vec::new());
    let write = |b: &[u8]| *current.borrow_mut() = b.to_vec();
    fuzz("bundle", 7, &bytes, &write, &|| Bundle::from_bytes(Path::new("fuzz.safetensors"), &current.borrow()).is_ok());
}

#[test]
fn the_harness_sees_panics_and_large_allocations() {
    quiet_panics();
    let input = [1u8; 16];
    let write = |_: &[u8]| {};
    let panicking = catch_unwind(|| fuzz("always panics", 8, &input, &write, &|| panic!("boom")));
    assert!(panicking.is_err(), "a panicking reader must fail the fuzz run");
    let greedy = catch_unwind(|| fuzz("allocates 1 GiB", 9, &input, &write, &|| std::hint::black_box(Vec::<u8>::with_capacity(1 << 30)).capacity() > 0));
    assert!(greedy.is_err(), "a reader that allocates 1 GiB for 16 bytes must fail the fuzz run");
}
