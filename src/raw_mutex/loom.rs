//! The loom backend: a small futex lock on the loom futex model standing in for the
//! pthread mutex (no pthread code can run under loom), so protocols built on the raw
//! mutex can be model-checked; `abandon` simulates an owner's death.

use super::{Acquired, MutexState, MutexWord, RawLockError, RawRobustMutex};
use crate::futex::{Deadline, WaitOutcome};
use crate::header::ObjectHeader;
use crate::kind::Kind;
use crate::sync::{futex_impl as futex, AtomicU32, Ordering};

/// The mutex word(s): the loom lock.
pub(super) type Inner = LoomLock;

/// The loom stand-in for the pthread mutex: a three-state futex lock (free, locked,
/// locked with waiters) plus an owner-died flag set by `abandon`.
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

impl RawRobustMutex {
    /// A model-checking constructor (loom builds only).
    pub fn new() -> RawRobustMutex {
        let header = ObjectHeader::initializing_with_aux(Kind::Mutex, 0);
        header.publish();
        RawRobustMutex {
            header,
            inner: LoomLock::new(),
        }
    }

    /// Under loom there is no kind word to check.
    #[inline(always)]
    pub(super) fn kind_ok(&self) -> bool {
        true
    }

    /// The error for a kind word that failed the check (never, under loom).
    #[cold]
    pub(super) fn corrupt_kind(&self) -> RawLockError {
        RawLockError::Corrupt {
            word: MutexWord::Kind,
            found: 0,
        }
    }

    /// Blocks until the lock is acquired.
    #[inline]
    pub fn lock(&self) -> Result<Acquired, RawLockError> {
        self.inner.lock(None)
    }

    /// Under loom the model's lock word cannot be corrupt.
    pub(super) fn check_lock_word(&self) -> Result<(), RawLockError> {
        Ok(())
    }

    /// Under loom there is no watch: `lock` models the sleep.
    #[inline(always)]
    pub(super) fn watch_lock_word(&self) -> Option<Result<Acquired, RawLockError>> {
        None
    }

    /// Acquires the lock if it is free now.
    #[inline]
    pub fn try_lock(&self) -> Result<Acquired, RawLockError> {
        self.inner.try_lock()
    }

    /// Blocks until the lock is acquired or `deadline` passes.
    #[inline]
    pub(crate) fn lock_until(&self, deadline: Deadline) -> Result<Acquired, RawLockError> {
        self.inner.lock(Some(deadline))
    }

    /// Releases the lock; always 0 under loom.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - the calling thread does not hold the lock.
    #[inline]
    pub(crate) unsafe fn unlock_raw(&self) -> i32 {
        self.inner.unlock();
        0
    }

    /// Marks the state consistent after an [`Acquired::OwnerDied`] acquisition (a no-op
    /// under loom: the flag was consumed by the acquisition).
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - the calling thread does not hold the lock.
    pub unsafe fn make_consistent(&self) -> Result<(), RawLockError> {
        Ok(())
    }

    /// Reads the mutex's state: [`MutexState::Unknown`] under loom.
    pub fn state(&self) -> MutexState {
        MutexState::Unknown
    }

    /// Under loom the model's `abandon` already marks the lock, so nothing is released.
    pub(crate) fn release_dead_owner_if_known(&self) -> Option<u32> {
        None
    }

    /// Simulates the death of the holder (loom builds only): releases the lock so that
    /// the next locker gets [`Acquired::OwnerDied`], as the kernel's robust-list walk
    /// would.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - the calling thread does not hold the lock.
    pub unsafe fn abandon(&self) {
        self.inner.abandon();
    }
}
