//! [`Condvar`]: a process-shared condition variable for [`RobustMutex`](crate::RobustMutex), on a futex
//! sequence word, that survives the death of its waiters.

use core::fmt;
use std::time::{Duration, Instant};

use bytemuck::AnyBitPattern;

#[cfg(not(shmsync_loom))]
use crate::error::Result;
use crate::futex::{Deadline, WaitOutcome};
#[cfg(not(shmsync_loom))]
use crate::header::check_placement;
use crate::mutex::{LockError, MutexGuard};
use crate::sync::{futex_impl as futex, AtomicU32, Ordering};

/// A condition variable for a [`RobustMutex`](crate::RobustMutex), shared between processes.
///
/// It is one 32-bit sequence word plus a 32-bit count of sleeping waiters: `wait` reads
/// the sequence under the mutex, unlocks, spins briefly (adaptive, like the semaphore's)
/// and then sleeps on a shared futex as long as the sequence still holds that value;
/// `notify_*` bump the sequence and enter the kernel to wake only if someone sleeps. The relock at the end of a
/// wait is an ordinary lock, so a notifier (or anyone) that died holding the mutex is
/// reported as [`LockError::OwnerDied`], with the guard.
///
/// # Waiter death
///
/// A waiter killed while waiting consumes no notification and needs no clean-up. No
/// waiter ever writes the sequence word; a sleeping waiter exists as the kernel's futex
/// queue entry, which the kernel removes when the task dies, so a later `notify_one`
/// wakes a live waiter. The only trace a killed sleeper leaves is the sleeper count one
/// too high, which makes every later notification enter the kernel for a futile wake
/// (as if someone were asleep) and changes nothing else.
/// (pthread's process-shared condvar keeps per-waiter counts in shared memory — glibc's
/// `__wrefs` and group counters — that a killed waiter leaves behind.) A waiter that is
/// killed *at the same moment* as a notification may be the one the kernel picked to
/// wake; that is indistinguishable from a waiter that was woken and then died, which a
/// protocol must handle anyway (e.g. by a consumer that re-notifies when it cannot
/// finish, or by notifying all).
///
/// # Headerless
///
/// Unlike the mutex, a condvar carries no `ObjectHeader`:
/// all-zero memory is a valid condvar with no waiters, and *every* value of the word is
/// a valid state, so there is nothing a header could let [`attach`](Self::attach)
/// refuse that would otherwise be unsafe, and it stays 8 bytes. Its kind is recorded by
/// whoever lays it out (a region table).
///
/// # Rules
///
/// - Change the condition only while holding the mutex, then notify (during or after
///   the critical section); the waiter must check the condition under the mutex before
///   each wait (use [`wait_while`](Self::wait_while)). That is what makes a wakeup
///   impossible to lose: the waiter reads the sequence while holding the mutex, so a
///   notifier that changed the condition after that read bumps the sequence after it too,
///   and the futex either sees the new value or is woken.
/// - Waits may return spuriously, and `notify_one` may wake more than one waiter.
/// - The sequence is 32 bits: a waiter that is descheduled between reading it and
///   sleeping while exactly 2³² notifications happen would miss them (as std's futex
///   condvar).
///
/// # Example
///
/// A forked child sets a flag under the mutex and notifies; the parent waits for it.
///
/// ```
/// use shmsync::{Condvar, RobustMutex, Segment};
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: a fresh 4096-byte mapping nobody else uses yet, outliving `m` and `cv`;
/// // the mutex takes the first 72 bytes and the condvar 8 bytes at offset 128.
/// let (m, cv) = unsafe {
///     (
///         RobustMutex::<u32>::init_at(seg.as_ptr().cast(), 0)?,
///         Condvar::init_at(seg.as_ptr().add(128).cast())?,
///     )
/// };
///
/// // SAFETY: the child only locks, writes plain data, notifies (a futex call), `_exit`s.
/// let pid = unsafe { libc::fork() };
/// if pid == 0 {
///     if let Ok(mut ready) = m.lock() {
///         *ready = 1;
///     }
///     cv.notify_one();
///     // SAFETY: `_exit` is always safe.
///     unsafe { libc::_exit(0) };
/// }
///
/// let guard = m.lock().expect("lock");
/// let guard = cv.wait_while(guard, |ready| *ready == 0).expect("relock");
/// assert_eq!(*guard, 1);
/// drop(guard);
/// // SAFETY: reaping our own child.
/// unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
/// # Ok::<(), shmsync::Error>(())
/// ```
#[repr(C)]
pub struct Condvar {
    /// Bumped by every notification; the futex word waiters sleep on.
    seq: AtomicU32,
    /// Waiters that may be asleep in the kernel, so that a notification makes a system
    /// call only when someone can need waking. One too high for good after a waiter is
    /// killed while registered (costing a futile wake per notify, nothing more).
    sleepers: AtomicU32,
}

#[cfg(not(shmsync_loom))]
static_assertions::assert_eq_size!(Condvar, [u8; 8]);
#[cfg(not(shmsync_loom))]
static_assertions::const_assert_eq!(core::mem::align_of::<Condvar>(), 4);

/// Whether a timed wait ended because its time ran out.
///
/// ```
/// use shmsync::{Condvar, RobustMutex, Segment};
/// use std::time::Duration;
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: fresh, private, page-aligned memory that outlives both objects.
/// let (m, cv) = unsafe {
///     let base = seg.as_ptr();
///     (RobustMutex::init_at(base.cast(), 0u32)?, Condvar::init_at(base.add(128).cast())?)
/// };
/// let guard = m.lock().unwrap();
/// let (guard, result) = cv.wait_timeout(guard, Duration::from_millis(1)).unwrap();
/// assert!(result.timed_out()); // nobody notified
/// drop(guard);
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait ended because the timeout or deadline passed (the lock is held
    /// again either way).
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Default for Condvar {
    fn default() -> Self {
        Condvar::new()
    }
}

impl Condvar {
    /// A condvar with no waiters (sequence 0), e.g. to write into shared memory as a
    /// field of a larger `#[repr(C)]` value (the contract for that is under
    /// [`RobustMutex::new`](crate::RobustMutex::new)), or for in-process and loom use.
    /// It holds no address: moving it is sound while nobody waits on it.
    pub fn new() -> Condvar {
        Condvar {
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        }
    }

    /// Places a new condvar (sequence 0) at `ptr`.
    ///
    /// Zero-filled memory (a fresh segment) already is a valid condvar, so this is only
    /// needed for memory that held something else.
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`](crate::Error::Misaligned) for a null or misaligned `ptr`.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of 8 bytes for all of `'a`, in memory
    ///   that stays mapped for `'a`;
    /// - any other thread or process accesses those bytes while `init_at` runs.
    #[cfg(not(shmsync_loom))]
    pub unsafe fn init_at<'a>(ptr: *mut Condvar) -> Result<&'a Condvar> {
        check_placement(ptr)?;
        // SAFETY: non-null and aligned (checked), valid for writes and not accessed by
        // anyone else (the caller's promise).
        unsafe { ptr.write(Condvar::new()) };
        // SAFETY: initialized just now; valid for 'a (the caller's promise).
        Ok(unsafe { &*ptr })
    }

    /// Uses the condvar at `ptr` (placed by [`init_at`](Self::init_at) or zero-filled
    /// memory). Every bit pattern is a valid condvar, so only the placement is checked.
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`](crate::Error::Misaligned) for a null or misaligned `ptr`.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of 8 bytes for all of `'a`, in shared
    ///   memory that stays mapped for `'a`;
    /// - those bytes are accessed for 'a other than as a `Condvar` (atomically).
    #[cfg(not(shmsync_loom))]
    pub unsafe fn attach<'a>(ptr: *const Condvar) -> Result<&'a Condvar> {
        check_placement(ptr)?;
        // SAFETY: non-null and aligned (checked); valid for 'a (the caller's promise);
        // every bit pattern is a valid `Condvar` (a u32 sequence and a u32 sleeper count).
        Ok(unsafe { &*ptr })
    }

    /// Unlocks the guard's mutex, sleeps until notified, and locks it again.
    ///
    /// May return spuriously: call it in a loop that re-checks the condition, or use
    /// [`wait_while`](Self::wait_while).
    ///
    /// # Errors
    ///
    /// The relock's errors: [`LockError::OwnerDied`] (the lock is held; someone died
    /// holding it while this thread slept), [`LockError::NotRecoverable`], or
    /// [`LockError::Os`] (also if the unlock failed, which only happens for a guard
    /// inherited across `fork`).
    pub fn wait<'a, T: AnyBitPattern>(
        &self,
        guard: MutexGuard<'a, T>,
    ) -> core::result::Result<MutexGuard<'a, T>, LockError<'a, T>> {
        self.wait_until(guard, None).map(|(g, _)| g)
    }

    /// As [`wait`](Self::wait), but gives up waiting after `timeout` (then relocks,
    /// without a time limit, like std's).
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait). An `OwnerDied` relock does not say whether the wait
    /// timed out: re-check the condition after the repair.
    pub fn wait_timeout<'a, T: AnyBitPattern>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> core::result::Result<(MutexGuard<'a, T>, WaitTimeoutResult), LockError<'a, T>> {
        self.wait_until(guard, Some(Deadline::after(timeout)))
    }

    /// As [`wait`](Self::wait), but gives up waiting at `deadline` (`CLOCK_MONOTONIC`);
    /// a deadline already past returns at once with `timed_out() == true`.
    ///
    /// # Errors
    ///
    /// As [`wait_timeout`](Self::wait_timeout).
    pub fn wait_deadline<'a, T: AnyBitPattern>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Instant,
    ) -> core::result::Result<(MutexGuard<'a, T>, WaitTimeoutResult), LockError<'a, T>> {
        self.wait_until(guard, Some(Deadline::from_instant(deadline)))
    }

    /// Waits while `condition` returns true (checked under the lock before every wait),
    /// and returns the guard once it returns false.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait); an `OwnerDied` relock is returned at once, before the
    /// condition is checked again.
    pub fn wait_while<'a, T: AnyBitPattern>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> core::result::Result<MutexGuard<'a, T>, LockError<'a, T>> {
        while condition(&mut *guard) {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// Waits while `condition` returns true, for at most `timeout`. `timed_out()` is
    /// true only if the condition still held when time ran out.
    ///
    /// # Errors
    ///
    /// As [`wait_while`](Self::wait_while).
    pub fn wait_timeout_while<'a, T: AnyBitPattern>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
        condition: impl FnMut(&mut T) -> bool,
    ) -> core::result::Result<(MutexGuard<'a, T>, WaitTimeoutResult), LockError<'a, T>> {
        self.wait_while_until(guard, Deadline::after(timeout), condition)
    }

    /// Waits while `condition` returns true, until `deadline` at the latest.
    /// `timed_out()` is true only if the condition still held when time ran out.
    ///
    /// # Errors
    ///
    /// As [`wait_while`](Self::wait_while).
    pub fn wait_deadline_while<'a, T: AnyBitPattern>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Instant,
        condition: impl FnMut(&mut T) -> bool,
    ) -> core::result::Result<(MutexGuard<'a, T>, WaitTimeoutResult), LockError<'a, T>> {
        self.wait_while_until(guard, Deadline::from_instant(deadline), condition)
    }

    fn wait_while_until<'a, T: AnyBitPattern>(
        &self,
        mut guard: MutexGuard<'a, T>,
        deadline: Deadline,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> core::result::Result<(MutexGuard<'a, T>, WaitTimeoutResult), LockError<'a, T>> {
        loop {
            if !condition(&mut *guard) {
                return Ok((guard, WaitTimeoutResult(false)));
            }
            if deadline.has_passed() {
                return Ok((guard, WaitTimeoutResult(true)));
            }
            guard = self.wait_until(guard, Some(deadline))?.0;
        }
    }

    /// Wakes at least one waiter, if any waits (in any process).
    #[inline]
    pub fn notify_one(&self) {
        if self.bump() > 0 {
            futex::wake(&self.seq, 1);
        }
    }

    /// Wakes every waiter (in any process).
    #[inline]
    pub fn notify_all(&self) {
        if self.bump() > 0 {
            futex::wake(&self.seq, i32::MAX as u32);
        }
    }

    /// The notification sequence (a diagnostic: it grows by one per notify).
    pub fn sequence(&self) -> u32 {
        // Relaxed: a diagnostic reading; nothing is read on the strength of it.
        self.seq.load(Ordering::Relaxed)
    }

    /// Bumps the sequence; returns how many waiters may be asleep.
    ///
    /// The bump and the `sleepers` load are the notifier's half of a store-then-load
    /// (Dekker) pairing with a sleeping waiter, which registers in `sleepers` and then
    /// lets the kernel compare the sequence in `FUTEX_WAIT`. Both the bump and the load
    /// are SeqCst, and the kernel puts a full barrier between the waiter's registration
    /// and its comparison, so either we see the registration and wake it, or its
    /// comparison sees our bump and it does not sleep. A waiter that only spins never
    /// registers: it watches the sequence itself.
    #[inline]
    fn bump(&self) -> u32 {
        // SeqCst: the store half of the pairing above. The sequence carries no data:
        // what a woken waiter reads is ordered by the mutex.
        self.seq.fetch_add(1, Ordering::SeqCst);
        crate::sync::loom_seqcst_fence();
        // SeqCst: the load half of the pairing above.
        self.sleepers.load(Ordering::SeqCst)
    }

    /// The protocol: read the sequence (holding the lock), unlock, sleep while the
    /// sequence is unchanged, relock.
    fn wait_until<'a, T: AnyBitPattern>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Deadline>,
    ) -> core::result::Result<(MutexGuard<'a, T>, WaitTimeoutResult), LockError<'a, T>> {
        // Relaxed: read while holding the mutex. A notifier that changes the condition
        // after this read does so after acquiring the mutex we release below, so its
        // bump is ordered after this read (happens-before + coherence) and the futex
        // comparison sees it, or it wakes us. A bump before this read needs no
        // visibility: its condition change is already visible under the mutex, and the
        // caller re-checks the condition after every return.
        let seq = self.seq.load(Ordering::Relaxed);
        let (mutex, r) = guard.unlock_checked();
        if r != 0 {
            // Not our lock (a guard inherited across fork): it is still held by its
            // owner, so sleeping and relocking would be wrong.
            return Err(LockError::Os(r));
        }
        // Spin first (bounded and adaptive, like the semaphore's): a notifier running on
        // another CPU is caught without either side entering the kernel.
        // Relaxed: the sequence carries no data (the mutex orders the condition).
        let changed = || self.seq.load(Ordering::Relaxed) != seq;
        let may_spin = deadline.map_or(true, |d| !d.has_passed());
        let outcome = if may_spin && crate::spin::spin_until(changed) {
            WaitOutcome::ValueChanged
        } else {
            // SeqCst: the waiter's half of the pairing explained in `bump`.
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            crate::sync::loom_seqcst_fence();
            // Sleeps are capped (see `futex::MAX_SLEEP`): a notifier
            // killed between its bump and its wake must not leave us asleep. The cap's
            // time-out returns like a spurious wake-up: callers re-check their condition.
            let (sleep_until, callers) = crate::futex::sleep_deadline(deadline);
            let outcome = match futex::wait(&self.seq, seq, sleep_until) {
                WaitOutcome::TimedOut if !callers => WaitOutcome::Woken,
                other => other,
            };
            // Relaxed: `sleepers` is only a hint for notifiers; every RMW reads the
            // latest value, so no registration is lost.
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
            outcome
        };
        // An ordinary blocking lock, so `OwnerDied` passes through with its guard.
        let guard = mutex.lock()?;
        Ok((guard, WaitTimeoutResult(outcome == WaitOutcome::TimedOut)))
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: a diagnostic snapshot.
        f.debug_struct("Condvar")
            .field("seq", &self.seq.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

// SAFETY: a condvar is one sequence word (plus a sleeper count) for which every bit
// pattern is valid; `init_at` writes it whole; no pointers.
#[cfg(not(shmsync_loom))]
unsafe impl crate::Shared for Condvar {
    const KIND: crate::Kind = crate::Kind::Condvar;
    const IDENTITY: crate::TypeIdentity =
        crate::TypeIdentity::declared::<Self>("shmsync.Condvar", &[]);
    type Init = ();

    fn value_name() -> String {
        "shmsync.Condvar".to_owned()
    }

    unsafe fn init_at<'a>(ptr: *mut Self, _init: ()) -> crate::Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { Condvar::init_at(ptr) }
    }

    unsafe fn attach<'a>(ptr: *const Self) -> crate::Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { Condvar::attach(ptr) }
    }
}
