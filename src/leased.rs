//! [`LeasedSemaphore`]: a counting semaphore that records who holds its permits, so the
//! permits of a process that died holding them can be reclaimed.
//!
//! # Design
//!
//! The semaphore is a table of leases under a robust lock ([`RawRobustMutex`]): one
//! slot per holding process (its [`ProcessIdentity`]: pid, start time, pid namespace,
//! so a reused pid is never mistaken for the dead holder) with the number of permits
//! that process holds. The number of available permits is not stored: it is
//! *derived*, `capacity - Σ slot.count`. Each operation changes the table with exactly
//! one store — the commit — to one slot's `count`:
//!
//! * acquire: bump our slot's count, or write our identity into a free slot
//!   (`count == 0`) and then store `count = 1`;
//! * release ([`Permit`]'s `Drop`): `count -= 1`;
//! * [`reclaim_dead`](LeasedSemaphore::reclaim_dead): `count = 0` for each slot whose
//!   holder is proven dead.
//!
//! So a process SIGKILLed at any instruction, even inside the table lock, leaves a
//! consistent table: the operation either committed or did not, and the derived count
//! cannot drift.
//!
//! Waiting for a permit sleeps on a `generation` futex word that every release and
//! reclaim bumps under the lock. A waiter registers in a `waiters` count under the lock
//! (so a release that finds it 0 may skip the system call) and deregisters with an
//! atomic decrement as soon as its sleep ends, outside the lock.
//!
//! A release issues its `FUTEX_WAKE` *before* it unlocks the table. The lock is robust,
//! so a process killed anywhere before the unlock — after the commit but before the
//! wake included — leaves it owner-died; the next locker gets the owner-died notice,
//! and its only "repair" is to bump `generation` and wake every waiter. After the
//! unlock nothing is left to do, so no instant exists where a release has committed,
//! nobody will be told, and the lock looks clean. As defence in depth, no sleep on
//! `generation` lasts longer than `MAX_SLEEP` (500 ms): a waiter then
//! re-locks and looks again, so even a lost wake-up (see Limits) costs latency, never
//! liveness.
//!
//! Leases also work between threads of one process: the process has one slot whose
//! count is the number of permits its threads hold. A permit is released by the
//! process that acquired it; a `fork` child's copy of a parent's [`Permit`] does
//! nothing when dropped.
//!
//! # Limits
//!
//! * At most `SLOTS` (default 64) processes can hold permits at once; one more gets
//!   [`Error::Full`]. Reclaiming dead holders frees their slots.
//! * A holder whose liveness cannot be checked (another pid namespace, `/proc`
//!   unreadable) is treated as alive: recovery never takes from a process it cannot
//!   prove dead.
//! * A waiter killed while registered leaves the `waiters` count one too high (each
//!   later release then makes one futile `FUTEX_WAKE`); one killed in the instant after
//!   being woken may leave another sleeper asleep until the next release, reclaim, its
//!   deadline, or the end of its capped sleep (at most 500 ms) — the permit itself
//!   stays available and is never lost.
//! * [`leases`](LeasedSemaphore::leases) reads without the lock: a snapshot that may
//!   be torn while the table changes.

use core::fmt;
use core::marker::PhantomData;
use core::time::Duration;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::futex::{Deadline, WaitOutcome};
#[cfg(not(shmsync_loom))]
use crate::header::check_placement;
use crate::header::ObjectHeader;
use crate::kind::Kind;
use crate::process::{self, Liveness, ProcessIdentity};
use crate::raw_mutex::{Acquired, RawLockError, RawRobustMutex};
#[cfg(not(shmsync_loom))]
use crate::semaphore::MAX_VALUE;
use crate::sync::{futex_impl, AtomicU32, AtomicU64, Ordering};

/// The default number of lease slots (processes that can hold permits at once).
pub const DEFAULT_SLOTS: usize = 64;

/// The longest a [`Permit`] waits for the table lock to return itself (on drop or in
/// [`Permit::release`]); see [`Permit`] for what happens after that.
pub const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// How many times a non-blocking call retries the table lock (with a spin hint between
/// tries, a few microseconds in all) before reporting that it would block.
const TRY_TABLE_ROUNDS: u32 = 64;

/// The deadline of a permit's return: [`RELEASE_WAIT`] from now. None under loom, whose
/// timed wait may time out at any step and would model a stopped table holder in every
/// model; the bound is tested across real processes.
#[cfg(not(shmsync_loom))]
fn release_deadline() -> Option<Deadline> {
    Some(Deadline::after(RELEASE_WAIT))
}

/// Under loom: no deadline.
#[cfg(shmsync_loom)]
fn release_deadline() -> Option<Deadline> {
    None
}

/// One lease: a holder's identity and how many permits it holds. 24 bytes.
///
/// All fields are written only under the table lock; they are atomics so that the
/// lock-free diagnostic reader ([`LeasedSemaphore::leases`]) never races.
#[repr(C)]
struct LeaseSlot {
    /// Permits held; 0 = free slot (the identity fields are then meaningless).
    count: AtomicU32,
    pid: AtomicU32,
    start_time: AtomicU64,
    pid_ns: AtomicU64,
}

#[cfg(not(shmsync_loom))]
static_assertions::assert_eq_size!(LeaseSlot, [u8; 24]);

impl LeaseSlot {
    #[cfg(shmsync_loom)]
    fn new() -> LeaseSlot {
        LeaseSlot {
            count: AtomicU32::new(0),
            pid: AtomicU32::new(0),
            start_time: AtomicU64::new(0),
            pid_ns: AtomicU64::new(0),
        }
    }

    /// The permits held (table lock held).
    fn count(&self) -> u32 {
        // Relaxed: read under the table lock, whose Acquire/Release orders it with the
        // writes of earlier holders.
        self.count.load(Ordering::Relaxed)
    }

    /// The commit store of every table operation (table lock held).
    fn commit(&self, count: u32) {
        // Release: under the lock, Relaxed would do for other lockers (the unlock's
        // Release publishes it); Release additionally keeps the identity stores of a
        // claim from being moved after this commit, so a process killed between them
        // leaves a free slot (count 0), never a count with a stale identity.
        self.count.store(count, Ordering::Release);
    }

    /// The recorded identity (table lock held).
    fn identity(&self) -> ProcessIdentity {
        // Relaxed: under the table lock (see `count`).
        ProcessIdentity::new(
            self.pid.load(Ordering::Relaxed),
            self.start_time.load(Ordering::Relaxed),
            self.pid_ns.load(Ordering::Relaxed),
        )
    }

    /// The holder and its count, read without the table lock (`None`: a free slot). A
    /// diagnostic snapshot: if the slot changes hands meanwhile, the identity may mix
    /// the old and the new holder's fields.
    fn snapshot(&self) -> Option<(ProcessIdentity, u32)> {
        // Acquire: pairs with the Release of `commit`, so the identity stores of the
        // claim that committed this count are visible to the loads below.
        let count = self.count.load(Ordering::Acquire);
        if count == 0 {
            return None;
        }
        // Relaxed loads (in `identity`): ordered after the Acquire above; a concurrent
        // re-claim can tear them, which a diagnostic snapshot tolerates.
        Some((self.identity(), count))
    }

    /// Writes `id` into a free slot (table lock held; `count` is 0, so a reader takes
    /// these fields into account only after the commit that follows).
    fn set_identity(&self, id: &ProcessIdentity) {
        // Relaxed: under the table lock, and ordered before the commit by its Release.
        self.pid.store(id.pid, Ordering::Relaxed);
        self.start_time.store(id.start_time, Ordering::Relaxed);
        self.pid_ns.store(id.pid_ns, Ordering::Relaxed);
    }
}

/// A counting semaphore whose permits are leases recorded per holding process; the
/// permits of dead holders can be [reclaimed](Self::reclaim_dead). See the module
/// documentation of `src/leased.rs` for the design.
///
/// `#[repr(C)]`, 8-aligned; with the default 64 slots it is 1640 bytes on 64-bit glibc
/// (24-byte header, 64-byte robust mutex, 16 bytes of counters, 64 × 24-byte slots).
///
/// ```
/// use shmsync::{LeasedSemaphore, Segment};
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: a fresh, private, page-aligned mapping large enough, that outlives `sem`.
/// let sem: &LeasedSemaphore = unsafe { LeasedSemaphore::init_at(seg.as_ptr().cast(), 2)? };
/// let a = sem.acquire()?;
/// let b = sem.try_acquire()?;
/// assert!(matches!(sem.try_acquire(), Err(shmsync::Error::WouldBlock(_))));
/// assert_eq!(sem.leases()?[0].permits, 2); // one slot for this process
/// drop((a, b));
/// assert_eq!(sem.value(), 2);
/// // Nobody died, so there is nothing to reclaim.
/// assert_eq!(sem.reclaim_dead()?.permits(), 0);
/// # Ok::<(), shmsync::Error>(())
/// ```
#[repr(C)]
pub struct LeasedSemaphore<const SLOTS: usize = DEFAULT_SLOTS> {
    /// Kind::LeasedSemaphore; `aux` = SLOTS.
    header: ObjectHeader,
    /// The table lock.
    lock: RawRobustMutex,
    /// Total permits (fixed at init).
    capacity: AtomicU32,
    /// Futex word: bumped (under the lock) whenever permits may have become available.
    generation: AtomicU32,
    /// Waiters registered (under the lock) as about to sleep on `generation`.
    waiters: AtomicU32,
    _reserved: AtomicU32,
    slots: [LeaseSlot; SLOTS],
}

#[cfg(all(not(shmsync_loom), target_env = "gnu", target_pointer_width = "64"))]
static_assertions::assert_eq_size!(LeasedSemaphore, [u8; 1640]);
#[cfg(not(shmsync_loom))]
static_assertions::const_assert_eq!(core::mem::align_of::<LeasedSemaphore>(), 8);

/// A permit held under a lease. Dropping it returns the permit (and wakes a waiter);
/// [`forget`](Permit::forget) keeps the lease recorded until its holder dies and the
/// permit is reclaimed.
///
/// Returning a permit takes the table lock, and a live process may hold that lock
/// indefinitely (stopped by a debugger or `SIGSTOP`). So the wait is bounded: a drop
/// waits at most [`RELEASE_WAIT`] for the lock; if it cannot have it by then (or the
/// lock is unusable), the lease stays recorded — the permit is then unavailable until
/// this process exits and [`LeasedSemaphore::reclaim_dead`] returns it, exactly as for
/// a [forgotten](Permit::forget) permit. [`release`](Permit::release) has the same
/// bound but reports the failure and hands the permit back, so the caller can retry.
///
/// ```
/// use shmsync::{LeasedSemaphore, Segment};
///
/// let seg = Segment::anonymous(1 << 16)?;
/// // SAFETY: fresh, private, page-aligned memory that outlives `sem`.
/// let sem = unsafe { LeasedSemaphore::<4>::init_at(seg.as_ptr().cast(), 1)? };
/// let permit = sem.acquire()?;
/// assert_eq!(permit.identity().pid, std::process::id());
/// assert_eq!(sem.value(), 0);
/// permit.release().map_err(|e| e.into_permit())
///     .unwrap_or_else(|p| drop(p)); // release, or fall back on Drop
/// assert_eq!(sem.value(), 1);
/// # Ok::<(), shmsync::Error>(())
/// ```
#[must_use = "dropping a Permit releases it at once"]
pub struct Permit<'a, const SLOTS: usize = DEFAULT_SLOTS> {
    sem: &'a LeasedSemaphore<SLOTS>,
    slot: u32,
    identity: ProcessIdentity,
    /// The process that acquired it: a fork child's copy never releases.
    owner_pid: u32,
}

/// What [`LeasedSemaphore::reclaim_dead`] took back.
///
/// ```
/// use shmsync::{LeasedSemaphore, Segment};
///
/// let seg = Segment::anonymous(1 << 16)?;
/// // SAFETY: fresh, private, page-aligned memory that outlives `sem`.
/// let sem = unsafe { LeasedSemaphore::<4>::init_at(seg.as_ptr().cast(), 2)? };
/// let _held = sem.acquire()?; // a live holder: never reclaimed
/// let reclaimed = sem.reclaim_dead()?;
/// assert_eq!(reclaimed.permits(), 0);
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Each dead holder and the permits it held, now available again.
    pub holders: Vec<(ProcessIdentity, u32)>,
}

impl Reclaimed {
    /// The total number of permits reclaimed.
    pub fn permits(&self) -> u64 {
        self.holders.iter().map(|&(_, n)| u64::from(n)).sum()
    }
}

/// One recorded lease, as [`LeasedSemaphore::leases`] reports it.
///
/// ```
/// use shmsync::{LeasedSemaphore, Liveness, Segment};
///
/// let seg = Segment::anonymous(1 << 16)?;
/// // SAFETY: fresh, private, page-aligned memory that outlives `sem`.
/// let sem = unsafe { LeasedSemaphore::<4>::init_at(seg.as_ptr().cast(), 2)? };
/// let _held = sem.acquire()?;
/// let leases = sem.leases()?;
/// assert_eq!(leases.len(), 1);
/// assert_eq!((leases[0].permits, leases[0].liveness), (1, Liveness::Alive));
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The holding process.
    pub identity: ProcessIdentity,
    /// Permits it holds.
    pub permits: u32,
    /// Whether it still runs (checked after the slot was read).
    pub liveness: Liveness,
}

/// The table lock, held; wakes (if asked) and then unlocks on drop or
/// [`unlock`](Table::unlock). `!Send`: a pthread mutex must be unlocked by the thread
/// that locked it.
struct Table<'a, const SLOTS: usize> {
    sem: &'a LeasedSemaphore<SLOTS>,
    /// Waiters to wake on `generation` before unlocking.
    wake: u32,
    _not_send: PhantomData<*const ()>,
}

impl<const SLOTS: usize> Drop for Table<'_, SLOTS> {
    fn drop(&mut self) {
        // EPERM would mean the lock was not ours, which `lock_table` rules out; EINVAL,
        // a kind word corrupted while held (glibc not called; every later locker gets
        // `Corrupt`). Nothing could be done about either in Drop.
        let _ = self.wake_then_unlock();
    }
}

impl<const SLOTS: usize> Table<'_, SLOTS> {
    /// Issues the requested wake-up, *then* unlocks; returns the pthread unlock result.
    ///
    /// Waking first closes the window in which a process killed between the two would
    /// leave a committed release that nobody hears of: until the unlock, a death leaves
    /// the robust lock owner-died, and the next locker's repair (`lock_table`) wakes
    /// every waiter. A waiter woken now finds the lock still held and simply waits for
    /// it; one that has not reached its futex sleep yet sees `generation` moved on.
    fn wake_then_unlock(&mut self) -> i32 {
        if self.wake > 0 {
            futex_impl::wake(&self.sem.generation, self.wake);
            self.wake = 0;
        }
        // SAFETY: a `Table` exists only while this thread holds the lock (made by
        // `lock_table`; `unlock` consumes it so this runs once), and it lends out no
        // reference to data the lock protects beyond this call.
        unsafe { self.sem.lock.unlock_raw() }
    }

    /// Wakes (if asked) and unlocks, reporting a failed unlock.
    fn unlock(self) -> Result<()> {
        let mut this = core::mem::ManuallyDrop::new(self);
        match this.wake_then_unlock() {
            0 => Ok(()),
            r => Err(Error::from_errno("pthread_mutex_unlock", "lease table", r)),
        }
    }
}

impl<const SLOTS: usize> Table<'_, SLOTS> {
    /// Permits currently leased.
    fn in_use(&self) -> u64 {
        self.sem.slots.iter().map(|s| u64::from(s.count())).sum()
    }

    /// Permits available: capacity minus leased (0 if a corrupt table says more are
    /// leased than exist).
    fn available(&self) -> u64 {
        u64::from(self.sem.capacity()).saturating_sub(self.in_use())
    }

    /// Records one more permit for `id`: its existing slot, else a free one.
    fn claim(&self, id: &ProcessIdentity) -> Result<usize> {
        let mut free = None;
        for (i, s) in self.sem.slots.iter().enumerate() {
            let c = s.count();
            if c > 0 && s.identity() == *id {
                s.commit(c + 1);
                return Ok(i);
            }
            if c == 0 && free.is_none() {
                free = Some(i);
            }
        }
        let i = free.ok_or(Error::Full("lease table"))?;
        let s = &self.sem.slots[i];
        s.set_identity(id);
        s.commit(1);
        Ok(i)
    }

    /// Marks that permits may have become available: bumps `generation` and asks for
    /// `n` waiters to be woken before unlocking (if any are registered).
    fn notify(&mut self, n: u32) {
        // Relaxed (both): under the table lock. The futex compare of a waiter that read
        // the old generation under the lock is ordered by the kernel (or the loom
        // model's queue lock) against the FUTEX_WAKE that follows this bump.
        let g = self.sem.generation.load(Ordering::Relaxed);
        self.sem
            .generation
            .store(g.wrapping_add(1), Ordering::Relaxed);
        if self.waiters() > 0 {
            self.wake = self.wake.max(n);
        }
    }

    fn waiters(&self) -> u32 {
        // Relaxed: every registration is an RMW made under the table lock before an
        // earlier unlock, so lock order makes this load see it (or a later value); a
        // deregistration, made outside the lock, only ever follows its own waiter's
        // registration and the end of that waiter's sleep, so the count never misses
        // a waiter that is (about to be) asleep.
        self.sem.waiters.load(Ordering::Relaxed)
    }

    /// Registers the caller as about to sleep on `generation` (see `deregister`).
    fn register(&self) {
        // Relaxed: under the table lock, whose unlock publishes it to the next locker
        // (see `waiters`).
        self.sem.waiters.fetch_add(1, Ordering::Relaxed);
    }
}

fn lock_error(e: RawLockError) -> Error {
    e.into_error("lease table lock")
}

impl<const SLOTS: usize> LeasedSemaphore<SLOTS> {
    /// Places a leased semaphore with `capacity` permits (all available) at `ptr`.
    ///
    /// Fails with [`Error::Misaligned`] for a null or misaligned `ptr`,
    /// [`Error::InvalidArgument`] if `capacity > i32::MAX` or `SLOTS` is 0 or above
    /// `u32::MAX`, and [`Error::Os`] if the robust mutex cannot be initialized.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of `size_of::<LeasedSemaphore<SLOTS>>()`
    ///   bytes for all of `'a`, in memory that stays mapped (and is not remapped
    ///   elsewhere in this process) for `'a`;
    /// - any other thread or process accesses those bytes while `init_at` runs, or any
    ///   process still uses an earlier object there.
    #[cfg(not(shmsync_loom))]
    pub unsafe fn init_at<'a>(
        ptr: *mut LeasedSemaphore<SLOTS>,
        capacity: u32,
    ) -> Result<&'a LeasedSemaphore<SLOTS>> {
        check_placement(ptr)?;
        if capacity > MAX_VALUE {
            return Err(Error::InvalidArgument(
                "leased semaphore capacity above i32::MAX",
            ));
        }
        if SLOTS == 0 || SLOTS > u32::MAX as usize {
            return Err(Error::InvalidArgument(
                "lease table slot count out of range",
            ));
        }
        // SAFETY: `ptr` is aligned (checked) and valid for writes, and nobody else
        // accesses it (the caller's promise). Every field after the header and the mutex
        // is atomics whose all-zero bytes mean 0, so zero-filling them initializes them.
        unsafe {
            core::ptr::addr_of_mut!((*ptr).header).write(ObjectHeader::initializing_with_aux(
                Kind::LeasedSemaphore,
                SLOTS as u32,
            ));
            RawRobustMutex::init_at(core::ptr::addr_of_mut!((*ptr).lock))?;
            let body = core::ptr::addr_of_mut!((*ptr).capacity).cast::<u8>();
            let end = ptr
                .cast::<u8>()
                .add(core::mem::size_of::<LeasedSemaphore<SLOTS>>());
            body.write_bytes(0, end.offset_from(body) as usize);
        }
        // SAFETY: fully initialized above; valid and mapped for 'a (caller's promise).
        let this = unsafe { &*ptr };
        // Relaxed: published by the Release in `publish` below.
        this.capacity.store(capacity, Ordering::Relaxed);
        this.header.publish();
        Ok(this)
    }

    /// Validates the leased semaphore another process placed at `ptr`.
    ///
    /// Fails with [`Error::Uninitialized`] on zeroed memory, [`Error::BadMagic`] /
    /// [`Error::WrongKind`] / [`Error::FormatMismatch`] on foreign memory or another
    /// slot count, [`Error::PidNamespaceMismatch`] from another pid namespace, and
    /// [`Error::Corrupt`] for an impossible capacity.
    ///
    /// # Safety
    ///
    /// Behavior is undefined if:
    /// - `ptr` is not valid for reads and writes of `size_of::<LeasedSemaphore<SLOTS>>()`
    ///   bytes for all of `'a`, in shared memory that stays mapped for `'a`;
    /// - the bytes at `ptr` are being initialized by `init_at` concurrently.
    #[cfg(not(shmsync_loom))]
    pub unsafe fn attach<'a>(
        ptr: *const LeasedSemaphore<SLOTS>,
    ) -> Result<&'a LeasedSemaphore<SLOTS>> {
        check_placement(ptr)?;
        // SAFETY: aligned (checked), valid and mapped for 'a (the caller's promise); the
        // header is all atomics, so reading it while others use the object is race-free.
        let this = unsafe { &*ptr };
        this.header.validate(Kind::LeasedSemaphore)?;
        let slots = this.header.aux();
        if slots as usize != SLOTS {
            return Err(Error::FormatMismatch {
                field: "lease table slots",
                expected: SLOTS as u64,
                found: slots.into(),
            });
        }
        // SAFETY: the mutex lies inside the object (valid and mapped for 'a, caller's
        // promise) and was initialized before the READY header we just validated.
        unsafe { RawRobustMutex::attach(&this.lock) }?;
        if this.capacity() > MAX_VALUE {
            return Err(Error::Corrupt(format!(
                "leased semaphore capacity {} above i32::MAX",
                this.capacity()
            )));
        }
        Ok(this)
    }

    /// A leased semaphore with `capacity` permits, by value, to be moved into shared
    /// memory as a field of a larger `#[repr(C)]` value (the contract is under
    /// [`RobustMutex::new`](crate::RobustMutex::new)). Moving is sound until it is
    /// first used (its table lock then links itself by address while held). The value
    /// is about `24 × SLOTS` bytes and is built on the stack: place a large table with
    /// [`init_at`](Self::init_at) instead.
    ///
    /// # Errors
    ///
    /// Those of [`init_at`](Self::init_at), except misplacement.
    #[cfg(not(shmsync_loom))]
    pub fn new(capacity: u32) -> Result<LeasedSemaphore<SLOTS>> {
        // SAFETY: `init_at` initializes the whole object when it returns Ok, on storage
        // no other thread or process can reach; its never-locked table lock holds no
        // address.
        unsafe { crate::header::init_by_value(|p| Self::init_at(p, capacity).map(drop)) }
    }

    /// A model-checking constructor (loom builds only).
    #[cfg(shmsync_loom)]
    pub fn new(capacity: u32) -> LeasedSemaphore<SLOTS> {
        let header = ObjectHeader::initializing_with_aux(Kind::LeasedSemaphore, SLOTS as u32);
        header.publish();
        LeasedSemaphore {
            header,
            lock: RawRobustMutex::new(),
            capacity: AtomicU32::new(capacity),
            generation: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
            slots: core::array::from_fn(|_| LeaseSlot::new()),
        }
    }

    /// The table lock (for tools that inspect shared objects).
    pub fn table_lock(&self) -> &RawRobustMutex {
        &self.lock
    }

    /// Total permits.
    pub fn capacity(&self) -> u32 {
        // Relaxed: written once before the header's Release publish, which `attach`
        // acquired (or by this process's own `init_at`).
        self.capacity.load(Ordering::Relaxed)
    }

    /// Available permits: capacity minus the permits recorded in the table. A snapshot
    /// read without the lock: exact when no operation runs concurrently.
    pub fn value(&self) -> u32 {
        // Relaxed: a diagnostic snapshot, like `Semaphore::value`.
        let used: u64 = self
            .slots
            .iter()
            .map(|s| u64::from(s.count.load(Ordering::Relaxed)))
            .sum();
        u64::from(self.capacity()).saturating_sub(used) as u32
    }

    /// Waiters registered as sleeping for a permit (a diagnostic snapshot; one too high
    /// for each waiter killed while registered).
    pub fn waiters(&self) -> u32 {
        // Relaxed: a diagnostic snapshot.
        self.waiters.load(Ordering::Relaxed)
    }

    /// Ends a registration made by `Table::register`, once the sleep it announced is
    /// over: outside the lock, on every path out of the sleep, so neither a timeout nor
    /// a failed re-lock leaves it behind. Never wraps below 0 (a corrupt count).
    fn deregister(&self) {
        // Relaxed: `waiters` is only a hint for releasers (see `Table::waiters`); an RMW
        // always works on the latest value, so no registration is lost.
        let _ = self
            .waiters
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Locks the table, repairing after a dead holder.
    fn lock_table(&self, deadline: Option<Deadline>) -> Result<Table<'_, SLOTS>> {
        let acquired = self.lock.lock_capped(deadline).map_err(lock_error)?;
        Ok(self.table_locked(acquired))
    }

    /// Locks the table without waiting for it: `Ok(None)` if another thread still holds
    /// it after a brief spin (a table operation lasts well under a microsecond, so a
    /// holder that keeps it longer is preempted, stopped or dead; a dead holder's lock
    /// comes back owner-died and is taken).
    fn try_lock_table(&self) -> Result<Option<Table<'_, SLOTS>>> {
        for _ in 0..TRY_TABLE_ROUNDS {
            match self.lock.try_lock() {
                Ok(acquired) => return Ok(Some(self.table_locked(acquired))),
                Err(RawLockError::WouldBlock) => crate::sync::spin_hint(),
                Err(e) => return Err(lock_error(e)),
            }
        }
        Ok(None)
    }

    /// The table, just locked with `acquired`, repaired if its previous holder died.
    fn table_locked(&self, acquired: Acquired) -> Table<'_, SLOTS> {
        let mut table = Table {
            sem: self,
            wake: 0,
            _not_send: PhantomData,
        };
        if acquired == Acquired::OwnerDied {
            // A process died inside a table operation. Each operation commits with one
            // store, so the table is consistent whatever instruction it died at; what
            // may be missing is the wake-up of a release that committed and died before
            // it unlocked (a release wakes before unlocking, so this covers every death
            // that can lose one). Wake every waiter so they re-check.
            table.notify(u32::MAX);
            // SAFETY: this thread holds the lock (OwnerDied means acquired).
            if let Err(_e) = unsafe { self.lock.make_consistent() } {
                // pthread_mutex_consistent fails only with EINVAL, for a mutex that is
                // not in the inconsistent state: then it is consistent already. Going
                // on is right; returning the error would drop `table` and unlock a
                // mutex we believe inconsistent, making it unrecoverable for everyone.
            }
        }
        table
    }

    /// Takes a permit, sleeping until one is available.
    ///
    /// Fails with [`Error::Full`] if this process holds no permit yet and every lease
    /// slot is taken, and with [`Error::Os`] if this process's identity cannot be read
    /// or the table lock fails.
    pub fn acquire(&self) -> Result<Permit<'_, SLOTS>> {
        self.acquire_for(crate::process::current_identity()?, None)
    }

    /// Takes a permit if one is available now, never waiting: [`Error::WouldBlock`] if
    /// none is free, and also if another process holds the table lock beyond a brief
    /// spin (one stopped by a debugger or `SIGSTOP`, or preempted inside a table
    /// operation) — the lock is never waited for, so this never blocks.
    pub fn try_acquire(&self) -> Result<Permit<'_, SLOTS>> {
        self.acquire_inner(crate::process::current_identity()?, None, false)?
            .ok_or(Error::WouldBlock("leased semaphore permit"))
    }

    /// Takes a permit, sleeping at most `timeout`; [`Error::TimedOut`] after that.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Permit<'_, SLOTS>> {
        self.acquire_for(
            crate::process::current_identity()?,
            Some(Deadline::after(timeout)),
        )
    }

    /// Takes a permit, sleeping until `deadline` at the latest; [`Error::TimedOut`]
    /// after that. A past deadline still takes an available permit.
    pub fn acquire_deadline(&self, deadline: Instant) -> Result<Permit<'_, SLOTS>> {
        self.acquire_for(
            crate::process::current_identity()?,
            Some(Deadline::from_instant(deadline)),
        )
    }

    /// Acquires under an explicit identity (tests and models: a "process" whose
    /// liveness the test controls). Test hook, not a stable API.
    #[cfg(feature = "test-hooks")]
    pub fn acquire_as(
        &self,
        identity: ProcessIdentity,
        deadline: Option<crate::futex::Deadline>,
    ) -> Result<Permit<'_, SLOTS>> {
        self.acquire_for(identity, deadline)
    }

    fn acquire_for(
        &self,
        identity: ProcessIdentity,
        deadline: Option<Deadline>,
    ) -> Result<Permit<'_, SLOTS>> {
        match self.acquire_inner(identity, deadline, true)? {
            Some(p) => Ok(p),
            None => Err(Error::TimedOut("leased semaphore permit")),
        }
    }

    /// As [`try_acquire`](Self::try_acquire) under an explicit identity. Test hook,
    /// not a stable API.
    #[cfg(feature = "test-hooks")]
    pub fn try_acquire_as(&self, identity: ProcessIdentity) -> Result<Permit<'_, SLOTS>> {
        self.acquire_inner(identity, None, false)?
            .ok_or(Error::WouldBlock("leased semaphore permit"))
    }

    /// `Ok(None)`: not blocking and none available (or the table lock held), or the
    /// deadline passed.
    fn acquire_inner(
        &self,
        identity: ProcessIdentity,
        deadline: Option<Deadline>,
        block: bool,
    ) -> Result<Option<Permit<'_, SLOTS>>> {
        loop {
            let locked = if block {
                self.lock_table(deadline).map(Some)
            } else {
                self.try_lock_table()
            };
            let mut table = match locked {
                Ok(Some(table)) => table,
                // Not blocking, and the table lock is held.
                Ok(None) => return Ok(None),
                // The deadline passed while the table lock was contended.
                Err(Error::TimedOut(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            if table.available() > 0 {
                let slot = table.claim(&identity)?;
                if table.waiters() > 0 && table.available() > 0 {
                    // More permits are free and others may sleep (several releases, or
                    // a woken waiter that died before taking its permit): pass it on.
                    table.notify(1);
                }
                // An unlock failure (EPERM, impossible here) is not reported: the
                // permit is committed and must reach the caller to be released.
                drop(table);
                return Ok(Some(Permit {
                    sem: self,
                    slot: slot as u32,
                    identity,
                    owner_pid: process::current_pid(),
                }));
            }
            if !block || deadline.is_some_and(Deadline::has_passed) {
                return Ok(None);
            }
            // Relaxed: under the table lock; see `Table::notify`.
            let generation = self.generation.load(Ordering::Relaxed);
            table.register();
            drop(table);
            // Any outcome (woken, generation moved on, spurious, timed out, or the
            // sleep's cap reached) re-checks under the lock; a timed-out wait then
            // returns Ok(None) above unless a permit turned up meanwhile.
            let _: WaitOutcome = futex_impl::wait(
                &self.generation,
                generation,
                crate::futex::sleep_deadline(deadline).0,
            );
            self.deregister();
        }
    }

    /// Returns one permit of `identity` recorded in `slot`, waiting for the table lock
    /// at most [`RELEASE_WAIT`]. Returns whether it was still recorded there (it is
    /// not if it was reclaimed as a dead holder's).
    fn release(&self, slot: u32, identity: &ProcessIdentity) -> Result<bool> {
        let mut table = match self.lock_table(release_deadline()) {
            // The bound may have run out while this process was stopped itself, with
            // the lock free by now: one last try without waiting.
            Err(Error::TimedOut(what)) => self.try_lock_table()?.ok_or(Error::TimedOut(what))?,
            locked => locked?,
        };
        let Some(s) = self.slots.get(slot as usize) else {
            return Ok(false);
        };
        let c = s.count();
        if c == 0 || s.identity() != *identity {
            return Ok(false);
        }
        s.commit(c - 1);
        table.notify(1);
        table.unlock()?;
        Ok(true)
    }

    /// Returns the permits of every holder that is proven dead ([`Liveness::Dead`]: no
    /// thread of it remains, or its pid is now another process). [`Liveness::Unknown`]
    /// counts as alive: a holder recorded in another pid namespace, or any holder while
    /// `/proc` is not this namespace's, keeps its permits (see [`Liveness`]).
    /// Liveness is re-checked under the table lock, so a holder is never reclaimed on
    /// the strength of a stale reading. Wakes the waiters if anything was reclaimed.
    ///
    /// Blocks while another process holds the table lock; a lock whose dead owner the
    /// kernel never marked owner-died is released first (so it does not block). Use
    /// [`reclaim_dead_deadline`](Self::reclaim_dead_deadline) to bound the wait.
    pub fn reclaim_dead(&self) -> Result<Reclaimed> {
        self.reclaim_inner(None, |id| id.liveness() == Liveness::Dead)
    }

    /// [`reclaim_dead`](Self::reclaim_dead) without waiting: [`Error::WouldBlock`] if
    /// another process holds the table lock beyond a brief spin.
    pub fn try_reclaim_dead(&self) -> Result<Reclaimed> {
        let _released: Option<u32> = self.lock.release_dead_owner_if_known();
        let table = self
            .try_lock_table()?
            .ok_or(Error::WouldBlock("lease table lock"))?;
        self.reclaim_locked(table, |id| id.liveness() == Liveness::Dead)
    }

    /// [`reclaim_dead`](Self::reclaim_dead), giving up with
    /// [`Error::TimedOut`]`("lease table lock")` if the table lock cannot be had
    /// within `timeout` (a live process holding it, e.g. one stopped by a debugger).
    pub fn reclaim_dead_timeout(&self, timeout: Duration) -> Result<Reclaimed> {
        self.reclaim_inner(Some(Deadline::after(timeout)), |id| {
            id.liveness() == Liveness::Dead
        })
    }

    /// [`reclaim_dead`](Self::reclaim_dead), giving up with
    /// [`Error::TimedOut`]`("lease table lock")` if the table lock cannot be had by
    /// `deadline` (a live process holding it, e.g. one stopped by a debugger).
    pub fn reclaim_dead_deadline(&self, deadline: Instant) -> Result<Reclaimed> {
        self.reclaim_inner(Some(Deadline::from_instant(deadline)), |id| {
            id.liveness() == Liveness::Dead
        })
    }

    /// [`reclaim_dead`](Self::reclaim_dead) with the liveness check supplied (tests and
    /// models). Test hook, not a stable API.
    #[cfg(feature = "test-hooks")]
    pub fn reclaim_dead_with(
        &self,
        is_dead: impl FnMut(&ProcessIdentity) -> bool,
    ) -> Result<Reclaimed> {
        self.reclaim_inner(None, is_dead)
    }

    fn reclaim_inner(
        &self,
        deadline: Option<Deadline>,
        is_dead: impl FnMut(&ProcessIdentity) -> bool,
    ) -> Result<Reclaimed> {
        // A table lock held by a thread that is provably dead but was never marked
        // owner-died (the kernel skipped its robust list) would block us forever; mark
        // it, so that the lock below gets OwnerDied and repairs.
        let _released: Option<u32> = self.lock.release_dead_owner_if_known();
        let table = self.lock_table(deadline)?;
        self.reclaim_locked(table, is_dead)
    }

    /// Reclaims, under the table lock `table`, the leases of every holder `is_dead`
    /// says is dead.
    fn reclaim_locked(
        &self,
        mut table: Table<'_, SLOTS>,
        mut is_dead: impl FnMut(&ProcessIdentity) -> bool,
    ) -> Result<Reclaimed> {
        let mut reclaimed = Reclaimed::default();
        for s in &self.slots {
            let c = s.count();
            if c == 0 {
                continue;
            }
            let id = s.identity();
            if is_dead(&id) {
                s.commit(0);
                reclaimed.holders.push((id, c));
            }
        }
        if !reclaimed.holders.is_empty() {
            table.notify(u32::MAX);
        }
        table.unlock()?;
        Ok(reclaimed)
    }

    /// Every recorded lease with its holder's liveness (for the operator tool).
    ///
    /// Takes no lock, so it never blocks or writes, even while a stopped or dead
    /// process holds the table lock: each slot is read with atomic loads. It is a
    /// snapshot: leases taken or returned while it runs may or may not appear, and a
    /// slot that changes hands meanwhile may show a mix of two holders' identities.
    /// Liveness is checked after the slots were read. Never fails today; the `Result`
    /// leaves room for checks that may.
    pub fn leases(&self) -> Result<Vec<LeaseInfo>> {
        Ok(self
            .slots
            .iter()
            .filter_map(LeaseSlot::snapshot)
            .map(|(identity, permits)| LeaseInfo {
                identity,
                permits,
                liveness: identity.liveness(),
            })
            .collect())
    }
}

impl<const SLOTS: usize> fmt::Debug for LeasedSemaphore<SLOTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeasedSemaphore")
            .field("capacity", &self.capacity())
            .field("value", &self.value())
            .finish_non_exhaustive()
    }
}

impl<'a, const SLOTS: usize> Permit<'a, SLOTS> {
    /// Keeps the lease recorded without returning the permit: it comes back only through
    /// [`LeasedSemaphore::reclaim_dead`] once this process has died.
    pub fn forget(self) {
        core::mem::forget(self);
    }

    /// Returns the permit now, waiting at most [`RELEASE_WAIT`] for the table lock.
    ///
    /// # Errors
    ///
    /// A [`ReleaseError`] holding this permit (still recorded, still held) and why:
    /// [`Error::TimedOut`] if another process kept the table lock for the whole wait,
    /// [`Error::Corrupt`] or [`Error::Os`] if the lock is unusable. Retry with
    /// [`ReleaseError::into_permit`], or drop the error to keep the lease recorded.
    pub fn release(self) -> core::result::Result<(), ReleaseError<'a, SLOTS>> {
        if process::current_pid() != self.owner_pid {
            // A fork child's copy: the lease is the parent's (see `Drop`).
            core::mem::forget(self);
            return Ok(());
        }
        match self.sem.release(self.slot, &self.identity) {
            Ok(_) => {
                core::mem::forget(self);
                Ok(())
            }
            Err(error) => Err(ReleaseError {
                permit: self,
                error,
            }),
        }
    }

    /// The identity the lease is recorded under.
    pub fn identity(&self) -> ProcessIdentity {
        self.identity
    }
}

impl<const SLOTS: usize> Drop for Permit<'_, SLOTS> {
    fn drop(&mut self) {
        if process::current_pid() != self.owner_pid {
            // A fork child's copy of its parent's permit: the lease is the parent's.
            return;
        }
        // A failure (the table lock held past RELEASE_WAIT, or unusable) cannot be
        // reported from Drop; the lease then stays recorded and is reclaimed once this
        // process has died (see the type's docs).
        let _ = self.sem.release(self.slot, &self.identity);
    }
}

/// Why [`Permit::release`] did not return its permit, with the permit itself, which is
/// still held and still recorded in the table.
///
/// Dropping this drops the permit, which tries once more (waiting at most
/// [`RELEASE_WAIT`]); [`into_permit`](Self::into_permit) gives it back for a retry;
/// converting into [`Error`] (e.g. with `?`) keeps the lease recorded, as
/// [`Permit::forget`] does.
///
/// ```
/// use shmsync::{LeasedSemaphore, Segment};
///
/// let seg = Segment::anonymous(4096)?;
/// // SAFETY: a fresh, private, page-aligned mapping large enough, that outlives `sem`.
/// let sem: &LeasedSemaphore = unsafe { LeasedSemaphore::init_at(seg.as_ptr().cast(), 1)? };
/// let mut permit = sem.acquire()?;
/// // Retry a few times (each try waits at most RELEASE_WAIT), then keep the lease
/// // recorded for reclaim_dead after this process exits.
/// for attempt in 1.. {
///     match permit.release() {
///         Ok(()) => break,
///         Err(e) if attempt < 3 => permit = e.into_permit(),
///         Err(e) => return Err(e.into()),
///     }
/// }
/// assert_eq!(sem.value(), 1);
/// # Ok::<(), shmsync::Error>(())
/// ```
pub struct ReleaseError<'a, const SLOTS: usize = DEFAULT_SLOTS> {
    permit: Permit<'a, SLOTS>,
    error: Error,
}

impl<'a, const SLOTS: usize> ReleaseError<'a, SLOTS> {
    /// Why the release failed.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The permit, to retry [`Permit::release`] (or to keep holding it).
    pub fn into_permit(self) -> Permit<'a, SLOTS> {
        self.permit
    }
}

impl<const SLOTS: usize> From<ReleaseError<'_, SLOTS>> for Error {
    /// The error; the permit's lease stays recorded (as with [`Permit::forget`]).
    fn from(e: ReleaseError<'_, SLOTS>) -> Error {
        e.permit.forget();
        e.error
    }
}

impl<const SLOTS: usize> fmt::Debug for ReleaseError<'_, SLOTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleaseError")
            .field("permit", &self.permit)
            .field("error", &self.error)
            .finish()
    }
}

impl<const SLOTS: usize> fmt::Display for ReleaseError<'_, SLOTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not return a leased permit: {}", self.error)
    }
}

impl<const SLOTS: usize> std::error::Error for ReleaseError<'_, SLOTS> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<const SLOTS: usize> fmt::Debug for Permit<'_, SLOTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("slot", &self.slot)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

// SAFETY: `init_at` places the header (Kind::LeasedSemaphore), its robust table lock and
// an empty table; `attach` validates header, slot count and lock; no pointers.
#[cfg(not(shmsync_loom))]
unsafe impl<const SLOTS: usize> crate::Shared for LeasedSemaphore<SLOTS> {
    const KIND: crate::Kind = crate::Kind::LeasedSemaphore;
    /// The size covers the slot count.
    const IDENTITY: crate::TypeIdentity =
        crate::TypeIdentity::declared::<Self>("shmsync.LeasedSemaphore", &[]);
    /// The number of permits.
    type Init = u32;

    fn value_name() -> String {
        format!("shmsync.LeasedSemaphore<{SLOTS}>")
    }

    unsafe fn init_at<'a>(ptr: *mut Self, capacity: u32) -> crate::Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { LeasedSemaphore::init_at(ptr, capacity) }
    }

    unsafe fn attach<'a>(ptr: *const Self) -> crate::Result<&'a Self> {
        // SAFETY: forwarded contract.
        unsafe { LeasedSemaphore::attach(ptr) }
    }
}
