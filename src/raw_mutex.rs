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

use crate::error::{Error, Result};
use crate::futex::Deadline;
use crate::header::{check_placement, Kind, ObjectHeader};
use crate::process::{self, Liveness};
#[cfg(not(shmsync_loom))]
use crate::sync::UnsafeCell;

/// How a lock was acquired. Either way the caller now holds the lock.
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

/// Why a lock was not acquired. The caller does not hold the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawLockError {
    /// `try_lock`: another thread holds it.
    WouldBlock,
    /// The deadline passed first.
    TimedOut,
    /// The calling thread already holds it (error-checking mutex).
    Deadlock,
    /// An owner died and its successor unlocked without `make_consistent`: the mutex is
    /// unusable until re-initialized under exclusive access.
    NotRecoverable,
    /// Any other error number from pthread.
    Os(i32),
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
        }
    }
}

impl std::error::Error for RawLockError {}

/// What a mutex looks like from outside, read without locking it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// A null or misaligned `ptr` is reported as [`Error::Misaligned`], not UB.
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

    /// Validates the mutex another process placed at `ptr`.
    ///
    /// Fails with [`Error::Uninitialized`] on zeroed memory, [`Error::BadMagic`] /
    /// [`Error::WrongKind`] / [`Error::FormatMismatch`] on foreign memory, and
    /// [`Error::PidNamespaceMismatch`] when the creator ran in another pid namespace
    /// (robust mutexes record thread ids, which differ between namespaces).
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

    /// The header (for tools that inspect shared objects).
    pub fn header(&self) -> &ObjectHeader {
        &self.header
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
        Ok(())
    }

    /// Blocks until the lock is acquired. Never returns EINTR.
    ///
    /// Uncontended, this is one `pthread_mutex_trylock` (the same single CAS as
    /// `pthread_mutex_lock`). Contended, it first spins briefly — watching glibc's lock
    /// word and retrying only when it reads free (test-and-test-and-set) — because a
    /// critical section in shared memory is usually shorter than the futex sleep and
    /// wake-up it would otherwise cost (glibc's own adaptive mutexes do the same, but
    /// they cannot be robust). Then it sleeps in `pthread_mutex_lock`.
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
            // SAFETY: `inner` is an initialized pshared robust mutex (init_at/attach).
            let r = self
                .inner
                .with_mut(|m| unsafe { libc::pthread_mutex_trylock(m) });
            if r == 0 {
                return Ok(Acquired::Clean);
            }
            #[cfg(target_env = "gnu")]
            if r == libc::ENOTRECOVERABLE {
                self.undo_glibc_trylock_leak();
            }
            lock_result(r)
        }
        #[cfg(shmsync_loom)]
        self.inner.try_lock()
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

    /// Blocks until the lock is acquired or `deadline` (absolute, `CLOCK_MONOTONIC`)
    /// passes. A lock that is free is acquired even if the deadline has passed; a
    /// held lock with a past deadline gives [`RawLockError::TimedOut`] at once.
    #[inline]
    pub fn lock_deadline(&self, deadline: Deadline) -> Result<Acquired, RawLockError> {
        #[cfg(not(shmsync_loom))]
        {
            let r = self.clocklock(deadline);
            if r == 0 {
                return Ok(Acquired::Clean);
            }
            lock_result(r)
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

    /// Releases the lock. Returns the pthread error number on failure (which only
    /// happens if the caller broke the safety contract: EPERM).
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - the calling thread does not hold the lock (error-checking mutexes report EPERM,
    ///   but the data the lock protects may already have been touched without it);
    /// - a reference to data protected by the lock outlives this call.
    #[inline]
    pub unsafe fn unlock(&self) -> i32 {
        #[cfg(not(shmsync_loom))]
        {
            // SAFETY: `inner` is an initialized mutex held by this thread (caller's
            // promise).
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
    /// later unlock leaves the mutex usable.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - the calling thread does not hold the lock.
    pub unsafe fn make_consistent(&self) -> Result<(), RawLockError> {
        #[cfg(not(shmsync_loom))]
        {
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
    /// A thread id reused by a new, live thread reads as alive, so a live owner is never
    /// robbed; the check-then-CAS is safe because the CAS fails if the word changed.
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
