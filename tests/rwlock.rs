//! `RobustRwLock<T>` across real processes: shared readers and exclusive writers,
//! readers and writers SIGKILLed while holding, a stopped reader, a reader thread that
//! exits holding, forged slots naming a reused pid, writer preference, timeouts, and
//! ports of the gist of glibc's `tst-rwlock*` tests that apply across processes.
//!
//! Children are re-executed test binaries (they read `/proc` and allocate, which a
//! fork child of a multi-threaded test must not).
#![allow(clippy::disallowed_types)]
mod common;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use shmsync::Location;
use std::time::{Duration, Instant};

use shmsync::{
    Kind, Liveness, ReadGuard, Region, RobustRwLock, RwLockError, Segment, WriteError, WriteGuard,
};

static_assertions::assert_not_impl_any!(ReadGuard<'static, u64>: Send);
static_assertions::assert_not_impl_any!(WriteGuard<'static, u64>: Send);
static_assertions::assert_impl_all!(RobustRwLock<u64>: Send, Sync);

/// Eight words a writer keeps equal; a torn read shows up as unequal words.
type Data = [u64; 8];

type Lock = RobustRwLock<Data>;

const SEG_LEN: usize = 16384;
/// Offset of the test's own control words, past the lock.
const CTL: usize = 8192;

fn ctl(seg: &Segment, index: usize) -> &AtomicU64 {
    // SAFETY: in bounds (checked by `at`), 8-aligned, zero-filled shared memory used only
    // by this test's atomics; it outlives the borrow of `seg`.
    unsafe { &*common::at::<AtomicU64>(seg, CTL + 8 * index) }
}

fn create(name: &common::ShmName) -> (Segment, &'static Lock) {
    let seg = Segment::posix_create(name.as_str(), SEG_LEN).unwrap();
    // SAFETY: a fresh segment; the lock takes its first bytes. The reference is used
    // only while the test keeps `seg` (returned with it) alive.
    let lock = unsafe { Lock::init_at(seg.as_ptr().cast(), [0; 8]) }.unwrap();
    (seg, lock)
}

/// Opens the segment in a child and attaches the lock (leaked for the child's life).
fn open(name: &str) -> (&'static Segment, &'static Lock) {
    let seg: &'static Segment = Box::leak(Box::new(Segment::posix_open(name).unwrap()));
    // SAFETY: the parent initialized the lock before spawning; the mapping is leaked.
    let lock = unsafe { Lock::attach(seg.as_ptr().cast()) }.unwrap();
    (seg, lock)
}

fn whole(d: &Data) -> u64 {
    assert!(d.iter().all(|&w| w == d[0]), "torn read: {d:?}");
    d[0]
}

fn write_all(g: &mut Data, v: u64) {
    for w in g.iter_mut() {
        *w = v;
        std::sync::atomic::compiler_fence(SeqCst);
    }
}

fn pause_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

#[test]
fn child_role() {
    common::dispatch(&[
        ("reader_hold", reader_hold),
        ("writer_half", writer_half),
        ("reader_wait", reader_wait),
        ("worker", worker),
        ("count_readers", count_readers),
        ("region_reader", region_reader),
        ("region_writer", region_writer),
        ("reader_stream", reader_stream),
        ("writer_whole", writer_whole),
        ("region_writer_whole", region_writer_whole),
    ]);
}

/// Takes a read lock, says so in ctl[0], and waits to be killed.
fn reader_hold(args: &[String]) {
    let (seg, lock) = open(&args[0]);
    let g = lock.read().unwrap();
    whole(&g);
    ctl(seg, 0).fetch_add(1, SeqCst);
    std::mem::forget(g);
    pause_forever();
}

/// Takes the write lock, writes only the first word of a new value, says so in ctl[0],
/// and waits to be killed.
fn writer_half(args: &[String]) {
    let (seg, lock) = open(&args[0]);
    let mut g = lock.write().unwrap();
    g[0] += 1;
    ctl(seg, 0).store(1, SeqCst);
    std::mem::forget(g);
    pause_forever();
}

/// Blocks in `read` (after announcing it in ctl[1]) and records the outcome in ctl[2]:
/// 1 ok, 2 Inconsistent, 3 other.
fn reader_wait(args: &[String]) {
    let (seg, lock) = open(&args[0]);
    ctl(seg, 1).fetch_add(1, SeqCst);
    let code = match lock.read() {
        Ok(g) => {
            whole(&g);
            1
        }
        Err(RwLockError::Inconsistent) => 2,
        Err(_) => 3,
    };
    ctl(seg, 2).store(code, SeqCst);
}

/// Writes a whole new value (every word + 1) and releases the write lock; run at the
/// `rwlock-released-writer` failpoint, it stops between clearing `WRITER` and unlocking.
fn writer_whole(args: &[String]) {
    let (_seg, lock) = open(&args[0]);
    let mut g = lock.write().unwrap();
    let v = g[0] + 1;
    write_all(&mut g, v);
}

/// `writer_whole` on the "table" lock of the region args[0].
fn region_writer_whole(args: &[String]) {
    let region = Region::open(&Location::parse(&args[0]).unwrap()).unwrap();
    let lock = region.get::<RobustRwLock<u64>>("table").unwrap();
    *lock.write().unwrap() += 1;
}

/// `iters` rounds: every `every`th a write (incrementing all words), else a checked
/// read. Counts writes in ctl[3], reads in ctl[4]; ctl[5] tracks writers inside (must
/// never exceed 1, and readers must never see a writer inside).
fn worker(args: &[String]) {
    let (seg, lock) = open(&args[0]);
    let iters: u64 = args[1].parse().unwrap();
    let every: u64 = args[2].parse().unwrap();
    for i in 0..iters {
        if i % every == 0 {
            let mut g = lock.write().unwrap();
            assert_eq!(ctl(seg, 5).fetch_add(1, SeqCst), 0, "two writers inside");
            let v = whole(&g) + 1;
            write_all(&mut g, v);
            ctl(seg, 3).fetch_add(1, SeqCst);
            ctl(seg, 5).fetch_sub(1, SeqCst);
        } else {
            let g = lock.read().unwrap();
            assert_eq!(ctl(seg, 5).load(SeqCst), 0, "a reader inside with a writer");
            whole(&g);
            ctl(seg, 4).fetch_add(1, SeqCst);
        }
    }
}

/// Holds a read lock while ctl[6] counts readers inside at once (max in ctl[7]), until
/// ctl[8] is set.
fn count_readers(args: &[String]) {
    let (seg, lock) = open(&args[0]);
    let g = lock.read().unwrap();
    let inside = ctl(seg, 6).fetch_add(1, SeqCst) + 1;
    ctl(seg, 7).fetch_max(inside, SeqCst);
    common::wait_until(common::WATCHDOG, "release", || {
        ctl(seg, 8).load(SeqCst) != 0
    });
    ctl(seg, 6).fetch_sub(1, SeqCst);
    drop(g);
}

#[test]
fn layout_and_kind() {
    assert_eq!(
        std::mem::size_of::<shmsync::inspect::RawRobustRwLock>(),
        128 + 64 * 64
    );
    assert_eq!(std::mem::align_of::<Lock>(), 64);
    assert_eq!(
        std::mem::size_of::<RobustRwLock<u64, 4>>(),
        128 + 64 * 4 + 64
    );
    let name = common::ShmName::new("rw-kind");
    let (_seg, lock) = create(&name);
    assert_eq!(lock.raw().header().raw_kind(), Kind::RwLock as u32);
    assert_eq!(lock.raw().header().aux(), 64);
}

#[test]
fn attach_refuses_zeroed_and_other_slot_counts() {
    let seg = Segment::anonymous(SEG_LEN).unwrap();
    // SAFETY: a zeroed mapping that outlives the call.
    let r = unsafe { Lock::attach(seg.as_ptr().cast()) };
    assert!(
        matches!(r, Err(shmsync::Error::Uninitialized { .. })),
        "{r:?}"
    );
    // SAFETY: fresh mapping.
    unsafe { Lock::init_at(seg.as_ptr().cast(), [0; 8]) }.unwrap();
    // SAFETY: the same bytes, read as a lock with another slot count: refused.
    let r = unsafe { RobustRwLock::<Data, 8>::attach(seg.as_ptr().cast()) };
    assert!(matches!(r, Err(shmsync::Error::Corrupt(_))), "{r:?}");
    // SAFETY: misaligned by 8.
    let r = unsafe { Lock::attach(seg.as_ptr().add(8).cast()) };
    assert!(matches!(r, Err(shmsync::Error::Misaligned { .. })), "{r:?}");
}

#[test]
fn readers_share_writers_exclude_in_one_process() {
    let seg = Segment::anonymous(SEG_LEN).unwrap();
    // SAFETY: fresh mapping that outlives `lock`.
    let lock = unsafe { Lock::init_at(seg.as_ptr().cast(), [0; 8]) }.unwrap();
    let a = lock.read().unwrap();
    let b = lock.try_read().unwrap();
    assert_ne!(ReadGuard::slot(&a), ReadGuard::slot(&b));
    assert_eq!(lock.raw().readers().len(), 2);
    assert!(matches!(
        lock.try_write(),
        Err(WriteError::Failed(RwLockError::WouldBlock))
    ));
    drop((a, b));
    assert!(lock.raw().readers().is_empty());
    let mut w = lock.write().unwrap();
    write_all(&mut w, 7);
    // The writer's own thread asking again: reported, not a hang.
    assert_eq!(lock.try_read().unwrap_err(), RwLockError::WouldBlock);
    assert_eq!(
        lock.read_timeout(Duration::from_secs(5)).unwrap_err(),
        RwLockError::Deadlock
    );
    drop(w);
    let r = lock.read().unwrap();
    assert_eq!(whole(&r), 7);
    // A reader asking to write would wait for itself.
    assert!(matches!(
        lock.write_timeout(Duration::from_secs(5)),
        Err(WriteError::Failed(RwLockError::Deadlock))
    ));
    drop(r);
    assert!(lock.write().is_ok());
}

#[test]
fn timeouts_while_held_by_another_process() {
    // tst-rwlock12's gist (also 6/7/14): a writer in another process holds the lock;
    // try and timed read and write locks fail, timed ones with TimedOut (also with a
    // deadline already past).
    let name = common::ShmName::new("rw-timeout");
    let (seg, lock) = create(&name);
    let mut c = common::spawn("writer_half", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "the writer", || {
        ctl(&seg, 0).load(SeqCst) == 1
    });
    let t = Instant::now();
    assert_eq!(
        lock.read_timeout(Duration::from_millis(200)).unwrap_err(),
        RwLockError::TimedOut
    );
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        lock.read_deadline(Instant::now() - Duration::from_secs(1))
            .unwrap_err(),
        RwLockError::TimedOut
    );
    assert!(matches!(
        lock.write_deadline(Instant::now()),
        Err(WriteError::Failed(RwLockError::TimedOut))
    ));
    assert_eq!(lock.try_read().unwrap_err(), RwLockError::WouldBlock);
    c.kill();
    // The writer died mid-write: nobody reads the torn value.
    assert_eq!(lock.read().unwrap_err(), RwLockError::Inconsistent);
}

#[test]
fn readers_in_many_processes_hold_at_once() {
    // A lock read-held by several processes at once (the pshared setup of
    // tst-rwlock4/12), which a writer then waits for.
    let name = common::ShmName::new("rw-many");
    let (seg, lock) = create(&name);
    let mut children: Vec<_> = (0..4)
        .map(|_| common::spawn("count_readers", &[name.as_str()]))
        .collect();
    common::wait_until(common::WATCHDOG, "four readers", || {
        ctl(&seg, 6).load(SeqCst) == 4
    });
    assert_eq!(lock.raw().readers().len(), 4);
    assert!(lock
        .raw()
        .readers()
        .iter()
        .all(|r| r.liveness == Liveness::Alive && r.pid.is_some()));
    assert!(matches!(
        lock.write_timeout(Duration::from_millis(100)),
        Err(WriteError::Failed(RwLockError::TimedOut))
    ));
    ctl(&seg, 8).store(1, SeqCst);
    for c in &mut children {
        c.expect_success(common::WATCHDOG);
    }
    assert_eq!(ctl(&seg, 7).load(SeqCst), 4);
    assert!(lock.write().is_ok());
}

#[test]
fn mixed_readers_and_writers_in_many_processes() {
    // tst-rwlock9's gist: readers and writers in several processes, no torn read, one
    // writer at a time, every write counted.
    let name = common::ShmName::new("rw-mixed");
    let (seg, lock) = create(&name);
    let mut children: Vec<_> = (0..4)
        .map(|_| common::spawn("worker", &[name.as_str(), "3000", "10"]))
        .collect();
    for c in &mut children {
        c.expect_success(Duration::from_secs(120));
    }
    let writes = ctl(&seg, 3).load(SeqCst);
    assert_eq!(writes, 4 * 300);
    assert_eq!(ctl(&seg, 4).load(SeqCst), 4 * 2700);
    assert_eq!(whole(&lock.read().unwrap()), writes);
    assert!(lock.raw().readers().is_empty());
}

#[test]
fn writer_reclaims_a_killed_readers_slot() {
    let name = common::ShmName::new("rw-deadreader");
    let (seg, lock) = create(&name);
    let mut c = common::spawn("reader_hold", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "the reader", || {
        ctl(&seg, 0).load(SeqCst) == 1
    });
    assert_eq!(lock.raw().readers()[0].liveness, Liveness::Alive);
    c.kill();
    assert_eq!(lock.raw().readers()[0].liveness, Liveness::Dead);
    let t = Instant::now();
    let mut w = lock
        .write_timeout(common::WATCHDOG)
        .expect("the dead reader's slot is reclaimed");
    write_all(&mut w, 1);
    eprintln!(
        "writer proceeded {:?} after the reader's death",
        t.elapsed()
    );
    drop(w);
    assert!(lock.raw().readers().is_empty());
    assert_eq!(lock.raw().reclaimed(), 1);
}

#[test]
fn reclaim_dead_frees_only_dead_readers() {
    let name = common::ShmName::new("rw-reclaim");
    let (seg, lock) = create(&name);
    let mut dead = common::spawn("reader_hold", &[name.as_str()]);
    let _live = common::spawn("reader_hold", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "two readers", || {
        ctl(&seg, 0).load(SeqCst) == 2
    });
    dead.kill();
    assert_eq!(lock.raw().reclaim_dead(), 1);
    assert_eq!(lock.raw().reclaim_dead(), 0);
    let left = lock.raw().readers();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].liveness, Liveness::Alive);
}

#[test]
fn a_reader_thread_that_exits_holding_is_reclaimed() {
    let seg = Segment::anonymous(SEG_LEN).unwrap();
    // SAFETY: fresh mapping that outlives `lock` and the thread (joined below).
    let lock: &Lock = unsafe { Lock::init_at(seg.as_ptr().cast(), [0; 8]) }.unwrap();
    let addr = lock as *const Lock as usize;
    std::thread::spawn(move || {
        // SAFETY: `lock` outlives the thread (joined before the mapping is dropped).
        let lock = unsafe { &*(addr as *const Lock) };
        std::mem::forget(lock.read().unwrap());
    })
    .join()
    .unwrap();
    // Our process runs; the reader thread is gone.
    common::wait_until(common::WATCHDOG, "the thread to be reaped", || {
        lock.raw().readers()[0].liveness == Liveness::Dead
    });
    let _w = lock
        .write_timeout(common::WATCHDOG)
        .expect("dead thread's slot reclaimed");
}

#[test]
fn a_stopped_reader_is_never_reclaimed() {
    let name = common::ShmName::new("rw-stopped");
    let (seg, lock) = create(&name);
    let mut c = common::spawn("reader_hold", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "the reader", || {
        ctl(&seg, 0).load(SeqCst) == 1
    });
    c.signal(libc::SIGSTOP);
    assert!(matches!(
        lock.write_timeout(Duration::from_millis(300)),
        Err(WriteError::Failed(RwLockError::TimedOut))
    ));
    assert_eq!(lock.raw().reclaim_dead(), 0);
    assert_eq!(lock.raw().readers().len(), 1);
    // The timed-out writer let go: readers get in again.
    drop(lock.try_read().unwrap());
    c.signal(libc::SIGCONT);
    c.kill();
    assert!(lock.write_timeout(common::WATCHDOG).is_ok());
}

/// Slot `i`'s words (claim word, packed identity), at their pinned offsets.
fn slot_words(lock: &Lock, i: usize) -> (&AtomicU64, &AtomicU64) {
    let base = lock as *const Lock as *const u8;
    // SAFETY: slot i lies at 128 + 64 i inside the lock (pinned by `layout_and_kind`),
    // two 8-aligned u64 words only ever accessed atomically.
    unsafe {
        (
            &*(base.add(128 + 64 * i) as *const AtomicU64),
            &*(base.add(128 + 64 * i + 8) as *const AtomicU64),
        )
    }
}

#[test]
fn a_reused_pid_is_never_taken_for_the_reader() {
    let seg = Segment::anonymous(SEG_LEN).unwrap();
    // SAFETY: fresh mapping that outlives `lock`.
    let lock: &Lock = unsafe { Lock::init_at(seg.as_ptr().cast(), [0; 8]) }.unwrap();
    let me = shmsync::ProcessIdentity::current().unwrap();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u64;
    let (word, ident) = slot_words(lock, 3);
    // A reader recorded as our pid and thread but with another start time: a process
    // that had our pid before us. Our thread runs, but the reader is dead.
    let reused = shmsync::ProcessIdentity::new(me.pid, me.start_time.wrapping_sub(1), me.pid_ns);
    word.store(1 << 32 | tid, SeqCst);
    ident.store(reused.packed(), SeqCst);
    assert_eq!(lock.raw().readers()[0].liveness, Liveness::Dead);
    assert_eq!(lock.raw().reclaim_dead(), 1);
    assert_eq!(word.load(SeqCst) & 0xffff_ffff, 0);
    assert_eq!(ident.load(SeqCst), 0);
    // The same slot with our true identity is a live reader: left alone, also by a
    // writer (whose drain covers the slots below the high-water mark at offset 32).
    word.store(2 << 32 | tid, SeqCst);
    ident.store(me.packed(), SeqCst);
    // SAFETY: the lock's high-water mark, an aligned u32 at offset 32 (pinned by the
    // layout test), only ever accessed atomically.
    unsafe { &*((lock as *const Lock as *const u8).add(32) as *const AtomicU32) }.store(4, SeqCst);
    assert_eq!(lock.raw().reclaim_dead(), 0);
    assert!(matches!(
        lock.write_timeout(Duration::from_millis(200)),
        Err(WriteError::Failed(
            RwLockError::Deadlock | RwLockError::TimedOut
        ))
    ));
    word.store(2 << 32, SeqCst);
    ident.store(0, SeqCst);
}

#[test]
fn a_killed_writer_leaves_readers_an_error_and_the_next_writer_a_repair() {
    let name = common::ShmName::new("rw-deadwriter");
    let (seg, lock) = create(&name);
    let mut w = common::spawn("writer_half", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "the writer", || {
        ctl(&seg, 0).load(SeqCst) == 1
    });
    // A reader already waiting when the writer dies is told, not left hanging.
    let mut r = common::spawn("reader_wait", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "the reader", || {
        ctl(&seg, 1).load(SeqCst) == 1
    });
    w.kill();
    r.expect_success(common::WATCHDOG);
    assert_eq!(
        ctl(&seg, 2).load(SeqCst),
        2,
        "the waiting reader got Inconsistent"
    );
    assert!(lock.raw().needs_repair());
    assert_eq!(lock.read().unwrap_err(), RwLockError::Inconsistent);
    assert_eq!(lock.try_read().unwrap_err(), RwLockError::Inconsistent);
    match lock.write() {
        Err(WriteError::OwnerDied(mut g)) => {
            assert_eq!(g[0], 1);
            assert_eq!(g[1], 0);
            let v = g[0];
            write_all(&mut g, v);
            drop(g.make_consistent());
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(!lock.raw().needs_repair());
    assert_eq!(whole(&lock.read().unwrap()), 1);
    assert!(lock.write().is_ok());
}

/// A reader that waits for a writer waits on the writer mutex; one killed while it
/// holds that mutex (an instant, here stretched by a failpoint) left the data whole:
/// the mutex is owner-died, yet readers get in and the next writer is not asked to
/// repair.
#[test]
fn a_reader_killed_waiting_through_the_writer_lock_leaves_nothing_to_repair() {
    let name = common::ShmName::new("rw-passing");
    let (seg, lock) = create(&name);
    let mut g = lock.write().unwrap();
    write_all(&mut g, 7);
    let (mut r, marker) =
        common::spawn_to_failpoint("reader_wait", &[name.as_str()], "rwlock-waiting-reader");
    common::wait_until(
        common::WATCHDOG,
        "the reader asleep on the writer mutex",
        || {
            ctl(&seg, 1).load(SeqCst) == 1
                && matches!(
                    lock.raw().writer_state(),
                    shmsync::MutexState::Locked { waiters: true, .. }
                )
        },
    );
    drop(g);
    common::kill_at_marker(&mut r, &marker);
    assert_eq!(lock.raw().writer_state(), shmsync::MutexState::OwnerDied);
    assert!(!lock.raw().needs_repair());
    assert_eq!(whole(&lock.read().unwrap()), 7);
    let mut g = lock.write().expect("a clean write lock, no repair");
    write_all(&mut g, 8);
    drop(g);
    assert_eq!(whole(&lock.try_read().unwrap()), 8);
}

/// A writer killed after finishing its write — between clearing `WRITER` and
/// unlocking the mutex — left the data whole: the next writer is not asked to repair,
/// and the tool releases the mutex without calling for the application.
#[test]
fn a_writer_killed_after_its_write_leaves_nothing_to_repair() {
    use shmsync::inspect::{self, Outcome, RecoverOptions};
    let name = common::ShmName::new("rw-wrote");
    let (_seg, lock) = create(&name);
    common::kill_at_failpoint("writer_whole", &[name.as_str()], "rwlock-released-writer");
    assert_eq!(lock.raw().writer_state(), shmsync::MutexState::OwnerDied);
    assert!(!lock.raw().needs_repair());
    assert_eq!(whole(&lock.read().unwrap()), 1);
    assert_eq!(whole(&lock.write().expect("a clean write lock")), 1);

    // The same death in a region, seen by the tool.
    let name = common::ShmName::new("rw-wrote-tool");
    let region = region_with_table(&name);
    let lock = region.get::<RobustRwLock<u64>>("table").unwrap();
    common::kill_at_failpoint(
        "region_writer_whole",
        &[name.as_str()],
        "rwlock-released-writer",
    );
    let table = table_report(&region);
    assert!(table.needs_recovery, "{}", table.state);
    assert!(table.state.contains("outside a write"), "{}", table.state);
    // A live reader keeps reading meanwhile: settling the mutex takes no write lock.
    let reading = lock.read().unwrap();
    let done = inspect::recover(&region, RecoverOptions::default()).unwrap();
    assert_eq!(done.outcome(), Outcome::Recovered, "{done:?}");
    assert_eq!(*reading, 1);
    assert_eq!(*lock.try_read().unwrap(), 1);
    drop(reading);
    assert!(!table_report(&region).needs_recovery);
    assert_eq!(lock.raw().writer_state(), shmsync::MutexState::Free);
    assert_eq!(*lock.write().expect("a clean write lock"), 1);
}

#[test]
fn question_mark_on_owner_died_leaves_the_repair_to_the_next_writer() {
    let name = common::ShmName::new("rw-qmark");
    let (seg, lock) = create(&name);
    let mut w = common::spawn("writer_half", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "the writer", || {
        ctl(&seg, 0).load(SeqCst) == 1
    });
    w.kill();
    let careless = || -> shmsync::Result<()> {
        let mut g = lock.write()?;
        g[0] = 99;
        Ok(())
    };
    let e = careless().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EOWNERDEAD), "{e}");
    assert!(!lock.raw().is_not_recoverable());
    assert_eq!(lock.read().unwrap_err(), RwLockError::Inconsistent);
    match lock.write() {
        Err(WriteError::OwnerDied(g)) => drop(g.make_consistent()),
        other => panic!("expected OwnerDied again, got {other:?}"),
    }
    assert!(lock.read().is_ok());
}

#[test]
fn an_abandoned_repair_makes_the_lock_not_recoverable_until_reinit() {
    let name = common::ShmName::new("rw-notrec");
    let (seg, lock) = create(&name);
    let mut w = common::spawn("writer_half", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "the writer", || {
        ctl(&seg, 0).load(SeqCst) == 1
    });
    w.kill();
    let e = lock.write().unwrap_err();
    assert!(e.is_owner_died());
    drop(e);
    assert!(lock.raw().is_not_recoverable());
    assert_eq!(lock.read().unwrap_err(), RwLockError::NotRecoverable);
    assert!(matches!(
        lock.write(),
        Err(WriteError::Failed(RwLockError::NotRecoverable))
    ));
    // `?` into the crate's error.
    let via_question_mark = || -> shmsync::Result<()> {
        let _g = lock.read()?;
        Ok(())
    };
    assert_eq!(
        via_question_mark().unwrap_err().raw_os_error(),
        Some(libc::ENOTRECOVERABLE)
    );
    // SAFETY: nobody else uses the lock now (the writer is dead, no reader holds it).
    unsafe { lock.reinit() }.unwrap();
    assert!(lock.write().is_ok());
    assert!(lock.read().is_ok());
}

#[test]
fn a_waiting_writer_keeps_new_readers_out() {
    // Writer preference: while a writer waits for a reader, new readers (in other
    // processes, and here) do not get in.
    let name = common::ShmName::new("rw-pref");
    let (seg, lock) = create(&name);
    let r = lock.read().unwrap();
    let addr = lock as *const Lock as usize;
    let writer_in = std::sync::Arc::new(AtomicU32::new(0));
    let flag = writer_in.clone();
    let t = std::thread::spawn(move || {
        // SAFETY: the lock outlives the thread (joined below).
        let lock = unsafe { &*(addr as *const Lock) };
        let g = lock.write().unwrap();
        flag.store(1, SeqCst);
        drop(g);
    });
    // Wait until the writer has announced itself (a new try_read is refused).
    common::wait_until(common::WATCHDOG, "the writer to wait", || {
        matches!(lock.try_read(), Err(RwLockError::WouldBlock))
    });
    let mut c = common::spawn("reader_wait", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "the reader", || {
        ctl(&seg, 1).load(SeqCst) == 1
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        ctl(&seg, 2).load(SeqCst),
        0,
        "a reader overtook the waiting writer"
    );
    assert_eq!(writer_in.load(SeqCst), 0);
    drop(r);
    t.join().unwrap();
    assert_eq!(writer_in.load(SeqCst), 1);
    c.expect_success(common::WATCHDOG);
    assert_eq!(ctl(&seg, 2).load(SeqCst), 1);
}

#[test]
fn in_a_region() {
    let region = Region::from_segment(Segment::anonymous(1 << 16).unwrap()).unwrap();
    let lock = region
        .get_or_init::<RobustRwLock<u64>>("config", 5)
        .unwrap();
    assert_eq!(*lock.read().unwrap(), 5);
    *lock.write().unwrap() = 6;
    let again = region
        .get_or_init::<RobustRwLock<u64>>("config", 0)
        .unwrap();
    assert_eq!(*again.read().unwrap(), 6);
    assert_eq!(lock as *const _ as usize % 64, 0);
}

#[test]
fn many_threads_no_torn_read() {
    let seg = Segment::anonymous(SEG_LEN).unwrap();
    // SAFETY: fresh mapping that outlives the threads (scoped).
    let lock: &Lock = unsafe { Lock::init_at(seg.as_ptr().cast(), [0; 8]) }.unwrap();
    let writes = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let writes = &writes;
            s.spawn(move || {
                for i in 0..2000u64 {
                    if (i + t) % 8 == 0 {
                        let mut g = lock.write().unwrap();
                        let v = whole(&g) + 1;
                        write_all(&mut g, v);
                        writes.fetch_add(1, SeqCst);
                    } else {
                        whole(&lock.read().unwrap());
                    }
                }
            });
        }
    });
    assert_eq!(whole(&lock.read().unwrap()), writes.load(SeqCst));
}

/// Role: opens the region named by args[0], takes a read lock on "table", counts
/// itself in the region's "ready" lock's data, and waits to be killed.
fn region_reader(args: &[String]) {
    let region = Region::open(&Location::parse(&args[0]).unwrap()).unwrap();
    let lock = region.get::<RobustRwLock<u64>>("table").unwrap();
    std::mem::forget(lock.read().unwrap());
    *region
        .get::<RobustRwLock<u64>>("ready")
        .unwrap()
        .write()
        .unwrap() += 1;
    pause_forever();
}

/// Role: takes the write lock on "table" of the region args[0], counts itself in
/// "ready", and waits to be killed.
fn region_writer(args: &[String]) {
    let region = Region::open(&Location::parse(&args[0]).unwrap()).unwrap();
    let lock = region.get::<RobustRwLock<u64>>("table").unwrap();
    std::mem::forget(lock.write().unwrap());
    *region
        .get::<RobustRwLock<u64>>("ready")
        .unwrap()
        .write()
        .unwrap() += 1;
    pause_forever();
}

fn region_ready(region: &Region) -> u64 {
    *region
        .get::<RobustRwLock<u64>>("ready")
        .unwrap()
        .read()
        .unwrap()
}

/// A region at `name` with the "table" lock the roles use and their "ready" counter.
fn region_with_table(name: &common::ShmName) -> Region {
    let region = Region::create(&Location::parse(name.as_str()).unwrap(), 1 << 16).unwrap();
    region.get_or_init::<RobustRwLock<u64>>("table", 0).unwrap();
    region.get_or_init::<RobustRwLock<u64>>("ready", 0).unwrap();
    region
}

/// What `inspect` says about the "table" lock.
fn table_report(region: &Region) -> shmsync::inspect::ObjectReport {
    let report = shmsync::inspect::inspect(region).unwrap();
    report
        .reports
        .into_iter()
        .find(|r| r.entry.name == "table")
        .unwrap()
}

#[test]
fn inspect_lists_readers_and_recover_reclaims_dead_ones() {
    use shmsync::inspect::{self, Fact, Outcome, RecoverOptions};
    let name = common::ShmName::new("rw-inspect");
    let region = region_with_table(&name);
    let lock = region.get::<RobustRwLock<u64>>("table").unwrap();
    let mut dead = common::spawn("region_reader", &[name.as_str()]);
    let _live = common::spawn("region_reader", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "two readers", || {
        region_ready(&region) == 2
    });
    dead.kill();

    let table = table_report(&region);
    assert!(table.needs_recovery, "{}", table.state);
    assert!(table.state.contains("2 readers"), "{}", table.state);
    assert!(
        table.state.contains("(dead)") && table.state.contains("(alive)"),
        "{}",
        table.state
    );
    let Some((_, Fact::List(readers))) = table.facts.iter().find(|(k, _)| *k == "readers") else {
        panic!("no readers fact: {:?}", table.facts);
    };
    assert_eq!(readers.len(), 2);

    let dry = inspect::recover(
        &region,
        RecoverOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(dry.outcome(), Outcome::Recovered);
    assert_eq!(lock.raw().readers().len(), 2, "a dry run changed nothing");
    let done = inspect::recover(&region, RecoverOptions::default()).unwrap();
    assert_eq!(done.outcome(), Outcome::Recovered);
    assert!(
        done.actions()
            .any(|a| a.what.contains("reclaimed 1 reader slot")),
        "{done:?}"
    );
    let left = lock.raw().readers();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].liveness, Liveness::Alive);
    let again = inspect::recover(&region, RecoverOptions::default()).unwrap();
    assert_eq!(again.outcome(), Outcome::Fine);
}

#[test]
fn recover_reports_a_dead_writer_for_the_application() {
    use shmsync::inspect::{self, Outcome, RecoverOptions};
    let name = common::ShmName::new("rw-inspect-w");
    let region = region_with_table(&name);
    let lock = region.get::<RobustRwLock<u64>>("table").unwrap();
    let mut w = common::spawn("region_writer", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "the writer", || {
        region_ready(&region) == 1
    });
    w.kill();
    let table = table_report(&region);
    assert!(table.needs_recovery, "{}", table.state);
    let done = inspect::recover(&region, RecoverOptions::default()).unwrap();
    assert_eq!(done.outcome(), Outcome::NeedsApplication, "{done:?}");
    // Recovery left the repair to the application: readers still refused.
    assert_eq!(lock.read().unwrap_err(), RwLockError::Inconsistent);
    // With mark_consistent the tool accepts the data as it is.
    let opts = RecoverOptions {
        mark_consistent: true,
        ..Default::default()
    };
    let done = inspect::recover(&region, opts).unwrap();
    assert_eq!(done.outcome(), Outcome::Recovered, "{done:?}");
    assert!(!table_report(&region).needs_recovery);
    assert_eq!(*lock.read().unwrap(), 0);
    assert!(lock.write().is_ok());
}

#[test]
fn a_fork_childs_copy_of_a_read_guard_releases_nothing() {
    // tst-rwlock4's gist, with the opposite outcome by design: there a fork child
    // unlocks its parent's read lock; here a read lock belongs to the thread that took
    // it, and the child's copy of the guard leaves the parent's slot held.
    let seg = Segment::anonymous(SEG_LEN).unwrap();
    // SAFETY: fresh mapping that outlives `lock` and the child.
    let lock: &Lock = unsafe { Lock::init_at(seg.as_ptr().cast(), [0; 8]) }.unwrap();
    let guard = lock.read().unwrap();
    let g = &guard;
    let mut child = common::fork_child(|| {
        // The child's copy of the parent's guard, dropped: only a thread-id lookup
        // (gettid) and a compare, async-signal-safe.
        // SAFETY: the child owns its copy of the memory; the parent's guard is not
        // touched here.
        drop(unsafe { std::ptr::read(g) });
        0
    });
    child.expect_success(common::WATCHDOG);
    assert_eq!(
        lock.raw().readers().len(),
        1,
        "the child released the parent's lock"
    );
    assert!(matches!(
        lock.try_write(),
        Err(WriteError::Failed(RwLockError::WouldBlock))
    ));
    drop(guard);
    assert!(lock.try_write().is_ok());
}

#[test]
fn a_sleeping_writer_notices_a_reader_killed_meanwhile() {
    // The writer is asleep in its drain when the reader dies: it notices at its next
    // liveness check (every READER_CHECK), not only at its deadline.
    let name = common::ShmName::new("rw-deadlater");
    let (seg, lock) = create(&name);
    let mut c = common::spawn("reader_hold", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "the reader", || {
        ctl(&seg, 0).load(SeqCst) == 1
    });
    let addr = lock as *const Lock as usize;
    let writer = std::thread::spawn(move || {
        // SAFETY: the lock outlives the thread (joined below).
        let lock = unsafe { &*(addr as *const Lock) };
        let r = lock.write_timeout(common::WATCHDOG).map(drop).is_ok();
        (r, Instant::now())
    });
    common::wait_until(common::WATCHDOG, "the writer to wait", || {
        matches!(lock.try_read(), Err(RwLockError::WouldBlock))
    });
    std::thread::sleep(Duration::from_millis(200));
    let died = Instant::now();
    c.kill();
    let (acquired, at) = writer.join().unwrap();
    assert!(
        acquired,
        "the writer timed out instead of reclaiming the dead reader"
    );
    eprintln!(
        "writer proceeded {:?} after the reader's SIGKILL (check interval {:?})",
        at.saturating_duration_since(died),
        shmsync::READER_CHECK
    );
}

#[test]
fn a_full_slot_table_makes_readers_wait_and_dead_holders_make_room() {
    let seg = Segment::anonymous(SEG_LEN).unwrap();
    // SAFETY: fresh mapping that outlives `lock` and the threads (joined).
    let lock: &RobustRwLock<u64, 2> =
        unsafe { RobustRwLock::init_at(seg.as_ptr().cast(), 1) }.unwrap();
    let addr = lock as *const RobustRwLock<u64, 2> as usize;
    // Two reader threads take both slots and exit holding them (dead holders).
    for _ in 0..2 {
        std::thread::spawn(move || {
            // SAFETY: the lock outlives the thread (joined at once).
            let lock = unsafe { &*(addr as *const RobustRwLock<u64, 2>) };
            std::mem::forget(lock.read().unwrap());
        })
        .join()
        .unwrap();
    }
    assert_eq!(lock.raw().readers().len(), 2);
    // A third reader finds no slot: try refuses, a blocking read reclaims the dead
    // holders' slots and gets in.
    common::wait_until(common::WATCHDOG, "the threads to be reaped", || {
        lock.raw()
            .readers()
            .iter()
            .all(|r| r.liveness == Liveness::Dead)
    });
    assert_eq!(lock.try_read().unwrap_err(), RwLockError::WouldBlock);
    let r = lock
        .read_timeout(common::WATCHDOG)
        .expect("room made by reclaiming");
    assert_eq!(*r, 1);
    assert!(lock.raw().reclaimed() >= 1);
}

/// Reads back to back forever (each read overlapping the next reader's), counting in
/// ctl[9].
fn reader_stream(args: &[String]) {
    let (seg, lock) = open(&args[0]);
    loop {
        let g = lock.read().unwrap();
        whole(&g);
        ctl(seg, 9).fetch_add(1, SeqCst);
        std::hint::black_box(&g);
        drop(g);
    }
}

#[test]
fn a_stream_of_readers_does_not_starve_a_writer() {
    let name = common::ShmName::new("rw-stream");
    let (seg, lock) = create(&name);
    let _readers: Vec<_> = (0..3)
        .map(|_| common::spawn("reader_stream", &[name.as_str()]))
        .collect();
    common::wait_until(common::WATCHDOG, "the readers", || {
        ctl(&seg, 9).load(SeqCst) > 10_000
    });
    for v in 1..=20 {
        let mut w = lock
            .write_timeout(common::WATCHDOG)
            .expect("a writer gets in between a stream of readers");
        write_all(&mut w, v);
    }
    let before = ctl(&seg, 9).load(SeqCst);
    common::wait_until(common::WATCHDOG, "readers to go on", || {
        ctl(&seg, 9).load(SeqCst) > before + 1000
    });
}
