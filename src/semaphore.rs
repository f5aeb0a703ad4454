//! [`Semaphore`]: a counting semaphore on two shared futex words, with bounded adaptive
//! spinning, absolute deadlines and overflow checking.
//!
//! # Layout
//!
//! `#[repr(C)] { value: u32, sleepers: u32 }`: 8 bytes, 4-byte aligned, no header.
//! `value` is the number of available permits and is the futex word sleepers wait on;
//! `sleepers` counts the waiters that may be asleep in the kernel (or about to be), so
//! that [`post`](Semaphore::post) enters the kernel only when someone can need waking.
//! Every bit pattern is a valid semaphore (all zero is "value 0, nobody waiting"), so
//! there is nothing to validate: [`Semaphore::attach`] checks only the alignment, and a
//! `Region` table entry, not the object, records that the bytes are a
//! semaphore. The two words are always accessed as two `u32` atomics, never as one
//! `u64` (mixed-size atomic accesses are undefined in Rust's memory model).
//!
//! # Protocol
//!
//! * `try_wait` / the fast path of `wait`: CAS `value` from `v > 0` to `v - 1`.
//! * `post_n(n)`: CAS `value` from `v` to `v + n` (refusing to pass [`MAX_VALUE`](Semaphore::MAX_VALUE)), then,
//!   only if `sleepers > 0`, `FUTEX_WAKE(value, n)`: no more sleepers woken than permits
//!   added, and no system call when nobody sleeps.
//! * slow path of `wait`: spin a bounded, adaptive number of rounds watching `value`;
//!   then register in `sleepers`, and loop { take a permit if `value > 0`, else
//!   `FUTEX_WAIT(value, 0, deadline)` }; deregister.
//!
//! Why no wakeup is lost: see the comment in `wait_slow`.
//!
//! # Process death
//!
//! A waiter never holds anything while it waits, so a waiter killed at any instruction
//! loses no permit: the permit count lives in one word and changes only by single CAS
//! operations. A waiter killed while registered leaves `sleepers` one too high for good;
//! the only cost is that every later `post` makes a `FUTEX_WAKE` system call (about a
//! hundred nanoseconds) that finds nobody to wake. [`Semaphore::sleepers`] shows it.
//!
//! A sleeper killed in the instant between being woken by a post and taking the permit
//! leaves that permit in `value` (nothing is lost, and any new waiter takes it at once),
//! and a poster killed between its add and its `FUTEX_WAKE` leaves permits beside
//! sleepers. Neither strands anyone: every sleep is capped at
//! [`MAX_SLEEP`](crate::futex::MAX_SLEEP), after which a sleeper
//! re-checks `value` (glibc's `sem_t` sleeps on until the next post). A semaphore has no owner, so a process killed
//! *holding* a permit (between its `wait` and its `post`) cannot be detected here: use
//! [`crate::LeasedSemaphore`] when permits must be reclaimed from dead holders.

use core::fmt;
use core::time::Duration;
use std::time::Instant;

use crate::error::Error;
#[cfg(not(shmsync_loom))]
use crate::error::Result;
use crate::futex::{Deadline, WaitOutcome};
#[cfg(not(shmsync_loom))]
use crate::header::check_placement;
use crate::sync::{futex_impl, AtomicU32, Ordering};

/// The largest value a semaphore can hold: `i32::MAX`, like glibc's `SEM_VALUE_MAX`.
pub(crate) const MAX_VALUE: u32 = i32::MAX as u32;

/// Why a semaphore operation did not complete. Nothing was changed in any case.
/// Converts into [`Error`] with `From`.
///
/// ```
/// use shmsync::{SemError, Semaphore};
/// use std::time::Duration;
///
/// let sem = Semaphore::new(0);
/// assert_eq!(sem.try_wait(), Err(SemError::WouldBlock));
/// assert_eq!(sem.wait_timeout(Duration::ZERO), Err(SemError::TimedOut));
/// assert_eq!(sem.post_n(Semaphore::MAX_VALUE + 1), Err(SemError::Overflow));
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SemError {
    /// `post` would have raised the value above [`MAX_VALUE`](Semaphore::MAX_VALUE)
    /// (`sem_post`'s EOVERFLOW). More posts than waits: a caller bug, or a peer posting
    /// for permits it never took.
    Overflow,
    /// The deadline passed before a permit became available. Retry, or give up; a dead
    /// process's permits are not returned to a plain semaphore (use
    /// [`LeasedSemaphore`](crate::LeasedSemaphore) for that).
    TimedOut,
    /// `try_wait`: no permit is available now. Retry later or use a blocking form.
    WouldBlock,
}

impl fmt::Display for SemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SemError::Overflow => "semaphore value would exceed its maximum (i32::MAX)",
            SemError::TimedOut => "timed out waiting for a semaphore permit",
            SemError::WouldBlock => "no semaphore permit is available",
        })
    }
}

impl std::error::Error for SemError {}

impl From<SemError> for Error {
    /// `Overflow` becomes [`Error::Overflow`], `TimedOut` [`Error::TimedOut`] and
    /// `WouldBlock` [`Error::WouldBlock`], each naming the semaphore.
    #[cold]
    fn from(e: SemError) -> Error {
        match e {
            SemError::Overflow => Error::Overflow("semaphore value"),
            SemError::TimedOut => Error::TimedOut("semaphore permit"),
            SemError::WouldBlock => Error::WouldBlock("semaphore permit"),
        }
    }
}

/// A counting semaphore that lives in shared memory. 8 bytes, 4-byte aligned,
/// `#[repr(C)]`; see the module documentation of `src/semaphore.rs` for the layout and protocol.
///
/// ```
/// use shmsync::{Segment, Semaphore};
/// use std::time::Duration;
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: a fresh, private, page-aligned mapping that outlives `sem`.
/// let sem = unsafe { Semaphore::init_at(seg.as_ptr().cast(), 0)? };
/// std::thread::scope(|s| {
///     s.spawn(|| sem.post().unwrap());
///     sem.wait(); // blocks until the other thread posts
/// });
/// assert_eq!(sem.value(), 0);
/// assert!(sem.wait_timeout(Duration::from_millis(1)).is_err());
/// # Ok::<(), shmsync::Error>(())
/// ```
#[repr(C)]
pub struct Semaphore {
    /// Available permits; the futex word.
    value: AtomicU32,
    /// Waiters registered as (possibly) asleep on `value`.
    sleepers: AtomicU32,
}

#[cfg(not(shmsync_loom))]
static_assertions::assert_eq_size!(Semaphore, [u8; 8]);
#[cfg(not(shmsync_loom))]
static_assertions::const_assert_eq!(core::mem::align_of::<Semaphore>(), 4);

impl Semaphore {
    /// The largest value a semaphore can hold: `i32::MAX`, like glibc's `SEM_VALUE_MAX`.
    pub const MAX_VALUE: u32 = MAX_VALUE;

    /// A semaphore holding `value` permits, by value: for a `static`, memory shared
    /// only between threads, or a field of a larger `#[repr(C)]` value written into a
    /// shared mapping (the contract for that is under
    /// [`RobustMutex::new`](crate::RobustMutex::new)). Moving it is sound while no
    /// thread or process uses it; it holds no address. To place one alone in shared
    /// memory, use [`init_at`](Self::init_at).
    ///
    /// # Panics
    ///
    /// If `value > MAX_VALUE` (in a `const` context, a compile error).
    #[cfg(not(shmsync_loom))]
    pub const fn new(value: u32) -> Semaphore {
        assert!(value <= MAX_VALUE, "semaphore value above MAX_VALUE");
        Semaphore {
            value: AtomicU32::new(value),
            sleepers: AtomicU32::new(0),
        }
    }

    /// A model-checking constructor (loom builds only).
    ///
    /// # Panics
    ///
    /// If `value > MAX_VALUE`.
    #[cfg(shmsync_loom)]
    pub fn new(value: u32) -> Semaphore {
        assert!(value <= MAX_VALUE, "semaphore value above MAX_VALUE");
        Semaphore {
            value: AtomicU32::new(value),
            sleepers: AtomicU32::new(0),
        }
    }

    /// Places a semaphore holding `value` permits at `ptr` and returns a reference to it.
    ///
    /// Fails with [`Error::InvalidArgument`] if `value > MAX_VALUE`, and with
    /// [`Error::Misaligned`] if `ptr` is null or not 4-byte aligned.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of 8 bytes for all of `'a`, in memory
    ///   that stays mapped (and is not remapped elsewhere in this process) for `'a`;
    /// - any other thread or process accesses those bytes while `init_at` runs (another
    ///   process may [`attach`](Self::attach) and use the semaphore only afterwards).
    #[cfg(not(shmsync_loom))]
    pub unsafe fn init_at<'a>(ptr: *mut Semaphore, value: u32) -> Result<&'a Semaphore> {
        check_placement(ptr)?;
        if value > MAX_VALUE {
            return Err(Error::InvalidArgument("semaphore value above MAX_VALUE"));
        }
        // SAFETY: `ptr` is aligned (checked), valid for writes of a `Semaphore`, and
        // nobody else accesses it during the call (the caller's promise).
        unsafe { ptr.write(Semaphore::new(value)) };
        // SAFETY: just initialized; valid and mapped for 'a (the caller's promise).
        Ok(unsafe { &*ptr })
    }

    /// Uses the semaphore another process (or this one) placed at `ptr`.
    ///
    /// Every bit pattern is a valid semaphore, so only the alignment is checked
    /// ([`Error::Misaligned`]); all-zero memory is a semaphore with value 0. Whether the
    /// bytes really are a semaphore is the container's business (a
    /// `Region` records each object's kind in its table).
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of 8 bytes for all of `'a`, in memory
    ///   that stays mapped for `'a`;
    /// - those bytes are accessed for `'a` other than as this semaphore's atomics (for
    ///   example, written non-atomically by `init_at` running concurrently).
    #[cfg(not(shmsync_loom))]
    pub unsafe fn attach<'a>(ptr: *const Semaphore) -> Result<&'a Semaphore> {
        check_placement(ptr)?;
        // SAFETY: aligned (checked), valid and mapped for 'a (the caller's promise); the
        // fields are atomics, so sharing the reference with other users is race-free.
        Ok(unsafe { &*ptr })
    }

    /// Adds one permit, waking one sleeper if any.
    ///
    /// Fails with [`SemError::Overflow`], changing nothing, if the value is
    /// [`MAX_VALUE`](Semaphore::MAX_VALUE).
    #[inline]
    pub fn post(&self) -> Result<(), SemError> {
        self.post_n(1)
    }

    /// Adds `n` permits at once, waking at most `n` sleepers (none if nobody sleeps:
    /// then no system call is made). `post_n(0)` does nothing.
    ///
    /// Fails with [`SemError::Overflow`], changing nothing, if the value would exceed
    /// [`MAX_VALUE`](Semaphore::MAX_VALUE).
    #[inline]
    pub fn post_n(&self, n: u32) -> Result<(), SemError> {
        if n == 0 {
            return Ok(());
        }
        // First guess 0, not a load: a post usually finds no permit left (a waiter took
        // the last one, or waits for this one), and a CAS as the first access fetches the
        // cache line for writing at once, where a load would fetch it shared and the
        // CAS then upgrade it, two transfers when a waiter in another process has just
        // read it. A wrong guess costs one failed CAS, which returns the current value.
        let mut v = 0;
        loop {
            if v > MAX_VALUE || n > MAX_VALUE - v {
                return Err(SemError::Overflow);
            }
            // SeqCst on success: it is the Release half of the permit hand-off (pairs
            // with the Acquire CAS of the waiter that takes a permit: what this thread
            // did before posting happens-before what the taker does after), and it is
            // one half of the store-then-load (Dekker) pairing with the waiter's
            // `sleepers` registration explained in `wait_slow`. A SeqCst RMW is the same
            // `lock cmpxchg` as AcqRel on x86. Relaxed on failure: we only retry.
            match self
                .value
                .compare_exchange_weak(v, v + n, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        crate::sync::loom_seqcst_fence();
        // SeqCst: the load half of the Dekker pairing (see `wait_slow`): after our SeqCst
        // RMW of `value`, either we see a registered sleeper, or that sleeper's SeqCst
        // load of `value` sees our permits.
        let sleepers = self.sleepers.load(Ordering::SeqCst);
        if sleepers > 0 {
            self.wake(n.min(sleepers));
        }
        Ok(())
    }

    #[cold]
    fn wake(&self, n: u32) {
        futex_impl::wake(&self.value, n);
    }

    /// Takes a permit if one is available now, without blocking; otherwise
    /// [`SemError::WouldBlock`].
    #[inline]
    pub fn try_wait(&self) -> Result<(), SemError> {
        // Relaxed: a first guess for the CAS, which re-reads on failure.
        let mut v = self.value.load(Ordering::Relaxed);
        while v > 0 {
            match self.try_take(v) {
                Ok(()) => return Ok(()),
                Err(now) => v = now,
            }
        }
        Err(SemError::WouldBlock)
    }

    /// One attempt to move `value` from `v` (> 0) to `v - 1`.
    #[inline]
    fn try_take(&self, v: u32) -> Result<(), u32> {
        // Acquire on success: pairs with the SeqCst (Release) CAS in `post_n` that made
        // the permit available, so the poster's earlier writes are visible to us.
        // Relaxed on failure: we only retry with the fresh value.
        self.value
            .compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed)
            .map(|_| ())
    }

    /// Takes a permit, sleeping until one is available.
    #[inline]
    pub fn wait(&self) {
        if self.try_wait().is_ok() {
            return;
        }
        // Without a deadline the slow path only returns with a permit.
        let _ = self.wait_slow(None);
    }

    /// Takes a permit, sleeping at most `timeout`. A zero timeout takes an available
    /// permit and otherwise fails at once; `Duration::MAX` saturates (waits forever).
    #[inline]
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), SemError> {
        if self.try_wait().is_ok() {
            return Ok(());
        }
        self.wait_slow(Some(Deadline::after(timeout)))
    }

    /// Takes a permit, sleeping until `deadline` at the latest. A deadline in the past
    /// still takes an available permit; it fails at once only if none is available.
    #[inline]
    pub fn wait_deadline(&self, deadline: Instant) -> Result<(), SemError> {
        self.wait_until(Deadline::from_instant(deadline))
    }

    /// As [`wait_deadline`](Self::wait_deadline), with the crate's [`Deadline`]
    /// (absolute `CLOCK_MONOTONIC`).
    #[inline]
    pub(crate) fn wait_until(&self, deadline: Deadline) -> Result<(), SemError> {
        if self.try_wait().is_ok() {
            return Ok(());
        }
        self.wait_slow(Some(deadline))
    }

    /// The slow path: spin, then sleep.
    ///
    /// Lost wakeups are impossible. The poster does `value += n` (SeqCst RMW), then
    /// loads `sleepers` (SeqCst). A waiter does `sleepers += 1` (SeqCst RMW), then loads
    /// `value` (SeqCst) before it sleeps. All four are SeqCst, so they are totally
    /// ordered consistently with each thread's program order: if the poster's load
    /// missed the waiter's increment, that load precedes the increment, so the waiter's
    /// later load of `value` follows the poster's add and sees the permits. Either the
    /// poster wakes, or the waiter sees `value > 0` and does not sleep. The window
    /// between the waiter's load (seeing 0) and its sleep is covered by the kernel:
    /// `FUTEX_WAIT(value, 0)` compares the word with 0 under the futex bucket lock,
    /// ordered against `FUTEX_WAKE`, so a post landing in that window either makes the
    /// compare fail (EAGAIN: we re-check) or finds us queued and wakes us.
    ///
    /// A woken waiter that finds the permit taken by someone faster simply sleeps
    /// again: the permit was not lost, it was consumed.
    #[cold]
    #[inline(never)]
    fn wait_slow(&self, deadline: Option<Deadline>) -> Result<(), SemError> {
        let past = deadline.is_some_and(Deadline::has_passed);
        if !past && self.spin() {
            return Ok(());
        }
        // SeqCst: the waiter's store half of the Dekker pairing with `post_n` (above).
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        crate::sync::loom_seqcst_fence();
        let result = loop {
            // SeqCst: the waiter's load half of the Dekker pairing.
            let v = self.value.load(Ordering::SeqCst);
            if v > 0 {
                if self.try_take(v).is_ok() {
                    break Ok(());
                }
                continue;
            }
            // Sleeps are capped (see `futex::MAX_SLEEP`): a poster killed
            // between its add and its wake must not leave us asleep beside a permit.
            let (sleep_until, callers) = crate::futex::sleep_deadline(deadline);
            if futex_impl::wait(&self.value, 0, sleep_until) == WaitOutcome::TimedOut && callers {
                // The kernel only reports a timeout for a waiter no FUTEX_WAKE took,
                // so no wakeup meant for a permit is swallowed here.
                break Err(SemError::TimedOut);
            }
        };
        // Relaxed: `sleepers` is only a hint for posters. Every RMW reads the latest
        // value, so no registration is ever lost; a poster that still sees our stale
        // registration makes one spurious FUTEX_WAKE, and one that sees this decrement
        // does not need to wake us (we are no longer waiting).
        self.sleepers.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// Spins for the adaptive budget (see [`crate::spin`]), watching for a permit.
    /// Returns whether it took one.
    #[inline]
    fn spin(&self) -> bool {
        crate::spin::spin_until(|| {
            // Relaxed: a hint only; the Acquire CAS in `try_take` does the taking.
            let v = self.value.load(Ordering::Relaxed);
            v > 0 && self.try_take(v).is_ok()
        })
    }

    /// The number of available permits (a snapshot: it may change at once).
    #[inline]
    pub fn value(&self) -> u32 {
        // Relaxed: a snapshot for diagnostics; nothing is read on the strength of it.
        self.value.load(Ordering::Relaxed)
    }

    /// The number of waiters registered as (possibly) asleep (a diagnostic snapshot).
    /// It stays one too high for each waiter that was killed while registered; the only
    /// cost of that is a futile `FUTEX_WAKE` system call in each later `post`.
    #[inline]
    pub fn sleepers(&self) -> u32 {
        // Relaxed: a diagnostic snapshot.
        self.sleepers.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.value())
            .field("sleepers", &self.sleepers())
            .finish()
    }
}

// SAFETY: a semaphore is two u32 words for which every bit pattern is valid; `init_at`
// writes both; no pointers.
#[cfg(not(shmsync_loom))]
unsafe impl crate::Shared for Semaphore {
    const KIND: crate::Kind = crate::Kind::Semaphore;
    const IDENTITY: crate::TypeIdentity =
        crate::TypeIdentity::declared::<Self>("shmsync.Semaphore", &[]);
    type Init = u32;

    fn value_name() -> String {
        "shmsync.Semaphore".to_owned()
    }

    unsafe fn init_at<'a>(ptr: *mut Self, value: u32) -> crate::Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { Semaphore::init_at(ptr, value) }
    }

    unsafe fn attach<'a>(ptr: *const Self) -> crate::Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { Semaphore::attach(ptr) }
    }
}
