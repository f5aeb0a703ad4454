//! What a process does with a region or an object whose bytes it must not trust, shared
//! by the seeded mutation test (`tests/mutation.rs`) and the fuzz targets (`fuzz/`,
//! which include this file): open the region as an observer and as an initializer, read
//! its table, look every object up as every kind, create objects, use every object
//! without blocking (non-blocking calls and past deadlines only), and run the tool's
//! `inspect` and dry-run `recover`.
//!
//! Every call must return, with a value or an error. Beyond "no panic, no crash, no
//! hang", the calls check properties that hold whatever the bytes are: an observer
//! writes nothing, inspection and a dry run write nothing, a lookup lands on its table
//! entry, a lock just taken unlocks, a write is what the next read returns.
//!
//! Every call is made whatever the bytes: a glibc mutex word that would make glibc
//! abort, execute an instruction the CPU lacks, or wait forever is refused by the crate
//! as corrupt before glibc sees it, and non-blocking calls never wait on an internal
//! lock. `fuzz/regressions/` holds inputs that once crashed or hung here; the mutation
//! test replays them.
#![allow(dead_code, clippy::disallowed_types)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmsync::inspect::SeqLockView;
use shmsync::inspect::{self, RecoverOptions};
use shmsync::RegionOptions;
use shmsync::{
    Condvar, LeasedSemaphore, LockError, ProcessIdentity, RawRobustMutex, Region, RobustMutex,
    RobustRwLock, Segment, Semaphore, SeqLock, WriteError,
};

/// The payload of the seed regions' `RobustMutex`.
pub type Data = u64;
/// The payload of the seed regions' `SeqLock`.
pub type SeqData = [u64; 2];
/// The seed regions' small lease table.
pub type SmallLeased = LeasedSemaphore<4>;
/// The seed regions' reader-writer lock (few reader slots, so it fits the objects' page).
pub type RwLock = RobustRwLock<Data, 4>;

/// Length of every seed region: the first page holds the header and table, the second
/// the objects.
pub const REGION_LEN: usize = 2 * 4096;

/// The object kinds exercised, in selector order (the `objects` fuzz target's first
/// byte, modulo the count, picks one; new kinds are appended, so a corpus keeps its
/// meaning).
pub const KINDS: [&str; 9] = [
    "RawRobustMutex",
    "RobustMutex<u64>",
    "Condvar",
    "Semaphore",
    "LeasedSemaphore<4>",
    "LeasedSemaphore<64>",
    "SeqLock<[u64; 2]>",
    "SeqLockView",
    "RobustRwLock<u64, 4>",
];

/// The seed regions' objects: name and [`KINDS`] index.
pub const OBJECTS: [(&str, usize); 9] = [
    ("raw", 0),
    ("mutex", 1),
    ("condvar", 2),
    ("semaphore", 3),
    ("leased4", 4),
    ("leased", 5),
    ("seqlock", 6),
    ("rwlock", 8),
    ("rwlock-read", 8),
];

/// Offset of the region header's init state word and of its claim word.
const REGION_STATE: usize = 16;
const REGION_CLAIM: usize = 24;
/// Offset of the pid-namespace tag (the header's `aux`) inside a `RawRobustMutex`, and
/// of its `pthread_mutex_t`.
const MUTEX_NS_TAG: usize = 20;
pub const MUTEX_PTHREAD: usize = 24;
/// glibc's `int __kind` inside `pthread_mutex_t` (after `__lock`, `__count`, `__owner`,
/// `__nusers`) on 64-bit targets.
pub const GLIBC_KIND: usize = 16;
/// Offset of the counter inside a `SeqLock` (after its header, writer lock and the gap
/// that keeps readers off the writer lock's cache lines).
const SEQLOCK_SEQ: usize = 152;
/// Offset of the writer `RawRobustMutex` inside a `RobustRwLock` (after its header and
/// four state words).
const RWLOCK_WRITER: usize = 40;

/// Offsets of the `RawRobustMutex`es inside an object of [`KINDS`] index `kind`.
pub fn mutex_offsets(kind: usize) -> &'static [usize] {
    match kind {
        0 | 1 => &[0],
        4 | 5 => &[24],
        6 | 7 => &[24],
        8 => &[RWLOCK_WRITER],
        _ => &[],
    }
}

/// Size in bytes of an object of [`KINDS`] index `kind`.
pub fn kind_size(kind: usize) -> usize {
    use core::mem::size_of;
    match kind {
        0 => size_of::<RawRobustMutex>(),
        1 => size_of::<RobustMutex<Data>>(),
        2 => size_of::<Condvar>(),
        3 => size_of::<Semaphore>(),
        4 => size_of::<SmallLeased>(),
        5 => size_of::<LeasedSemaphore>(),
        6 => size_of::<SeqLock<SeqData>>(),
        7 => size_of::<SeqLockView>(),
        _ => size_of::<RwLock>(),
    }
}

/// What the calls reached, so a test can check that its cases got past the refusals.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Regions opened / refused.
    pub opened: u64,
    pub refused: u64,
    /// Regions whose table read back.
    pub tables: u64,
    /// Objects attached, per [`KINDS`] index.
    pub attached: [u64; KINDS.len()],
    /// Objects created by `get_or_init` in an opened region.
    pub created: u64,
    /// Locks taken (clean or owner-died) and released.
    pub locked: u64,
    /// `inspect` and dry-run `recover` calls that returned a report.
    pub inspected: u64,
    pub dry_runs: u64,
}

/// Runs the calls; holds what they need besides the bytes under test.
pub struct Harness {
    /// What the calls reached.
    pub tally: Tally,
    /// Private memory: a mutex for condvar waits, and the page objects are copied to.
    scratch: Segment,
    /// The mapping every region under test is copied into (a sealed memfd: each case
    /// maps it again for the region, so the bytes can still be read after a refused
    /// open has unmapped the region's mapping).
    window: Segment,
}

/// Where the scratch page holds the mutex for condvar waits, and the object under test.
const SCRATCH_MUTEX: usize = 0;
const SCRATCH_OBJECT: usize = 4096;

impl Harness {
    /// A harness for regions of [`REGION_LEN`] bytes.
    pub fn new() -> Harness {
        let scratch = Segment::anonymous(2 * 4096).expect("scratch mapping");
        // SAFETY: the start of a fresh private mapping, page aligned, used only by this
        // harness, which owns the mapping; the reference is not kept.
        unsafe {
            RobustMutex::<Data>::init_at(scratch.as_ptr().add(SCRATCH_MUTEX).cast(), 0)
                .expect("scratch mutex");
        }
        Harness {
            tally: Tally::default(),
            scratch,
            window: Segment::memfd_create("shmsync-mutation", REGION_LEN).expect("memfd"),
        }
    }

    /// The mapping regions under test are read from: write the bytes here, then call
    /// [`region`](Self::region).
    pub fn window(&self) -> &Segment {
        &self.window
    }

    /// Copies `bytes` (cut or zero-filled to [`REGION_LEN`]) into the window.
    pub fn load(&self, bytes: &[u8]) {
        let n = bytes.len().min(REGION_LEN);
        // SAFETY: the window is REGION_LEN bytes long and only this harness uses it; no
        // region over it is open between calls.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.window.as_ptr(), n);
            core::ptr::write_bytes(self.window.as_ptr().add(n), 0, REGION_LEN - n);
        }
    }

    /// Opens the window's bytes as a region — an observer when `initialize` is false —
    /// and makes every call on it.
    pub fn region(&mut self, initialize: bool) {
        let before = snapshot(&self.window);
        let fd = self.window.fd().expect("memfd window");
        let seg = Segment::from_memfd(fd.try_clone_to_owned().expect("dup"))
            .expect("map the window again");
        let opts = RegionOptions {
            initialize,
            wait: Duration::ZERO,
            ..RegionOptions::default()
        };
        let region = match Region::from_segment_with(seg, opts) {
            Ok(region) => region,
            Err(_) => {
                self.tally.refused += 1;
                if !initialize {
                    assert_same(&before, &self.window, "an observer's refused open");
                }
                return;
            }
        };
        self.tally.opened += 1;
        if !initialize {
            assert_same(&before, &self.window, "an observer's open");
        }
        let opened = snapshot(&self.window);
        self.read_region(&region);
        assert_same(
            &opened,
            &self.window,
            "entries, lookups, inspect and a dry-run recover",
        );
        self.use_region(&region, initialize);
    }

    /// The read-only calls: none may write.
    fn read_region(&mut self, region: &Region) {
        let _ = (region.usage(), region.is_ready(), region.claim_holder());
        let _ = region.creator().liveness();
        let entries = region.entries();
        if let Ok(entries) = &entries {
            self.tally.tables += 1;
            let base = region.segment().as_ptr() as usize;
            for e in entries {
                let end = e.offset.checked_add(e.size).expect("validated span");
                assert!(end <= REGION_LEN as u64, "entry {e:?} outside the region");
                assert_eq!(
                    region.object_ptr(e).ok(),
                    Some((base + e.offset as usize) as _)
                );
                // A name the table holds twice (only corruption does that) means its
                // first entry.
                let first = entries.iter().find(|f| f.name == e.name).expect("itself");
                for (_, kind) in OBJECTS {
                    if let Some(addr) = lookup(region, kind, &e.name) {
                        let at = base + first.offset as usize;
                        assert_eq!(addr, at, "{first:?} as {}", KINDS[kind]);
                    }
                }
            }
        }
        for (name, kind) in OBJECTS {
            let _ = lookup(region, kind, name);
        }
        let report = inspect::inspect(region);
        assert_eq!(
            report.is_ok(),
            entries.is_ok(),
            "inspect vs entries: {report:?}"
        );
        if let Ok(report) = report {
            self.tally.inspected += 1;
            let _ = (report.needs_recovery(), format!("{report:?}"));
        }
        for mark_consistent in [false, true] {
            let opts = RecoverOptions {
                mark_consistent,
                dry_run: true,
                ..RecoverOptions::default()
            };
            let actions = inspect::recover(region, opts);
            assert_eq!(actions.is_ok(), entries.is_ok(), "recover vs entries");
            if let Ok(actions) = actions {
                self.tally.dry_runs += 1;
                let _: Vec<String> = actions.actions().map(ToString::to_string).collect();
            }
        }
    }

    /// Uses every object found, then (as an initializer) creates objects of every kind.
    fn use_region(&mut self, region: &Region, initialize: bool) {
        let _ = region.release_dead_claim();
        // (`read_region` looked every entry up as every kind; the matching ones are used.)
        if let Ok(entries) = region.entries() {
            for e in &entries {
                let kinds: &[usize] = match e.kind {
                    shmsync::Kind::Mutex => &[0, 1],
                    shmsync::Kind::Condvar => &[2],
                    shmsync::Kind::Semaphore => &[3],
                    shmsync::Kind::LeasedSemaphore => &[4, 5],
                    shmsync::Kind::SeqLock => &[6],
                    shmsync::Kind::RwLock => &[8],
                    _ => &[],
                };
                for &kind in kinds {
                    self.use_entry(region, kind, &e.name, None);
                }
            }
        }
        if initialize {
            for (name, kind) in OBJECTS {
                self.use_entry(region, kind, name, Some(Duration::ZERO));
                self.use_entry(region, kind, &format!("new-{name}"), Some(Duration::ZERO));
            }
        }
    }

    /// Looks `name` up as kind `kind` (with `get`, or `get_or_init` waiting at most
    /// `create`) and uses what it finds.
    fn use_entry(&mut self, region: &Region, kind: usize, name: &str, create: Option<Duration>) {
        macro_rules! get {
            ($t:ty, $init:expr) => {
                match create {
                    None => region.get::<$t>(name),
                    Some(wait) => {
                        let r = region.get_or_init_with::<$t>(name, $init, wait);
                        self.tally.created += u64::from(r.is_ok());
                        r
                    }
                }
            };
        }
        match kind {
            0 => get!(RawRobustMutex, ()).map(|m| self.raw_mutex(m)),
            1 => get!(RobustMutex<Data>, 7).map(|m| self.mutex(m)),
            2 => get!(Condvar, ()).map(|c| self.condvar(c)),
            3 => get!(Semaphore, 3).map(|s| self.semaphore(s)),
            4 => get!(SmallLeased, 3).map(|s| self.leased(s)),
            5 => get!(LeasedSemaphore, 5).map(|s| self.leased(s)),
            6 => get!(SeqLock<SeqData>, [1, 2]).map(|s| self.seqlock(s)),
            _ => get!(RwLock, 9).map(|l| self.rwlock(l)),
        }
        .unwrap_or(());
    }

    /// Copies `bytes` (cut or zero-filled to the kind's size) to a page-aligned private
    /// page, attaches it as [`KINDS`]`[selector % KINDS.len()]`, and uses it.
    pub fn object(&mut self, selector: u8, bytes: &[u8]) {
        let kind = usize::from(selector) % KINDS.len();
        let size = kind_size(kind);
        let n = bytes.len().min(size);
        // SAFETY: the object area is 4096 bytes long (every kind is smaller) and only
        // this harness uses it; no object attached there outlives this call.
        let ptr = unsafe {
            let ptr = self.scratch.as_ptr().add(SCRATCH_OBJECT);
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, n);
            core::ptr::write_bytes(ptr.add(n), 0, size - n);
            ptr
        };
        let before = object_bytes(ptr, size);
        macro_rules! attach {
            ($t:ty) => {
                // SAFETY: `ptr` is page aligned and valid for reads and writes of
                // `size_of` the kind for the rest of this call, nothing else uses those
                // bytes, and the reference does not outlive the call.
                unsafe { <$t>::attach(ptr.cast()) }
            };
        }
        match kind {
            0 => attach!(RawRobustMutex).map(|m| self.raw_mutex(m)),
            1 => attach!(RobustMutex<Data>).map(|m| self.mutex(m)),
            2 => attach!(Condvar).map(|c| self.condvar(c)),
            3 => attach!(Semaphore).map(|s| self.semaphore(s)),
            4 => attach!(SmallLeased).map(|s| self.leased(s)),
            5 => attach!(LeasedSemaphore).map(|s| self.leased(s)),
            6 => attach!(SeqLock<SeqData>).map(|s| self.seqlock(s)),
            7 => attach!(SeqLockView).map(|v| {
                self.tally.attached[7] += 1;
                let _ = (v.payload_size(), v.state().is_torn(), v.state().to_string());
                assert_eq!(before, object_bytes(ptr, size), "SeqLockView reads");
            }),
            _ => attach!(RwLock).map(|l| self.rwlock(l)),
        }
        .unwrap_or(());
    }

    fn raw_mutex(&mut self, m: &RawRobustMutex) {
        self.tally.attached[0] += 1;
        let _ = (m.state().to_string(), m.check_namespace());
        if let Ok(how) = m.try_lock() {
            self.tally.locked += 1;
            if how == shmsync::Acquired::OwnerDied {
                // SAFETY: held by this thread (just acquired).
                let _ = unsafe { m.make_consistent() };
            }
            // SAFETY: held by this thread; nothing it protects is referenced.
            assert_eq!(unsafe { m.unlock() }, Ok(()), "unlocking a lock just taken");
        }
        let _ = m.lock_deadline(Instant::now()).map(|_| {
            self.tally.locked += 1;
            // SAFETY: held by this thread (just acquired).
            assert_eq!(unsafe { m.unlock() }, Ok(()), "unlocking a lock just taken");
        });
        let _ = m.release_dead_owner();
    }

    fn mutex(&mut self, m: &RobustMutex<Data>) {
        self.tally.attached[1] += 1;
        let _ = m.state().to_string();
        match m.try_lock() {
            Ok(mut guard) => {
                self.tally.locked += 1;
                *guard = guard.wrapping_add(1);
            }
            // Dropping the guard without repair leaves the mutex not recoverable.
            Err(LockError::OwnerDied(repair)) => {
                self.tally.locked += 1;
                if *repair % 2 == 0 {
                    drop(repair.make_consistent());
                }
            }
            Err(_) => {}
        }
    }

    fn condvar(&mut self, c: &Condvar) {
        self.tally.attached[2] += 1;
        let seq = c.sequence();
        c.notify_one();
        c.notify_all();
        assert_eq!(c.sequence(), seq.wrapping_add(2), "two notifications");
        // SAFETY: placed by `new` at the start of the scratch mapping, which `self` owns.
        let lock = unsafe {
            &*self
                .scratch
                .as_ptr()
                .add(SCRATCH_MUTEX)
                .cast::<RobustMutex<Data>>()
        };
        let guard = lock
            .try_lock()
            .expect("the harness's private mutex is free");
        let (guard, _) = c
            .wait_timeout(guard, Duration::ZERO)
            .expect("the harness's private mutex relocks");
        drop(guard);
    }

    fn semaphore(&mut self, s: &Semaphore) {
        self.tally.attached[3] += 1;
        let (value, _) = (s.value(), s.sleepers());
        if s.try_wait().is_ok() {
            assert_eq!(s.value(), value - 1, "try_wait takes one permit");
            let _ = s.post();
        }
        let _ = s.wait_timeout(Duration::ZERO);
        let _ = s.post_n(2);
    }

    fn leased<const N: usize>(&mut self, s: &LeasedSemaphore<N>) {
        self.tally.attached[if N == 4 { 4 } else { 5 }] += 1;
        let _ = (s.capacity(), s.waiters(), s.table_lock().state());
        let value = s.value();
        let before = s.leases();
        if let Ok(permit) = s.try_acquire() {
            self.tally.locked += 1;
            let me = ProcessIdentity::current().expect("our identity");
            let leases = s.leases().expect("leases");
            assert!(
                leases.iter().any(|l| l.identity == me),
                "a permit just taken is recorded: {leases:?} (before: {before:?})"
            );
            drop(permit);
            assert_eq!(s.value(), value, "a returned permit is available again");
        }
        let _ = s.reclaim_dead_deadline(Instant::now());
    }

    fn seqlock(&mut self, s: &SeqLock<SeqData>) {
        self.tally.attached[6] += 1;
        let _ = (
            s.sequence(),
            s.state().to_string(),
            s.is_torn(),
            s.try_read(),
        );
        let _ = s.read_deadline(Instant::now());
        let _ = s.writer_lock().state();
        let mut written = None;
        if let Ok(outcome) = s.write_deadline(Instant::now(), |v| {
            v[0] = v[0].wrapping_add(1);
            written = Some(*v);
        }) {
            self.tally.locked += 1;
            let _ = outcome.repaired;
            assert_eq!(
                s.try_read().ok(),
                written,
                "a read after a write returns it"
            );
        }
        let _ = s.repair(Instant::now());
    }

    fn rwlock(&mut self, l: &RwLock) {
        self.tally.attached[8] += 1;
        let raw = l.raw();
        let (ptr, size) = (
            l as *const RwLock as *const u8,
            core::mem::size_of::<RwLock>(),
        );
        let before = object_bytes(ptr, size);
        let _ = (
            raw.readers(),
            raw.needs_repair(),
            raw.is_not_recoverable(),
            raw.reclaimed(),
            raw.writer_state().to_string(),
            format!("{l:?}"),
        );
        assert_eq!(before, object_bytes(ptr, size), "observing a rwlock");
        if let Ok(guard) = l.try_read() {
            self.tally.locked += 1;
            let slot = shmsync::ReadGuard::slot(&guard);
            let readers = raw.readers();
            assert!(
                readers.iter().any(|r| r.slot == slot),
                "a read lock just taken is registered in slot {slot}: {readers:?}"
            );
            let _ = *guard;
        }
        drop(l.read_deadline(Instant::now()));
        let mut written = None;
        let mut write = |v: &mut Data| {
            *v = v.wrapping_add(1);
            written = Some(*v);
        };
        match l.try_write() {
            Ok(mut guard) => write(&mut guard),
            Err(WriteError::OwnerDied(repair)) => {
                // Dropping it unrepaired leaves the lock not recoverable.
                if *repair % 2 == 0 {
                    write(&mut repair.make_consistent());
                }
            }
            Err(WriteError::Failed(_)) => {}
        }
        if let Some(v) = written {
            self.tally.locked += 1;
            if let Ok(guard) = l.try_read() {
                assert_eq!(*guard, v, "a read after a write returns it");
            }
        }
        let _ = raw.reclaim_dead();
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

/// `get::<T>` of [`KINDS`] index `kind`: the object's address if found.
fn lookup(region: &Region, kind: usize, name: &str) -> Option<usize> {
    fn addr<T>(r: shmsync::Result<&T>) -> Option<usize> {
        r.ok().map(|t| t as *const T as usize)
    }
    match kind {
        0 => addr(region.get::<RawRobustMutex>(name)),
        1 => addr(region.get::<RobustMutex<Data>>(name)),
        2 => addr(region.get::<Condvar>(name)),
        3 => addr(region.get::<Semaphore>(name)),
        4 => addr(region.get::<SmallLeased>(name)),
        5 => addr(region.get::<LeasedSemaphore>(name)),
        6 => addr(region.get::<SeqLock<SeqData>>(name)),
        _ => addr(region.get::<RwLock>(name)),
    }
}

/// A copy of a segment's bytes.
pub fn snapshot(seg: &Segment) -> Vec<u8> {
    object_bytes(seg.as_ptr(), seg.len())
}

fn object_bytes(ptr: *const u8, len: usize) -> Vec<u8> {
    // SAFETY: callers pass a mapping (or an object inside one) valid for `len` bytes
    // that no other thread writes during the copy.
    unsafe { core::slice::from_raw_parts(ptr, len) }.to_vec()
}

#[track_caller]
fn assert_same(before: &[u8], seg: &Segment, what: &str) {
    let after = snapshot(seg);
    if before == after {
        return;
    }
    if let Some(at) = before.iter().zip(&after).position(|(a, b)| a != b) {
        panic!(
            "{what} wrote to the segment: byte {at} went from {:#04x} to {:#04x}",
            before[at], after[at]
        );
    }
}

/// Creates one object of every kind in `region` ([`OBJECTS`]) and gives them some
/// history.
pub fn populate(region: &Region) -> shmsync::Result<()> {
    region.get_or_init::<RawRobustMutex>("raw", ())?;
    region.get_or_init::<RobustMutex<Data>>("mutex", 7)?;
    region.get_or_init::<Condvar>("condvar", ())?.notify_all();
    region.get_or_init::<Semaphore>("semaphore", 3)?;
    region.get_or_init::<SmallLeased>("leased4", 3)?;
    region.get_or_init::<LeasedSemaphore>("leased", 5)?;
    let seq = region.get_or_init::<SeqLock<SeqData>>("seqlock", [1, 2])?;
    seq.store([3, 4])
        .map_err(|_| shmsync::Error::TimedOut("seqlock store"))?;
    for name in ["rwlock", "rwlock-read"] {
        let rw = region.get_or_init::<RwLock>(name, 9)?;
        *rw.write()
            .map_err(|_| shmsync::Error::TimedOut("rwlock write"))? += 1;
        drop(rw.read().map_err(shmsync::Error::from)?);
    }
    Ok(())
}

/// Takes everything in a [`populate`]d region and leaves it taken, as a process killed
/// in the middle of its work would: both mutexes and the seqlock's writer lock held
/// (with the seqlock's counter odd, a write begun), permits leased, a semaphore permit
/// taken, one rwlock's write lock held (its value changed, a write begun), the other's
/// read lock held, and the region's table claim. The caller's process must exit right after,
/// without unlocking anything.
pub fn die_holding(region: &Region) -> shmsync::Result<()> {
    let _ = region.get::<RawRobustMutex>("raw")?.lock();
    if let Ok(guard) = region.get::<RobustMutex<Data>>("mutex")?.lock() {
        core::mem::forget(guard);
    }
    let small = region.get::<SmallLeased>("leased4")?;
    small.acquire()?.forget();
    small.acquire()?.forget();
    region.get::<LeasedSemaphore>("leased")?.acquire()?.forget();
    let _ = region.get::<Semaphore>("semaphore")?.try_wait();
    let seq = region.get::<SeqLock<SeqData>>("seqlock")?;
    let _ = seq.writer_lock().lock();
    // SAFETY: the counter is the AtomicU64 at SEQLOCK_SEQ in the seqlock, whose writer
    // lock this thread holds; making it odd is what a writer's first store does.
    unsafe {
        counter(seq as *const SeqLock<SeqData> as *mut u8, SEQLOCK_SEQ)
            .fetch_or(1, Ordering::Release)
    };
    let mut guard = region
        .get::<RwLock>("rwlock")?
        .try_write()
        .map_err(|e| shmsync::Error::Corrupt(format!("rwlock try_write: {e}")))?;
    *guard ^= 0xdead;
    core::mem::forget(guard);
    let guard = region
        .get::<RwLock>("rwlock-read")?
        .try_read()
        .map_err(shmsync::Error::from)?;
    core::mem::forget(guard);
    let me = ProcessIdentity::current().map_err(|_| shmsync::Error::TimedOut("identity"))?;
    // SAFETY: the claim is the AtomicU64 at offset 24 of the region header.
    unsafe {
        counter(region.segment().as_ptr(), REGION_CLAIM).store(me.packed(), Ordering::Release)
    };
    Ok(())
}

/// # Safety
///
/// Behavior is undefined if `base + offset` is not an 8-aligned `AtomicU64` inside a
/// live mapping that outlives the returned reference.
unsafe fn counter<'a>(base: *mut u8, offset: usize) -> &'a AtomicU64 {
    // SAFETY: the caller's promise.
    unsafe { &*base.add(offset).cast::<AtomicU64>() }
}

/// The seed images: `region` (of [`REGION_LEN`] bytes, fresh) populated; after
/// `die_holding_elsewhere` has run [`die_holding`] in a process that then exited; with
/// both mutexes and the written rwlock then made not recoverable; and the dead image with the region header
/// back in its initializing state (an initializer killed mid-initialization). Each
/// mutex's pid-namespace tag is zeroed so the images attach in any pid namespace.
pub fn seed_images(
    region: &Region,
    die_holding_elsewhere: impl FnOnce(),
) -> shmsync::Result<Vec<(&'static str, Vec<u8>)>> {
    assert_eq!(region.segment().len(), REGION_LEN);
    populate(region)?;
    let entries = region.entries()?;
    let base = region.segment().as_ptr();
    // The offsets above are the layout's: check them against real objects, so a layout
    // change cannot leave the mutations aimed at the wrong bytes.
    let word_at = |at: usize| {
        // SAFETY: `at` lies inside the region, 4-aligned; nothing writes it meanwhile.
        unsafe { base.add(at).cast::<u32>().read() }
    };
    let seq = region.get::<SeqLock<SeqData>>("seqlock")?;
    seq.write(|v| v[0] ^= 1)?;
    let seq_at = seq as *const SeqLock<SeqData> as usize - base as usize + SEQLOCK_SEQ;
    // SAFETY: the counter lies inside the region, 8-aligned; no writer runs meanwhile.
    let raw_seq = unsafe { base.add(seq_at).cast::<u64>().read() };
    assert_eq!(raw_seq >> 1, seq.sequence(), "SEQLOCK_SEQ is stale");
    assert_ne!(seq.sequence(), 0);
    let raw = entries.iter().find(|e| e.name == "raw").expect("populated");
    let kind_word = word_at(raw.offset as usize + MUTEX_PTHREAD + GLIBC_KIND);
    assert_ne!(kind_word, 0, "GLIBC_KIND or MUTEX_PTHREAD is stale");
    for (name, kind) in OBJECTS {
        let e = entries.iter().find(|e| e.name == name).expect("populated");
        for off in mutex_offsets(kind) {
            let at = e.offset as usize + off + MUTEX_PTHREAD + GLIBC_KIND;
            assert_eq!(word_at(at), kind_word, "mutex_offsets({kind}) is stale");
            let tag = e.offset as usize + off + MUTEX_NS_TAG;
            // SAFETY: the tag word lies inside the object; nothing holds the mutex.
            unsafe { region.segment().as_ptr().add(tag).cast::<u32>().write(0) };
        }
    }
    let fresh = snapshot(region.segment());
    die_holding_elsewhere();
    let dead = snapshot(region.segment());
    let raw = region.get::<RawRobustMutex>("raw")?;
    if raw.try_lock().is_ok() {
        // SAFETY: held (OwnerDied); unlocking without repair makes it not recoverable.
        unsafe { raw.unlock() }.expect("unlock a lock just taken");
    }
    drop(region.get::<RobustMutex<Data>>("mutex")?.try_lock());
    let rw = region.get::<RwLock>("rwlock")?;
    match rw.try_write() {
        // Dropped unrepaired: not recoverable.
        Err(WriteError::OwnerDied(_)) => {}
        other => panic!("die_holding left the rwlock's write lock held: {other:?}"),
    }
    let rw = region.get::<RwLock>("rwlock-read")?;
    assert!(
        rw.raw()
            .readers()
            .iter()
            .any(|r| r.liveness == shmsync::Liveness::Dead),
        "die_holding left a dead reader: {:?}",
        rw.raw().readers()
    );
    let unrecoverable = snapshot(region.segment());
    let mut half = dead.clone();
    half[REGION_STATE..REGION_STATE + 4].copy_from_slice(&1u32.to_ne_bytes());
    Ok(vec![
        ("fresh", fresh),
        ("dead-holders", dead),
        ("not-recoverable", unrecoverable),
        ("half-initialized", half),
    ])
}

/// Where each of [`OBJECTS`] lies in a seed image: (name, [`KINDS`] index, offset,
/// size).
pub fn object_spans(image: &[u8]) -> Vec<(String, usize, usize, usize)> {
    let h = Harness::new();
    h.load(image);
    let fd = h
        .window
        .fd()
        .expect("memfd")
        .try_clone_to_owned()
        .expect("dup");
    let region = Region::from_segment_with(
        Segment::from_memfd(fd).expect("map"),
        RegionOptions {
            initialize: false,
            wait: Duration::ZERO,
            ..RegionOptions::default()
        },
    )
    .expect("a seed image opens");
    let entries = region.entries().expect("a seed image's table");
    entries
        .into_iter()
        .map(|e| {
            let kind = OBJECTS
                .iter()
                .find(|o| o.0 == e.name)
                .expect("a seed object")
                .1;
            (e.name, kind, e.offset as usize, e.size as usize)
        })
        .collect()
}

/// The objects of a seed image as `objects` inputs: a [`KINDS`] selector byte, then
/// the object's bytes (the seqlock twice, also as a `SeqLockView`).
pub fn object_seeds(image: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, kind, offset, size) in object_spans(image) {
        let kinds: &[usize] = if kind == 6 { &[6, 7] } else { &[kind] };
        for &k in kinds {
            let mut input = vec![k as u8];
            input.extend_from_slice(&image[offset..offset + size]);
            out.push((format!("{name}-kind{k}"), input));
        }
    }
    out
}
