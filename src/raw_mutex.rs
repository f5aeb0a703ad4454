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

use core::fmt;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::futex::Deadline;
use crate::header::{check_placement, Kind, ObjectHeader};
use crate::process::{self, Liveness};
#[cfg(not(shmsync_loom))]
use crate::sync::UnsafeCell;

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
    #[cfg(not(shmsync_loom))]
    inner: UnsafeCell<libc::pthread_mutex_t>,
    #[cfg(shmsync_loom)]
    inner: loom_lock::LoomLock,
}

#[cfg(not(shmsync_loom))]
static_assertions::const_assert_eq!(core::mem::align_of::<RawRobustMutex>(), 8);
#[cfg(all(not(shmsync_loom), target_env = "gnu", target_pointer_width = "64"))]
static_assertions::assert_eq_size!(RawRobustMutex, [u8; 64]);

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

#[cfg(not(shmsync_loom))]
extern "C" {
    // glibc >= 2.30; not (yet) in the libc crate.
    #[cfg(target_env = "gnu")]
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// Destroys a `pthread_mutexattr_t` on every exit path.
#[cfg(not(shmsync_loom))]
struct AttrGuard<'a>(&'a mut core::mem::MaybeUninit<libc::pthread_mutexattr_t>);

#[cfg(not(shmsync_loom))]
impl Drop for AttrGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard exists only after `pthread_mutexattr_init` succeeded.
        unsafe { libc::pthread_mutexattr_destroy(self.0.as_mut_ptr()) };
    }
}

impl RawRobustMutex {
    /// Places a new, unlocked mutex at `ptr` and returns a reference to it.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of `size_of::<RawRobustMutex>()` bytes
    ///   for all of `'a`, in memory that stays mapped (and is not remapped elsewhere in
    ///   this process) for `'a`;
    /// - any other thread or process accesses those bytes while `init_at` runs, or any
    ///   process still uses an earlier object there.
    ///
    /// A null or misaligned `ptr` is reported as [`Error::Misaligned`], not UB. To embed
    /// the mutex in a struct of your own, see [`new`](Self::new) and the contract under
    /// [`RobustMutex::new`](crate::RobustMutex::new).
    #[cfg(not(shmsync_loom))]
    pub unsafe fn init_at<'a>(ptr: *mut RawRobustMutex) -> Result<&'a RawRobustMutex> {
        check_placement(ptr)?;
        // SAFETY: `ptr` is aligned (checked) and valid for writes, and nobody else
        // accesses it (the caller's promise); the header is written whole.
        unsafe {
            core::ptr::addr_of_mut!((*ptr).header).write(ObjectHeader::initializing_with_aux(
                Kind::Mutex,
                pid_ns_tag(),
            ));
        }
        // SAFETY: as above; `init_pthread` writes only `inner`.
        let this = unsafe { &*ptr };
        // SAFETY: exclusive access during init (caller's promise).
        unsafe { this.init_pthread() }?;
        this.header.publish();
        Ok(this)
    }

    /// An unlocked mutex by value, to be moved into shared memory as a field of a larger
    /// `#[repr(C)]` value (see [`RobustMutex::new`](crate::RobustMutex::new), whose
    /// documentation gives the whole contract for embedding).
    ///
    /// Moving is sound only before the first lock: `pthread_mutex_init` stores no
    /// address (glibc clears the `pthread_mutex_t` and writes its kind word; musl does
    /// the same with its type word), and a robust mutex is linked into its holder's
    /// robust list by address only while it is held. Once any process has locked it,
    /// it must stay where it is.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if a pthread initialization call fails (robust process-shared
    /// mutexes unsupported), [`Error::FormatMismatch`] if glibc wrote another kind
    /// word than this build expects.
    ///
    /// ```
    /// use shmsync::RawRobustMutex;
    /// let m = RawRobustMutex::new()?;
    /// let moved = Box::new(m); // never locked yet: moving is fine
    /// assert!(moved.try_lock().is_ok());
    /// // SAFETY: locked by this thread just above.
    /// assert_eq!(unsafe { moved.unlock() }, Ok(()));
    /// # Ok::<(), shmsync::Error>(())
    /// ```
    #[cfg(not(shmsync_loom))]
    pub fn new() -> Result<RawRobustMutex> {
        // SAFETY: `init_at` initializes the whole mutex when it returns Ok, on storage no
        // other thread or process can reach; a never-locked mutex holds no address.
        unsafe { crate::header::init_by_value(|p| RawRobustMutex::init_at(p).map(drop)) }
    }

    /// Validates the mutex another process placed at `ptr`.
    ///
    /// Fails with [`Error::Uninitialized`] on zeroed memory, [`Error::BadMagic`] /
    /// [`Error::WrongKind`] / [`Error::FormatMismatch`] on foreign memory,
    /// [`Error::PidNamespaceMismatch`] when the creator ran in another pid namespace
    /// (robust mutexes record thread ids, which differ between namespaces), and
    /// [`Error::Corrupt`] when glibc's mutex kind word is not the one this build's
    /// initialization writes (see [`lock`](Self::lock)).
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of `size_of::<RawRobustMutex>()` bytes
    ///   for all of `'a`, in shared memory that stays mapped for `'a`;
    /// - the bytes at `ptr` are being initialized by `init_at` concurrently (a header in
    ///   state READY is what makes attach safe; a [`crate::Region`] guarantees this).
    #[cfg(not(shmsync_loom))]
    pub unsafe fn attach<'a>(ptr: *const RawRobustMutex) -> Result<&'a RawRobustMutex> {
        check_placement(ptr)?;
        // SAFETY: aligned (checked), valid and mapped for 'a (caller's promise); the
        // header is all atomics, so reading it while others use the mutex is race-free.
        let this = unsafe { &*ptr };
        this.header.validate(Kind::Mutex)?;
        this.check_namespace()?;
        this.check_glibc()
            .map_err(|e| e.into_error("robust mutex"))?;
        Ok(this)
    }

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

    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - another thread or process may access the mutex during the call.
    #[cfg(not(shmsync_loom))]
    unsafe fn init_pthread(&self) -> Result<()> {
        let mut attr = core::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is writable storage for an attribute object.
        let r = unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) };
        if r != 0 {
            return Err(Error::from_errno("pthread_mutexattr_init", "", r));
        }
        let attr = AttrGuard(&mut attr);
        let a = attr.0.as_mut_ptr();
        // SAFETY: `a` was initialized by pthread_mutexattr_init above and is destroyed
        // only when `attr` drops, after these calls.
        let results = unsafe {
            [
                (
                    "pthread_mutexattr_setpshared",
                    libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED),
                ),
                (
                    "pthread_mutexattr_setrobust",
                    libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST),
                ),
                (
                    "pthread_mutexattr_settype",
                    libc::pthread_mutexattr_settype(a, libc::PTHREAD_MUTEX_ERRORCHECK),
                ),
            ]
        };
        for (op, r) in results {
            if r != 0 {
                return Err(Error::from_errno(op, "", r));
            }
        }
        // SAFETY: `inner` is valid for writes and nobody else uses it (caller's promise);
        // `a` is an initialized attribute object.
        let r = self
            .inner
            .with_mut(|m| unsafe { libc::pthread_mutex_init(m, a) });
        if r != 0 {
            return Err(Error::from_errno("pthread_mutex_init", "", r));
        }
        // The kind word every later call checks must be the one this glibc wrote.
        if let Err(RawLockError::Corrupt { found, .. }) = self.check_glibc() {
            return Err(Error::FormatMismatch {
                field: "glibc pthread mutex kind",
                expected: GLIBC_KIND.into(),
                found: found.into(),
            });
        }
        Ok(())
    }

    /// Whether glibc's `__kind` word holds what `init_pthread` writes. Checked before
    /// every glibc call on the mutex that reads the kind: glibc dispatches on it, and a
    /// wrong one makes it abort the process (priority-protect: an assertion in
    /// `tpp.c`), wait forever for a dead owner (non-robust kinds), or misread the other
    /// words. `pthread_mutex_init` writes no other non-zero word (pinned by a unit
    /// test), and with the kind pinned glibc only reads the words a robust
    /// error-checking mutex keeps as lock state.
    ///
    /// One relaxed load and a compare: it is on the uncontended lock's path.
    #[inline(always)]
    fn kind_ok(&self) -> bool {
        #[cfg(all(not(shmsync_loom), target_env = "gnu"))]
        return self.glibc_kind() == GLIBC_KIND;
        #[cfg(not(all(not(shmsync_loom), target_env = "gnu")))]
        true
    }

    /// glibc's `__kind` word.
    #[cfg(all(not(shmsync_loom), target_env = "gnu"))]
    #[inline(always)]
    fn glibc_kind(&self) -> u32 {
        // SAFETY: `__kind` lies inside the mapped, 8-aligned `pthread_mutex_t`
        // (init_at/attach checked placement; the mapping outlives `self`); glibc stores
        // it only in `pthread_mutex_init`, with a relaxed atomic store.
        // Relaxed: the only legitimate store is that initialization — in this process
        // before `init_at` returned, in another before the header's Release publish
        // that `attach` acquired — so this load sees it or a later corruption; nothing
        // else is ordered by the check, and glibc itself reads the word with a relaxed
        // load.
        self.inner
            .with(|m| unsafe { crate::sync::peek_u32(m.cast::<u32>().add(KIND_WORD)) })
    }

    /// [`kind_ok`](Self::kind_ok) as a result, for the calls off the lock fast path.
    #[inline]
    fn check_glibc(&self) -> Result<(), RawLockError> {
        if self.kind_ok() {
            return Ok(());
        }
        Err(self.corrupt_kind())
    }

    /// The error for a kind word that failed the check (read again for the report).
    #[cold]
    #[inline(never)]
    fn corrupt_kind(&self) -> RawLockError {
        #[cfg(all(not(shmsync_loom), target_env = "gnu"))]
        let found = self.glibc_kind();
        #[cfg(not(all(not(shmsync_loom), target_env = "gnu")))]
        let found = 0;
        RawLockError::Corrupt {
            word: MutexWord::Kind,
            found,
        }
    }

    /// Blocks until the lock is acquired. Never returns EINTR.
    ///
    /// Uncontended, this is one `pthread_mutex_trylock` (the same single CAS as
    /// `pthread_mutex_lock`). Contended, it first spins briefly — watching glibc's lock
    /// word and retrying only when it reads free (test-and-test-and-set) — because a
    /// critical section in shared memory is usually shorter than the futex sleep and
    /// wake-up it would otherwise cost (glibc's own adaptive mutexes do the same, but
    /// they cannot be robust). Then it sleeps in `pthread_mutex_lock`.
    ///
    /// Every call into glibc on this mutex (`lock`, [`try_lock`](Self::try_lock),
    /// [`lock_deadline`](Self::lock_deadline), [`unlock`](Self::unlock),
    /// [`make_consistent`](Self::make_consistent)) first checks glibc's kind word, one
    /// relaxed load: if it is not what this build's initialization wrote, the call fails
    /// with [`RawLockError::Corrupt`] and glibc is not called — on such a word glibc
    /// may abort the process (priority-protect kinds) or let a dead holder block every
    /// locker forever (non-robust kinds). When a lock attempt finds the mutex busy, the
    /// lock word is checked too: waiters but no owner (a value glibc and the kernel
    /// never leave, on which glibc would sleep forever) is `Corrupt` as well. A process
    /// with write access that changes a word between the check and glibc's own read is
    /// not stopped by it: share the memory writable only with processes you trust.
    #[inline]
    pub fn lock(&self) -> Result<Acquired, RawLockError> {
        #[cfg(not(shmsync_loom))]
        {
            match self.try_lock() {
                Err(RawLockError::WouldBlock) => self.lock_contended(),
                acquired_or_error => acquired_or_error,
            }
        }
        #[cfg(shmsync_loom)]
        self.inner.lock(None)
    }

    /// The contended path: watch the lock word with exponential backoff, retrying only
    /// when it reads free (test-and-test-and-set), then sleep in `pthread_mutex_lock`.
    ///
    /// Every look at the word pulls its cache line away from the holder, whose next
    /// lock or unlock (glibc writes `__lock`, `__owner` and the robust-list link, all on
    /// that line) must then fetch it back; a failed `trylock` does so exclusively. With
    /// a look every round, a holder that re-locks at once pays that miss on nearly
    /// every operation while rarely losing the lock (it re-locks before the watcher's
    /// `trylock` lands). Backing off keeps the holder near its uncontended speed, and a
    /// watcher still sees a lock released for longer than the gap (at most
    /// `LOCK_SPIN_MAX_GAP` pauses) without a system call on either side.
    ///
    /// The thread cannot hold the lock here: `lock` reached this only after a `trylock`
    /// that reported it held by someone else (glibc's robust `trylock` reports our own
    /// hold as `EDEADLK`), so the watch needs no owner check (and no `gettid`).
    #[cfg(not(shmsync_loom))]
    #[cold]
    #[inline(never)]
    fn lock_contended(&self) -> Result<Acquired, RawLockError> {
        #[cfg(target_env = "gnu")]
        {
            let word = self.inner.with(|m| m.cast::<u32>());
            let mut gap = 1u32;
            let mut spun = 0u32;
            while spun < LOCK_SPIN_ROUNDS {
                for _ in 0..gap {
                    crate::sync::spin_hint();
                }
                spun += gap;
                // SAFETY: glibc's `__lock`, the first word of the mapped, aligned mutex,
                // only ever accessed atomically.
                let free = || (unsafe { crate::sync::peek_u32(word) }) & FUTEX_TID_MASK == 0;
                // Free twice, a few pauses apart: a holder that re-locks at once is
                // left alone (its `trylock` beats ours anyway, and each lost race
                // costs both a line transfer and the next hand-off), a released lock
                // is taken.
                if free() && {
                    for _ in 0..LOCK_SPIN_CONFIRM {
                        crate::sync::spin_hint();
                    }
                    free()
                } {
                    match self.try_lock() {
                        Err(RawLockError::WouldBlock) => {}
                        acquired_or_error => return acquired_or_error,
                    }
                }
                gap = (gap * 2).min(LOCK_SPIN_MAX_GAP);
            }
        }
        // SAFETY: `inner` is an initialized pshared robust mutex (init_at/attach).
        let r = self
            .inner
            .with_mut(|m| unsafe { libc::pthread_mutex_lock(m) });
        if r == 0 {
            return Ok(Acquired::Clean);
        }
        lock_result(r)
    }

    /// Acquires the lock if it is free now.
    #[inline]
    pub fn try_lock(&self) -> Result<Acquired, RawLockError> {
        #[cfg(not(shmsync_loom))]
        {
            // A corrupt kind word takes the failure path with a value no pthread call
            // returns, so the success path stays the compare and the trylock (an early
            // `Err` return here costs the inlined callers a dozen instructions).
            let r = if self.kind_ok() {
                // SAFETY: `inner` is an initialized pshared robust mutex (init_at/
                // attach) whose kind word was just checked.
                self.inner
                    .with_mut(|m| unsafe { libc::pthread_mutex_trylock(m) })
            } else {
                KIND_CORRUPT
            };
            if r == 0 {
                return Ok(Acquired::Clean);
            }
            self.trylock_failed(r)
        }
        #[cfg(shmsync_loom)]
        self.inner.try_lock()
    }

    /// The outcome of a `pthread_mutex_trylock` that returned `r` (non-zero), or of a
    /// kind check that failed (`KIND_CORRUPT`).
    #[cfg(not(shmsync_loom))]
    #[cold]
    #[inline(never)]
    fn trylock_failed(&self, r: i32) -> Result<Acquired, RawLockError> {
        #[cfg(target_env = "gnu")]
        if r == libc::EBUSY {
            self.check_lock_word()?;
        }
        #[cfg(target_env = "gnu")]
        if r == libc::ENOTRECOVERABLE {
            self.undo_glibc_trylock_leak();
        }
        self.lock_failed(r)
    }

    /// Maps a non-zero lock result, or `KIND_CORRUPT`.
    #[cfg(not(shmsync_loom))]
    #[cold]
    fn lock_failed(&self, r: i32) -> Result<Acquired, RawLockError> {
        if r == KIND_CORRUPT {
            return Err(self.corrupt_kind());
        }
        lock_result(r)
    }

    /// Refuses a lock word that has the waiters bit but no owner — neither a thread id
    /// nor owner-died: glibc's lock would sleep on it forever, since no owner exists to
    /// wake it (and no dead one for [`release_dead_owner`](Self::release_dead_owner) to
    /// release). Neither glibc nor the kernel ever leaves that value: glibc sets the
    /// waiters bit only next to an owner's id, unlocking clears the whole word, and the
    /// kernel's death handling keeps the bit but sets owner-died. Checked only when a
    /// lock attempt found the mutex busy, so the uncontended path does not pay for it.
    #[cfg(all(not(shmsync_loom), target_env = "gnu"))]
    #[cold]
    fn check_lock_word(&self) -> Result<(), RawLockError> {
        // SAFETY: glibc's `__lock`, the first word of the mapped, aligned mutex, only
        // ever accessed atomically.
        // Relaxed: the value alone decides; no legitimate sequence of stores passes
        // through the refused value, so whatever is read is either a real lock state
        // or the corruption.
        let word = self
            .inner
            .with(|m| unsafe { crate::sync::peek_u32(m.cast::<u32>()) });
        if word == FUTEX_WAITERS {
            return Err(RawLockError::Corrupt {
                word: MutexWord::Lock,
                found: word,
            });
        }
        Ok(())
    }

    /// glibc's `pthread_mutex_trylock` on a not-recoverable robust mutex takes the lock
    /// word (CAS 0 → our TID), sees `__owner == PTHREAD_MUTEX_NOTRECOVERABLE`, and
    /// returns ENOTRECOVERABLE *without releasing the word*: it only unlocks
    /// `if (oldval == id)`, but `oldval` is the CAS's old value, 0 (the code has read
    /// so for many releases; seen here on glibc 2.36). The mutex would stay locked by this thread forever — and off its robust
    /// list, so not even its death would free it; every later locker in every process
    /// would hang. `pthread_mutex_lock` and the timed lock do release it. Undo the leak
    /// exactly as glibc's `lll_unlock` would have.
    #[cfg(all(not(shmsync_loom), target_env = "gnu"))]
    #[cold]
    fn undo_glibc_trylock_leak(&self) {
        // glibc's `int __lock` is the first word of `pthread_mutex_t`.
        let word = self.inner.with_mut(|m| m.cast::<u32>());
        // SAFETY: the word lies inside the mapped, 8-aligned mutex, which outlives this
        // call; glibc (in every process) accesses it only with atomic instructions.
        let lock = unsafe { crate::sync::foreign_atomic_u32(word) };
        // Relaxed: only asks whether the word holds our TID, which only this thread can
        // have written (by the trylock just now); a fixed glibc leaves something else.
        if lock.load(crate::sync::Ordering::Relaxed) & FUTEX_TID_MASK != process::current_tid() {
            return;
        }
        // Release: pairs with the Acquire CAS of the next locker, as in glibc's own
        // unlock. A swap, not a store: a waiter may have set FUTEX_WAITERS meanwhile.
        if lock.swap(0, crate::sync::Ordering::Release) & FUTEX_WAITERS != 0 {
            crate::futex::wake(lock, 1);
        }
    }

    /// Blocks until the lock is acquired or `timeout` has passed
    /// ([`RawLockError::TimedOut`]). A free lock is acquired even with a zero timeout.
    #[inline]
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Acquired, RawLockError> {
        self.lock_until(Deadline::after(timeout))
    }

    /// Blocks until the lock is acquired or `deadline` passes. A lock that is free is
    /// acquired even if the deadline has passed; a held lock with a past deadline gives
    /// [`RawLockError::TimedOut`] at once.
    #[inline]
    pub fn lock_deadline(&self, deadline: Instant) -> Result<Acquired, RawLockError> {
        self.lock_until(Deadline::from_instant(deadline))
    }

    /// [`lock_deadline`](Self::lock_deadline) with the crate's `CLOCK_MONOTONIC`
    /// deadline.
    #[inline]
    pub(crate) fn lock_until(&self, deadline: Deadline) -> Result<Acquired, RawLockError> {
        #[cfg(not(shmsync_loom))]
        {
            let r = if self.kind_ok() {
                self.clocklock(deadline)
            } else {
                KIND_CORRUPT
            };
            if r == 0 {
                return Ok(Acquired::Clean);
            }
            self.lock_failed(r)
        }
        #[cfg(shmsync_loom)]
        self.inner.lock(Some(deadline))
    }

    #[cfg(all(not(shmsync_loom), target_env = "gnu"))]
    fn clocklock(&self, deadline: Deadline) -> i32 {
        let ts = deadline.to_timespec();
        // SAFETY: `inner` is an initialized pshared robust mutex; `ts` is a normalized
        // timespec that outlives the call.
        self.inner
            .with_mut(|m| unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, &ts) })
    }

    #[cfg(all(not(shmsync_loom), not(target_env = "gnu")))]
    fn clocklock(&self, deadline: Deadline) -> i32 {
        // No pthread_mutex_clocklock (musl): convert the monotonic deadline to
        // CLOCK_REALTIME once. A wall-clock step during the wait shifts it.
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec to write.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
        let left = deadline.remaining();
        let mut secs = now.tv_sec.saturating_add(left.as_secs() as libc::time_t);
        let mut nsec = now.tv_nsec + left.subsec_nanos() as libc::c_long;
        if nsec >= 1_000_000_000 {
            nsec -= 1_000_000_000;
            secs = secs.saturating_add(1);
        }
        let ts = libc::timespec {
            tv_sec: secs,
            tv_nsec: nsec,
        };
        // SAFETY: as for the glibc variant.
        self.inner
            .with_mut(|m| unsafe { libc::pthread_mutex_timedlock(m, &ts) })
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

    /// [`unlock`](Self::unlock) returning pthread's number: 0, `EPERM`, or `EINVAL` for
    /// a corrupt kind word (glibc not called).
    ///
    /// # Safety
    ///
    /// As for [`unlock`](Self::unlock).
    #[inline]
    pub(crate) unsafe fn unlock_raw(&self) -> i32 {
        #[cfg(not(shmsync_loom))]
        {
            if !self.kind_ok() {
                return libc::EINVAL;
            }
            // SAFETY: `inner` is an initialized mutex held by this thread (caller's
            // promise), its kind word just checked.
            self.inner
                .with_mut(|m| unsafe { libc::pthread_mutex_unlock(m) })
        }
        #[cfg(shmsync_loom)]
        {
            self.inner.unlock();
            0
        }
    }

    /// Marks the state consistent after an [`Acquired::OwnerDied`] acquisition, so a
    /// later unlock leaves the mutex usable. Fails with [`RawLockError::Corrupt`] (glibc
    /// not called) if glibc's kind word is corrupt, and with `Os(EINVAL)` if the mutex
    /// is not in the owner-died state.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - the calling thread does not hold the lock.
    pub unsafe fn make_consistent(&self) -> Result<(), RawLockError> {
        #[cfg(not(shmsync_loom))]
        {
            self.check_glibc()?;
            // SAFETY: `inner` is initialized and held by this thread (caller's promise).
            let r = self
                .inner
                .with_mut(|m| unsafe { libc::pthread_mutex_consistent(m) });
            if r != 0 {
                return Err(RawLockError::Os(r));
            }
            Ok(())
        }
        #[cfg(shmsync_loom)]
        Ok(())
    }

    /// Re-initializes the mutex (unlocked, consistent), e.g. to bring back a
    /// [`MutexState::NotRecoverable`] one.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - any thread in any process holds the lock, is blocked in or entering a lock call
    ///   on it, or will unlock it — i.e. the caller must have exclusive access, for
    ///   instance because every process that used the mutex is known to be gone.
    #[cfg(not(shmsync_loom))]
    pub unsafe fn reinit(&self) -> Result<()> {
        // SAFETY: exclusive access (caller's promise); the header stays valid.
        unsafe { self.init_pthread() }
    }

    /// Reads the mutex's state without locking it (glibc layout; a snapshot that may be
    /// stale by the time it is displayed). The `shmsync` tool uses the same reading.
    pub fn state(&self) -> MutexState {
        #[cfg(all(not(shmsync_loom), target_env = "gnu"))]
        {
            // glibc's `struct __pthread_mutex_s`: int __lock at offset 0, int __owner at
            // offset 8 on every glibc target.
            let (lock, owner) = self.inner.with(|m| {
                let base = m as *const u32;
                // SAFETY: both words lie inside the mapped, aligned pthread_mutex_t.
                unsafe {
                    (
                        crate::sync::peek_u32(base),
                        crate::sync::peek_u32(base.add(2)),
                    )
                }
            });
            decode_glibc_state(lock, owner)
        }
        #[cfg(all(not(shmsync_loom), not(target_env = "gnu")))]
        {
            MutexState::Unknown
        }
        #[cfg(shmsync_loom)]
        MutexState::Unknown
    }

    /// Does for a dead owner what the kernel's robust-list walk does at thread exit,
    /// for the cases where that walk never happened (the owner held more than 2048
    /// robust locks, its robust list was corrupt, or it died in a way the kernel did not
    /// handle): if the lock word names a thread that is provably dead, the word becomes
    /// `FUTEX_OWNER_DIED` (keeping the waiters bit) and one waiter is woken, so the next
    /// locker gets [`Acquired::OwnerDied`] instead of hanging. Returns the dead TID it
    /// released, or `None` (free, owner alive or unknown, or the word changed meanwhile).
    ///
    /// The owner is judged by its thread id (`thread_liveness`): an exited
    /// thread is dead even while other threads of its process run (the kernel would have
    /// handed on its robust mutexes at that exit), a running thread is alive whether or
    /// not it is its process's main thread, and an owner whose liveness is unknown (e.g.
    /// `/proc` of another pid namespace) is left alone. A thread id reused by a new,
    /// live thread reads as alive, so a live owner is never robbed; the check-then-CAS
    /// is safe because the CAS fails if the word changed.
    #[cfg(all(not(shmsync_loom), target_env = "gnu"))]
    pub fn release_dead_owner(&self) -> Option<u32> {
        self.inner.with_mut(|m| {
            // SAFETY: glibc's `__lock` (offset 0 of the mapped, aligned mutex) is only
            // ever accessed atomically, by glibc and by the kernel.
            let word = unsafe { crate::sync::foreign_atomic_u32(m.cast::<u32>()) };
            // Relaxed: the CAS below decides; this load only picks its expected value.
            let seen = word.load(crate::sync::Ordering::Relaxed);
            let tid = seen & FUTEX_TID_MASK;
            if tid == 0 || process::thread_liveness(tid) != Liveness::Dead {
                return None;
            }
            let died = (seen & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
            // SeqCst: the kernel's handle_futex_death uses a full-barrier cmpxchg; the
            // dead owner wrote nothing we could order against.
            word.compare_exchange(
                seen,
                died,
                crate::sync::Ordering::SeqCst,
                crate::sync::Ordering::Relaxed,
            )
            .ok()?;
            if seen & FUTEX_WAITERS != 0 {
                crate::futex::wake(word, 1);
            }
            Some(tid)
        })
    }

    /// A model-checking constructor (loom builds only).
    #[cfg(shmsync_loom)]
    pub fn new() -> RawRobustMutex {
        let header = ObjectHeader::initializing_with_aux(Kind::Mutex, 0);
        header.publish();
        RawRobustMutex {
            header,
            inner: loom_lock::LoomLock::new(),
        }
    }

    /// Simulates the death of the holder (loom builds only): releases the lock so that
    /// the next locker gets [`Acquired::OwnerDied`], as the kernel's robust-list walk
    /// would.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - the calling thread does not hold the lock.
    #[cfg(shmsync_loom)]
    pub unsafe fn abandon(&self) {
        self.inner.abandon();
    }
}

/// Maps a non-zero pthread lock result. EOWNERDEAD means the lock *is* held.
#[cfg(not(shmsync_loom))]
#[cold]
fn lock_result(r: i32) -> Result<Acquired, RawLockError> {
    match r {
        libc::EOWNERDEAD => Ok(Acquired::OwnerDied),
        libc::EBUSY => Err(RawLockError::WouldBlock),
        libc::ETIMEDOUT => Err(RawLockError::TimedOut),
        libc::EDEADLK => Err(RawLockError::Deadlock),
        libc::ENOTRECOVERABLE => Err(RawLockError::NotRecoverable),
        other => Err(RawLockError::Os(other)),
    }
}

/// How many `pause`s a contended `lock` spends watching the lock word before it sleeps
/// (1–11 µs depending on the CPU's `pause`, 4–43 ns; about 8 µs on the reference
/// machine, under one wake-up of an idle CPU there).
#[cfg(all(not(shmsync_loom), target_env = "gnu"))]
const LOCK_SPIN_ROUNDS: u32 = 256;
/// The most `pause`s between two looks at the lock word while watching it: the
/// longest a watcher may overlook a release (about 0.5 µs on the reference machine).
#[cfg(all(not(shmsync_loom), target_env = "gnu"))]
const LOCK_SPIN_MAX_GAP: u32 = 16;
/// Pauses between the two looks that must both see the lock free before a watcher
/// tries to take it.
#[cfg(all(not(shmsync_loom), target_env = "gnu"))]
const LOCK_SPIN_CONFIRM: u32 = 4;

/// glibc's `__kind` for the mutex `init_pthread` makes: `PTHREAD_MUTEX_ERRORCHECK_NP`
/// (2) | `PTHREAD_MUTEX_ROBUST_NORMAL_NP` (16) | `PTHREAD_MUTEX_PSHARED_BIT` (128).
#[cfg(all(not(shmsync_loom), target_env = "gnu"))]
const GLIBC_KIND: u32 = 2 | 16 | 128;
/// The index of `int __kind` among the 32-bit words of glibc's `pthread_mutex_t`:
/// after `__lock`, `__count`, `__owner` and, on 64-bit targets, `__nusers` (glibc's
/// `__PTHREAD_MUTEX_KIND_OFFSET`, which it keeps fixed for static initializers).
#[cfg(all(not(shmsync_loom), target_env = "gnu", target_pointer_width = "64"))]
const KIND_WORD: usize = 4;
#[cfg(all(not(shmsync_loom), target_env = "gnu", target_pointer_width = "32"))]
const KIND_WORD: usize = 3;

/// Stands for "kind word corrupt, glibc not called" among pthread results, which are 0
/// or positive error numbers.
#[cfg(not(shmsync_loom))]
const KIND_CORRUPT: i32 = -1;

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

/// The loom stand-in for the pthread mutex: a three-state futex lock (free, locked,
/// locked with waiters) plus an owner-died flag set by `abandon`.
#[cfg(shmsync_loom)]
mod loom_lock {
    use super::{Acquired, RawLockError};
    use crate::futex::{Deadline, WaitOutcome};
    use crate::sync::{futex_impl as futex, AtomicU32, Ordering};

    const FREE: u32 = 0;
    const LOCKED: u32 = 1;
    const CONTENDED: u32 = 2;

    pub(super) struct LoomLock {
        state: AtomicU32,
        owner_died: AtomicU32,
    }

    impl LoomLock {
        pub(super) fn new() -> Self {
            LoomLock {
                state: AtomicU32::new(FREE),
                owner_died: AtomicU32::new(0),
            }
        }

        fn acquired(&self) -> Acquired {
            // Relaxed: written before the Release unlock in `abandon`, read after our
            // Acquire acquisition of `state`.
            if self.owner_died.swap(0, Ordering::Relaxed) == 1 {
                Acquired::OwnerDied
            } else {
                Acquired::Clean
            }
        }

        pub(super) fn try_lock(&self) -> Result<Acquired, RawLockError> {
            // Acquire: pairs with the Release swap in `unlock`.
            match self
                .state
                .compare_exchange(FREE, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => Ok(self.acquired()),
                Err(_) => Err(RawLockError::WouldBlock),
            }
        }

        pub(super) fn lock(&self, deadline: Option<Deadline>) -> Result<Acquired, RawLockError> {
            if let Ok(acquired) = self.try_lock() {
                return Ok(acquired);
            }
            loop {
                // Acquire: pairs with the Release swap in `unlock`.
                if self.state.swap(CONTENDED, Ordering::Acquire) == FREE {
                    return Ok(self.acquired());
                }
                if futex::wait(&self.state, CONTENDED, deadline) == WaitOutcome::TimedOut {
                    return Err(RawLockError::TimedOut);
                }
            }
        }

        pub(super) fn unlock(&self) {
            // Release: pairs with the Acquire in `try_lock`/`lock`.
            if self.state.swap(FREE, Ordering::Release) == CONTENDED {
                futex::wake(&self.state, 1);
            }
        }

        pub(super) fn abandon(&self) {
            // Relaxed: published by the Release in `unlock`.
            self.owner_died.store(1, Ordering::Relaxed);
            self.unlock();
        }
    }
}

#[cfg(all(test, not(shmsync_loom), target_env = "gnu"))]
mod tests {
    use super::*;

    /// What `pthread_mutex_init` writes, diffed against what was there before (zeros,
    /// and a fill pattern): every word of the `pthread_mutex_t` is zero except `__kind`,
    /// which is `GLIBC_KIND`. So the kind check covers everything init writes that
    /// glibc acts on; the other words are lock state, zero when free.
    #[test]
    fn init_writes_only_the_kind_word() {
        for fill in [0x00u8, 0xa5] {
            let mut storage = core::mem::MaybeUninit::<RawRobustMutex>::uninit();
            // SAFETY: writes the whole local, private storage.
            unsafe { storage.as_mut_ptr().write_bytes(fill, 1) };
            // SAFETY: aligned, private storage that outlives `m`; nobody else uses it.
            let m = unsafe { RawRobustMutex::init_at(storage.as_mut_ptr()) }.unwrap();
            const WORDS: usize = core::mem::size_of::<libc::pthread_mutex_t>() / 4;
            let words: [u32; WORDS] = m.inner.with(|p| {
                // SAFETY: reads the initialized, aligned mutex's bytes as words; no
                // other thread touches this private mutex.
                unsafe { core::ptr::read(p.cast::<[u32; WORDS]>()) }
            });
            for (i, w) in words.iter().enumerate() {
                let expected = if i == KIND_WORD { GLIBC_KIND } else { 0 };
                assert_eq!(*w, expected, "word {i} after init over {fill:#x} bytes");
            }
            m.check_glibc().unwrap();
        }
    }

    /// Every entry point refuses a wrong kind word without calling glibc, and the
    /// refusal converts into the crate's `Error::Corrupt`.
    #[test]
    fn wrong_kind_word_is_refused_in_process() {
        let mut storage = core::mem::MaybeUninit::<RawRobustMutex>::uninit();
        // SAFETY: aligned, private storage that outlives `m`; nobody else uses it.
        let m = unsafe { RawRobustMutex::init_at(storage.as_mut_ptr()) }.unwrap();
        let kind = m.inner.with_mut(|p| {
            // SAFETY: the kind word of the private, initialized mutex.
            unsafe { crate::sync::foreign_atomic_u32(p.cast::<u32>().add(KIND_WORD)) }
        });
        // Priority-protect, error-checking, process-shared: glibc aborts in lock.
        kind.store(64 | 2 | 128, crate::sync::Ordering::Relaxed);
        let corrupt = RawLockError::Corrupt {
            word: MutexWord::Kind,
            found: 64 | 2 | 128,
        };
        assert_eq!(m.try_lock(), Err(corrupt));
        assert_eq!(m.lock(), Err(corrupt));
        assert_eq!(m.lock_timeout(Duration::ZERO), Err(corrupt));
        // SAFETY: not held; the check refuses before glibc could report EPERM.
        assert_eq!(unsafe { m.unlock() }, Err(corrupt));
        // SAFETY: not held, but glibc is not reached (the check refuses first).
        assert_eq!(unsafe { m.make_consistent() }, Err(corrupt));
        assert!(matches!(Error::from(corrupt), Error::Corrupt(_)));
        // SAFETY: the private mutex is not in use by anyone.
        unsafe { m.reinit() }.unwrap();
        assert_eq!(m.try_lock(), Ok(Acquired::Clean));
        // SAFETY: held by this thread (just locked).
        assert_eq!(unsafe { m.unlock() }, Ok(()));
    }

    use core::time::Duration;
}

// SAFETY: `init_at` places a full RawRobustMutex with a Kind::Mutex header; `attach`
// validates header, format and pid namespace; the type holds no pointers.
#[cfg(not(shmsync_loom))]
unsafe impl crate::Shared for RawRobustMutex {
    const KIND: crate::Kind = crate::Kind::Mutex;
    const IDENTITY: crate::TypeIdentity =
        crate::TypeIdentity::declared::<Self>("shmsync.RawRobustMutex", &[]);
    type Init = ();

    fn value_name() -> String {
        "shmsync.RawRobustMutex".to_owned()
    }

    unsafe fn init_at<'a>(ptr: *mut Self, _init: ()) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { RawRobustMutex::init_at(ptr) }
    }

    unsafe fn attach<'a>(ptr: *const Self) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { RawRobustMutex::attach(ptr) }
    }
}
