//! Wall time of vab's own kernels (convolution, batch norm, max-pool), per operation and
//! geometry, for `vab bench step --profile`: where a training step's time goes. Off unless
//! [`enable`]d; when off, a kernel pays one relaxed atomic load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TIMES: Mutex<BTreeMap<String, (usize, f64)>> = Mutex::new(BTreeMap::new());

/// Held by tests that enable the profile, which is process-wide.
#[cfg(test)]
pub(crate) static TEST_LOCK: Mutex<()> = Mutex::new(());

/// Total time of one kind of operation.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OpTime {
    /// What and which geometry, e.g. "conv 3x3 s1 64→64 at 32x32, forward".
    pub op: String,
    pub calls: usize,
    pub seconds: f64,
}

/// Starts recording (and forgets what was recorded before).
pub fn enable() {
    TIMES.lock().expect("profile lock").clear();
    ENABLED.store(true, Ordering::Relaxed);
}

/// Stops recording and returns the totals, largest first.
pub fn take() -> Vec<OpTime> {
    ENABLED.store(false, Ordering::Relaxed);
    let times = std::mem::take(&mut *TIMES.lock().expect("profile lock"));
    let mut ops: Vec<OpTime> = times.into_iter().map(|(op, (calls, seconds))| OpTime { op, calls, seconds }).collect();
    ops.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    ops
}

/// Runs `f`, adding its wall time to the operation `op()` names when recording.
pub(crate) fn timed<T>(op: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let start = Instant::now();
    let result = f();
    let seconds = start.elapsed().as_secs_f64();
    let mut times = TIMES.lock().expect("profile lock");
    let entry = times.entry(op()).or_default();
    entry.0 += 1;
    entry.1 += seconds;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls are counted and timed per name only while enabled; `take` sorts by time.
    #[test]
    fn records_only_while_enabled() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        timed(|| "before".into(), || ());
        enable();
        timed(|| "short".into(), || ());
        for _ in 0..2 {
            timed(|| "long".into(), || std::thread::sleep(std::time::Duration::from_millis(5)));
        }
        let ops = take();
        timed(|| "after".into(), || ());
        // Other tests' kernels may run meanwhile and be recorded too: look at these names only.
        let ours: Vec<_> = ops.iter().filter(|o| ["before", "short", "long", "after"].contains(&o.op.as_str())).map(|o| (o.op.as_str(), o.calls)).collect();
        assert_eq!(ours, [("long", 2), ("short", 1)]);
        assert!(ops.iter().any(|o| o.op == "long" && o.seconds >= 0.01));
        assert!(!take().iter().any(|o| o.op == "after"));
    }
}
