//! # shmsync
//!
//! Process-shared synchronization primitives that live *inside* a shared-memory
//! segment — a robust mutex with a condition variable, a futex semaphore and a seqlock —
//! with position-independent `#[repr(C)]` layouts, usable from any process that maps the
//! segment at any address, and recoverable when a process dies holding one.
//!
//! Linux only (glibc first; musl builds). See the README for the tour.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "shmsync supports Linux only: it relies on shared futexes, robust pthread mutexes and /proc"
);

pub mod error;
pub mod futex;
pub mod header;
pub mod leased;
pub mod process;
pub mod raw_mutex;
pub mod segment;
pub mod semaphore;
pub(crate) mod sync;

pub use error::{Error, Result};
pub use futex::Deadline;
pub use header::Kind;
pub use leased::{LeaseInfo, LeasedSemaphore, Permit, Reclaimed};
pub use process::{Liveness, ProcessIdentity};
pub use raw_mutex::{Acquired, MutexState, RawLockError, RawRobustMutex};
pub use segment::Segment;
pub use semaphore::{SemError, Semaphore};
