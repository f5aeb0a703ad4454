//! [`RawRobustMutex`]: a data-less robust, process-shared, error-checking pthread mutex
//! with a header, for crates that embed a lock in their own layout. The seqlock's writer
//! lock and the lease table's lock are this type; [`crate::RobustMutex`] wraps it with
//! data and guards.
//!
//! Robustness is glibc's: every robust mutex a thread holds is on that thread's robust
//! list (registered by glibc with `set_robust_list`; this crate never calls it), and
//! when the thread dies the kernel walks the list, marks each mutex
//! `FUTEX_OWNER_DIED` (TID bits cleared) and wakes one waiter. The next locker gets
//! `EOWNERDEAD`, surfaced here as [`Acquired::OwnerDied`].
//!
//! Under `--cfg shmsync_loom` the pthread mutex is replaced by a small futex lock on the
//! loom futex model (no pthread code can run under loom), so protocols built on this
//! lock (seqlock writers, lease table) can be model-checked; `abandon` simulates an
//! owner's death.
//!
//! The implementation is chosen once, here: `pthread.rs` (glibc's robust mutex) in
//! every real build, `loom.rs` under `--cfg shmsync_loom`. This file holds what both
//! share: the result types, the struct, and the methods written over the backend's.

use core::fmt;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::futex::Deadline;
use crate::header::ObjectHeader;
use crate::process::{self, Liveness};

#[cfg(shmsync_loom)]
mod loom;
#[cfg(not(shmsync_loom))]
mod pthread;
#[cfg(shmsync_loom)]
use loom as imp;
#[cfg(not(shmsync_loom))]
use pthread as imp;

/// How a lock was acquired. Either way the caller now holds the lock.
///
/// ```
/// use shmsync::{Acquired, RawRobustMutex, Segment};
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: fresh, private, page-aligned memory that outlives `m`.
/// let m = unsafe { RawRobustMutex::init_at(seg.as_ptr().cast())? };
/// match m.lock()? {
///     Acquired::Clean => {}
///     // SAFETY: held by this thread (just acquired).
///     Acquired::OwnerDied => unsafe { m.make_consistent()? }, // after repairing
/// }
/// // SAFETY: held by this thread; nothing borrowed from the lock outlives it.
/// unsafe { m.unlock()? };
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "an OwnerDied acquisition must be repaired and made consistent"]
pub enum Acquired {
    /// The previous owner unlocked normally.
    Clean,
    /// The previous owner died holding the lock: the protected state may be half
    /// updated. Repair it, then call [`RawRobustMutex::make_consistent`]; unlocking
    /// without that makes the mutex permanently not recoverable.
    OwnerDied,
}

/// Why a lock was not acquired (or an unlock failed). The caller does not hold the
/// lock — for an unlock: nothing was released. Converts into [`Error`] with `From`.
///
/// ```
/// use shmsync::{Acquired, RawLockError, RawRobustMutex, Segment};
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: a fresh, private, page-aligned mapping that outlives `m`.
/// let m = unsafe { RawRobustMutex::init_at(seg.as_ptr().cast())? };
/// assert_eq!(m.lock(), Ok(Acquired::Clean));
/// assert_eq!(m.lock(), Err(RawLockError::Deadlock));
/// let e: shmsync::Error = RawLockError::TimedOut.into();
/// assert!(matches!(e, shmsync::Error::TimedOut(_)));
/// // SAFETY: held by this thread (locked above); no data borrow outlives it.
/// unsafe { m.unlock() }?;
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RawLockError {
    /// `try_lock`: another thread holds it. Retry later or use a blocking form.
    WouldBlock,
    /// The deadline passed first; the holder is alive or of unknown liveness. Retry, or
    /// report the holder ([`state`](RawRobustMutex::state)).
    TimedOut,
    /// The calling thread already holds it (error-checking mutex): a caller bug.
    Deadlock,
    /// An owner died and its successor unlocked without `make_consistent`: the mutex is
    /// unusable until [`reinit`](RawRobustMutex::reinit) under exclusive access.
    NotRecoverable,
    /// Any other error number from pthread; from `unlock`, `EPERM`: the calling thread
    /// does not hold the lock (a caller bug, or a lock inherited across `fork`).
    Os(i32),
    /// A word of glibc's `pthread_mutex_t` that glibc acts on holds a value that neither
    /// this build's initialization nor glibc's own use leaves there (corrupt or hostile
    /// shared memory): the kind word differs from the one init wrote, or the lock word
    /// has waiters but no owner. glibc was not called again: with such a word it may
    /// abort the process or wait forever.
    Corrupt {
        /// Which word.
        word: MutexWord,
        /// The value found.
        found: u32,
    },
}

/// Which word of glibc's `pthread_mutex_t` a [`RawLockError::Corrupt`] is about. (A
/// one-byte tag, not a string, so lock results stay two words and return in registers
/// on the uncontended path.)
///
/// ```
/// use shmsync::{MutexWord, RawLockError};
///
/// let e = RawLockError::Corrupt { word: MutexWord::Kind, found: 7 };
/// assert!(e.to_string().contains("kind"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MutexWord {
    /// `__kind`: not the kind this build's initialization writes.
    Kind,
    /// `__lock`: the waiters bit without an owner.
    Lock,
}

impl fmt::Display for MutexWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MutexWord::Kind => "glibc kind word",
            MutexWord::Lock => "glibc lock word (waiters but no owner)",
        })
    }
}

impl RawLockError {
    /// This error as the crate's [`Error`], naming `what` was being locked (e.g.
    /// `"lease table lock"`): [`Error::TimedOut`], [`Error::WouldBlock`],
    /// [`Error::Corrupt`], or [`Error::Os`] with the pthread error number (`EDEADLK`,
    /// `ENOTRECOVERABLE`, ...).
    #[cold]
    pub(crate) fn into_error(self, what: &'static str) -> Error {
        let errno = match self {
            RawLockError::TimedOut => return Error::TimedOut(what),
            RawLockError::WouldBlock => return Error::WouldBlock(what),
            RawLockError::Corrupt { .. } => return Error::Corrupt(format!("{what}: {self}")),
            RawLockError::Deadlock => libc::EDEADLK,
            RawLockError::NotRecoverable => libc::ENOTRECOVERABLE,
            RawLockError::Os(e) => e,
        };
        Error::from_errno("pthread_mutex_lock", what, errno)
    }
}

impl From<RawLockError> for Error {
    /// [`RawLockError::Corrupt`] becomes [`Error::Corrupt`], `TimedOut`
    /// [`Error::TimedOut`], `WouldBlock` [`Error::WouldBlock`], every other variant
    /// [`Error::Os`] with its error number.
    #[cold]
    fn from(e: RawLockError) -> Error {
        e.into_error("mutex lock")
    }
}

impl fmt::Display for RawLockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawLockError::WouldBlock => f.write_str("the mutex is locked by another thread"),
            RawLockError::TimedOut => f.write_str("timed out waiting for the mutex"),
            RawLockError::Deadlock => f.write_str("the calling thread already holds the mutex"),
            RawLockError::NotRecoverable => f.write_str(
                "the mutex is not recoverable: an owner died and the state was never marked consistent",
            ),
            RawLockError::Os(e) => {
                write!(f, "pthread error: {}", std::io::Error::from_raw_os_error(*e))
            }
            RawLockError::Corrupt { word, found } => write!(
                f,
                "the mutex's {word} is {found:#x}, a value neither its initialization nor \
                 glibc leaves there: corrupt shared memory (glibc was not called)"
            ),
        }
    }
}

impl std::error::Error for RawLockError {}

/// What a mutex looks like from outside, read without locking it.
///
/// ```
/// use shmsync::{MutexState, RawRobustMutex, Segment};
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: fresh, private, page-aligned memory that outlives `m`.
/// let m = unsafe { RawRobustMutex::init_at(seg.as_ptr().cast())? };
/// assert_eq!(m.state(), MutexState::Free);
/// m.lock()?;
/// assert!(matches!(m.state(), MutexState::Locked { .. }));
/// // SAFETY: held by this thread.
/// unsafe { m.unlock()? };
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MutexState {
    /// Nobody holds it.
    Free,
    /// A thread holds it.
    Locked {
        /// The owner's thread id (in the creator's pid namespace).
        owner_tid: u32,
        /// The owner's process, if it could be read.
        owner_pid: Option<u32>,
        /// Whether the owner thread still runs.
        owner: Liveness,
        /// Whether threads are queued on it.
        waiters: bool,
        /// The holder got it with OwnerDied and has not made it consistent yet.
        inconsistent: bool,
    },
    /// Its owner died; nobody has locked it since. The next locker gets OwnerDied.
    OwnerDied,
    /// Unusable until re-initialized.
    NotRecoverable,
    /// This libc's layout is not known to the reader.
    Unknown,
}

impl MutexState {
    /// Whether the owner is known to be dead: owner-died (the kernel marked it), or
    /// held by a thread that has exited (nobody marked it).
    pub(crate) fn owner_dead(self) -> bool {
        matches!(
            self,
            MutexState::OwnerDied
                | MutexState::Locked {
                    owner: Liveness::Dead,
                    ..
                }
        )
    }
}

impl fmt::Display for MutexState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MutexState::Free => f.write_str("free"),
            MutexState::Locked {
                owner_tid,
                owner_pid,
                owner,
                inconsistent,
                ..
            } => {
                let who = match owner_pid {
                    Some(pid) if pid == owner_tid => format!("pid {pid}"),
                    Some(pid) => format!("pid {pid} (thread {owner_tid})"),
                    None => format!("thread {owner_tid}"),
                };
                write!(f, "locked by {who} — {}", owner.as_str())?;
                if inconsistent {
                    f.write_str(", repairing after owner death")?;
                }
                Ok(())
            }
            MutexState::OwnerDied => f.write_str("owner died (next locker repairs)"),
            MutexState::NotRecoverable => f.write_str("not recoverable"),
            MutexState::Unknown => f.write_str("unknown (unsupported libc layout)"),
        }
    }
}

/// A robust, process-shared, error-checking mutex without data, with a header.
/// 64 bytes on x86_64 glibc; `#[repr(C)]`; never moved once placed.
///
/// ```
/// use shmsync::{RawRobustMutex, Segment};
/// use std::time::Duration;
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: fresh, private, page-aligned memory that outlives `m`.
/// let m = unsafe { RawRobustMutex::init_at(seg.as_ptr().cast())? };
/// m.lock_timeout(Duration::from_secs(1))?;
/// // SAFETY: held by this thread; no data borrowed under it outlives the unlock.
/// unsafe { m.unlock()? };
/// # Ok::<(), shmsync::Error>(())
/// ```
#[repr(C)]
pub struct RawRobustMutex {
    header: ObjectHeader,
    inner: imp::Inner,
}

// SAFETY: the pthread mutex is designed for concurrent use from many threads (and
// processes); every access to `inner` goes through pthread functions.
unsafe impl Sync for RawRobustMutex {}
// SAFETY: the mutex has no thread affinity until locked, and lock ownership lives in the
// mutex word (a TID), not in the Rust value.
unsafe impl Send for RawRobustMutex {}

/// Low 32 bits of our pid-namespace inode (proc inodes fit 32 bits), 0 if unreadable.
fn pid_ns_tag() -> u32 {
    process::current_pid_namespace().map_or(0, |ino| ino as u32)
}

impl RawRobustMutex {
    /// Fails if this process is in another pid namespace than the mutex's creator.
    pub fn check_namespace(&self) -> Result<()> {
        let recorded = self.header.aux();
        let current = pid_ns_tag();
        if recorded != 0 && current != 0 && recorded != current {
            return Err(Error::PidNamespaceMismatch {
                recorded: recorded.into(),
                current: current.into(),
            });
        }
        Ok(())
    }

    /// [`kind_ok`](Self::kind_ok) as a result, for the calls off the lock fast path.
    #[inline]
    fn check_glibc(&self) -> Result<(), RawLockError> {
        if self.kind_ok() {
            return Ok(());
        }
        Err(self.corrupt_kind())
    }

    /// Blocks until the lock is acquired or `timeout` has passed
    /// ([`RawLockError::TimedOut`]). A free lock is acquired even with a zero timeout.
    #[inline]
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Acquired, RawLockError> {
        self.lock_capped(Some(Deadline::after(timeout)))
    }

    /// Blocks until the lock is acquired or `deadline` passes. A lock that is free is
    /// acquired even if the deadline has passed; a held lock with a past deadline gives
    /// [`RawLockError::TimedOut`] at once.
    #[inline]
    pub fn lock_deadline(&self, deadline: Instant) -> Result<Acquired, RawLockError> {
        self.lock_capped(Some(Deadline::from_instant(deadline)))
    }

    /// Blocks until the lock is acquired or `deadline` passes (`None`: no deadline): a
    /// `trylock`, then a brief watch of the lock word, then sleeps in glibc of at most
    /// [`MAX_SLEEP`](crate::futex::MAX_SLEEP) each. An unlock wakes one sleeper. If
    /// that one is killed before it takes the lock, Linux (since 5.5) wakes another
    /// when it walks the dead waiter's robust list — unless the lock word is no longer
    /// 0 by then: a thread that took the lock meanwhile with an uncontended
    /// compare-and-swap sets no waiters bit, so its unlock wakes nobody, and the
    /// sleepers would stay asleep until someone else sleeps and unlocks. With the cap
    /// they look again within half a second.
    #[inline]
    pub(crate) fn lock_capped(&self, deadline: Option<Deadline>) -> Result<Acquired, RawLockError> {
        match self.try_lock() {
            Err(RawLockError::WouldBlock) => self.lock_capped_contended(deadline),
            acquired_or_error => acquired_or_error,
        }
    }

    /// The contended path of [`lock_capped`](Self::lock_capped) and [`lock`](Self::lock):
    /// watch the lock word (unless the deadline has passed), then sleep, capped.
    ///
    /// The watch is there because a critical section in shared memory is usually
    /// shorter than the futex sleep and wake-up it would otherwise cost (glibc's own
    /// adaptive mutexes spin too, but they cannot be robust).
    #[cold]
    #[inline(never)]
    fn lock_capped_contended(&self, deadline: Option<Deadline>) -> Result<Acquired, RawLockError> {
        if deadline.map_or(true, |d| !d.has_passed()) {
            if let Some(acquired_or_error) = self.watch_lock_word() {
                return acquired_or_error;
            }
        }
        loop {
            let (until, callers) = crate::futex::sleep_deadline(deadline);
            let r = match until {
                Some(d) => self.lock_until(d),
                // Only under loom, whose sleeps are not capped: the model's own lock.
                None => self.lock(),
            };
            match r {
                // Only the cap ran out: look at the word again before the next sleep (a
                // waiters bit with no owner, set while we slept, would keep us sleeping).
                Err(RawLockError::TimedOut) if !callers => self.check_lock_word()?,
                acquired_or_error => return acquired_or_error,
            }
        }
    }

    /// Releases the lock. Fails with [`RawLockError::Os`]`(EPERM)` from pthread if the
    /// calling thread does not hold it (the caller broke the safety contract, or the
    /// lock was inherited across `fork`), or with [`RawLockError::Corrupt`] if glibc's
    /// kind word is corrupt (see [`lock`](Self::lock)): glibc is then not called, and
    /// the lock stays held by this thread and on its robust list, so the kernel marks
    /// it owner-died when the thread exits (keep the memory mapped until then). Either
    /// way there is nothing to retry.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - the calling thread does not hold the lock (error-checking mutexes report EPERM,
    ///   but the data the lock protects may already have been touched without it);
    /// - a reference to data protected by the lock outlives this call.
    #[inline]
    pub unsafe fn unlock(&self) -> Result<(), RawLockError> {
        // SAFETY: forwarded: the caller's promises are `unlock_raw`'s.
        match unsafe { self.unlock_raw() } {
            0 => Ok(()),
            r => Err(self.unlock_failed(r)),
        }
    }

    #[cold]
    fn unlock_failed(&self, r: i32) -> RawLockError {
        if r == libc::EINVAL && !self.kind_ok() {
            return self.corrupt_kind();
        }
        RawLockError::Os(r)
    }
}

/// glibc's robust-mutex lock word bits (see `linux/futex.h`).
const FUTEX_WAITERS: u32 = 0x8000_0000;
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
/// glibc's `__owner` while a successor repairs (`PTHREAD_MUTEX_INCONSISTENT`, INT_MAX).
const OWNER_INCONSISTENT: u32 = i32::MAX as u32;
/// glibc's `__owner` of a dead mutex (`PTHREAD_MUTEX_NOTRECOVERABLE`, INT_MAX - 1).
const OWNER_NOTRECOVERABLE: u32 = i32::MAX as u32 - 1;

/// Decodes glibc's `__lock` and `__owner` words of a robust mutex.
pub(crate) fn decode_glibc_state(lock: u32, owner: u32) -> MutexState {
    let tid = lock & FUTEX_TID_MASK;
    if tid == 0 {
        return if owner == OWNER_NOTRECOVERABLE {
            MutexState::NotRecoverable
        } else if lock & FUTEX_OWNER_DIED != 0 {
            MutexState::OwnerDied
        } else {
            MutexState::Free
        };
    }
    MutexState::Locked {
        owner_tid: tid,
        owner_pid: process::thread_group_of(tid),
        owner: process::thread_liveness(tid),
        waiters: lock & FUTEX_WAITERS != 0,
        inconsistent: owner == OWNER_INCONSISTENT,
    }
}

impl fmt::Debug for RawRobustMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawRobustMutex")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}
