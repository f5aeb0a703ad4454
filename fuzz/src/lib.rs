//! The calls the fuzz targets make, shared with the seeded mutation test
//! (`tests/mutation.rs`), which includes the same file: see `exercise.rs` there.
#![allow(clippy::disallowed_types)]

#[path = "../../tests/mutation/exercise.rs"]
pub mod exercise;

use std::cell::RefCell;

pub use exercise::Harness;

thread_local! {
    static HARNESS: RefCell<Harness> = RefCell::new(Harness::new());
}

/// Runs `f` with the process's harness (one per fuzzing process: its mappings are
/// reused across inputs).
pub fn with_harness(f: impl FnOnce(&mut Harness)) {
    HARNESS.with(|h| f(&mut h.borrow_mut()));
}
