#![doc = include_str!("../README.md")]
//!
//! # API overview
//!
//! - [`Segment`]: one owned `MAP_SHARED` mapping — POSIX (`shm_open`), SysV (`shmget`),
//!   `memfd` (sealed, passed over a Unix socket), a file, or anonymous (inherited across
//!   `fork`).
//! - [`Region`]: a segment with a table of named objects and race-free, crash-safe first
//!   initialization: `region.get_or_init::<RobustMutex<Counter>>("counter", init)`.
//! - [`RobustMutex<T>`] (and the data-less [`RawRobustMutex`]): a robust, process-shared,
//!   error-checking pthread mutex. If the holder dies, the next locker gets
//!   [`LockError::OwnerDied`] *holding the lock*, repairs `T`, and calls
//!   [`OwnerDiedGuard::make_consistent`].
//! - [`Condvar`]: a futex-sequence condition variable for [`RobustMutex`]; a waiter that
//!   dies consumes nothing.
//! - [`Semaphore`]: a futex counting semaphore with adaptive spinning; [`LeasedSemaphore`]
//!   records who holds permits so `reclaim_dead()` returns those of dead processes.
//! - [`SeqLock<T>`]: readers never write shared memory and never see a torn value, even
//!   when a writer is killed mid-write (two copies, robust writer lock).
//! - [`RobustRwLock<T>`]: a reader-writer lock whose readers register in per-thread
//!   slots (reads scale with cores); a writer reclaims the slots of dead readers, and a
//!   dead writer's data is repaired by the next writer while readers are refused.
//! - [`inspect`]: the operator and tooling surface — region and object reports,
//!   recovery, finding and verifying regions ([`inspect::probe`]), the table entries
//!   and format constants: what the `shmsync` tool prints and does.
//!
//! Every blocking operation comes as `op()`, `try_op()`, `op_timeout(Duration)` and
//! `op_deadline(Instant)`; `try_*` returns `Err` with a `WouldBlock` variant. Each
//! primitive's error type converts into [`Error`] (with `From`, except [`LockError`],
//! which converts through [`LockError::into_repair`] or [`LockError::abandon`] so an
//! owner-died guard is never dropped by accident).
//!
//! ## Example: a counter shared by two processes, one of which dies holding the lock
//!
//! ```
//! use shmsync::{LockError, Region, RobustMutex, Segment};
//!
//! #[derive(Clone, Copy, Default, shmsync::bytemuck::AnyBitPattern)]
//! #[bytemuck(crate = "shmsync::bytemuck")]
//! #[repr(C)]
//! struct Counter { value: u64, writing: u64 }
//! // The name other programs sharing the object declare for their mirror of Counter.
//! shmsync::shared_type!(Counter = "example.Counter", fields: value, writing);
//!
//! // An anonymous shared mapping is inherited by fork children; named backings
//! // (Segment::posix_create, Region::open_or_create, ...) work between unrelated processes.
//! let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
//! let counter = region.get_or_init::<RobustMutex<Counter>>("counter", Counter::default())?;
//!
//! // SAFETY of the child: it only locks, writes plain data and exits (async-signal-safe).
//! let pid = unsafe { libc::fork() };
//! if pid == 0 {
//!     if let Ok(mut c) = counter.lock() {
//!         c.writing = 1; // start an update...
//!         unsafe { libc::_exit(0) }; // ...and die holding the lock
//!     }
//!     unsafe { libc::_exit(1) };
//! }
//! unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
//!
//! let guard = match counter.lock() {
//!     Ok(guard) => guard,
//!     Err(LockError::OwnerDied(mut repair)) => {
//!         // The lock is held; fix the half-done update, then mark it consistent.
//!         repair.writing = 0;
//!         repair.make_consistent()
//!     }
//!     Err(e) => panic!("{e}"),
//! };
//! assert_eq!(guard.writing, 0);
//! # Ok::<(), shmsync::Error>(())
//! ```
//!
//! ## Rules every shared type follows
//!
//! `#[repr(C)]`, fixed-width fields, no pointers (references between objects are
//! offsets), a header with magic, kind and a **format word** (crate format version,
//! arch, pointer width, libc, `size_of::<pthread_mutex_t>()`) so an incompatible process
//! gets [`Error::FormatMismatch`] instead of undefined behaviour — except the
//! `Semaphore` and the `Condvar`, for which every bit pattern is a valid state (all zero
//! included), so a header could refuse nothing; a region's table records their kind and
//! type, and the region's own header carries the format word — and shared data bounded
//! by `bytemuck::AnyBitPattern`: a process may die halfway through writing it, so every
//! bit pattern must be a valid value and no destructor may be owed. All waiting uses
//! **shared** futexes with absolute `CLOCK_MONOTONIC` deadlines.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(unreachable_pub)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
// Under loom the pthread, /proc and mmap paths are compiled out, which leaves helpers unused.
#![cfg_attr(shmsync_loom, allow(dead_code, unused_imports, unreachable_pub))]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "shmsync supports Linux only: it relies on shared futexes, robust pthread mutexes and /proc"
);

mod condvar;
mod error;
mod failpoint;
#[cfg_attr(not(feature = "test-hooks"), allow(unreachable_pub))]
mod futex;
#[cfg_attr(not(feature = "test-hooks"), allow(unreachable_pub))]
mod header;
#[cfg(not(shmsync_loom))]
pub mod inspect;
mod kind;
mod leased;
mod mutex;
#[cfg_attr(not(feature = "test-hooks"), allow(unreachable_pub))]
mod process;
mod raw_mutex;
#[cfg(not(shmsync_loom))]
#[cfg_attr(not(feature = "test-hooks"), allow(unreachable_pub))]
mod region;
mod rwlock;
mod segment;
mod semaphore;
mod seqlock;
#[cfg(not(shmsync_loom))]
mod shared;
mod spin;
mod sync;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;

/// The `bytemuck` this crate is built with, so that `#[derive(shmsync::bytemuck::AnyBitPattern)]`
/// with `#[bytemuck(crate = "shmsync::bytemuck")]` works without a `bytemuck` dependency of
/// your own.
pub use bytemuck;

pub use condvar::{Condvar, WaitTimeoutResult};
pub use error::{Error, Result};
pub use kind::Kind;
pub use leased::{
    LeaseInfo, LeasedSemaphore, Permit, Reclaimed, ReleaseError, DEFAULT_SLOTS, RELEASE_WAIT,
};
pub use mutex::{LockError, MutexGuard, OwnerDiedGuard, RobustMutex};
pub use process::{Liveness, ProcessIdentity};
pub use raw_mutex::{Acquired, MutexState, MutexWord, RawLockError, RawRobustMutex};
#[cfg(not(shmsync_loom))]
pub use region::{Location, Region, RegionOptions};
pub use rwlock::{
    OwnerDiedWriteGuard, ReadGuard, RobustRwLock, RwLockError, WriteError, WriteGuard,
    DEFAULT_READER_SLOTS, READER_CHECK,
};
pub use segment::{ftok, Backing, Segment};
pub use semaphore::{SemError, Semaphore};
pub use seqlock::{SeqLock, SeqLockError, SeqLockState, WriteOutcome};
#[cfg(not(shmsync_loom))]
pub use shared::{Shared, SharedType, TypeIdentity};
