//! [`RobustRwLock<T>`]: a process-shared reader-writer lock whose dead readers and
//! writers never wedge anyone.

use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use bytemuck::AnyBitPattern;

use crate::error::{Error, Result};
use crate::futex::{Deadline, WaitOutcome};
#[cfg(not(shmsync_loom))]
use crate::header::check_placement;
use crate::header::ObjectHeader;
use crate::kind::Kind;
use crate::process::{self, Liveness};
use crate::raw_mutex::{Acquired, MutexState, MutexWord, RawLockError, RawRobustMutex};
use crate::sync::{futex_impl, AtomicU32, AtomicU64, Ordering, UnsafeCell};

/// The default number of reader slots: how many threads (in all processes together) can
/// hold a read lock at the same time. Each slot is one 64-byte cache line, so the
/// default table takes 4 KiB; a lock is `128 + 64 × SLOTS` bytes before its data.
pub const DEFAULT_READER_SLOTS: usize = 64;

/// How often a writer whose drain waits for a reader that does not leave checks
/// whether that reader is dead (and then reclaims its slot). This bounds how long a
/// writer waits for a dead reader.
pub const READER_CHECK: Duration = Duration::from_millis(50);

/// State bit: a writer holds the write lock or is draining readers for it. Set and
/// cleared by the writer-mutex holder only, like every bit of the state word (bit 2 is
/// unused: readers wait on the writer mutex, not on this word).
const WRITER: u32 = 1;
/// State bit: the writer sleeps on the drain word.
const DRAIN_WAITING: u32 = 4;
/// State bit: a writer died; the data waits for a repair.
const NEEDS_REPAIR: u32 = 8;
/// State bit: a repair was abandoned; the lock is unusable until re-initialized.
const NOT_RECOVERABLE: u32 = 16;
/// The bits that keep a reader out.
const READERS_OUT: u32 = WRITER | NEEDS_REPAIR | NOT_RECOVERABLE;

/// The pid bits of a packed process identity ([`ProcessIdentity::packed`](crate::ProcessIdentity::packed)).
const PID_MASK: u32 = (1 << 22) - 1;

/// The thread-id half of a slot word (the other half is the claim sequence).
const TID_MASK: u64 = 0xffff_ffff;

/// How long a reader that found every slot taken waits before looking again.
#[cfg(not(shmsync_loom))]
const SLOT_POLL: Duration = Duration::from_millis(1);

/// One reader slot: a cache line of its own.
#[repr(C, align(64))]
struct ReaderSlot {
    /// `sequence << 32 | tid`: the holding thread's id, 0 when free; the sequence
    /// counts claims, so a slot freed and claimed again never compares equal.
    word: AtomicU64,
    /// The holder's [`ProcessIdentity::packed`](crate::ProcessIdentity::packed) while held; 0 when free or not yet
    /// recorded (a freshly claimed slot).
    ident: AtomicU64,
}

#[cfg(not(shmsync_loom))]
static_assertions::assert_eq_size!(ReaderSlot, [u8; 64]);

impl ReaderSlot {
    #[cfg(shmsync_loom)]
    fn new() -> ReaderSlot {
        ReaderSlot {
            word: AtomicU64::new(0),
            ident: AtomicU64::new(0),
        }
    }

    /// The slot word (SeqCst: the drain's half of the Dekker pair with a reader's
    /// claim; also Acquire, pairing with the Release of the reader's unlock, so the
    /// reader's reads of the data happen before the writer's writes).
    #[inline]
    fn word(&self) -> u64 {
        self.word.load(Ordering::SeqCst)
    }
}

/// Who the calling thread is, as a reader slot records it.
#[derive(Clone, Copy, Debug)]
struct Me {
    tid: u32,
    /// The slot this thread took last (a start for the next claim).
    hint: u32,
    /// Packed process identity; 0 when `/proc/self` could not be read (the slot is
    /// then judged by its thread id alone).
    ident: u64,
}

#[cfg(not(shmsync_loom))]
mod me {
    use super::Me;
    use crate::sync::ProcessLocalU64;
    use std::cell::Cell;

    /// Bumped in every fork child, so a thread's cached identity (inherited by the
    /// child's copy of the forking thread) is read again there.
    static FORK_GENERATION: ProcessLocalU64 = ProcessLocalU64::new(1);

    extern "C" fn after_fork_in_child() {
        // An atomic store: async-signal-safe, as a fork child handler must be.
        FORK_GENERATION.set(FORK_GENERATION.get().wrapping_add(1));
    }

    /// The fork generation the whole `Me` is valid for, the one its `tid` is valid for
    /// (a fork child's guard drop refreshes only the thread id: a system call, without
    /// the allocation that reading `/proc` needs), and the cached `Me`.
    type Cached = (u64, u64, Me);

    std::thread_local! {
        static ME: Cell<Cached> = const { Cell::new((0, 0, Me { tid: 0, hint: 0, ident: 0 })) };
    }

    /// The calling thread's id and process identity, cached per thread (`gettid` is a
    /// system call).
    #[inline]
    pub(super) fn me() -> Me {
        let generation = FORK_GENERATION.get();
        let (seen, _, me) = ME.with(Cell::get);
        if seen == generation {
            return me;
        }
        refresh()
    }

    /// The calling thread's id (async-signal-safe after a fork: no allocation).
    #[inline]
    pub(super) fn tid() -> u32 {
        let generation = FORK_GENERATION.get();
        let (_, seen, me) = ME.with(Cell::get);
        if seen == generation {
            return me.tid;
        }
        refresh_tid()
    }

    /// Records the slot the calling thread took.
    pub(super) fn set_hint(hint: u32) {
        ME.with(|c| {
            let (full, tid, me) = c.get();
            c.set((full, tid, Me { hint, ..me }));
        });
    }

    fn register() {
        static REGISTER: std::sync::Once = std::sync::Once::new();
        REGISTER.call_once(|| {
            // SAFETY: the handler only performs an atomic store; pthread_atfork has no
            // other preconditions. A failure (ENOMEM) would leave a fork child with
            // its parent's cached thread id: registered before any value is cached.
            unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        });
    }

    #[cold]
    fn refresh_tid() -> u32 {
        register();
        let generation = FORK_GENERATION.get();
        let tid = crate::process::current_tid();
        ME.with(|c| {
            let (full, _, me) = c.get();
            c.set((full, generation, Me { tid, ..me }));
        });
        tid
    }

    #[cold]
    fn refresh() -> Me {
        register();
        let generation = FORK_GENERATION.get();
        let me = Me {
            tid: crate::process::current_tid(),
            hint: 0,
            ident: crate::process::ProcessIdentity::current().map_or(0, |id| id.packed()),
        };
        ME.with(|c| c.set((generation, generation, me)));
        me
    }
}

#[cfg(shmsync_loom)]
mod me {
    use super::Me;
    use crate::sync::{AtomicU32, Ordering};
    use std::cell::Cell;

    loom::lazy_static! {
        static ref NEXT: AtomicU32 = AtomicU32::new(1);
    }
    loom::thread_local! {
        static TID: Cell<u32> = Cell::new(0);
        static HINT: Cell<u32> = Cell::new(0);
    }

    pub(super) fn tid() -> u32 {
        me().tid
    }

    pub(super) fn set_hint(hint: u32) {
        HINT.with(|h| h.set(hint));
    }

    /// Under loom every model thread is one "thread" with a small id, all in one
    /// process (identity 1).
    pub(super) fn me() -> Me {
        let tid = TID.with(|t| {
            if t.get() == 0 {
                // Relaxed: only uniqueness matters.
                t.set(NEXT.fetch_add(1, Ordering::Relaxed));
            }
            t.get()
        });
        Me {
            tid,
            hint: HINT.with(Cell::get),
            ident: 1,
        }
    }
}

use me::me;

/// Why a read or write lock was not acquired. The caller holds nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RwLockError {
    /// `try_read`/`try_write`: a writer (or, for a writer, a reader or writer) holds
    /// or awaits the lock, or every reader slot is taken.
    WouldBlock,
    /// The timeout or deadline passed first.
    TimedOut,
    /// The calling thread already holds this lock (a read lock when it asked to
    /// write, the write lock when it asked either) and would wait for itself.
    Deadlock,
    /// Readers only: a writer died holding the write lock and nobody has repaired the
    /// data yet. Nothing was read. Take the write lock to repair it (it returns
    /// [`WriteError::OwnerDied`]), or retry later.
    Inconsistent,
    /// A writer that got [`WriteError::OwnerDied`] dropped its guard without
    /// [`make_consistent`](OwnerDiedWriteGuard::make_consistent): the lock is
    /// unusable until [`RobustRwLock::reinit`].
    NotRecoverable,
    /// The writer mutex failed with this pthread error number.
    Os(i32),
    /// A word of the writer mutex holds a value that neither its initialization nor
    /// glibc leaves there (corrupt or hostile shared memory); see
    /// [`RawLockError::Corrupt`].
    Corrupt {
        /// Which word.
        word: MutexWord,
        /// The value found.
        found: u32,
    },
}

impl RwLockError {
    #[cold]
    fn from_raw(e: RawLockError) -> RwLockError {
        match e {
            RawLockError::WouldBlock => RwLockError::WouldBlock,
            RawLockError::TimedOut => RwLockError::TimedOut,
            RawLockError::Deadlock => RwLockError::Deadlock,
            RawLockError::NotRecoverable => RwLockError::NotRecoverable,
            RawLockError::Os(e) => RwLockError::Os(e),
            RawLockError::Corrupt { word, found } => RwLockError::Corrupt { word, found },
        }
    }
}

impl fmt::Display for RwLockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RwLockError::WouldBlock => f.write_str("the reader-writer lock is busy"),
            RwLockError::TimedOut => f.write_str("timed out waiting for the reader-writer lock"),
            RwLockError::Deadlock => {
                f.write_str("the calling thread already holds the reader-writer lock")
            }
            RwLockError::Inconsistent => f.write_str(
                "a writer died holding the reader-writer lock and the data has not been \
                 repaired (take the write lock to repair it)",
            ),
            RwLockError::NotRecoverable => f.write_str(
                "the reader-writer lock is not recoverable: a writer's repair was abandoned",
            ),
            RwLockError::Os(e) => RawLockError::Os(*e).fmt(f),
            RwLockError::Corrupt { word, found } => RawLockError::Corrupt {
                word: *word,
                found: *found,
            }
            .fmt(f),
        }
    }
}

impl std::error::Error for RwLockError {}

impl From<RwLockError> for Error {
    /// `TimedOut` becomes [`Error::TimedOut`], `Corrupt` [`Error::Corrupt`], every other
    /// variant [`Error::Os`] with its error number (`Inconsistent`: `EOWNERDEAD`).
    #[cold]
    fn from(e: RwLockError) -> Error {
        let errno = match e {
            RwLockError::TimedOut => return Error::TimedOut("reader-writer lock"),
            RwLockError::Corrupt { .. } => {
                return Error::Corrupt(format!("reader-writer lock: {e}"))
            }
            RwLockError::WouldBlock => libc::EBUSY,
            RwLockError::Deadlock => libc::EDEADLK,
            RwLockError::Inconsistent => libc::EOWNERDEAD,
            RwLockError::NotRecoverable => libc::ENOTRECOVERABLE,
            RwLockError::Os(e) => e,
        };
        Error::from_errno("reader-writer lock", "", errno)
    }
}

/// A registered reader, as [`RawRobustRwLock::readers`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReaderInfo {
    /// The slot index.
    pub slot: usize,
    /// The reader's thread id.
    pub tid: u32,
    /// The reader's pid, when its identity was recorded.
    pub pid: Option<u32>,
    /// Whether the reader still runs ([`Liveness::Dead`]: its slot can be reclaimed).
    pub liveness: Liveness,
}

/// The lock part of a [`RobustRwLock`], without data: the header, the state word, the
/// writer mutex and the reader slots. Its methods observe and repair the lock (the
/// `shmsync` tool uses them); locking goes through [`RobustRwLock`].
///
/// `#[repr(C, align(64))]`, `128 + 64 × SLOTS` bytes on 64-bit glibc (4224 with the
/// default 64 slots): header (24 bytes), state, drain, high-water-mark and
/// drain-slot words, the 64-byte [`RawRobustMutex`] (at 40), the reclaim count,
/// padding to 128, then the slots, one cache line each.
#[repr(C, align(64))]
pub struct RawRobustRwLock<const SLOTS: usize = DEFAULT_READER_SLOTS> {
    /// `Kind::RwLock`; `aux` = SLOTS.
    header: ObjectHeader,
    /// `WRITER`, `DRAIN_WAITING`, `NEEDS_REPAIR`, `NOT_RECOVERABLE`. Only the holder
    /// of the writer mutex stores to it; readers only load it.
    state: AtomicU32,
    /// Bumped by the reader of `drain_slot` leaving while a writer waits for it; the
    /// writer sleeps on it.
    drain: AtomicU32,
    /// One more than the highest slot ever claimed: a writer's drain looks at the slots
    /// below it only. Readers take the lowest free slot and keep it as their thread's
    /// hint, so this stays near the most readers ever inside at once.
    hwm: AtomicU32,
    /// The slot a draining writer waits for.
    drain_slot: AtomicU32,
    writer: RawRobustMutex,
    /// How many dead readers' slots were reclaimed, ever (a statistic for the tool).
    reclaimed: AtomicU64,
    slots: [ReaderSlot; SLOTS],
}

#[cfg(all(not(shmsync_loom), target_env = "gnu", target_pointer_width = "64"))]
static_assertions::assert_eq_size!(RawRobustRwLock, [u8; 128 + 64 * DEFAULT_READER_SLOTS]);

impl<const SLOTS: usize> RawRobustRwLock<SLOTS> {
    /// Compile-time check of the slot count (a reader's home slot is `tid % SLOTS`).
    const SLOTS_OK: () = assert!(
        SLOTS > 0 && SLOTS <= 4096,
        "a RobustRwLock needs 1 to 4096 reader slots"
    );

    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for writes of `size_of::<Self>()` bytes for `'a`, aligned;
    /// - anyone else accesses those bytes during the call.
    #[cfg(not(shmsync_loom))]
    unsafe fn init_at<'a>(ptr: *mut Self) -> Result<&'a Self> {
        #[allow(clippy::let_unit_value)]
        let () = Self::SLOTS_OK;
        check_placement(ptr)?;
        // SAFETY: aligned (checked), valid and exclusive (the caller's promise). The
        // slots and words are written whole, then the mutex, then the header is
        // published.
        unsafe {
            core::ptr::addr_of_mut!((*ptr).header).write(ObjectHeader::initializing_with_aux(
                Kind::RwLock,
                SLOTS as u32,
            ));
            core::ptr::addr_of_mut!((*ptr).state).write(AtomicU32::new(0));
            core::ptr::addr_of_mut!((*ptr).drain).write(AtomicU32::new(0));
            core::ptr::addr_of_mut!((*ptr).hwm).write(AtomicU32::new(0));
            core::ptr::addr_of_mut!((*ptr).drain_slot).write(AtomicU32::new(0));
            core::ptr::addr_of_mut!((*ptr).reclaimed).write(AtomicU64::new(0));
            core::ptr::addr_of_mut!((*ptr).slots).write_bytes(0, 1);
            RawRobustMutex::init_at(core::ptr::addr_of_mut!((*ptr).writer))?;
        }
        // SAFETY: every field is initialized.
        let this = unsafe { &*ptr };
        this.header.publish();
        Ok(this)
    }

    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of `size_of::<Self>()` bytes for `'a`;
    /// - the object is being initialized concurrently.
    #[cfg(not(shmsync_loom))]
    pub(crate) unsafe fn attach<'a>(ptr: *const Self) -> Result<&'a Self> {
        #[allow(clippy::let_unit_value)]
        let () = Self::SLOTS_OK;
        check_placement(ptr)?;
        // SAFETY: aligned (checked), valid for 'a (the caller's promise); the header is
        // all atomics.
        let this = unsafe { &*ptr };
        this.header.validate(Kind::RwLock)?;
        if this.header.aux() as usize != SLOTS {
            return Err(Error::Corrupt(format!(
                "reader-writer lock has {} reader slots, this process expects {SLOTS}",
                this.header.aux()
            )));
        }
        // SAFETY: inside the validated object, valid for 'a; validates the mutex's own
        // header, its pid namespace (slot thread ids are read in it) and glibc words.
        unsafe { RawRobustMutex::attach(core::ptr::addr_of!(this.writer)) }?;
        Ok(this)
    }

    #[cfg(shmsync_loom)]
    fn new() -> Self {
        let header = ObjectHeader::initializing_with_aux(Kind::RwLock, SLOTS as u32);
        header.publish();
        RawRobustRwLock {
            header,
            state: AtomicU32::new(0),
            drain: AtomicU32::new(0),
            hwm: AtomicU32::new(0),
            drain_slot: AtomicU32::new(0),
            writer: RawRobustMutex::new(),
            reclaimed: AtomicU64::new(0),
            slots: core::array::from_fn(|_| ReaderSlot::new()),
        }
    }

    /// The header (for tools that inspect shared objects).
    pub fn header(&self) -> &ObjectHeader {
        &self.header
    }

    /// The writer mutex (for the tool's reading and recovery).
    #[cfg(not(shmsync_loom))]
    pub(crate) fn writer_mutex(&self) -> &RawRobustMutex {
        &self.writer
    }

    /// The writer mutex's state, read without taking it.
    pub fn writer_state(&self) -> MutexState {
        self.writer.state()
    }

    /// Whether a writer died and the data awaits a repair (readers get
    /// [`RwLockError::Inconsistent`]). A snapshot.
    pub fn needs_repair(&self) -> bool {
        // Relaxed: a diagnostic snapshot.
        self.state.load(Ordering::Relaxed) & NEEDS_REPAIR != 0 || self.dead_mid_write()
    }

    /// How many dead readers' slots have been reclaimed since the lock was created (by
    /// writers, [`reclaim_dead`](Self::reclaim_dead) and the tool).
    pub fn reclaimed(&self) -> u64 {
        // Relaxed: a statistic.
        self.reclaimed.load(Ordering::Relaxed)
    }

    /// Whether an abandoned repair made the lock unusable. A snapshot.
    pub fn is_not_recoverable(&self) -> bool {
        // Relaxed: a diagnostic snapshot.
        self.state.load(Ordering::Relaxed) & NOT_RECOVERABLE != 0
    }

    /// The registered readers, with their liveness (a snapshot read without any lock).
    pub fn readers(&self) -> Vec<ReaderInfo> {
        let mut out = Vec::new();
        for (slot, s) in self.slots.iter().enumerate() {
            let Some((word, ident)) = Self::holder(s) else {
                continue;
            };
            out.push(ReaderInfo {
                slot,
                tid: word as u32,
                pid: (ident != 0).then_some(ident as u32 & PID_MASK),
                liveness: judge(word, ident),
            });
        }
        out
    }

    /// Frees the slots of readers proven dead (see [`RobustRwLock`]: dead readers); returns how
    /// many. Live, stopped and unknown readers are left alone. Safe to call at any
    /// time, from any process, concurrently with everything else.
    pub fn reclaim_dead(&self) -> usize {
        (0..SLOTS).filter(|&i| self.reclaim_if(i, judge)).count()
    }

    /// [`reclaim_dead`](Self::reclaim_dead) with a model's notion of death (loom builds
    /// only): `dead(slot)` says whether the holder of a slot is dead.
    #[cfg(shmsync_loom)]
    pub fn reclaim_dead_with(&self, dead: impl Fn(usize) -> bool) -> usize {
        (0..SLOTS)
            .filter(|&i| {
                let verdict = if dead(i) {
                    Liveness::Dead
                } else {
                    Liveness::Alive
                };
                self.reclaim_if(i, |_, _| verdict)
            })
            .count()
    }

    /// The holder of a slot: its word and the identity recorded for that very claim
    /// (`None`: free).
    fn holder(s: &ReaderSlot) -> Option<(u64, u64)> {
        let word = s.word();
        if word & TID_MASK == 0 {
            return None;
        }
        // Relaxed: ordered between the two SeqCst loads of the word. A holder clears
        // `ident` before it frees the word and writes it after its claim, so seeing the
        // same word (with its claim sequence) on both sides means `ident` is this
        // claim's identity or 0.
        let ident = s.ident.load(Ordering::Relaxed);
        (s.word() == word).then_some((word, ident))
    }

    /// Reclaims slot `i` if its holder is `Dead` by `verdict`.
    fn reclaim_if(&self, i: usize, verdict: impl Fn(u64, u64) -> Liveness) -> bool {
        let s = &self.slots[i];
        let Some((word, ident)) = Self::holder(s) else {
            return false;
        };
        if verdict(word, ident) != Liveness::Dead {
            return false;
        }
        // The identity goes first, so a freed slot never carries a stale one (a new
        // claimer's would be judged by it). If another reclaimer got here first and a
        // new reader of the same process has written an equal identity, clearing it
        // only makes that slot be judged by its thread id: still sound.
        let _ = s
            .ident
            .compare_exchange(ident, 0, Ordering::Relaxed, Ordering::Relaxed);
        // SeqCst: a slot freed here is seen by the drain's SeqCst loads like a reader's
        // own unlock. Fails if the claim changed (the sequence half differs).
        let freed = s
            .word
            .compare_exchange(word, word & !TID_MASK, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok();
        if freed {
            // Relaxed: a statistic.
            self.reclaimed.fetch_add(1, Ordering::Relaxed);
            self.wake_drain();
        }
        freed
    }

    /// Whether a writer died mid-write and nobody has taken over yet: `WRITER` still
    /// set (read now, not when the caller last looked: a later holder of the mutex may
    /// have died outside a write) and the mutex's holder dead.
    fn dead_mid_write(&self) -> bool {
        // SeqCst: as in `lock_shared`; read before the mutex, which a dead writer leaves
        // owner-died with the bit still set.
        self.state.load(Ordering::SeqCst) & WRITER != 0 && self.writer_dead()
    }

    /// Whether the writer mutex's owner is known to be dead (owner-died, or held by a
    /// thread that has exited).
    fn writer_dead(&self) -> bool {
        self.writer.state().owner_dead()
    }

    /// Claims a free slot for `me`, starting at its home slot; returns the slot and the
    /// word written.
    #[inline]
    fn claim(&self, me: Me) -> Option<(usize, u64)> {
        let hint = me.hint as usize;
        let hint = if hint < SLOTS { hint } else { 0 };
        let (i, word) = match self.claim_at(hint, me) {
            Some(w) => (hint, w),
            None => self.claim_elsewhere(me)?,
        };
        // SeqCst: a writer's drain (after its WRITER store) reads the mark with
        // SeqCst, so it sees this value or a later one, whenever this reader goes on
        // to miss WRITER (Dekker, as for the claim).
        if i as u32 >= self.hwm.load(Ordering::SeqCst) {
            self.raise_hwm(i);
        }
        Some((i, word))
    }

    /// The lowest free slot; it becomes the thread's hint.
    #[cold]
    fn claim_elsewhere(&self, me: Me) -> Option<(usize, u64)> {
        let (i, w) = (0..SLOTS).find_map(|i| self.claim_at(i, me).map(|w| (i, w)))?;
        me::set_hint(i as u32);
        Some((i, w))
    }

    /// Raises the high-water mark above slot `i` (rare: the first time a slot is used).
    #[cold]
    fn raise_hwm(&self, i: usize) {
        // SeqCst: see `claim`.
        self.hwm.fetch_max(i as u32 + 1, Ordering::SeqCst);
    }

    #[inline]
    fn claim_at(&self, i: usize, me: Me) -> Option<u64> {
        let s = &self.slots[i];
        // Relaxed: only picks the expected value of the CAS below.
        let seen = s.word.load(Ordering::Relaxed);
        if seen & TID_MASK != 0 {
            return None;
        }
        let word = ((seen >> 32).wrapping_add(1) << 32) | u64::from(me.tid);
        // SeqCst: the reader's half of the Dekker pair with the writer (the state load
        // that follows must not be ordered before this claim); Acquire on success also
        // pairs with the Release of the previous holder's unlock.
        s.word
            .compare_exchange(seen, word, Ordering::SeqCst, Ordering::Relaxed)
            .ok()?;
        // Relaxed: a judge reads it between two loads of the word (see `holder`).
        s.ident.store(me.ident, Ordering::Relaxed);
        Some(word)
    }

    /// Frees slot `i`, claimed as `word`, and wakes a draining writer.
    #[inline]
    fn release_slot(&self, i: usize, word: u64) {
        let s = &self.slots[i];
        // Relaxed: ordered before the freeing store below by its Release half.
        s.ident.store(0, Ordering::Relaxed);
        // SeqCst: Release publishes this reader's reads of the data as done before a
        // writer's drain (its SeqCst load) sees the slot free; SeqCst orders it before
        // the state load below (Dekker with the writer's DRAIN_WAITING). A CAS, not a
        // store: if a reclaimer freed the slot (it cannot, while we live — but a
        // corrupt segment could) a later claim is not undone.
        let _ =
            s.word
                .compare_exchange(word, word & !TID_MASK, Ordering::SeqCst, Ordering::Relaxed);
        crate::sync::loom_seqcst_fence();
        if self.state.load(Ordering::SeqCst) & DRAIN_WAITING != 0 {
            self.wake_drain_for(i);
        }
    }

    /// Wakes the draining writer if it waits for slot `i`.
    #[cold]
    fn wake_drain_for(&self, i: usize) {
        // SeqCst: see `drain_slot`.
        if self.drain_slot.load(Ordering::SeqCst) == i as u32 {
            self.wake_drain();
        }
    }

    #[cold]
    fn wake_drain(&self) {
        // Release: the bump makes a writer about to sleep on the old value see a change
        // (its wait compares under the futex lock); nothing else is published by it.
        self.drain.fetch_add(1, Ordering::Release);
        futex_impl::wake(&self.drain, 1);
    }

    /// Takes a read lock: `None` deadline blocks, `block == false` never waits.
    #[inline(always)]
    fn lock_shared(
        &self,
        deadline: Option<Deadline>,
        block: bool,
    ) -> core::result::Result<(usize, u64), RwLockError> {
        let me = me();
        if let Some((i, word)) = self.claim(me) {
            crate::sync::loom_seqcst_fence();
            // SeqCst: Dekker with the writer's WRITER fetch_or; Acquire pairs with the
            // writer's Release clearing WRITER, so its writes to the data are visible.
            if self.state.load(Ordering::SeqCst) & READERS_OUT == 0 {
                return Ok((i, word));
            }
            self.release_slot(i, word);
        }
        self.lock_shared_slow(me, deadline, block)
    }

    #[cold]
    #[inline(never)]
    fn lock_shared_slow(
        &self,
        me: Me,
        deadline: Option<Deadline>,
        block: bool,
    ) -> core::result::Result<(usize, u64), RwLockError> {
        let mut spun = false;
        let mut checked_self = false;
        let mut next_reclaim = Deadline::now();
        loop {
            // SeqCst: as in `lock_shared`.
            let s = self.state.load(Ordering::SeqCst);
            if s & NOT_RECOVERABLE != 0 {
                return Err(RwLockError::NotRecoverable);
            }
            if s & READERS_OUT == 0 {
                match self.claim(me) {
                    Some((i, word)) => {
                        crate::sync::loom_seqcst_fence();
                        // SeqCst: as in `lock_shared`.
                        if self.state.load(Ordering::SeqCst) & READERS_OUT == 0 {
                            return Ok((i, word));
                        }
                        self.release_slot(i, word);
                        continue;
                    }
                    None => {
                        // Every slot is taken: wait for one (dead holders' slots are
                        // reclaimed on the way).
                        if !block {
                            return Err(RwLockError::WouldBlock);
                        }
                        if deadline.is_some_and(|d| d.has_passed()) {
                            return Err(RwLockError::TimedOut);
                        }
                        self.wait_for_free_slot(&mut next_reclaim, deadline);
                        continue;
                    }
                }
            }
            // A writer holds or awaits the lock, or the data awaits a repair.
            if s & WRITER == 0 {
                // NEEDS_REPAIR and no writer at it: nobody is repairing.
                return Err(RwLockError::Inconsistent);
            }
            if !block {
                return Err(if self.dead_mid_write() {
                    RwLockError::Inconsistent
                } else {
                    RwLockError::WouldBlock
                });
            }
            if !spun {
                spun = true;
                // Relaxed: a hint; the loop re-reads with SeqCst.
                if crate::spin::spin_until(|| self.state.load(Ordering::Relaxed) & READERS_OUT == 0)
                {
                    continue;
                }
            }
            if !checked_self {
                checked_self = true;
                if self.held_by(me) {
                    return Err(RwLockError::Deadlock);
                }
            }
            if self.dead_mid_write() {
                return Err(RwLockError::Inconsistent);
            }
            if deadline.is_some_and(|d| d.has_passed()) {
                return Err(RwLockError::TimedOut);
            }
            self.pass_through_writer_mutex(deadline)?;
        }
    }

    /// Takes the writer mutex and lets it go at once, settling on the way what its last
    /// holder left: a death (see `take_over_dead_holder`), or a `WRITER` bit nobody
    /// holds.
    ///
    /// Readers wait for a writer this way, where writers wait for each other: holding
    /// the mutex, a reader knows the writer that set `WRITER` has released it (or
    /// died), and reads the state again. The writer's unlock costs it nothing more than
    /// any mutex unlock: glibc (or the kernel, for a dead writer) wakes a sleeping
    /// waiter, and each waiter's own unlock wakes the next. Every sleep is capped (see
    /// `RawRobustMutex::lock_capped`). The tool releases a mutex whose holder died
    /// outside a write the same way, without shutting readers out.
    #[cold]
    #[inline(never)]
    pub(crate) fn pass_through_writer_mutex(
        &self,
        deadline: Option<Deadline>,
    ) -> core::result::Result<(), RwLockError> {
        let acquired = self
            .writer
            .lock_capped(deadline)
            .map_err(RwLockError::from_raw)?;
        self.settle_passing_through(acquired);
        crate::failpoint::failpoint("rwlock-waiting-reader");
        // SAFETY: this thread holds the mutex (just acquired).
        let _ = unsafe { self.writer.unlock() };
        Ok(())
    }

    /// Holding the writer mutex (acquired as `acquired`) without writing: settles a dead
    /// holder, or a `WRITER` bit still set although nobody is writing (a corrupt
    /// segment; writers clear it before they unlock) as a write cut short, so that
    /// readers are told and stop waiting.
    #[cold]
    fn settle_passing_through(&self, acquired: Acquired) {
        if acquired == Acquired::OwnerDied {
            self.take_over_dead_holder();
        } else {
            self.mark_cut_short_write();
        }
    }

    /// Simulates a reader that dies while it passes through the writer mutex (loom
    /// builds only): it takes the mutex and settles it as `pass_through_writer_mutex`
    /// does, then dies holding it.
    #[cfg(shmsync_loom)]
    pub fn die_passing_through_writer_mutex(&self) {
        if let Ok(acquired) = self.writer.lock() {
            self.settle_passing_through(acquired);
            // SAFETY: this thread holds the mutex (just acquired).
            unsafe { self.writer.abandon() };
        }
    }

    /// Whether `me` holds this lock already: the writer mutex, or a reader slot.
    #[cold]
    fn held_by(&self, me: Me) -> bool {
        if let MutexState::Locked { owner_tid, .. } = self.writer.state() {
            if owner_tid == me.tid {
                return true;
            }
        }
        self.slots.iter().any(|s| {
            Self::holder(s)
                .is_some_and(|(w, ident)| w as u32 == me.tid && (ident == me.ident || ident == 0))
        })
    }

    /// Releases a read lock claimed as `word` in slot `i` by this thread.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - the read lock was not acquired by the calling thread as `(i, word)`, or a
    ///   reference to the data it protects outlives this call.
    #[inline]
    unsafe fn unlock_shared(&self, i: usize, word: u64) {
        // A guard copied into a fork child is not the child's: the parent's thread
        // still holds the slot.
        if me::tid() != word as u32 {
            return;
        }
        self.release_slot(i, word);
    }

    /// Takes the write lock: the mutex, then the drain. Returns whether a writer died
    /// and the data needs a repair, and the calling thread's id.
    #[inline(always)]
    fn lock_exclusive(
        &self,
        deadline: Option<Deadline>,
        block: bool,
    ) -> core::result::Result<(bool, u32), RwLockError> {
        // Capped sleeps: readers wait on this mutex too, and a waiter killed right after
        // its wake-up must not strand a writer asleep behind it.
        let acquired = if !block {
            self.writer.try_lock()
        } else {
            self.writer.lock_capped(deadline)
        }
        .map_err(RwLockError::from_raw)?;
        if acquired == Acquired::OwnerDied {
            self.take_over_dead_holder();
        }
        // Relaxed: only the mutex holder stores to the state word, and we hold it.
        let s = self.state.load(Ordering::Relaxed);
        if s & NOT_RECOVERABLE != 0 {
            return Err(self.give_up_not_recoverable());
        }
        // SeqCst: the writer's half of the Dekker pair with a reader's claim (the
        // drain's slot loads must not be ordered before this store). The one atomic
        // read-modify-write the write lock adds to the mutex's: unlocking clears the
        // bit with a plain store.
        self.state.fetch_or(WRITER, Ordering::SeqCst);
        crate::sync::loom_seqcst_fence();
        if let Err(e) = self.drain(deadline, block) {
            return Err(self.give_up_draining(e));
        }
        Ok((s & NEEDS_REPAIR != 0, me::tid()))
    }

    /// The lock is not recoverable: lets the mutex go (this thread holds it).
    #[cold]
    fn give_up_not_recoverable(&self) -> RwLockError {
        // SAFETY: this thread holds the mutex (just acquired, made consistent).
        let _ = unsafe { self.writer.unlock() };
        RwLockError::NotRecoverable
    }

    /// The drain failed with `e`: lets the readers back in and the mutex go.
    #[cold]
    fn give_up_draining(&self, e: RwLockError) -> RwLockError {
        self.release_writer();
        e
    }

    /// The writer mutex was acquired owner-died: its holder died holding it. If that
    /// holder was writing (`WRITER` still set; a writer clears it before unlocking),
    /// the data may be half written: mark it for repair. A holder that died before
    /// setting `WRITER` or after clearing it — or a reader waiting through the mutex
    /// (see `pass_through_writer_mutex`) — left the data whole, and nothing is marked.
    /// Then the mutex is made consistent, so that only this lock's state (not glibc's)
    /// tracks the repair and a writer that gives up (times out draining) can release it.
    #[cold]
    fn take_over_dead_holder(&self) {
        // Before `make_consistent`, so a holder killed in between leaves the mutex
        // owner-died with the repair already recorded.
        self.mark_cut_short_write();
        // SAFETY: this thread holds the mutex (acquired with EOWNERDEAD).
        let _ = unsafe { self.writer.make_consistent() };
    }

    /// With the writer mutex held: a `WRITER` bit still set belongs to a write that was
    /// cut short; it becomes `NEEDS_REPAIR`.
    #[cold]
    fn mark_cut_short_write(&self) {
        // Relaxed: only the mutex holder stores to the state word, and we hold it.
        let s = self.state.load(Ordering::Relaxed);
        if s & WRITER != 0 {
            // Release: readers that load this value learn of the repair; nothing else is
            // published.
            self.state.store(
                (s & !(WRITER | DRAIN_WAITING)) | NEEDS_REPAIR,
                Ordering::Release,
            );
        }
    }

    /// Waits until every slot is free (reclaiming dead readers' slots).
    #[inline]
    fn drain(
        &self,
        deadline: Option<Deadline>,
        block: bool,
    ) -> core::result::Result<(), RwLockError> {
        // SeqCst: see `claim`. A corrupt mark larger than the table is clamped.
        let used = (self.hwm.load(Ordering::SeqCst) as usize).min(SLOTS);
        match (0..used).find(|&i| self.slots[i].word() & TID_MASK != 0) {
            None => Ok(()),
            Some(first) => self.drain_from(first, used, deadline, block),
        }
    }

    /// The drain from slot `first`, the first one found held, to `used`.
    #[cold]
    #[inline(never)]
    fn drain_from(
        &self,
        first: usize,
        used: usize,
        deadline: Option<Deadline>,
        block: bool,
    ) -> core::result::Result<(), RwLockError> {
        let mut drained = Ok(());
        for i in first..used {
            if self.slots[i].word() & TID_MASK != 0 {
                drained = self.drain_slot(i, deadline, block);
                if drained.is_err() {
                    break;
                }
            }
        }
        // Relaxed: only spares leaving readers a futile wake-up; a reader that still
        // sees the bit bumps the drain word for nobody.
        self.state.fetch_and(!DRAIN_WAITING, Ordering::Relaxed);
        drained
    }

    #[cold]
    #[inline(never)]
    fn drain_slot(
        &self,
        i: usize,
        deadline: Option<Deadline>,
        block: bool,
    ) -> core::result::Result<(), RwLockError> {
        let me = me();
        let s = &self.slots[i];
        let held = || s.word() & TID_MASK != 0;
        if !block {
            return Err(RwLockError::WouldBlock);
        }
        if let Some((w, ident)) = Self::holder(s) {
            if w as u32 == me.tid && (ident == me.ident || ident == 0) {
                return Err(RwLockError::Deadlock);
            }
        }
        if crate::spin::spin_until(|| !held()) {
            return Ok(());
        }
        // The first check right away, then one per READER_CHECK: each reads `/proc`.
        let mut next_check = Deadline::now();
        loop {
            // Acquire: pairs with the Release bump in `wake_drain`.
            let seq = self.drain.load(Ordering::Acquire);
            // SeqCst (both): Dekker with the reader's unlock (it frees its slot, then
            // loads the state and the slot waited on): either it sees DRAIN_WAITING
            // and this slot and bumps, or we see the slot free. Only the reader of this
            // slot wakes us.
            self.drain_slot.store(i as u32, Ordering::SeqCst);
            self.state.fetch_or(DRAIN_WAITING, Ordering::SeqCst);
            crate::sync::loom_seqcst_fence();
            if !held() {
                return Ok(());
            }
            if self.reclaim_drained_slot(i, &mut next_check) {
                return Ok(());
            }
            let (until, callers) = check_deadline(deadline);
            if futex_impl::wait(&self.drain, seq, until) == WaitOutcome::TimedOut && callers {
                return Err(RwLockError::TimedOut);
            }
        }
    }

    /// Every reader slot is taken: reclaims the slots of dead readers when a check is
    /// due (`next_reclaim`; then one per [`READER_CHECK`], each reads `/proc`), and naps
    /// until a slot may have been freed, never past `deadline`.
    #[cfg(not(shmsync_loom))]
    fn wait_for_free_slot(&self, next_reclaim: &mut Deadline, deadline: Option<Deadline>) {
        if next_reclaim.has_passed() {
            self.reclaim_dead();
            *next_reclaim = Deadline::after(READER_CHECK);
        }
        let nap = deadline.map_or(SLOT_POLL, |d| d.remaining().min(SLOT_POLL));
        std::thread::sleep(nap);
    }

    /// Under loom, liveness is not modelled: a model yield.
    #[cfg(shmsync_loom)]
    fn wait_for_free_slot(&self, _next_reclaim: &mut Deadline, _deadline: Option<Deadline>) {
        crate::sync::yield_now();
    }

    /// While draining slot `i`: when a check is due (`next_check`; then one per
    /// [`READER_CHECK`]), whether its holder was found dead and the slot reclaimed.
    #[cfg(not(shmsync_loom))]
    fn reclaim_drained_slot(&self, i: usize, next_check: &mut Deadline) -> bool {
        if next_check.has_passed() {
            if self.reclaim_if(i, judge) {
                return true;
            }
            *next_check = Deadline::after(READER_CHECK);
        }
        false
    }

    /// Under loom, liveness is not modelled: never reclaimed.
    #[cfg(shmsync_loom)]
    fn reclaim_drained_slot(&self, _i: usize, _next_check: &mut Deadline) -> bool {
        false
    }

    /// Clears the writer bits and unlocks the mutex (the calling thread holds it); the
    /// unlock wakes readers waiting on the mutex.
    #[inline]
    fn release_writer(&self) {
        // Relaxed: only the mutex holder stores to the state word, and we hold it.
        let s = self.state.load(Ordering::Relaxed);
        // Release: pairs with the readers' SeqCst (so Acquire) loads of the state,
        // publishing this writer's writes to the data. A plain store, not a
        // read-modify-write: no one else stores to the word while we hold the mutex.
        self.state
            .store(s & !(WRITER | DRAIN_WAITING), Ordering::Release);
        crate::failpoint::failpoint("rwlock-released-writer");
        // SAFETY: the calling thread holds the mutex (every caller's precondition).
        let _ = unsafe { self.writer.unlock() };
    }

    /// For the tool's `mark_consistent`: takes the write lock (waiting until `deadline`
    /// for readers and writers; dead readers' slots are reclaimed on the way) and, if a
    /// dead writer left the data to repair, declares it consistent as it is. Returns
    /// whether it did.
    #[cfg(not(shmsync_loom))]
    pub(crate) fn accept_as_is(
        &self,
        deadline: Deadline,
    ) -> core::result::Result<bool, RwLockError> {
        let (needs_repair, _) = self.lock_exclusive(Some(deadline), true)?;
        if needs_repair {
            self.repaired();
        }
        self.release_writer();
        Ok(needs_repair)
    }

    /// Marks the repair done (the writer holds the lock).
    fn repaired(&self) {
        // Relaxed: published by the Release of `release_writer`.
        self.state.fetch_and(!NEEDS_REPAIR, Ordering::Relaxed);
    }

    /// Marks the lock not recoverable (a writer abandoned a repair; it holds the lock).
    fn abandon_repair(&self) {
        // Relaxed: published by the Release of `release_writer`.
        self.state.fetch_or(NOT_RECOVERABLE, Ordering::Relaxed);
    }

    /// # Safety
    ///
    /// Behavior is undefined if anyone else uses the lock during the call.
    #[cfg(not(shmsync_loom))]
    unsafe fn reinit(&self) -> Result<()> {
        // Relaxed: exclusive access (the caller's promise).
        self.state.store(0, Ordering::Relaxed);
        self.hwm.store(0, Ordering::Relaxed);
        for s in &self.slots {
            s.ident.store(0, Ordering::Relaxed);
            s.word.store(0, Ordering::Relaxed);
        }
        // SAFETY: exclusive access (the caller's promise).
        unsafe { self.writer.reinit() }
    }
}

impl<const SLOTS: usize> fmt::Debug for RawRobustRwLock<SLOTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawRobustRwLock")
            .field("writer", &self.writer.state())
            .field("readers", &self.readers().len())
            .field("needs_repair", &self.needs_repair())
            .finish_non_exhaustive()
    }
}

/// The verdict on a slot holder: dead when its process is (or its pid was reused),
/// when its thread has exited, or when its thread id now belongs to another process.
fn judge(word: u64, ident: u64) -> Liveness {
    let tid = word as u32;
    if ident != 0 {
        match process::packed_liveness(ident) {
            Liveness::Alive => {}
            other => return other,
        }
    }
    match process::thread_liveness(tid) {
        Liveness::Alive if ident != 0 => {
            let pid = ident as u32 & PID_MASK;
            match process::thread_group_of(tid) {
                Some(group) if group != pid => Liveness::Dead,
                Some(_) => Liveness::Alive,
                // Gone between the two reads, or unreadable: ask again next time.
                None => Liveness::Unknown,
            }
        }
        other => other,
    }
}

/// The deadline of one drain sleep: the caller's, but no later than [`READER_CHECK`]
/// from now (the flag says whether a time-out is the caller's). Under loom, as
/// [`crate::futex::sleep_deadline`]: no cap.
fn check_deadline(deadline: Option<Deadline>) -> (Option<Deadline>, bool) {
    #[cfg(not(shmsync_loom))]
    {
        let cap = Deadline::after(READER_CHECK);
        match deadline {
            Some(d) if d <= cap => (Some(d), true),
            _ => (Some(cap), false),
        }
    }
    #[cfg(shmsync_loom)]
    (deadline, deadline.is_some())
}

/// A reader-writer lock that lives in shared memory, protects a `T`, and survives the
/// death of its readers and writers.
///
/// # Design
///
/// * **Writers** are serialized by a [`RawRobustMutex`]. A writer that holds it sets
///   the `WRITER` bit of the lock's state word, then *drains* the readers: it waits
///   until every reader slot is free. Only the mutex holder ever stores to the state
///   word, so unlocking clears the bit with a plain store: the write lock costs one
///   atomic read-modify-write more than the mutex (the Dekker store below). Writer
///   preference: once `WRITER` is set, no new reader gets in, so a steady stream of readers cannot starve a writer (a steady
///   stream of writers can starve readers: pick this lock for read-mostly data).
/// * **Readers** register in a fixed table of `SLOTS` slots, each on its own 64-byte
///   cache line: a read lock is one compare-and-swap that writes the reader's thread id
///   into a free slot (the one the thread used last, else the lowest free one), a store
///   of its process identity beside it, and a load of the state word; unlocking clears
///   the slot. Readers in different processes write different cache lines and share
///   only the state word, which they read, so the read path scales with cores. A
///   high-water mark of the slots ever used (raised by a reader only the first time it
///   takes a higher slot) limits a writer's drain to the slots in use.
/// * The reader's slot claim and the writer's `WRITER` store are each followed by a
///   load of the other side's word (sequentially consistent, a Dekker pair): either
///   the reader sees `WRITER` and backs out, or the writer's drain sees the slot.
/// * **Sleeping**: readers that find `WRITER` spin briefly (the crate's adaptive
///   policy), then wait where writers wait for each other — on the writer mutex — and
///   let it go as soon as they hold it: the writer's unlock wakes one waiter (glibc
///   does), and each waiter's unlock wakes the next, so a writer pays nothing for
///   sleeping readers. The draining writer spins, then sleeps on a separate `drain`
///   word that only the reader it waits for bumps when it leaves (or a reclaim of that
///   reader's slot). Every sleep is capped (at 500 ms, the drain at
///   [`READER_CHECK`]), so a process killed between a state change and its wake-up
///   delays a sleeper, never strands it. A reader that finds every slot taken (more
///   than `SLOTS` threads reading at once) polls every millisecond instead, and
///   reclaims dead holders' slots every [`READER_CHECK`] meanwhile.
///
/// # Dead readers
///
/// A slot records the reader's thread id, a per-slot claim sequence (so a slot is
/// never confused with a later claim of the same slot), and the reader process's
/// packed [`ProcessIdentity`](crate::ProcessIdentity) (pid, start time, pid namespace). A writer whose drain
/// finds a slot still held after spinning checks the holder every [`READER_CHECK`]
/// (50 ms): the slot is reclaimed when the holder is proven dead — its process is gone
/// or its pid now names another process (a reused pid is never taken for the reader),
/// or its thread has exited although the process runs, or its thread id now belongs to
/// another process. A live holder, also a stopped one (`SIGSTOP`, a debugger), is never
/// reclaimed: the writer's timeout applies. A holder whose liveness cannot be read
/// ([`Liveness::Unknown`]: another pid namespace, `/proc` unreadable) is treated as
/// alive. So a writer proceeds at most [`READER_CHECK`] plus the `/proc` reads (a few
/// tens of microseconds per held slot) after the death of the last reader it waits for.
///
/// # Dead writers
///
/// A writer killed while holding (or draining for) the write lock leaves the robust
/// mutex owner-died with `WRITER` set. The next writer gets [`WriteError::OwnerDied`]
/// holding the write lock, repairs the data, and calls
/// [`OwnerDiedWriteGuard::make_consistent`]; dropping that guard instead makes the lock
/// permanently [`RwLockError::NotRecoverable`] (until [`RobustRwLock::reinit`]), as for
/// [`crate::RobustMutex`]. Until a writer repairs, readers get
/// [`RwLockError::Inconsistent`] — at once when they arrive, and as soon as they are
/// woken (by the kernel's robust-mutex handling, at most 500 ms) when they were
/// already waiting — and never see the half-written data. What a reader may do then:
/// take the write lock itself (it gets `OwnerDied` and may repair), or retry later,
/// e.g. in a loop with its own deadline, until a writer has repaired. A holder of the
/// writer mutex that dies with `WRITER` clear — a writer that had not set it yet or
/// had cleared it already (its unlock clears it first), or a reader waiting through
/// the mutex — left the data whole: whoever locks the mutex next makes it consistent
/// and nobody is asked to repair.
///
/// # Use
///
/// Readers in any number of processes (up to `SLOTS` threads at once, default
/// [`DEFAULT_READER_SLOTS`]) share the lock; a writer excludes everyone. Writers are
/// preferred: a waiting writer keeps new readers out.
///
/// `T: AnyBitPattern`: a writer may die halfway through writing the data.
///
/// # Layout
///
/// `#[repr(C)]`: the [`RawRobustRwLock`] (`128 + 64 × SLOTS` bytes, 64-aligned), then
/// the `T`; all-zero memory is not a lock ([`attach`](Self::attach) refuses it).
///
/// # Example
///
/// ```
/// use shmsync::{RobustRwLock, RwLockError, Segment, WriteError};
///
/// let seg = Segment::anonymous(1 << 16)?;
/// // SAFETY: a fresh, page-aligned mapping, large enough, that outlives `lock`.
/// let lock: &RobustRwLock<[u64; 2]> = unsafe { RobustRwLock::init_at(seg.as_ptr().cast(), [0; 2])? };
///
/// // SAFETY: the child only locks, writes plain data and `_exit`s.
/// let pid = unsafe { libc::fork() };
/// if pid == 0 {
///     if let Ok(mut w) = lock.write() {
///         w[0] = 1; // ... and dies before writing w[1].
///         std::mem::forget(w);
///     }
///     // SAFETY: `_exit` is always safe; the kernel marks the writer mutex owner-died.
///     unsafe { libc::_exit(0) };
/// }
/// // SAFETY: reaping our own child.
/// unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
///
/// // Readers cannot see the half-written pair.
/// assert_eq!(lock.read().unwrap_err(), RwLockError::Inconsistent);
/// // A writer repairs it.
/// match lock.write() {
///     Err(WriteError::OwnerDied(mut w)) => {
///         w[1] = w[0];
///         drop(w.make_consistent());
///     }
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(*lock.read()?, [1, 1]);
/// # Ok::<(), shmsync::Error>(())
/// ```
#[repr(C)]
pub struct RobustRwLock<T: AnyBitPattern, const SLOTS: usize = DEFAULT_READER_SLOTS> {
    raw: RawRobustRwLock<SLOTS>,
    data: UnsafeCell<T>,
}

// SAFETY: the data is reached only through guards: shared borrows while a read lock is
// held (no writer inside), a unique one while the write lock is held (nobody else
// inside); `T: Send + Sync` because one thread's writes are read by others and readers
// share `&T`.
unsafe impl<T: AnyBitPattern + Send + Sync, const SLOTS: usize> Sync for RobustRwLock<T, SLOTS> {}
// SAFETY: the lock has no thread affinity until locked (ownership lives in shared
// words), and `T: Send`.
unsafe impl<T: AnyBitPattern + Send, const SLOTS: usize> Send for RobustRwLock<T, SLOTS> {}

impl<T: AnyBitPattern, const SLOTS: usize> RobustRwLock<T, SLOTS> {
    /// Places a new, unlocked lock holding `value` at `ptr`.
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`] for a null or misaligned `ptr` (the lock is 64-aligned);
    /// [`Error::Os`] if a pthread initialization call fails.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of `size_of::<RobustRwLock<T, SLOTS>>()`
    ///   bytes for all of `'a`, in memory that stays mapped (and is not mapped a second
    ///   time in this process while its write lock is held) for `'a`;
    /// - any other thread or process accesses those bytes while `init_at` runs, or any
    ///   process still uses an earlier object there.
    #[cfg(not(shmsync_loom))]
    pub unsafe fn init_at<'a>(ptr: *mut Self, value: T) -> Result<&'a Self> {
        check_placement(ptr)?;
        // SAFETY: aligned (checked), valid and exclusive (the caller's promise); the
        // data goes in before the lock's header is published.
        unsafe { core::ptr::addr_of_mut!((*ptr).data).write(UnsafeCell::new(value)) };
        // SAFETY: as above; the raw lock is the first field.
        unsafe { RawRobustRwLock::init_at(core::ptr::addr_of_mut!((*ptr).raw)) }?;
        // SAFETY: every field is initialized; valid for 'a.
        Ok(unsafe { &*ptr })
    }

    /// Validates the lock another process placed at `ptr`.
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`], [`Error::Uninitialized`] (zeroed, or still being
    /// initialized), [`Error::BadMagic`] / [`Error::WrongKind`] /
    /// [`Error::FormatMismatch`] (foreign memory), [`Error::Corrupt`] (another slot
    /// count, or a corrupt writer mutex), [`Error::PidNamespaceMismatch`].
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of `size_of::<RobustRwLock<T, SLOTS>>()`
    ///   bytes for all of `'a`, in shared memory that stays mapped for `'a`;
    /// - the bytes are being initialized by `init_at` concurrently;
    /// - the lock was created with a `T` of another size or alignment.
    #[cfg(not(shmsync_loom))]
    pub unsafe fn attach<'a>(ptr: *const Self) -> Result<&'a Self> {
        check_placement(ptr)?;
        // SAFETY: aligned (checked) and valid for 'a (the caller's promise).
        unsafe { RawRobustRwLock::attach(core::ptr::addr_of!((*ptr).raw)) }?;
        // SAFETY: the header is READY (validated with Acquire), so the data written
        // before its publication is visible.
        Ok(unsafe { &*ptr })
    }

    /// A lock holding `value`, for loom models (loom builds only).
    #[cfg(shmsync_loom)]
    pub fn new(value: T) -> Self {
        RobustRwLock {
            raw: RawRobustRwLock::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// Blocks until a read lock is acquired.
    ///
    /// # Errors
    ///
    /// [`RwLockError::Inconsistent`] (a writer died; nothing was read),
    /// [`RwLockError::NotRecoverable`], [`RwLockError::Deadlock`] (this thread holds
    /// the write lock, or a read lock while a writer waits).
    #[inline]
    pub fn read(&self) -> core::result::Result<ReadGuard<'_, T, SLOTS>, RwLockError> {
        self.raw
            .lock_shared(None, true)
            .map(|(slot, word)| ReadGuard::new(self, slot, word))
    }

    /// Acquires a read lock if no writer holds or awaits it and a slot is free.
    ///
    /// # Errors
    ///
    /// [`RwLockError::WouldBlock`], or as [`read`](Self::read).
    #[inline]
    pub fn try_read(&self) -> core::result::Result<ReadGuard<'_, T, SLOTS>, RwLockError> {
        self.raw
            .lock_shared(None, false)
            .map(|(slot, word)| ReadGuard::new(self, slot, word))
    }

    /// Blocks until a read lock is acquired or `timeout` has passed.
    ///
    /// # Errors
    ///
    /// [`RwLockError::TimedOut`], or as [`read`](Self::read).
    pub fn read_timeout(
        &self,
        timeout: Duration,
    ) -> core::result::Result<ReadGuard<'_, T, SLOTS>, RwLockError> {
        self.read_until(Deadline::after(timeout))
    }

    /// Blocks until a read lock is acquired or `deadline` passes.
    ///
    /// # Errors
    ///
    /// [`RwLockError::TimedOut`], or as [`read`](Self::read).
    pub fn read_deadline(
        &self,
        deadline: Instant,
    ) -> core::result::Result<ReadGuard<'_, T, SLOTS>, RwLockError> {
        self.read_until(Deadline::from_instant(deadline))
    }

    fn read_until(
        &self,
        deadline: Deadline,
    ) -> core::result::Result<ReadGuard<'_, T, SLOTS>, RwLockError> {
        self.raw
            .lock_shared(Some(deadline), true)
            .map(|(slot, word)| ReadGuard::new(self, slot, word))
    }

    /// Blocks until the write lock is acquired: every reader has left (dead readers'
    /// slots are reclaimed, within [`READER_CHECK`] of the last one's death).
    ///
    /// # Errors
    ///
    /// [`WriteError::OwnerDied`] (the write lock **is** held: repair, then
    /// [`make_consistent`](OwnerDiedWriteGuard::make_consistent)); otherwise
    /// [`WriteError::Failed`] with [`RwLockError::Deadlock`] (this thread holds a read or
    /// the write lock), [`RwLockError::NotRecoverable`], or an `Os`/`Corrupt` error of
    /// the writer mutex.
    #[inline]
    pub fn write(
        &self,
    ) -> core::result::Result<WriteGuard<'_, T, SLOTS>, WriteError<'_, T, SLOTS>> {
        self.acquired(self.raw.lock_exclusive(None, true))
    }

    /// Acquires the write lock if nobody holds the lock now. (A reader waiting for a
    /// writer holds the writer mutex for an instant after that writer leaves; a
    /// `try_write` in that instant fails too.)
    ///
    /// # Errors
    ///
    /// [`RwLockError::WouldBlock`] in [`WriteError::Failed`], or as [`write`](Self::write).
    #[inline]
    pub fn try_write(
        &self,
    ) -> core::result::Result<WriteGuard<'_, T, SLOTS>, WriteError<'_, T, SLOTS>> {
        self.acquired(self.raw.lock_exclusive(None, false))
    }

    /// Blocks until the write lock is acquired or `timeout` has passed (a live reader
    /// that never leaves, e.g. a stopped process, ends here).
    ///
    /// # Errors
    ///
    /// [`RwLockError::TimedOut`] in [`WriteError::Failed`], or as [`write`](Self::write).
    pub fn write_timeout(
        &self,
        timeout: Duration,
    ) -> core::result::Result<WriteGuard<'_, T, SLOTS>, WriteError<'_, T, SLOTS>> {
        self.acquired(
            self.raw
                .lock_exclusive(Some(Deadline::after(timeout)), true),
        )
    }

    /// Blocks until the write lock is acquired or `deadline` passes.
    ///
    /// # Errors
    ///
    /// [`RwLockError::TimedOut`] in [`WriteError::Failed`], or as [`write`](Self::write).
    pub fn write_deadline(
        &self,
        deadline: Instant,
    ) -> core::result::Result<WriteGuard<'_, T, SLOTS>, WriteError<'_, T, SLOTS>> {
        let deadline = Deadline::from_instant(deadline);
        self.acquired(self.raw.lock_exclusive(Some(deadline), true))
    }

    #[inline]
    fn acquired(
        &self,
        r: core::result::Result<(bool, u32), RwLockError>,
    ) -> core::result::Result<WriteGuard<'_, T, SLOTS>, WriteError<'_, T, SLOTS>> {
        match r {
            Ok((false, tid)) => Ok(WriteGuard::new(self, tid)),
            Ok((true, tid)) => Err(WriteError::OwnerDied(OwnerDiedWriteGuard::new(self, tid))),
            Err(e) => Err(WriteError::Failed(e)),
        }
    }

    /// Re-initializes the lock (unlocked, consistent, no readers) to bring back one
    /// that is [not recoverable](RwLockError::NotRecoverable). The data is left as it
    /// is.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if a pthread initialization call fails.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - any thread in any process holds the lock, is in or entering a lock call on
    ///   it, or will unlock it.
    #[cfg(not(shmsync_loom))]
    pub unsafe fn reinit(&self) -> Result<()> {
        // SAFETY: exclusive access (the caller's promise).
        unsafe { self.raw.reinit() }
    }

    /// The lock part, for observing and repairing it (readers, writer state,
    /// [`reclaim_dead`](RawRobustRwLock::reclaim_dead)).
    pub fn raw(&self) -> &RawRobustRwLock<SLOTS> {
        &self.raw
    }
}

impl<T: AnyBitPattern, const SLOTS: usize> fmt::Debug for RobustRwLock<T, SLOTS> {
    /// Shows the lock's state without taking it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RobustRwLock")
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

/// A read lock on a [`RobustRwLock`]: shared access to the data; unlocks on drop.
///
/// `!Send` (the slot records the reading thread) and borrows the lock.
#[must_use = "if unused the read lock is released at once"]
pub struct ReadGuard<'a, T: AnyBitPattern, const SLOTS: usize = DEFAULT_READER_SLOTS> {
    lock: &'a RobustRwLock<T, SLOTS>,
    slot: usize,
    word: u64,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a `&ReadGuard` gives `&T` only.
unsafe impl<T: AnyBitPattern + Sync, const SLOTS: usize> Sync for ReadGuard<'_, T, SLOTS> {}

impl<'a, T: AnyBitPattern, const SLOTS: usize> ReadGuard<'a, T, SLOTS> {
    #[inline]
    fn new(lock: &'a RobustRwLock<T, SLOTS>, slot: usize, word: u64) -> Self {
        ReadGuard {
            lock,
            slot,
            word,
            _not_send: PhantomData,
        }
    }

    /// The reader slot this guard holds (an associated function, so it never shadows a
    /// method of `T`).
    pub fn slot(this: &Self) -> usize {
        this.slot
    }
}

impl<T: AnyBitPattern, const SLOTS: usize> Deref for ReadGuard<'_, T, SLOTS> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: a read lock is held for the guard's lifetime: no writer is inside,
        // and the borrow is tied to the guard.
        self.lock.data.with(|p| unsafe { &*p })
    }
}

impl<T: AnyBitPattern, const SLOTS: usize> Drop for ReadGuard<'_, T, SLOTS> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this thread took the read lock as (slot, word); the borrows of the
        // data end with the guard.
        unsafe { self.lock.raw.unlock_shared(self.slot, self.word) };
    }
}

impl<T: AnyBitPattern + fmt::Debug, const SLOTS: usize> fmt::Debug for ReadGuard<'_, T, SLOTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGuard").field("data", &**self).finish()
    }
}

/// The write lock on a [`RobustRwLock`]: exclusive access to the data; unlocks on drop.
///
/// `!Send` (a pthread mutex is unlocked by the thread that locked it) and borrows the
/// lock.
#[must_use = "if unused the write lock is released at once"]
pub struct WriteGuard<'a, T: AnyBitPattern, const SLOTS: usize = DEFAULT_READER_SLOTS> {
    lock: &'a RobustRwLock<T, SLOTS>,
    tid: u32,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a `&WriteGuard` gives `&T` only.
unsafe impl<T: AnyBitPattern + Sync, const SLOTS: usize> Sync for WriteGuard<'_, T, SLOTS> {}

impl<'a, T: AnyBitPattern, const SLOTS: usize> WriteGuard<'a, T, SLOTS> {
    #[inline]
    fn new(lock: &'a RobustRwLock<T, SLOTS>, tid: u32) -> Self {
        WriteGuard {
            lock,
            tid,
            _not_send: PhantomData,
        }
    }
}

#[cfg(shmsync_loom)]
impl<T: AnyBitPattern, const SLOTS: usize> WriteGuard<'_, T, SLOTS> {
    /// Simulates the death of the writer (loom builds only): the write lock is left as
    /// a killed writer leaves it, the mutex owner-died and `WRITER` still set.
    pub fn abandon(this: Self) {
        let lock = this.lock;
        core::mem::forget(this);
        // SAFETY: the guard proved that this thread holds the writer mutex.
        unsafe { lock.raw.writer.abandon() };
    }
}

impl<T: AnyBitPattern, const SLOTS: usize> Deref for WriteGuard<'_, T, SLOTS> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the write lock is held: nobody else is inside.
        self.lock.data.with(|p| unsafe { &*p })
    }
}

impl<T: AnyBitPattern, const SLOTS: usize> DerefMut for WriteGuard<'_, T, SLOTS> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the write lock is held and the guard is borrowed mutably.
        self.lock.data.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T: AnyBitPattern, const SLOTS: usize> Drop for WriteGuard<'_, T, SLOTS> {
    #[inline]
    fn drop(&mut self) {
        // A guard copied into a fork child holds nothing there.
        if me::tid() == self.tid {
            self.lock.raw.release_writer();
        }
    }
}

impl<T: AnyBitPattern + fmt::Debug, const SLOTS: usize> fmt::Debug for WriteGuard<'_, T, SLOTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGuard").field("data", &**self).finish()
    }
}

/// The write lock of a [`RobustRwLock`] whose previous writer died: this thread holds
/// it, no reader is inside, and the data may be half written.
///
/// Repair the data through `DerefMut`, then
/// [`make_consistent`](Self::make_consistent). Dropped without that, the lock becomes
/// **not recoverable** for everyone until [`RobustRwLock::reinit`].
#[must_use = "repair the data and call make_consistent(); dropping this makes the lock not recoverable"]
pub struct OwnerDiedWriteGuard<'a, T: AnyBitPattern, const SLOTS: usize = DEFAULT_READER_SLOTS> {
    guard: core::mem::ManuallyDrop<WriteGuard<'a, T, SLOTS>>,
}

impl<'a, T: AnyBitPattern, const SLOTS: usize> OwnerDiedWriteGuard<'a, T, SLOTS> {
    #[cold]
    fn new(lock: &'a RobustRwLock<T, SLOTS>, tid: u32) -> Self {
        OwnerDiedWriteGuard {
            guard: core::mem::ManuallyDrop::new(WriteGuard::new(lock, tid)),
        }
    }

    /// Releases the write lock without repairing and without giving up: the data stays
    /// marked for repair, readers keep getting [`RwLockError::Inconsistent`], and the
    /// next writer gets [`WriteError::OwnerDied`] again. (Dropping the guard instead
    /// makes the lock not recoverable.) Converting the error into [`Error`] with `?`
    /// does this.
    pub fn release_unrepaired(self) {
        let mut this = core::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the guard is taken exactly once; its drop
        // releases the write lock and leaves NEEDS_REPAIR set.
        drop(unsafe { core::mem::ManuallyDrop::take(&mut this.guard) });
    }

    /// Declares the data repaired: readers get in again after the returned ordinary
    /// guard is dropped.
    pub fn make_consistent(mut self) -> WriteGuard<'a, T, SLOTS> {
        // SAFETY: `self` is forgotten right after, so the guard is taken exactly once.
        let guard = unsafe { core::mem::ManuallyDrop::take(&mut self.guard) };
        core::mem::forget(self);
        guard.lock.raw.repaired();
        guard
    }
}

impl<T: AnyBitPattern, const SLOTS: usize> Deref for OwnerDiedWriteGuard<'_, T, SLOTS> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: AnyBitPattern, const SLOTS: usize> DerefMut for OwnerDiedWriteGuard<'_, T, SLOTS> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T: AnyBitPattern, const SLOTS: usize> Drop for OwnerDiedWriteGuard<'_, T, SLOTS> {
    fn drop(&mut self) {
        if me::tid() == self.guard.tid {
            self.guard.lock.raw.abandon_repair();
        }
        // SAFETY: dropped once, here; `make_consistent` forgets `self` instead.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.guard) };
    }
}

impl<T: AnyBitPattern + fmt::Debug, const SLOTS: usize> fmt::Debug
    for OwnerDiedWriteGuard<'_, T, SLOTS>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerDiedWriteGuard")
            .field("data", &**self)
            .finish()
    }
}

/// Why a write-lock call did not return a [`WriteGuard`].
pub enum WriteError<'a, T: AnyBitPattern, const SLOTS: usize = DEFAULT_READER_SLOTS> {
    /// A writer died holding the lock. This guard **holds the write lock**: repair the
    /// data, then [`make_consistent`](OwnerDiedWriteGuard::make_consistent). Dropping it
    /// makes the lock not recoverable; converting this error into [`Error`] with `?`
    /// releases it with the repair left to the next writer
    /// ([`release_unrepaired`](OwnerDiedWriteGuard::release_unrepaired)).
    OwnerDied(OwnerDiedWriteGuard<'a, T, SLOTS>),
    /// The write lock was not acquired.
    Failed(RwLockError),
}

impl<T: AnyBitPattern, const SLOTS: usize> WriteError<'_, T, SLOTS> {
    /// Whether this is [`WriteError::OwnerDied`] (the one variant that holds the lock).
    pub fn is_owner_died(&self) -> bool {
        matches!(self, WriteError::OwnerDied(_))
    }
}

impl<T: AnyBitPattern, const SLOTS: usize> fmt::Debug for WriteError<'_, T, SLOTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            WriteError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<T: AnyBitPattern, const SLOTS: usize> fmt::Display for WriteError<'_, T, SLOTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::OwnerDied(_) => f.write_str(
                "a writer died holding the reader-writer lock (the write lock is held; \
                 repair the data and make it consistent)",
            ),
            WriteError::Failed(e) => e.fmt(f),
        }
    }
}

impl<T: AnyBitPattern, const SLOTS: usize> std::error::Error for WriteError<'_, T, SLOTS> {}

impl<T: AnyBitPattern, const SLOTS: usize> From<WriteError<'_, T, SLOTS>> for Error {
    /// `OwnerDied` releases the write lock with the repair left to the next writer
    /// ([`OwnerDiedWriteGuard::release_unrepaired`]) and becomes [`Error::Os`] with
    /// `EOWNERDEAD`; `Failed` converts as [`RwLockError`] does.
    #[cold]
    fn from(e: WriteError<'_, T, SLOTS>) -> Error {
        match e {
            WriteError::OwnerDied(g) => {
                g.release_unrepaired();
                RwLockError::Inconsistent.into()
            }
            WriteError::Failed(e) => e.into(),
        }
    }
}

// SAFETY: `init_at` places the header (Kind::RwLock, slot count), state words, writer
// mutex, empty slot table and the value; `attach` validates header, slot count and
// writer mutex; T is AnyBitPattern (no pointers owed, any bytes valid).
#[cfg(not(shmsync_loom))]
unsafe impl<T: crate::SharedType + Send + Sync, const SLOTS: usize> crate::Shared
    for RobustRwLock<T, SLOTS>
{
    const KIND: crate::Kind = crate::Kind::RwLock;
    /// The size covers the slot count; `attach` checks it too.
    const IDENTITY: crate::TypeIdentity = T::IDENTITY.within("shmsync.RobustRwLock");
    type Init = T;

    fn value_name() -> String {
        T::display_name()
    }

    unsafe fn init_at<'a>(ptr: *mut Self, value: T) -> crate::Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { RobustRwLock::init_at(ptr, value) }
    }

    unsafe fn attach<'a>(ptr: *const Self) -> crate::Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { RobustRwLock::attach(ptr) }
    }
}
