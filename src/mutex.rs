//! [`RobustMutex<T>`]: a robust, process-shared mutex with data, and its guards.
//!
//! The lock is a [`RawRobustMutex`] (glibc's `pthread_mutex_t` with
//! `PTHREAD_PROCESS_SHARED`, `PTHREAD_MUTEX_ROBUST` and `PTHREAD_MUTEX_ERRORCHECK`,
//! behind an [`ObjectHeader`](crate::header::ObjectHeader)); this module adds the data
//! and the guards. Every acquiring path (`lock`, `try_lock`, `lock_timeout`,
//! `lock_deadline`) goes through one function (`RobustMutex::acquired`), so an owner's
//! death is reported the same way whichever path saw it.

use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use bytemuck::AnyBitPattern;

use crate::error::Error;
#[cfg(not(shmsync_loom))]
use crate::error::Result;
#[cfg(not(shmsync_loom))]
use crate::header::check_placement;
use crate::raw_mutex::{Acquired, MutexState, MutexWord, RawLockError, RawRobustMutex};
use crate::sync::UnsafeCell;

/// A mutex that lives in shared memory, protects a `T`, and survives the death of its
/// holder.
///
/// Any process that maps the segment can lock it, at whatever address it mapped it.
/// When a process (or thread) dies holding the lock, the kernel marks the mutex
/// owner-died and the next locker — in any process, through any acquiring method — gets
/// [`LockError::OwnerDied`], which *holds the lock* and gives `&mut T` so the caller can
/// repair what the dead owner left half-written, then
/// [`make_consistent`](OwnerDiedGuard::make_consistent) to carry on normally. An
/// `OwnerDiedGuard` dropped without that leaves the mutex permanently
/// [`NotRecoverable`](LockError::NotRecoverable) (pthread semantics) until
/// [`reinit`](RobustMutex::reinit) under exclusive access.
///
/// `T: AnyBitPattern`: a holder may die halfway through writing the data, so every bit
/// pattern must be a valid `T` and no `Drop` may be owed.
///
/// # Layout
///
/// `#[repr(C)]`: the 64-byte [`RawRobustMutex`] (header + `pthread_mutex_t`) first, then
/// the `T`. For `align_of::<T>() <= 64` the size is `64 + size_of::<T>()` rounded up to
/// the struct's alignment (at least 8), e.g. 72 bytes for a `u64` (pinned by
/// `tests/layout_mutex.rs`). All-zero memory is *not* a mutex: [`attach`](Self::attach)
/// refuses it.
///
/// # Example
///
/// A child process dies holding the lock; the parent repairs the data and carries on.
/// (The forked child only locks and touches plain data, which is async-signal-safe.)
///
/// ```
/// use shmsync::{LockError, RobustMutex, Segment};
///
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Account { balance: u64, pending: u64 }
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: a fresh, page-aligned 4096-byte mapping that nobody else uses yet and that
/// // outlives `m`.
/// let m = unsafe {
///     RobustMutex::init_at(seg.as_ptr().cast(), Account { balance: 100, pending: 0 })?
/// };
///
/// // SAFETY: the child only locks, writes plain data and `_exit`s.
/// let pid = unsafe { libc::fork() };
/// if pid == 0 {
///     if let Ok(mut acct) = m.lock() {
///         acct.pending = 50; // ... and dies before moving it into `balance`.
///         std::mem::forget(acct);
///     }
///     // SAFETY: `_exit` is always safe; the kernel marks the mutex owner-died.
///     unsafe { libc::_exit(0) };
/// }
/// // SAFETY: reaping our own child.
/// unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
///
/// let acct = match m.lock() {
///     Ok(acct) => acct,
///     Err(LockError::OwnerDied(mut acct)) => {
///         // We hold the lock; finish (or roll back) what the dead owner started.
///         acct.balance += acct.pending;
///         acct.pending = 0;
///         acct.make_consistent()
///     }
///     Err(e) => panic!("{e}"),
/// };
/// assert_eq!(acct.balance, 150);
/// drop(acct);
/// assert!(m.lock().is_ok());
/// # Ok::<(), shmsync::Error>(())
/// ```
///
/// # Writing data a successor may have to repair
///
/// The successor of a dead owner sees whatever stores the owner had made. If the repair
/// depends on their *order* — a "transfer in progress" marker set before the first
/// step, say — separate the steps with
/// `std::sync::atomic::compiler_fence(Ordering::SeqCst)`: inside a critical section the
/// compiler may reorder or merge plain stores to the guarded data. The hardware order
/// needs nothing more: the successor acquires the lock through the kernel after the
/// owner's death, which orders it after every store the owner made.
///
/// # Limits
///
/// Robustness is the kernel's robust-list walk at thread exit; its limits are these:
///
/// - **exec while holding** counts as death: the next locker gets `OwnerDied` (the
///   kernel walks the list when the old address space goes away).
/// - **A fork child does not own its parent's locks.** A guard copied into a child by
///   `fork` does not hold anything there; the child must `mem::forget` it and never
///   touch the data through it (the parent may still be writing). Its drop would only
///   fail (`EPERM`, ignored) and leave the parent's lock as it was.
/// - **More than 2048 robust locks held by one thread** (the kernel's
///   `ROBUST_LIST_LIMIT`) are not all recovered: the walk stops there, and the rest stay
///   locked by a dead thread forever.
/// - **Do not map one segment twice in one process while holding its locks.** Each
///   held mutex is linked into the thread's robust list by its address in this process;
///   if the mapping it was locked through is unmapped while the lock is held, the
///   kernel's walk meets unmapped (or reused) memory and stops, so that lock — and every
///   one listed after it — is never marked owner-died. Guards borrow the mutex, which
///   borrows the mapping, so the one mapping a guard came from cannot be dropped while
///   it is held; a second mapping of the same memory is outside what the borrow sees.
/// - **PID namespaces**: robust mutexes record thread ids, which mean different threads
///   in different pid namespaces. [`attach`](Self::attach) refuses a mutex created in
///   another pid namespace with [`Error::PidNamespaceMismatch`](crate::Error).
#[repr(C)]
pub struct RobustMutex<T: AnyBitPattern> {
    raw: RawRobustMutex,
    data: UnsafeCell<T>,
}

// SAFETY: the data is reached only through guards, and a guard exists only while its
// thread holds the lock, so at most one thread (in any process) accesses `T` at a time;
// `T: Send` because the data written by one thread is read by another.
unsafe impl<T: AnyBitPattern + Send> Sync for RobustMutex<T> {}
// SAFETY: the mutex has no thread affinity until locked (ownership is the TID in the lock
// word, not the Rust value), and `T: Send`.
unsafe impl<T: AnyBitPattern + Send> Send for RobustMutex<T> {}

impl<T: AnyBitPattern> RobustMutex<T> {
    /// Places a new, unlocked mutex holding `value` at `ptr` and returns a reference to
    /// it.
    ///
    /// The data is written before the header is published (Release), so a process that
    /// [`attach`](Self::attach)es after that sees `value`.
    ///
    /// Other processes share the mutex only if `ptr` is in a `MAP_SHARED` mapping they
    /// map too. As a field of a struct of your own, build it with [`new`](Self::new)
    /// or place it with `init_at(addr_of_mut!((*outer).field), ..)`; the contract for
    /// both is under [`new`](Self::new).
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`](crate::Error::Misaligned) for a null or misaligned `ptr`;
    /// [`Error::Os`](crate::Error::Os) if a pthread initialization call fails.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of `size_of::<RobustMutex<T>>()` bytes
    ///   for all of `'a`, in memory that stays mapped (and is not mapped a second time
    ///   in this process while locks in it are held) for `'a`;
    /// - any other thread or process accesses those bytes while `init_at` runs, or any
    ///   process still uses an earlier object there.
    #[cfg(not(shmsync_loom))]
    pub unsafe fn init_at<'a>(ptr: *mut RobustMutex<T>, value: T) -> Result<&'a RobustMutex<T>> {
        check_placement(ptr)?;
        // SAFETY: `ptr` is non-null and aligned (checked), valid for writes and not
        // accessed by anyone else (the caller's promise); the data goes in before the
        // raw mutex publishes the header.
        unsafe { core::ptr::addr_of_mut!((*ptr).data).write(UnsafeCell::new(value)) };
        // SAFETY: as above; the raw mutex is the first field, inside the same bytes.
        unsafe { RawRobustMutex::init_at(core::ptr::addr_of_mut!((*ptr).raw)) }?;
        // SAFETY: every field is now initialized; valid for 'a (the caller's promise).
        Ok(unsafe { &*ptr })
    }

    /// Validates the mutex another process placed at `ptr` and returns a reference to
    /// it.
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`](crate::Error::Misaligned) for a null or misaligned `ptr`,
    /// [`Error::Uninitialized`](crate::Error::Uninitialized) on zeroed memory or a mutex
    /// still being initialized, [`Error::BadMagic`](crate::Error::BadMagic) /
    /// [`Error::WrongKind`](crate::Error::WrongKind) on foreign memory,
    /// [`Error::FormatMismatch`](crate::Error::FormatMismatch) on a mutex written by an
    /// incompatible build, and
    /// [`Error::PidNamespaceMismatch`](crate::Error::PidNamespaceMismatch) when its
    /// creator ran in another pid namespace.
    ///
    /// The header does not record `T`: that the bytes after it are a `T` is the
    /// caller's knowledge (a region's object table checks it by type layout id).
    ///
    /// The returned reference is not the only way to reach the mutex: once attach has
    /// succeeded, a `&Outer` over a struct of your own that contains it may be used as
    /// well (see [`new`](Self::new)).
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of `size_of::<RobustMutex<T>>()` bytes
    ///   for all of `'a`, in shared memory that stays mapped (and is not mapped a second
    ///   time in this process while locks in it are held) for `'a`;
    /// - the bytes at `ptr` are being initialized by `init_at` concurrently;
    /// - the object at `ptr` was created as a `RobustMutex<U>` with a `U` of another
    ///   size or alignment than `T`.
    #[cfg(not(shmsync_loom))]
    pub unsafe fn attach<'a>(ptr: *const RobustMutex<T>) -> Result<&'a RobustMutex<T>> {
        check_placement(ptr)?;
        // SAFETY: aligned (checked) and valid for 'a (the caller's promise); the raw
        // mutex is the first field.
        unsafe { RawRobustMutex::attach(core::ptr::addr_of!((*ptr).raw)) }?;
        // SAFETY: the header is READY (validated with Acquire), so the data written
        // before its publication is initialized and visible; valid for 'a.
        Ok(unsafe { &*ptr })
    }

    /// An unlocked mutex holding `value`, by value: the way to build a `#[repr(C)]`
    /// struct of your own that embeds primitives and then write it into a mapping you
    /// made (`memmap2`, `mmap`, …). Moving is sound until the mutex is first locked
    /// (see [`RawRobustMutex::new`]); after that, never.
    ///
    /// # Errors
    ///
    /// Those of [`RawRobustMutex::new`].
    ///
    /// # In your own struct, in your own mapping
    ///
    /// The contract for a type like `#[repr(C)] struct Queue { ready: AtomicU32, lock:
    /// RobustMutex<Ring>, not_empty: Condvar, not_full: Condvar }` in a mapping you made
    /// (`examples/own_memory.rs` is a complete program):
    ///
    /// - **Shared memory.** The mapping is `MAP_SHARED` (a `memmap2::MmapMut::map_mut` of
    ///   a file, `mmap` of a `shm_open` or `memfd` descriptor). A private mapping
    ///   (`map_copy`, `MAP_PRIVATE`, heap memory) gives each process its own copy.
    /// - **Alignment.** The struct sits at an address aligned for it (a mapping's base
    ///   is page-aligned; at an offset, use a multiple of `align_of::<Queue>()`).
    /// - **Never moved, outlived.** Once one process has locked, waited or posted, the
    ///   bytes stay where they are in every process using them, and the mapping
    ///   outlives every reference into it: do not unmap, remap or truncate while any
    ///   process uses the objects (a held lock is linked into the kernel's robust list by
    ///   its address).
    /// - **One initializer, published before use.** Exactly one process writes the
    ///   initial value (`ptr.write(Queue { .. })`, or field by field), and no other
    ///   process touches the bytes until it is done. Either it finishes before the others
    ///   start or open the mapping, or it announces completion with a `Release` store of
    ///   a flag that the others read with `Acquire` (and zero-filled memory makes the
    ///   flag's "not yet" state). Two processes initializing at once, or one
    ///   initializing while another uses the objects, is undefined behaviour (one may
    ///   overwrite a mutex the other holds). A creator that dies mid-initialization
    ///   leaves the flag unset: openers should wait with a bound and report it. To get
    ///   crash-safe initialization and named objects from shmsync instead, run a
    ///   [`Region`](crate::Region) over the mapping
    ///   ([`Region::from_raw_parts`](crate::Region::from_raw_parts)).
    /// - **`&Queue` may be shared.** After publication every process may form and use a
    ///   `&Queue` over the mapping (all of its state is atomics or behind the lock): the
    ///   references [`init_at`](Self::init_at) and [`attach`](Self::attach) return are
    ///   not the only legal ones. Fields outside the primitives must be atomics,
    ///   guarded by the lock, or never written after publication.
    /// - **Validate what others wrote.** A process that did not initialize should
    ///   [`attach`](Self::attach) each mutex field (`attach(addr_of!((*q).lock))`) once
    ///   before using `&Queue`: it checks the header, the format word, the pid
    ///   namespace and glibc's kind word, so a stale, foreign or incompatible file is an
    ///   error rather than undefined behaviour. Condvars and semaphores accept any bits.
    ///
    /// ```
    /// use shmsync::{Condvar, RobustMutex, Segment, Semaphore};
    ///
    /// #[repr(C)]
    /// struct Pair { lock: RobustMutex<u64>, changed: Condvar, slots: Semaphore }
    ///
    /// let seg = Segment::anonymous(4096)?; // or your own MAP_SHARED mapping
    /// let p = seg.as_ptr().cast::<Pair>();
    /// // SAFETY: page-aligned, 4096 bytes, not yet seen by any other process, and
    /// // outlives `pair`.
    /// let pair = unsafe {
    ///     p.write(Pair { lock: RobustMutex::new(7)?, changed: Condvar::new(), slots: Semaphore::new(2) });
    ///     &*p
    /// };
    /// assert_eq!(*pair.lock.lock().expect("lock"), 7);
    /// // SAFETY: initialized above; another process would call this after the handover.
    /// unsafe { RobustMutex::attach(core::ptr::addr_of!((*p).lock))? };
    /// # Ok::<(), shmsync::Error>(())
    /// ```
    #[cfg(not(shmsync_loom))]
    pub fn new(value: T) -> Result<RobustMutex<T>> {
        // SAFETY: `init_at` initializes the whole mutex and its value when it returns Ok,
        // on storage no other thread or process can reach; a never-locked mutex holds no
        // address.
        unsafe { crate::header::init_by_value(|p| RobustMutex::init_at(p, value).map(drop)) }
    }

    /// A mutex holding `value`, for loom models (loom builds only: loom's atomics cannot
    /// be placed in raw shared memory).
    #[cfg(shmsync_loom)]
    pub fn new(value: T) -> RobustMutex<T> {
        RobustMutex {
            raw: RawRobustMutex::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// Blocks until the lock is acquired.
    ///
    /// # Errors
    ///
    /// [`LockError::OwnerDied`] (the lock **is** held: repair, then
    /// [`make_consistent`](OwnerDiedGuard::make_consistent)),
    /// [`LockError::Deadlock`] if this thread already holds it,
    /// [`LockError::NotRecoverable`], or [`LockError::Os`].
    #[inline]
    pub fn lock(&self) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        self.acquired(self.raw.lock())
    }

    /// Acquires the lock if nobody holds it now.
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock), plus [`LockError::WouldBlock`] if another thread holds
    /// it. A lock whose owner died is free to take: that gives `OwnerDied`.
    #[inline]
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        self.acquired(self.raw.try_lock())
    }

    /// Blocks until the lock is acquired or `timeout` has passed (measured on
    /// `CLOCK_MONOTONIC`, converted once to an absolute deadline).
    ///
    /// A zero timeout behaves like [`try_lock`](Self::try_lock) except that a held lock
    /// reports [`LockError::TimedOut`].
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock), plus [`LockError::TimedOut`].
    pub fn lock_timeout(&self, timeout: Duration) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        self.acquired(self.raw.lock_timeout(timeout))
    }

    /// Blocks until the lock is acquired or `deadline` (an `Instant`, i.e.
    /// `CLOCK_MONOTONIC`) passes. A free lock is acquired even if the deadline has
    /// passed; a held one with a past deadline gives [`LockError::TimedOut`] at once.
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock), plus [`LockError::TimedOut`].
    pub fn lock_deadline(&self, deadline: Instant) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        self.acquired(self.raw.lock_deadline(deadline))
    }

    /// The one place a raw acquisition becomes a guard or an error, for every acquiring
    /// path: `EOWNERDEAD` is handled identically whichever call saw it.
    #[inline]
    fn acquired(
        &self,
        r: core::result::Result<Acquired, RawLockError>,
    ) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        match r {
            Ok(Acquired::Clean) => Ok(MutexGuard::new(self)),
            Ok(Acquired::OwnerDied) => Err(LockError::OwnerDied(OwnerDiedGuard::new(self))),
            Err(e) => Err(LockError::from_raw(e)),
        }
    }

    /// Re-initializes the lock (unlocked, consistent) to bring back a mutex that is
    /// [`MutexState::NotRecoverable`]. The data is left as it is.
    ///
    /// # Errors
    ///
    /// [`Error::Os`](crate::Error::Os) if a pthread initialization call fails.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - any thread in any process holds the lock, is blocked in or entering a lock call
    ///   on it, or will unlock it — the caller must have exclusive access (for instance,
    ///   every other process that used the mutex is known to be gone, or they all wait
    ///   on something else the caller controls).
    #[cfg(not(shmsync_loom))]
    pub unsafe fn reinit(&self) -> Result<()> {
        // SAFETY: exclusive access (the caller's promise).
        unsafe { self.raw.reinit() }
    }

    /// The lock's state, read without taking it (a snapshot that may be stale at once).
    pub fn state(&self) -> MutexState {
        self.raw.state()
    }

    /// The raw lock, for crates that embed this mutex in their own protocols (e.g. to
    /// read its header). Locking it directly bypasses the guards: its `unsafe` methods
    /// say what the caller then owes.
    pub fn raw(&self) -> &RawRobustMutex {
        &self.raw
    }
}

impl<T: AnyBitPattern> fmt::Debug for RobustMutex<T> {
    /// Shows the lock's state without taking the lock (the data is not shown: reading
    /// it would need the lock).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RobustMutex")
            .field("state", &self.raw.state())
            .finish_non_exhaustive()
    }
}

/// Proof that this thread holds a [`RobustMutex`]; gives access to the data and
/// unlocks on drop.
///
/// `!Send` (a pthread mutex must be unlocked by the thread that locked it), and it
/// borrows the mutex, which borrows the mapping: the segment cannot be unmapped while
/// the lock is held (the kernel's robust-list walk would then meet unmapped memory).
///
/// ```
/// use shmsync::{RobustMutex, Segment};
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: fresh, private, page-aligned memory that outlives `m`.
/// let m = unsafe { RobustMutex::init_at(seg.as_ptr().cast(), [0u8; 4])? };
/// {
///     let mut guard = m.lock().unwrap();
///     guard[0] = 1; // DerefMut to the data
/// } // unlocked here
/// assert_eq!(m.lock().unwrap()[0], 1);
/// # Ok::<(), shmsync::Error>(())
/// ```
#[must_use = "if unused the mutex unlocks at once"]
pub struct MutexGuard<'a, T: AnyBitPattern> {
    pub(crate) mutex: &'a RobustMutex<T>,
    /// `!Send`: unlocking belongs to the locking thread.
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a `&MutexGuard` only gives `&T`, which is fine to share when `T: Sync`.
unsafe impl<T: AnyBitPattern + Sync> Sync for MutexGuard<'_, T> {}

impl<'a, T: AnyBitPattern> MutexGuard<'a, T> {
    /// A guard for a lock the calling thread has just acquired.
    #[inline]
    fn new(mutex: &'a RobustMutex<T>) -> MutexGuard<'a, T> {
        MutexGuard {
            mutex,
            _not_send: PhantomData,
        }
    }

    /// The mutex this guard holds (an associated function, so that it never shadows a
    /// method of `T`).
    pub fn mutex(this: &MutexGuard<'a, T>) -> &'a RobustMutex<T> {
        this.mutex
    }

    /// Unlocks, and returns the mutex and pthread's result (0 on success). For the
    /// condition variable, which must see an unlock failure instead of ignoring it.
    #[inline]
    pub(crate) fn unlock_checked(self) -> (&'a RobustMutex<T>, i32) {
        let mutex = self.mutex;
        core::mem::forget(self);
        // SAFETY: the guard proved that this thread holds the lock, and it is consumed,
        // so no reference to the data it handed out outlives the unlock.
        let r = unsafe { mutex.raw.unlock_raw() };
        (mutex, r)
    }
}

impl<T: AnyBitPattern> Deref for MutexGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this thread holds the lock for the guard's lifetime, so nobody writes
        // the data while the returned borrow (tied to the guard) lives.
        self.mutex.data.with(|p| unsafe { &*p })
    }
}

impl<T: AnyBitPattern> DerefMut for MutexGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this thread holds the lock and the guard is borrowed mutably, so this
        // is the only access to the data while the borrow lives.
        self.mutex.data.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T: AnyBitPattern> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard proves that this thread holds the lock; the data borrows it
        // handed out have ended (they borrow the guard).
        let r = unsafe { self.mutex.raw.unlock_raw() };
        // EPERM, "not the owner", happens only for a guard copied into a fork child,
        // where the lock still belongs to the parent's thread and must stay as it is.
        // EINVAL: glibc's kind word was corrupted while held, so glibc was not called;
        // the lock stays with this thread until it exits (the kernel then marks it
        // owner-died), and every other locker gets `Corrupt`. Nothing to do either
        // way, and no panic in Drop.
        let _ = r;
    }
}

impl<T: AnyBitPattern + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard").field("data", &**self).finish()
    }
}

/// The lock of a [`RobustMutex`] whose previous owner died holding it: this thread
/// holds the lock now, and the data may be half updated.
///
/// Repair the data through `DerefMut`, then call
/// [`make_consistent`](Self::make_consistent) to get a normal [`MutexGuard`]. Dropped
/// without that, the lock is released and the mutex becomes **not recoverable**: every
/// later locker, in every process, gets [`LockError::NotRecoverable`] until
/// [`RobustMutex::reinit`]. `!Send` and borrows the mutex, like [`MutexGuard`].
///
/// ```
/// use shmsync::{LockError, MutexState, RobustMutex, Segment};
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: fresh, private, page-aligned memory that outlives `m`.
/// let m = unsafe { RobustMutex::init_at(seg.as_ptr().cast(), 5u64)? };
/// // SAFETY: the child only locks and `_exit`s (async-signal-safe).
/// let pid = unsafe { libc::fork() };
/// if pid == 0 {
///     std::mem::forget(m.lock());
///     // SAFETY: `_exit` is always safe; the kernel marks the mutex owner-died.
///     unsafe { libc::_exit(0) };
/// }
/// // SAFETY: reaping our own child.
/// unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
/// assert_eq!(m.state(), MutexState::OwnerDied);
/// match m.lock() {
///     Err(LockError::OwnerDied(mut repair)) => {
///         *repair = 0; // repair the data, then
///         drop(repair.make_consistent()); // mark it consistent and unlock
///     }
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(*m.lock().unwrap(), 0);
/// # Ok::<(), shmsync::Error>(())
/// ```
#[must_use = "repair the data and call make_consistent(); dropping this makes the mutex not recoverable"]
pub struct OwnerDiedGuard<'a, T: AnyBitPattern> {
    mutex: &'a RobustMutex<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: as for `MutexGuard`.
unsafe impl<T: AnyBitPattern + Sync> Sync for OwnerDiedGuard<'_, T> {}

impl<'a, T: AnyBitPattern> OwnerDiedGuard<'a, T> {
    #[cold]
    fn new(mutex: &'a RobustMutex<T>) -> OwnerDiedGuard<'a, T> {
        OwnerDiedGuard {
            mutex,
            _not_send: PhantomData,
        }
    }

    /// Declares the data repaired: the mutex is usable again after this guard's
    /// unlock, and the returned guard is an ordinary one.
    pub fn make_consistent(self) -> MutexGuard<'a, T> {
        let mutex = self.mutex;
        core::mem::forget(self);
        // SAFETY: this thread holds the lock (it was acquired with EOWNERDEAD).
        let r = unsafe { mutex.raw.make_consistent() };
        // pthread_mutex_consistent fails only with EINVAL, for a mutex that is not
        // robust (never: init_at makes it robust) or not inconsistent (then it already
        // is consistent); `Corrupt` means glibc's kind word was corrupted while held,
        // and every later lock call reports it. Either way the lock is still held and
        // an ordinary guard is the right thing to return; a recovery path must not
        // panic.
        let _ = r;
        MutexGuard::new(mutex)
    }

    /// The mutex this guard holds.
    pub fn mutex(this: &OwnerDiedGuard<'a, T>) -> &'a RobustMutex<T> {
        this.mutex
    }
}

impl<T: AnyBitPattern> Deref for OwnerDiedGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this thread holds the lock for the guard's lifetime.
        self.mutex.data.with(|p| unsafe { &*p })
    }
}

impl<T: AnyBitPattern> DerefMut for OwnerDiedGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this thread holds the lock and the guard is borrowed mutably.
        self.mutex.data.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T: AnyBitPattern> Drop for OwnerDiedGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this thread holds the lock. Unlocking an inconsistent robust mutex
        // makes it not recoverable (pthread semantics) — the documented outcome.
        let r = unsafe { self.mutex.raw.unlock_raw() };
        // EPERM or EINVAL, as in `MutexGuard`'s Drop.
        let _ = r;
    }
}

impl<T: AnyBitPattern + fmt::Debug> fmt::Debug for OwnerDiedGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerDiedGuard")
            .field("data", &**self)
            .finish()
    }
}

/// Why a lock call did not return a [`MutexGuard`], and what to do about it.
///
/// Only [`OwnerDied`](LockError::OwnerDied) holds the lock; with every other variant
/// the caller does not hold it. To propagate with `?`, go through
/// [`into_repair`](LockError::into_repair) (keeps an owner-died guard to repair) or
/// [`abandon`](LockError::abandon) (gives up on the data, leaving the mutex not
/// recoverable); there is deliberately no `From<LockError> for Error`.
///
/// ```
/// use shmsync::{LockError, RobustMutex, Segment};
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: a fresh, private, page-aligned mapping that outlives `m`.
/// let m = unsafe { RobustMutex::init_at(seg.as_ptr().cast(), 7u32)? };
/// let held = m.lock().unwrap();
/// // Held by this thread: a relock is Deadlock; another thread's try_lock WouldBlock.
/// assert!(matches!(m.lock(), Err(LockError::Deadlock)));
/// std::thread::scope(|s| {
///     s.spawn(|| assert!(matches!(m.try_lock(), Err(LockError::WouldBlock))));
/// });
/// drop(held);
/// assert_eq!(*m.try_lock().unwrap(), 7);
/// # Ok::<(), shmsync::Error>(())
/// ```
#[non_exhaustive]
pub enum LockError<'a, T: AnyBitPattern> {
    /// The previous owner died holding the lock. The guard **holds the lock**: repair
    /// the data, then [`make_consistent`](OwnerDiedGuard::make_consistent). If the data
    /// cannot be repaired, [`abandon`](LockError::abandon) it (the mutex then stays not
    /// recoverable until [`RobustMutex::reinit`]).
    OwnerDied(OwnerDiedGuard<'a, T>),
    /// `try_lock`: another thread holds the lock. Nothing changed; retry later or use a
    /// blocking form.
    WouldBlock,
    /// The timeout or deadline passed first; the holder is alive (or of unknown
    /// liveness). Retry, or report the holder (`state()` names it).
    TimedOut,
    /// The calling thread already holds the lock (the mutex is error-checking, so a
    /// self-relock is reported instead of hanging). A bug in the caller: release the
    /// first guard before locking again.
    Deadlock,
    /// An owner died and its successor released the lock without `make_consistent`:
    /// the mutex is unusable until [`RobustMutex::reinit`], which needs exclusive access
    /// (no other process using the mutex) and resets the data's lock, not the data.
    NotRecoverable,
    /// Any other error number from pthread (`EPERM`, `EAGAIN`, ...). Not expected on a
    /// correctly placed mutex; report it.
    Os(i32),
    /// A word of glibc's mutex holds a value that neither initialization nor glibc
    /// leaves there (corrupt or hostile shared memory); glibc was not called, and the
    /// caller does not hold the lock. See [`RawLockError::Corrupt`]. Stop using the
    /// segment: whoever can write it is not following the protocol.
    Corrupt {
        /// Which word.
        word: MutexWord,
        /// The value found.
        found: u32,
    },
}

impl<'a, T: AnyBitPattern> LockError<'a, T> {
    #[cold]
    fn from_raw(e: RawLockError) -> LockError<'a, T> {
        match e {
            RawLockError::WouldBlock => LockError::WouldBlock,
            RawLockError::TimedOut => LockError::TimedOut,
            RawLockError::Deadlock => LockError::Deadlock,
            RawLockError::NotRecoverable => LockError::NotRecoverable,
            RawLockError::Os(e) => LockError::Os(e),
            RawLockError::Corrupt { word, found } => LockError::Corrupt { word, found },
        }
    }

    /// Whether this is [`LockError::OwnerDied`] (the one variant that holds the lock).
    pub fn is_owner_died(&self) -> bool {
        matches!(self, LockError::OwnerDied(_))
    }

    /// The repair guard, or this error as the crate's [`Error`]: the one step between
    /// a lock call and `?`. `OwnerDied` gives `Ok(guard)` — the caller holds the lock
    /// and must repair the data and call
    /// [`make_consistent`](OwnerDiedGuard::make_consistent) — and every other variant
    /// gives `Err` with an [`Error`] that borrows nothing, so it propagates with `?`
    /// out of a function that owns neither the mutex nor its mapping. Nothing is done
    /// to the mutex either way.
    ///
    /// ```
    /// use shmsync::{RobustMutex, Segment};
    ///
    /// fn bump(m: &RobustMutex<u64>) -> shmsync::Result<u64> {
    ///     let mut guard = match m.lock() {
    ///         Ok(guard) => guard,
    ///         // The counter has no invariant a crash can break: mark it consistent.
    ///         Err(e) => e.into_repair()?.make_consistent(),
    ///     };
    ///     *guard += 1;
    ///     Ok(*guard)
    /// }
    ///
    /// let seg = Segment::anonymous(4096)?;
    /// // SAFETY: a fresh, private, page-aligned mapping that outlives `m`.
    /// let m = unsafe { RobustMutex::init_at(seg.as_ptr().cast(), 0u64)? };
    /// assert_eq!(bump(m)?, 1);
    /// # Ok::<(), shmsync::Error>(())
    /// ```
    pub fn into_repair(self) -> crate::Result<OwnerDiedGuard<'a, T>> {
        self.split().map_err(|raw| raw.into_error("robust mutex"))
    }

    /// Gives up on repairing: this error as the crate's [`Error`], and for `OwnerDied`
    /// a deliberate abandonment. The guard is dropped **without**
    /// [`make_consistent`](OwnerDiedGuard::make_consistent), which releases the lock
    /// and leaves the mutex permanently not recoverable (pthread semantics): every later
    /// lock, in every process, fails with [`LockError::NotRecoverable`] until
    /// [`RobustMutex::reinit`]. The result is then [`Error::OwnerDied`]. Use it when
    /// the data cannot be repaired and must not be used again; otherwise use
    /// [`into_repair`](Self::into_repair). Every other variant converts as
    /// `into_repair` converts it, without touching the mutex.
    pub fn abandon(self) -> Error {
        match self.split() {
            Ok(guard) => {
                drop(guard);
                Error::OwnerDied("robust mutex")
            }
            Err(raw) => raw.into_error("robust mutex"),
        }
    }

    /// The guard of `OwnerDied`, or the raw error every other variant mirrors.
    fn split(self) -> core::result::Result<OwnerDiedGuard<'a, T>, RawLockError> {
        Err(match self {
            LockError::OwnerDied(guard) => return Ok(guard),
            LockError::WouldBlock => RawLockError::WouldBlock,
            LockError::TimedOut => RawLockError::TimedOut,
            LockError::Deadlock => RawLockError::Deadlock,
            LockError::NotRecoverable => RawLockError::NotRecoverable,
            LockError::Os(e) => RawLockError::Os(e),
            LockError::Corrupt { word, found } => RawLockError::Corrupt { word, found },
        })
    }
}

impl<T: AnyBitPattern> fmt::Debug for LockError<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::WouldBlock => f.write_str("WouldBlock"),
            LockError::TimedOut => f.write_str("TimedOut"),
            LockError::Deadlock => f.write_str("Deadlock"),
            LockError::NotRecoverable => f.write_str("NotRecoverable"),
            LockError::Os(e) => f.debug_tuple("Os").field(e).finish(),
            LockError::Corrupt { word, found } => f
                .debug_struct("Corrupt")
                .field("word", word)
                .field("found", found)
                .finish(),
        }
    }
}

impl<T: AnyBitPattern> fmt::Display for LockError<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str(
                "the previous owner died holding the mutex (the lock is held; repair the data and make it consistent)",
            ),
            LockError::WouldBlock => RawLockError::WouldBlock.fmt(f),
            LockError::TimedOut => RawLockError::TimedOut.fmt(f),
            LockError::Deadlock => RawLockError::Deadlock.fmt(f),
            LockError::NotRecoverable => RawLockError::NotRecoverable.fmt(f),
            LockError::Os(e) => RawLockError::Os(*e).fmt(f),
            LockError::Corrupt { word, found } => RawLockError::Corrupt {
                word: *word,
                found: *found,
            }
            .fmt(f),
        }
    }
}

impl<T: AnyBitPattern> std::error::Error for LockError<'_, T> {}

// SAFETY: `RobustMutex::init_at` places a full mutex (Kind::Mutex header first) and its
// value; `attach` validates header, format and pid namespace; T is AnyBitPattern (no
// pointers owed, any bytes valid).
#[cfg(not(shmsync_loom))]
unsafe impl<T: crate::SharedType + Send> crate::Shared for RobustMutex<T> {
    const KIND: crate::Kind = crate::Kind::Mutex;
    const IDENTITY: crate::TypeIdentity = T::IDENTITY.within("shmsync.RobustMutex");
    type Init = T;

    fn value_name() -> String {
        T::display_name()
    }

    unsafe fn init_at<'a>(ptr: *mut Self, init: T) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { RobustMutex::init_at(ptr, init) }
    }

    unsafe fn attach<'a>(ptr: *const Self) -> Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { RobustMutex::attach(ptr) }
    }
}
