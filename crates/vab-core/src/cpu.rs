//! What CPU computes: its model name and the SIMD level the matrix products run at, recorded
//! beside every speed figure because speed differs between CPUs (bench/results/).

/// The CPU's model name from /proc/cpuinfo (Linux); `None` elsewhere.
pub fn model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// The instruction set of the matrix-product micro-kernels on this CPU, detected at run time
/// as `gemm` detects it: "avx512f", "avx2+fma", "neon" or "scalar".
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        return "neon";
    }
    "scalar"
}

/// Work whose loops the compiler vectorises, for [`vectorized`]. `run` must be
/// `#[inline(always)]`, and so must every function it calls, to be compiled with the wider
/// vectors (a closure cannot be forced inline, hence a trait).
pub trait Vectorized {
    type Output;
    fn run(self) -> Self::Output;
}

/// Runs `work` compiled for the widest vector instructions this CPU has (AVX-512, else AVX2,
/// chosen at run time; the build itself targets the baseline x86-64, whose vectors hold 4
/// floats). Floating-point operations are never fused (Rust does not contract a·b + c), so
/// the results are the same bit for bit at every width.
pub fn vectorized<V: Vectorized>(work: V) -> V::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { with_avx512(work) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { with_avx2(work) };
        }
    }
    work.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2")]
unsafe fn with_avx512<V: Vectorized>(work: V) -> V::Output {
    work.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn with_avx2<V: Vectorized>(work: V) -> V::Output {
    work.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sum of squares, as `Vectorized` work.
    struct SumOfSquares<'a>(&'a [f32]);

    impl Vectorized for SumOfSquares<'_> {
        type Output = f32;

        #[inline(always)]
        fn run(self) -> f32 {
            self.0.iter().map(|x| x * x).sum()
        }
    }

    /// `vectorized` runs the work and returns its result, the same as running it directly.
    #[test]
    fn vectorized_runs_the_work() {
        let values: Vec<f32> = (0..1000).map(|i| i as f32 * 0.25).collect();
        let direct = SumOfSquares(&values).run();
        assert_eq!(vectorized(SumOfSquares(&values)), direct);
        assert_eq!(direct, (0..1000).map(|i| (i as f32 * 0.25).powi(2)).sum::<f32>());
    }

    /// On Linux the model is read; the SIMD level agrees with the CPU flags /proc/cpuinfo lists.
    #[test]
    fn model_and_simd_level_match_proc_cpuinfo() {
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
            eprintln!("skipped: no /proc/cpuinfo");
            return;
        };
        let model = model().expect("model name in /proc/cpuinfo");
        assert!(!model.is_empty() && info.contains(&model));
        let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
        let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
        let want = if has("avx512f") { "avx512f" } else if has("fma") { "avx2+fma" } else { simd_level() };
        if cfg!(target_arch = "x86_64") {
            assert_eq!(simd_level(), want);
        }
    }
}
