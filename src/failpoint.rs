//! Failpoints for the crate's own tests: named steps where a test process stops
//! forever, so that the test can SIGKILL it at exactly that step. Nothing without the
//! `test-hooks` feature.

#[cfg(feature = "test-hooks")]
use std::time::Duration;

/// The environment variable naming the failpoint a test process stops at.
#[cfg(feature = "test-hooks")]
pub const FAILPOINT_ENV: &str = "SHMSYNC_TEST_FAILPOINT";
/// The environment variable naming the file a process writes when it reaches its
/// failpoint.
#[cfg(feature = "test-hooks")]
pub const FAILPOINT_MARKER_ENV: &str = "SHMSYNC_TEST_FAILPOINT_MARKER";

/// Test hook: when [`FAILPOINT_ENV`] names this point, the process stops here forever
/// (the test then SIGKILLs it), to simulate dying at exactly this step. Compiled only
/// with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
#[inline]
pub(crate) fn failpoint(point: &str) {
    // Read once: some points are on hot paths (a write unlock), and the environment is
    // fixed for the test process's life.
    static POINT: std::sync::OnceLock<Option<std::ffi::OsString>> = std::sync::OnceLock::new();
    let named = POINT.get_or_init(|| std::env::var_os(FAILPOINT_ENV));
    if named.as_deref().is_some_and(|v| v == point) {
        if let Some(path) = std::env::var_os(FAILPOINT_MARKER_ENV) {
            let _ = std::fs::write(std::path::Path::new(&path), point);
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Without the `test-hooks` feature a failpoint is nothing.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn failpoint(_point: &str) {}
