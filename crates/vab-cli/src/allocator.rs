//! The binary's allocator: mimalloc, told to keep freed memory for reuse. A training step
//! allocates and frees buffers of tens of megabytes (activations, im2col matrices, gradients);
//! glibc's malloc and mimalloc's defaults hand them back to the OS, and the next step pays
//! for page faults and zeroing again (about a fifth of the small network's step on the Intel
//! Xeon, bench/results/step-intel.md). The cost: the process keeps its peak memory until it
//! exits.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mimalloc.h` (the version libmimalloc-sys builds
/// by default): how long freed memory waits before it goes back to the OS; -1 is never.
/// libmimalloc-sys 0.1 does not name it.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory stays with the process for reuse instead of going back to the OS.
pub fn keep_freed_memory() {
    // SAFETY: setting an option is allowed at any time; it only changes when memory is purged.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Option 15 is the purge delay: mimalloc v3's default for it is 1,000 ms, and it reads -1
    /// once set. A mimalloc with another option layout fails here instead of silently setting
    /// something else.
    #[test]
    fn option_15_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            eprintln!("skipped: MIMALLOC_PURGE_DELAY is set in the environment");
            return;
        }
        // SAFETY: reading and setting an option, as in `keep_freed_memory`.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, 1000);
        keep_freed_memory();
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, -1);
    }
}
