//! The calls the fuzz targets make, shared with the seeded mutation test
//! (`tests/mutation.rs`), which includes the same file: see `exercise.rs` there.
#![allow(clippy::disallowed_types)]

#[path = "../../tests/mutation/exercise.rs"]
pub mod exercise;

use std::cell::RefCell;

pub use exercise::Harness;

thread_local! {
    static HARNESS: RefCell<Harness> = RefCell::new({
        let mut h = Harness::new();
        // SHMSYNC_FUZZ_KNOWN_ISSUES=1 also makes the calls that abort or block today
        // (see `exercise`), to reproduce them.
        h.known_issues = std::env::var_os("SHMSYNC_FUZZ_KNOWN_ISSUES").is_some_and(|v| v == "1");
        h
    });
}

/// Runs `f` with the process's harness (one per fuzzing process: its mappings are
/// reused across inputs).
pub fn with_harness(f: impl FnOnce(&mut Harness)) {
    HARNESS.with(|h| f(&mut h.borrow_mut()));
}
