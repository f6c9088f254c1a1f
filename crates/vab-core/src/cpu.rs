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

#[cfg(test)]
mod tests {
    use super::*;

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
