//! Internals and hooks for shmsync's own test suites, compiled only with the
//! `test-hooks` feature. **Not a stable API**: nothing here follows semver, and a build
//! that ships must not enable the feature (a failpoint stops the process forever when
//! its environment variable names it).
//!
//! - the futex layer ([`wait`], [`wake`], [`Deadline`], [`WaitOutcome`]) and the object
//!   header's constants, for the layout and futex tests;
//! - process identity helpers ([`current_pid`], [`current_tid`], [`thread_liveness`],
//!   [`packed_liveness`], ...);
//! - acting as another process ([`LeasedSemaphore::acquire_as`](crate::LeasedSemaphore::acquire_as),
//!   [`LeasedSemaphore::reclaim_dead_with`](crate::LeasedSemaphore::reclaim_dead_with)),
//!   a writer cut short ([`SeqLock::__test_write_partial`](crate::SeqLock::__test_write_partial)),
//!   and the failpoints: a process whose [`FAILPOINT_ENV`] names a point
//!   (`region-init`, `object-init`, `rwlock-waiting-reader`, `rwlock-released-writer`) writes the file named by [`FAILPOINT_MARKER_ENV`]
//!   and stops there forever, so a test can kill it at that point.
//!
//! ```
//! use shmsync::test_hooks::{current_pid, thread_liveness};
//! assert_eq!(current_pid(), std::process::id());
//! let _ = thread_liveness(current_pid());
//! ```

#[cfg(not(shmsync_loom))]
pub use crate::failpoint::{FAILPOINT_ENV, FAILPOINT_MARKER_ENV};
#[cfg(not(shmsync_loom))]
pub use crate::futex::wake_all;
pub use crate::futex::{Deadline, WaitOutcome};
pub use crate::header::{ObjectHeader, STATE_READY};
pub use crate::process::{
    current_pid, current_pid_namespace, current_tid, packed_liveness, thread_group_of,
    thread_liveness,
};
#[cfg(not(shmsync_loom))]
pub use crate::region::data_start_for;
/// The shared futex (under `--cfg shmsync_loom`, the loom model of it).
pub use crate::sync::futex_impl::{wait, wake};
