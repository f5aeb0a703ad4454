//! The real backend: glibc's robust, process-shared, error-checking pthread mutex
//! (other libcs get the same pthread calls without the glibc word checks).

use super::{
    pid_ns_tag, Acquired, MutexState, MutexWord, RawLockError, RawRobustMutex, FUTEX_OWNER_DIED,
    FUTEX_TID_MASK, FUTEX_WAITERS,
};
use crate::error::{Error, Result};
use crate::futex::Deadline;
use crate::header::{check_placement, ObjectHeader};
use crate::kind::Kind;
use crate::process::{self, Liveness};
use crate::sync::UnsafeCell;

/// The mutex word(s): glibc's `pthread_mutex_t`, accessed only through pthread calls
/// and the word readers below.
pub(super) type Inner = UnsafeCell<libc::pthread_mutex_t>;

static_assertions::const_assert_eq!(core::mem::align_of::<RawRobustMutex>(), 8);
#[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
static_assertions::assert_eq_size!(RawRobustMutex, [u8; 64]);

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
struct AttrGuard<'a>(&'a mut core::mem::MaybeUninit<libc::pthread_mutexattr_t>);
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

    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - another thread or process may access the mutex during the call.
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
    #[cfg(target_env = "gnu")]
    #[inline(always)]
    pub(super) fn kind_ok(&self) -> bool {
        self.glibc_kind() == GLIBC_KIND
    }

    /// Other libcs: no kind word is known, so there is nothing to check.
    #[cfg(not(target_env = "gnu"))]
    #[inline(always)]
    pub(super) fn kind_ok(&self) -> bool {
        true
    }

    /// glibc's `__kind` word.
    #[cfg(target_env = "gnu")]
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

    /// Other libcs: no kind word is read (reported as 0).
    #[cfg(not(target_env = "gnu"))]
    #[inline(always)]
    fn glibc_kind(&self) -> u32 {
        0
    }

    /// The error for a kind word that failed the check (read again for the report).
    #[cold]
    #[inline(never)]
    pub(super) fn corrupt_kind(&self) -> RawLockError {
        RawLockError::Corrupt {
            word: MutexWord::Kind,
            found: self.glibc_kind(),
        }
    }

    /// Blocks until the lock is acquired. Never returns EINTR.
    ///
    /// Uncontended, this is one `pthread_mutex_trylock` (the same single CAS as
    /// `pthread_mutex_lock`). Contended, it first spins briefly — watching glibc's lock
    /// word and retrying only when it reads free (test-and-test-and-set) — because a
    /// critical section in shared memory is usually shorter than the futex sleep and
    /// wake-up it would otherwise cost (glibc's own adaptive mutexes do the same, but
    /// they cannot be robust). Then it sleeps in glibc's timed lock, at most half a
    /// second at a time, so that a wake-up lost to a waiter killed before it took the
    /// lock delays the others instead of stranding them (see `lock_capped`).
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
        match self.try_lock() {
            Err(RawLockError::WouldBlock) => self.lock_capped_contended(None),
            acquired_or_error => acquired_or_error,
        }
    }

    /// The watch of `lock_capped_contended`, with exponential backoff, retrying only
    /// when the word reads free (test-and-test-and-set).
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
    /// The thread cannot hold the lock here: it is reached only after a `trylock` that
    /// reported it held by someone else (glibc's robust `trylock` reports our own hold
    /// as `EDEADLK`), so the watch needs no owner check (and no `gettid`).
    ///
    /// Up to `LOCK_SPIN_ROUNDS` pauses watching glibc's lock word, a `trylock` whenever
    /// it reads free twice. `None` when the spin ended without acquiring (or failing).
    #[cfg(target_env = "gnu")]
    #[inline(always)]
    pub(super) fn watch_lock_word(&self) -> Option<Result<Acquired, RawLockError>> {
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
                    acquired_or_error => return Some(acquired_or_error),
                }
            }
            gap = (gap * 2).min(LOCK_SPIN_MAX_GAP);
        }
        None
    }

    /// Other libcs: the lock word's layout is not known, so no watch; sleep at once.
    #[cfg(not(target_env = "gnu"))]
    #[inline(always)]
    pub(super) fn watch_lock_word(&self) -> Option<Result<Acquired, RawLockError>> {
        None
    }

    /// Acquires the lock if it is free now.
    #[inline]
    pub fn try_lock(&self) -> Result<Acquired, RawLockError> {
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

    /// The outcome of a `pthread_mutex_trylock` that returned `r` (non-zero), or of a
    /// kind check that failed (`KIND_CORRUPT`).
    #[cold]
    #[inline(never)]
    #[cfg(target_env = "gnu")]
    fn trylock_failed(&self, r: i32) -> Result<Acquired, RawLockError> {
        if r == libc::EBUSY {
            self.check_lock_word()?;
        }
        if r == libc::ENOTRECOVERABLE {
            self.undo_glibc_trylock_leak();
        }
        self.lock_failed(r)
    }

    /// Other libcs: the lock word's layout is not known, so the result is mapped as is.
    #[cfg(not(target_env = "gnu"))]
    #[cold]
    #[inline(never)]
    fn trylock_failed(&self, r: i32) -> Result<Acquired, RawLockError> {
        self.lock_failed(r)
    }

    /// Maps a non-zero lock result, or `KIND_CORRUPT`.
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
    #[cfg(target_env = "gnu")]
    #[cold]
    pub(super) fn check_lock_word(&self) -> Result<(), RawLockError> {
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

    /// Other libcs: the lock word's layout is not known, so nothing is checked.
    #[cfg(not(target_env = "gnu"))]
    pub(super) fn check_lock_word(&self) -> Result<(), RawLockError> {
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
    #[cfg(target_env = "gnu")]
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

    /// [`lock_deadline`](Self::lock_deadline) with the crate's `CLOCK_MONOTONIC`
    /// deadline.
    #[inline]
    pub(crate) fn lock_until(&self, deadline: Deadline) -> Result<Acquired, RawLockError> {
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

    #[cfg(target_env = "gnu")]
    fn clocklock(&self, deadline: Deadline) -> i32 {
        let ts = deadline.to_timespec();
        // SAFETY: `inner` is an initialized pshared robust mutex; `ts` is a normalized
        // timespec that outlives the call.
        self.inner
            .with_mut(|m| unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, &ts) })
    }

    #[cfg(not(target_env = "gnu"))]
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

    /// [`unlock`](Self::unlock) returning pthread's number: 0, `EPERM`, or `EINVAL` for
    /// a corrupt kind word (glibc not called).
    ///
    /// # Safety
    ///
    /// As for [`unlock`](Self::unlock).
    #[inline]
    pub(crate) unsafe fn unlock_raw(&self) -> i32 {
        if !self.kind_ok() {
            return libc::EINVAL;
        }
        // SAFETY: `inner` is an initialized mutex held by this thread (caller's
        // promise), its kind word just checked.
        self.inner
            .with_mut(|m| unsafe { libc::pthread_mutex_unlock(m) })
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

    /// Re-initializes the mutex (unlocked, consistent), e.g. to bring back a
    /// [`MutexState::NotRecoverable`] one.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - any thread in any process holds the lock, is blocked in or entering a lock call
    ///   on it, or will unlock it — i.e. the caller must have exclusive access, for
    ///   instance because every process that used the mutex is known to be gone.
    pub unsafe fn reinit(&self) -> Result<()> {
        // SAFETY: exclusive access (caller's promise); the header stays valid.
        unsafe { self.init_pthread() }
    }

    /// Reads the mutex's state without locking it (glibc layout; a snapshot that may be
    /// stale by the time it is displayed). The `shmsync` tool uses the same reading.
    #[cfg(target_env = "gnu")]
    pub fn state(&self) -> MutexState {
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
        super::decode_glibc_state(lock, owner)
    }

    /// Reads the mutex's state: [`MutexState::Unknown`] on this libc, whose layout is
    /// not known to the reader.
    #[cfg(not(target_env = "gnu"))]
    pub fn state(&self) -> MutexState {
        MutexState::Unknown
    }

    /// [`release_dead_owner`](Self::release_dead_owner) where glibc's lock word is known.
    #[cfg(target_env = "gnu")]
    pub(crate) fn release_dead_owner_if_known(&self) -> Option<u32> {
        self.release_dead_owner()
    }

    /// Other libcs: the lock word's layout is not known, so nothing is released.
    #[cfg(not(target_env = "gnu"))]
    pub(crate) fn release_dead_owner_if_known(&self) -> Option<u32> {
        None
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
    #[cfg(target_env = "gnu")]
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
}

/// Maps a non-zero pthread lock result. EOWNERDEAD means the lock *is* held.
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
#[cfg(target_env = "gnu")]
const LOCK_SPIN_ROUNDS: u32 = 256;
/// The most `pause`s between two looks at the lock word while watching it: the
/// longest a watcher may overlook a release (about 0.5 µs on the reference machine).
#[cfg(target_env = "gnu")]
const LOCK_SPIN_MAX_GAP: u32 = 16;
/// Pauses between the two looks that must both see the lock free before a watcher
/// tries to take it.
#[cfg(target_env = "gnu")]
const LOCK_SPIN_CONFIRM: u32 = 4;

/// glibc's `__kind` for the mutex `init_pthread` makes: `PTHREAD_MUTEX_ERRORCHECK_NP`
/// (2) | `PTHREAD_MUTEX_ROBUST_NORMAL_NP` (16) | `PTHREAD_MUTEX_PSHARED_BIT` (128).
#[cfg(target_env = "gnu")]
const GLIBC_KIND: u32 = 2 | 16 | 128;
/// The index of `int __kind` among the 32-bit words of glibc's `pthread_mutex_t`:
/// after `__lock`, `__count`, `__owner` and, on 64-bit targets, `__nusers` (glibc's
/// `__PTHREAD_MUTEX_KIND_OFFSET`, which it keeps fixed for static initializers).
#[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
const KIND_WORD: usize = 4;
#[cfg(all(target_env = "gnu", target_pointer_width = "32"))]
const KIND_WORD: usize = 3;

/// Stands for "kind word corrupt, glibc not called" among pthread results, which are 0
/// or positive error numbers.
const KIND_CORRUPT: i32 = -1;

#[cfg(all(test, target_env = "gnu"))]
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
