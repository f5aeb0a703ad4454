//! [`SeqLock<T>`]: a two-copy sequence lock (the kernel's `seqcount_latch`) whose
//! writers serialize on a robust mutex and whose readers never write shared memory.
//!
//! # Protocol
//!
//! The lock holds a counter `seq` and two copies of the value. `seq >> 1` is the
//! *version*: the number of writes published so far; the copy readers use is
//! `copy[version & 1]`. An odd `seq` means a writer is filling the other copy,
//! `copy[(version + 1) & 1]`, which no reader uses.
//!
//! A writer, holding the writer lock:
//! 1. reads the published copy (for [`SeqLock::write`]'s closure);
//! 2. makes `seq` odd (`2v + 1`, Release) and issues `fence(Release)`;
//! 3. stores the new value into the *unpublished* copy with relaxed atomic word stores;
//! 4. publishes with `seq = 2v + 2` (Release), which flips readers to that copy.
//!
//! A reader loads `seq` (Acquire), copies `copy[version & 1]` with relaxed atomic word
//! loads into a private buffer, issues `fence(Acquire)` and re-loads `seq`. The copy it
//! read is next overwritten by the writer that takes `seq` to `2·version + 3` (the one
//! after next), and step 2 makes that writer's odd value visible to any reader that saw
//! one of its stores (fence-to-fence synchronization). So the reader accepts its copy iff
//! the second load is at most `2·version + 2`: it retries only when a writer *began a
//! second write* during its copy, never because of one write, and never because of a
//! writer that died: a dead writer leaves `seq` odd, which readers ignore.
//!
//! # Writer death
//!
//! A writer killed at any point has at most torn the unpublished copy; readers keep
//! reading the published one and never wait. The next writer gets
//! [`Acquired::OwnerDied`] from the robust writer lock; its own write fully rewrites the
//! torn copy and publishes, after which it marks the lock consistent. Its
//! [`WriteOutcome::repaired`] says this happened. [`SeqLock::repair`] does the same
//! without a new value, for the operator tool.
//!
//! # No undefined behaviour on the read side
//!
//! Every access to the copies is an atomic 64-bit load or store (see
//! `crate::sync::atomic_load_words`): a reader racing a writer gets a mixture of words,
//! never a data race, and interprets the bytes only after validating them. A failed
//! validation discards the buffer; a valid one holds exactly the words of one published
//! write, which are a valid `T` because `T: AnyBitPattern`. `read_volatile` is never used.

use core::fmt;
use core::mem::MaybeUninit;
use std::time::{Duration, Instant};

use bytemuck::{AnyBitPattern, NoUninit};

use crate::error::Error;
#[cfg(not(shmsync_loom))]
use crate::error::Result;
use crate::futex::Deadline;
#[cfg(not(shmsync_loom))]
use crate::header::check_placement;
use crate::header::ObjectHeader;
use crate::kind::Kind;
use crate::raw_mutex::{Acquired, MutexState, RawLockError, RawRobustMutex};
use crate::sync::{fence, AtomicU64, Ordering};

// The copies' storage and the routines that reach them, chosen once: inline words in
// every real build, loom atomics under `--cfg shmsync_loom`.
#[cfg(shmsync_loom)]
mod loom;
#[cfg(not(shmsync_loom))]
mod real;
#[cfg(shmsync_loom)]
use loom as imp;
#[cfg(not(shmsync_loom))]
use real as imp;

/// `T`'s bytes capped at 8-byte alignment (`packed(8)`), so a copy never needs more than
/// word alignment.
#[repr(C, packed(8))]
struct Packed<T>(MaybeUninit<T>);

/// One copy of the value: `T`'s bytes padded to a whole number of 8-byte words,
/// 8-aligned whatever `align_of::<T>()` is. Readers copy the words into a private
/// `Slot` and read the `T` out of it unaligned, so a `T` with alignment above 8 needs no
/// more than word alignment in shared memory.
#[repr(C, align(8))]
struct Slot<T>(Packed<T>);

impl<T> Slot<T> {
    /// The number of 64-bit words in a copy: `ceil(size_of::<T>() / 8)`.
    const WORDS: usize = core::mem::size_of::<Slot<T>>() / 8;

    /// A private slot holding `value`'s bytes followed by zeros.
    #[inline]
    fn from_value(value: T) -> MaybeUninit<Slot<T>>
    where
        T: NoUninit,
    {
        let mut slot = MaybeUninit::<Slot<T>>::zeroed();
        // SAFETY: `Slot<T>` is `repr(C)` around `repr(C)` `Packed<T>` around `T`, so `T`'s
        // bytes start at offset 0 and fit; the slot is only 8-aligned, hence unaligned.
        unsafe { slot.as_mut_ptr().cast::<T>().write_unaligned(value) };
        slot
    }

    /// The `T` in a private slot whose words have all been written.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - fewer than [`Slot::WORDS`] words of `slot` have been initialized.
    #[inline]
    unsafe fn into_value(slot: &MaybeUninit<Slot<T>>) -> T
    where
        T: AnyBitPattern,
    {
        // SAFETY: the first size_of::<T>() bytes are initialized (caller's promise) and
        // any initialized bytes are a valid `T` (`AnyBitPattern`); unaligned because
        // the slot is only 8-aligned.
        unsafe { slot.as_ptr().cast::<T>().read_unaligned() }
    }
}

/// Why a seqlock operation did not complete; nothing was published. Converts into
/// [`Error`] with `From`.
///
/// ```
/// use shmsync::{RawLockError, Segment, SeqLock, SeqLockError};
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: a fresh, private, page-aligned mapping that outlives `lock`.
/// let lock = unsafe { SeqLock::init_at(seg.as_ptr().cast(), 1u64)? };
/// // A write from inside a `write` on the same lock is refused, not a hang.
/// let inner = lock.write(|v| {
///     *v += 1;
///     let nested = lock.write(|_| {});
///     assert_eq!(nested, Err(SeqLockError::Lock(RawLockError::Deadlock)));
/// })?;
/// assert_eq!((lock.read(), inner.version), (2, 1));
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SeqLockError {
    /// The deadline passed first: for a read, writers kept overwriting the copy being
    /// read; for a write, another writer held the writer lock. Retry later, or report.
    TimedOut,
    /// A `try_*` call could not complete without waiting: for
    /// [`try_read`](SeqLock::try_read), writers overwrote the copy while it was being
    /// read; for [`try_write`](SeqLock::try_write), another writer holds the lock.
    WouldBlock,
    /// The writer lock could not be taken (e.g. [`RawLockError::Deadlock`]: a `write`
    /// closure called `write` on the same lock — a caller bug; or
    /// [`RawLockError::Corrupt`]: stop using the segment). See [`RawLockError`] for
    /// each case.
    Lock(RawLockError),
}

impl fmt::Display for SeqLockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeqLockError::TimedOut => f.write_str("seqlock: timed out"),
            SeqLockError::WouldBlock => f.write_str("seqlock: would block"),
            SeqLockError::Lock(e) => write!(f, "seqlock writer lock: {e}"),
        }
    }
}

impl std::error::Error for SeqLockError {}

impl From<SeqLockError> for Error {
    /// `TimedOut` and `WouldBlock` become [`Error::TimedOut`] and [`Error::WouldBlock`];
    /// a writer-lock failure converts as [`RawLockError`] does.
    #[cold]
    fn from(e: SeqLockError) -> Error {
        match e {
            SeqLockError::TimedOut => Error::TimedOut("seqlock"),
            SeqLockError::WouldBlock => Error::WouldBlock("seqlock"),
            SeqLockError::Lock(e) => e.into_error("seqlock writer lock"),
        }
    }
}

impl From<RawLockError> for SeqLockError {
    fn from(e: RawLockError) -> SeqLockError {
        match e {
            RawLockError::TimedOut => SeqLockError::TimedOut,
            RawLockError::WouldBlock => SeqLockError::WouldBlock,
            other => SeqLockError::Lock(other),
        }
    }
}

/// What a successful write did besides publishing.
///
/// ```
/// use shmsync::{Segment, SeqLock};
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: fresh, private, page-aligned memory that outlives `lock`.
/// let lock = unsafe { SeqLock::init_at(seg.as_ptr().cast(), 0u64)? };
/// let outcome = lock.store(7)?;
/// assert_eq!((outcome.version, outcome.repaired), (1, false));
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The previous writer died holding the writer lock (perhaps halfway through
    /// filling the unpublished copy). This write rewrote that copy completely before
    /// publishing it and marked the lock consistent. No committed value was lost:
    /// the value the closure saw is the last one published.
    pub repaired: bool,
    /// The version this write published (what [`SeqLock::sequence`] now returns).
    pub version: u64,
}

/// A diagnostic snapshot of a seqlock, for tools (see [`SeqLock::state`]).
///
/// ```
/// use shmsync::{Segment, SeqLock};
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: fresh, private, page-aligned memory that outlives `lock`.
/// let lock = unsafe { SeqLock::init_at(seg.as_ptr().cast(), 0u64)? };
/// let state = lock.state();
/// assert!(!state.writing && !state.is_torn());
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqLockState {
    /// Published writes so far.
    pub version: u64,
    /// A writer has begun filling the unpublished copy and not published it.
    pub writing: bool,
    /// The writer lock's state.
    pub writer: MutexState,
}

impl SeqLockState {
    /// Reads a snapshot from a seqlock's counter and writer lock.
    fn read(seq: &AtomicU64, writer: &RawRobustMutex) -> SeqLockState {
        // Relaxed: a diagnostic reading; nothing is read on the strength of it.
        let seq = seq.load(Ordering::Relaxed);
        SeqLockState {
            version: seq >> 1,
            writing: seq & 1 == 1,
            writer: writer.state(),
        }
    }

    /// A writer died holding the writer lock (perhaps leaving a torn unpublished copy)
    /// and nobody has repaired it yet: readers are unaffected, and the next writer (or
    /// [`SeqLock::repair`]) repairs it.
    pub fn is_torn(&self) -> bool {
        match self.writer {
            MutexState::OwnerDied => true,
            MutexState::Locked { owner, .. } => owner == crate::process::Liveness::Dead,
            MutexState::Free | MutexState::NotRecoverable | MutexState::Unknown => self.writing,
        }
    }
}

impl fmt::Display for SeqLockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {}, writer {}", self.version, self.writer)?;
        if self.is_torn() {
            f.write_str(" — torn unpublished copy (readers unaffected; next writer repairs)")
        } else if self.writing {
            f.write_str(" — write in progress")
        } else {
            Ok(())
        }
    }
}

/// A sequence lock for a `T` in shared memory, with two copies of the value so that
/// readers always find a stable one, and a robust writer lock so that a writer killed
/// halfway through a write loses nothing that was published.
///
/// Readers ([`read`](Self::read), [`try_read`](Self::try_read),
/// [`read_deadline`](Self::read_deadline)) never write shared memory and never block on
/// a writer; writers ([`write`](Self::write), [`store`](Self::store)) serialize on a
/// [`RawRobustMutex`] shared by every process. The protocol is in the
/// module documentation of `src/seqlock.rs`.
///
/// `T` must be [`AnyBitPattern`] (the bytes a reader validates are a `T` whatever
/// they are) and, to be written, [`NoUninit`] (writers copy `T`'s bytes into shared
/// memory as 64-bit words, and a padding byte may not be read as an integer): deriving
/// `bytemuck::Pod` gives both.
///
/// # Layout
///
/// `#[repr(C)]`, 8-aligned whatever `T` is, `160 + 2 · round_up(size_of::<T>(), 8)`
/// bytes on x86_64 glibc:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 24 | `ObjectHeader` (kind `SeqLock`; `aux` = `size_of::<T>()`) |
/// | 24 | 64 | writer lock ([`RawRobustMutex`], with its own header) |
/// | 88 | 64 | unused (zero) |
/// | 152 | 8 | `seq` |
/// | 160 | 2 × W·8 | the two copies, W = `ceil(size_of::<T>() / 8)` words each |
///
/// The overhead beyond the two copies is 160 bytes: the robust writer lock is 64
/// (glibc's 40-byte `pthread_mutex_t` behind the mutex's own 24-byte header, which
/// `RawRobustMutex` always carries), the seqlock needs its own header (so that
/// attaching the wrong kind of object, or a seqlock of another `T` size, is an error)
/// plus the counter, and 64 bytes keep what readers load off the cache lines glibc
/// writes on every lock and unlock, whatever the object's alignment. Without that gap a
/// reader's every load of `seq` took the writer lock's line from the writer, and the
/// writer's lock and unlock took it back: with one reader running, writes went about
/// 1.7 times faster with the gap (see BENCHMARKS.md).
/// Copies need only word alignment: readers copy into a private buffer and read the
/// `T` out of it unaligned.
///
/// All-zero memory is refused by [`attach`](Self::attach) (the writer lock must be
/// initialized by pthread), so a seqlock is created with [`init_at`](Self::init_at).
///
/// # Example
///
/// ```
/// use shmsync::{SeqLock, Segment};
///
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Pose { x: f64, y: f64, stamp: u64 }
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: a fresh, exclusive mapping large enough for the lock, outliving it.
/// let lock = unsafe { SeqLock::init_at(seg.as_ptr().cast(), Pose { x: 0.0, y: 0.0, stamp: 0 }) }?;
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         for i in 1..=1000u64 {
///             lock.write(|p| { p.x += 1.0; p.y -= 1.0; p.stamp = i }).unwrap();
///         }
///     });
///     for _ in 0..1000 {
///         let p = lock.read();
///         assert_eq!(p.x, -p.y); // never a half-written pose
///         assert_eq!(p.x, p.stamp as f64);
///     }
/// });
/// assert_eq!(lock.read().stamp, 1000);
/// assert_eq!(lock.sequence(), 1000);
/// # Ok::<(), shmsync::Error>(())
/// ```
#[repr(C)]
pub struct SeqLock<T> {
    header: ObjectHeader,
    writer: RawRobustMutex,
    /// Never accessed after `init_at`: keeps `seq` and the copies off the cache lines of
    /// the writer lock's words, wherever the object is placed (see the layout notes).
    gap: Gap,
    /// `2 · version + (1 if a write is in progress)`.
    seq: AtomicU64,
    copies: imp::Copies<T>,
}

/// 64 unused bytes between the writer lock and the words readers load (`seq`, the
/// copies). glibc writes the lock's last word it uses (`__list`) on every lock and
/// unlock, and the first word readers load lies a full cache line after it, so the
/// two never share a line whatever the object's alignment: the writer's lock and
/// unlock stay in its own cache, and readers lose their lines only to the writer's
/// stores of `seq` and the copy.
#[repr(C)]
struct Gap([u64; 8]);

#[cfg(all(not(shmsync_loom), target_env = "gnu", target_pointer_width = "64"))]
mod layout {
    use super::SeqLock;
    use core::mem::{align_of, size_of};

    static_assertions::assert_eq_size!(SeqLock<u8>, [u8; 160 + 2 * 8]);
    static_assertions::assert_eq_size!(SeqLock<u64>, [u8; 160 + 2 * 8]);
    static_assertions::assert_eq_size!(SeqLock<[u8; 13]>, [u8; 160 + 2 * 16]);
    static_assertions::assert_eq_size!(SeqLock<[u64; 8]>, [u8; 160 + 2 * 64]);
    static_assertions::assert_eq_size!(SeqLock<u128>, [u8; 160 + 2 * 16]);
    static_assertions::const_assert_eq!(align_of::<SeqLock<u8>>(), 8);
    static_assertions::const_assert_eq!(align_of::<SeqLock<u128>>(), 8);
    static_assertions::const_assert_eq!(size_of::<SeqLock<()>>(), 160);
    // The lock's last written byte and the first byte readers load are 64 apart.
    static_assertions::const_assert!(
        core::mem::offset_of!(SeqLock<u8>, seq)
            >= core::mem::offset_of!(SeqLock<u8>, writer) + size_of::<crate::RawRobustMutex>() + 64
    );
}

// SAFETY: the copies are only accessed with atomic word loads and stores (readers) or
// under the writer lock (writers); values cross threads by copy, so `T: Send` suffices.
unsafe impl<T: Send> Sync for SeqLock<T> {}

/// Holds the writer lock; unlocks on drop (also if a `write` closure panics).
struct WriterGuard<'a> {
    lock: &'a RawRobustMutex,
    /// The lock came with OwnerDied and has not been made consistent yet.
    inconsistent: bool,
}

impl WriterGuard<'_> {
    /// Marks the lock consistent (after the repairing write is published).
    fn make_consistent(&mut self) -> core::result::Result<(), SeqLockError> {
        if self.inconsistent {
            // SAFETY: this guard exists only while this thread holds the lock.
            unsafe { self.lock.make_consistent() }?;
            self.inconsistent = false;
        }
        Ok(())
    }

    /// Unlocks, reporting a pthread error.
    fn unlock(mut self) -> core::result::Result<(), SeqLockError> {
        let r = self.release();
        core::mem::forget(self);
        match r {
            0 => Ok(()),
            e => Err(SeqLockError::Lock(RawLockError::Os(e))),
        }
    }

    fn release(&mut self) -> i32 {
        if self.inconsistent {
            // The published copy is intact whatever happened, so the protected state
            // is consistent even on this early exit; not marking it would leave the
            // lock NotRecoverable for everyone.
            // SAFETY: held by this thread.
            let _ = unsafe { self.lock.make_consistent() };
            self.inconsistent = false;
        }
        // SAFETY: this guard exists only while this thread holds the lock, and no
        // reference to the copies outlives the write.
        unsafe { self.lock.unlock_raw() }
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        // Only reached on unwinding or an early return; the error (EPERM, impossible
        // here) cannot be reported from Drop.
        let _ = self.release();
    }
}

impl<T: AnyBitPattern> SeqLock<T> {
    /// Reads the current value. Never blocks on a writer and never waits for a dead
    /// one: it retries only when writers completed a write *and began another* while
    /// it was copying, which only live writers writing faster than the reader copies
    /// can keep doing. Use [`read_deadline`](Self::read_deadline) for a bound.
    #[inline]
    pub fn read(&self) -> T {
        self.read_versioned().0
    }

    /// Reads the current value and the version it was published as (compare it with a
    /// later [`sequence`](Self::sequence) to learn whether anything changed since).
    #[inline]
    pub fn read_versioned(&self) -> (T, u64) {
        match self.try_read_versioned() {
            Some(read) => read,
            None => self.read_slow(),
        }
    }

    /// One read attempt: [`SeqLockError::WouldBlock`] if writers overwrote the copy
    /// while it was being read (see [`read`](Self::read)).
    #[inline]
    pub fn try_read(&self) -> core::result::Result<T, SeqLockError> {
        match self.try_read_versioned() {
            Some((value, _)) => Ok(value),
            None => Err(SeqLockError::WouldBlock),
        }
    }

    /// Reads the current value, retrying for at most `timeout`, then failing with
    /// [`SeqLockError::TimedOut`]. At least one attempt is made.
    pub fn read_timeout(&self, timeout: Duration) -> core::result::Result<T, SeqLockError> {
        self.read_until(Deadline::after(timeout))
    }

    /// Reads the current value, retrying until `deadline` passes, then failing with
    /// [`SeqLockError::TimedOut`]. At least one attempt is made even if the deadline
    /// has passed.
    pub fn read_deadline(&self, deadline: Instant) -> core::result::Result<T, SeqLockError> {
        self.read_until(Deadline::from_instant(deadline))
    }

    fn read_until(&self, deadline: Deadline) -> core::result::Result<T, SeqLockError> {
        if let Some((value, _)) = self.try_read_versioned() {
            return Ok(value);
        }
        self.read_slow_until(deadline)
    }

    #[cold]
    fn read_slow(&self) -> (T, u64) {
        let mut attempt = 0u32;
        loop {
            backoff(&mut attempt);
            if let Some(read) = self.try_read_versioned() {
                return read;
            }
        }
    }

    #[cold]
    fn read_slow_until(&self, deadline: Deadline) -> core::result::Result<T, SeqLockError> {
        let mut attempt = 0u32;
        loop {
            if deadline.has_passed() {
                return Err(SeqLockError::TimedOut);
            }
            backoff(&mut attempt);
            if let Some((value, _)) = self.try_read_versioned() {
                return Ok(value);
            }
        }
    }

    /// One attempt: the protocol's read side.
    #[inline]
    fn try_read_versioned(&self) -> Option<(T, u64)> {
        // Acquire: pairs with the Release stores of `seq` in `publish_begin` and in
        // `write_locked` (the publishing store): the copy of version `c1 >> 1` was
        // complete before either.
        let c1 = self.seq.load(Ordering::Acquire);
        let version = c1 >> 1;
        let mut buf = MaybeUninit::<Slot<T>>::uninit();
        self.load_copy(version, &mut buf);
        // Acquire fence: pairs with the `fence(Release)` a writer issues after making
        // `seq` odd and before its word stores. If any word loaded above came from
        // such a writer, its odd `seq` is visible to the load below.
        fence(Ordering::Acquire);
        // Relaxed: ordered after the copy by the fence above.
        let c2 = self.seq.load(Ordering::Relaxed);
        // Our copy, `version & 1`, is overwritten only by the writer that makes `seq`
        // 2·version + 3. Wrapping: the counter would need 2^63 writes to wrap.
        if c2.wrapping_sub(version << 1) > 2 {
            return None;
        }
        // SAFETY: `load_copy` initialized every word of `buf`.
        Some((unsafe { Slot::into_value(&buf) }, version))
    }

    /// The number of writes published so far. A reader can tell whether the value
    /// changed since it last looked without copying it.
    #[inline]
    pub fn sequence(&self) -> u64 {
        // Acquire: pairs with the publishing Release store in `write_locked`, so a caller who sees
        // a new version and then reads gets that version or a later one.
        self.seq.load(Ordering::Acquire) >> 1
    }

    /// A diagnostic snapshot (version, whether a write is in progress, writer lock
    /// state) for tools; stale as soon as it is returned.
    pub fn state(&self) -> SeqLockState {
        SeqLockState::read(&self.seq, &self.writer)
    }

    /// Whether a writer died and left a torn unpublished copy or an owner-died writer
    /// lock (see [`SeqLockState::is_torn`]). Readers are unaffected either way.
    pub fn is_torn(&self) -> bool {
        self.state().is_torn()
    }

    /// The writer lock (for tools; writers use [`write`](Self::write)).
    pub fn writer_lock(&self) -> &RawRobustMutex {
        &self.writer
    }
}

/// Between read attempts: spin briefly, then yield (writers are lapping this reader;
/// let them, and it, make progress).
#[inline]
fn backoff(attempt: &mut u32) {
    *attempt = attempt.saturating_add(1);
    if *attempt < 64 {
        crate::sync::spin_hint();
    } else {
        crate::sync::yield_now();
    }
}

/// `size_of::<T>()` as recorded in the header's `aux` word (saturated: a payload of 4
/// GiB or more is refused by `init_at`).
fn payload_size_tag<T>() -> u32 {
    u32::try_from(core::mem::size_of::<T>()).unwrap_or(u32::MAX)
}

impl<T: AnyBitPattern + NoUninit> SeqLock<T> {
    /// Updates the value in place: `f` gets a private copy of the current value, and
    /// what it leaves there is published as the next version when it returns. Blocks
    /// while another writer (in any process) writes; readers are never blocked.
    ///
    /// If the previous writer died holding the writer lock, this write repairs the
    /// seqlock and says so in [`WriteOutcome::repaired`]; `f` still sees the last
    /// published value. If `f` panics nothing is published and the lock is released.
    ///
    /// Errors: [`SeqLockError::Lock`] if the writer lock fails (e.g.
    /// [`RawLockError::Deadlock`] when called from inside another `write` on the same
    /// lock).
    #[inline]
    pub fn write(
        &self,
        f: impl FnOnce(&mut T),
    ) -> core::result::Result<WriteOutcome, SeqLockError> {
        let acquired = self.writer.lock()?;
        self.write_locked(acquired, |this, version| {
            let mut value = this.published(version);
            f(&mut value);
            value
        })
    }

    /// As [`write`](Self::write) if no other writer holds the writer lock now;
    /// [`SeqLockError::WouldBlock`] (and `f` is not called) otherwise.
    pub fn try_write(
        &self,
        f: impl FnOnce(&mut T),
    ) -> core::result::Result<WriteOutcome, SeqLockError> {
        let acquired = self.writer.try_lock()?;
        self.write_locked(acquired, |this, version| {
            let mut value = this.published(version);
            f(&mut value);
            value
        })
    }

    /// As [`write`](Self::write), giving up with [`SeqLockError::TimedOut`] (and not
    /// calling `f`) if the writer lock is not acquired within `timeout`.
    pub fn write_timeout(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut T),
    ) -> core::result::Result<WriteOutcome, SeqLockError> {
        self.write_until(Deadline::after(timeout), f)
    }

    /// As [`write`](Self::write), giving up with [`SeqLockError::TimedOut`] (and not
    /// calling `f`) if the writer lock is not acquired by `deadline`.
    pub fn write_deadline(
        &self,
        deadline: Instant,
        f: impl FnOnce(&mut T),
    ) -> core::result::Result<WriteOutcome, SeqLockError> {
        self.write_until(Deadline::from_instant(deadline), f)
    }

    fn write_until(
        &self,
        deadline: Deadline,
        f: impl FnOnce(&mut T),
    ) -> core::result::Result<WriteOutcome, SeqLockError> {
        let acquired = self.writer.lock_capped(Some(deadline))?;
        self.write_locked(acquired, |this, version| {
            let mut value = this.published(version);
            f(&mut value);
            value
        })
    }

    /// Publishes `value` as the next version (as [`write`](Self::write), without
    /// reading the current value).
    #[inline]
    pub fn store(&self, value: T) -> core::result::Result<WriteOutcome, SeqLockError> {
        let acquired = self.writer.lock()?;
        self.write_locked(acquired, |_, _| value)
    }

    /// Repairs what a dead writer left — an owner-died writer lock, a torn unpublished
    /// copy — without changing the value: a torn copy is overwritten with the published
    /// value, which is re-published (the version advances by one). Returns whether
    /// anything needed repair. For the operator tool; writers repair on their own.
    ///
    /// Errors: [`SeqLockError::TimedOut`] if a live writer holds the lock past
    /// `deadline`; [`SeqLockError::Lock`] if the lock fails otherwise.
    pub fn repair(&self, deadline: Instant) -> core::result::Result<bool, SeqLockError> {
        let acquired = self.writer.lock_deadline(deadline)?;
        // Relaxed: we hold the writer lock (see `write_locked`).
        let writing = self.seq.load(Ordering::Relaxed) & 1 == 1;
        if writing {
            self.write_locked(acquired, |this, version| this.published(version))?;
            return Ok(true);
        }
        let mut guard = WriterGuard {
            lock: &self.writer,
            inconsistent: acquired == Acquired::OwnerDied,
        };
        // Nothing torn: the writer died before starting a write or after publishing.
        guard.make_consistent()?;
        guard.unlock()?;
        Ok(acquired == Acquired::OwnerDied)
    }

    /// Test hook (compiled only with the `test-hooks` feature): takes the writer lock, marks a write
    /// in progress and stores the first `words` words of `value` into the unpublished
    /// copy, then stops — leaving the lock held by this thread, as a writer killed
    /// mid-write would. Under loom it then abandons the lock (the model of the
    /// holder's death). Not for production use: this thread's next write gets
    /// [`RawLockError::Deadlock`].
    #[cfg(feature = "test-hooks")]
    pub fn __test_write_partial(
        &self,
        value: T,
        words: usize,
    ) -> core::result::Result<(), SeqLockError> {
        if self.writer.lock()? == Acquired::OwnerDied {
            // SAFETY: held by this thread (just acquired).
            unsafe { self.writer.make_consistent() }?;
        }
        // Relaxed: we hold the writer lock (see `write_locked`).
        let c = self.seq.load(Ordering::Relaxed);
        self.publish_begin(c);
        let slot = Slot::from_value(value);
        self.store_copy((c >> 1) + 1, &slot, words.min(Slot::<T>::WORDS));
        self.end_partial_write();
        Ok(())
    }

    /// The published value of `version`, read by the writer-lock holder.
    #[inline]
    fn published(&self, version: u64) -> T {
        let mut buf = MaybeUninit::<Slot<T>>::uninit();
        // The published copy: intact even if the previous writer died mid-write, and
        // stored to by nobody while we hold the writer lock.
        self.load_copy(version, &mut buf);
        // SAFETY: `load_copy` initialized every word.
        unsafe { Slot::into_value(&buf) }
    }

    /// The protocol's write side, with the writer lock held (`acquired` says how).
    /// `make` gets the lock and the published version and returns the value to publish.
    #[inline]
    fn write_locked(
        &self,
        acquired: Acquired,
        make: impl FnOnce(&Self, u64) -> T,
    ) -> core::result::Result<WriteOutcome, SeqLockError> {
        let repaired = acquired == Acquired::OwnerDied;
        let mut guard = WriterGuard {
            lock: &self.writer,
            inconsistent: repaired,
        };
        // Relaxed: only writers store `seq`, and we hold the writer lock, whose
        // acquisition (Acquire in pthread / the kernel's robust-list handoff) ordered
        // every earlier writer's stores before this load. An odd value here means the
        // previous writer died mid-write; its torn copy is the one we overwrite.
        let c = self.seq.load(Ordering::Relaxed);
        let version = c >> 1;
        let slot = Slot::from_value(make(self, version));
        self.publish_begin(c);
        self.store_copy(version + 1, &slot, Slot::<T>::WORDS);
        // Release: pairs with the Acquire load of `seq` in `try_read_versioned` (and
        // `sequence`): a reader that sees the new version sees the whole new copy.
        self.seq.store((version + 1) << 1, Ordering::Release);
        guard.make_consistent()?;
        guard.unlock()?;
        Ok(WriteOutcome {
            repaired,
            version: version + 1,
        })
    }

    /// Marks a write in progress (`seq` odd) before any word of the unpublished copy
    /// is stored. `c` is `seq` as loaded under the writer lock.
    #[inline]
    fn publish_begin(&self, c: u64) {
        if c & 1 == 0 {
            // Release: pairs with the Acquire load of `seq` in `try_read_versioned`: a
            // reader that loads this odd value also sees the published copy it names,
            // completed by an earlier writer before our lock acquisition.
            self.seq.store(c + 1, Ordering::Release);
        }
        // Release fence: pairs with the reader's `fence(Acquire)` after its copy: a
        // reader that loads any word stored below also sees `seq` odd (or later).
        fence(Ordering::Release);
    }
}

impl<T: AnyBitPattern> fmt::Debug for SeqLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeqLock")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// The part of every [`SeqLock<T>`] that does not depend on `T` — header, counter and
/// writer lock, at the same offsets — for tools that inspect or recover a seqlock
/// without knowing its payload type (the `shmsync` operator tool).
///
/// ```
/// use shmsync::{inspect::SeqLockView, Segment, SeqLock};
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: fresh, private, page-aligned memory that outlives both references.
/// let view = unsafe {
///     SeqLock::init_at(seg.as_ptr().cast(), [0u64; 4])?;
///     SeqLockView::attach(seg.as_ptr().cast())?
/// };
/// assert_eq!(view.payload_size(), 32);
/// assert!(!view.state().is_torn());
/// # Ok::<(), shmsync::Error>(())
/// ```
#[cfg(not(shmsync_loom))]
#[repr(C)]
pub struct SeqLockView {
    header: ObjectHeader,
    writer: RawRobustMutex,
    gap: Gap,
    seq: AtomicU64,
}

#[cfg(not(shmsync_loom))]
static_assertions::const_assert_eq!(
    core::mem::offset_of!(SeqLockView, seq),
    core::mem::offset_of!(SeqLock<u8>, seq)
);
#[cfg(not(shmsync_loom))]
static_assertions::const_assert_eq!(
    core::mem::offset_of!(SeqLockView, writer),
    core::mem::offset_of!(SeqLock<[u64; 9]>, writer)
);

#[cfg(not(shmsync_loom))]
impl SeqLockView {
    /// Validates the header and writer lock of a seqlock at `ptr`, whatever its `T`.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of `size_of::<SeqLockView>()` bytes for
    ///   all of `'a`, in shared memory that stays mapped for `'a`;
    /// - the seqlock is being initialized concurrently.
    pub unsafe fn attach<'a>(ptr: *const SeqLockView) -> Result<&'a SeqLockView> {
        check_placement(ptr)?;
        // SAFETY: aligned (checked), valid and mapped for 'a (caller's promise); the
        // prefix is atomics and a pthread mutex only touched through pthread.
        let this = unsafe { &*ptr };
        this.header.validate(Kind::SeqLock)?;
        // SAFETY: the writer lock lies inside the validated prefix.
        unsafe { RawRobustMutex::attach(&this.writer) }?;
        Ok(this)
    }

    /// The payload size recorded at creation.
    pub fn payload_size(&self) -> u32 {
        self.header.aux()
    }

    /// A diagnostic snapshot (as [`SeqLock::state`]).
    pub fn state(&self) -> SeqLockState {
        SeqLockState::read(&self.seq, &self.writer)
    }

    /// Recovers after a writer died, without knowing `T`: under the writer lock, an odd
    /// counter (a write begun and never published) goes back to the published version —
    /// the torn copy is the *unpublished* one, which the next writer overwrites whole —
    /// and an owner-died writer lock is made consistent. Readers are never disturbed.
    /// Returns whether anything was repaired.
    ///
    /// A writer lock whose owner is alive or of unknown liveness is never taken from
    /// it: the lock below then waits for it until `deadline` ([`SeqLockError::TimedOut`]).
    pub fn recover(&self, deadline: Instant) -> core::result::Result<bool, SeqLockError> {
        // A writer whose death the kernel never marked (see
        // `RawRobustMutex::release_dead_owner`, which releases only a proven-dead
        // owner thread) would make the lock below time out.
        let _ = self.writer.release_dead_owner_if_known();
        let acquired = self.writer.lock_deadline(deadline)?;
        // Acquire: pairs with the Release stores of the counter by earlier writers
        // (including the dead one's odd store), so our store below publishes nothing
        // older than what readers could already see.
        let seq = self.seq.load(Ordering::Acquire);
        let torn = seq & 1 == 1;
        if torn {
            // Release: a reader that loads this value synchronizes with us, and through
            // us with the writer that published version `seq >> 1`.
            self.seq.store(seq - 1, Ordering::Release);
        }
        let owner_died = acquired == Acquired::OwnerDied;
        if owner_died {
            // SAFETY: we hold the writer lock (just acquired). It can only fail with
            // EINVAL, meaning the mutex is already consistent.
            let _ = unsafe { self.writer.make_consistent() };
        }
        // SAFETY: we hold the writer lock.
        unsafe { self.writer.unlock() }?;
        Ok(torn || owner_died)
    }
}

// SAFETY: `init_at` places the header (Kind::SeqLock), counter, writer lock and both
// copies; `attach` validates header, payload size and writer lock; T is AnyBitPattern.
#[cfg(not(shmsync_loom))]
unsafe impl<T: crate::SharedType + bytemuck::NoUninit + Send> crate::Shared for SeqLock<T> {
    const KIND: crate::Kind = crate::Kind::SeqLock;
    const IDENTITY: crate::TypeIdentity = T::IDENTITY.within("shmsync.SeqLock");
    type Init = T;

    fn value_name() -> String {
        T::display_name()
    }

    unsafe fn init_at<'a>(ptr: *mut Self, value: T) -> crate::Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { SeqLock::init_at(ptr, value) }
    }

    unsafe fn attach<'a>(ptr: *const Self) -> crate::Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { SeqLock::attach(ptr) }
    }
}
