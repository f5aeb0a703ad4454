//! What an object's memory and its peers may not make the crate do: a corrupt glibc
//! mutex kind word must give `Corrupt` (never an abort inside glibc, never a silent
//! hang), a live but stopped process holding a lease table's lock must not block
//! non-blocking calls or a permit's drop, and names with control characters are never
//! stored.
//!
//! Cases that abort or hang without the checks run in re-executed children, so an abort
//! or a hang fails the test (through the child's status or the watchdog) instead of
//! taking the harness down with it.
#![allow(clippy::disallowed_types)]
mod common;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use shmsync::inspect::{self, RecoverOptions};
use shmsync::{
    Acquired, Error, LeasedSemaphore, Location, LockError, MutexGuard, MutexState, RawLockError,
    RawRobustMutex, Region, RobustMutex, Segment, Semaphore, SeqLock, SeqLockError, RELEASE_WAIT,
};

/// glibc's mutex kind bits (`pthread_mutex_t.__kind`).
const ERRORCHECK: u32 = 2;
const ROBUST: u32 = 16;
const PRIO_INHERIT: u32 = 32;
const PRIO_PROTECT: u32 = 64;
const PSHARED: u32 = 128;

/// Kinds another process might write: priority-protect (glibc asserts in `tpp.c` and
/// aborts), robust priority-protect, non-robust (a dead holder hangs every locker),
/// priority-inheritance, zero, and garbage.
const BAD_KINDS: [u32; 6] = [
    PRIO_PROTECT | ERRORCHECK | PSHARED,
    PRIO_PROTECT | ROBUST | ERRORCHECK | PSHARED,
    ERRORCHECK | PSHARED,
    PRIO_INHERIT | ROBUST | ERRORCHECK | PSHARED,
    0,
    0xffff_ffff,
];

#[test]
fn child_role() {
    common::dispatch(&[
        ("bad_kind", bad_kind),
        ("bad_kind_dead_holder", bad_kind_dead_holder),
        ("bad_kind_make_consistent", bad_kind_make_consistent),
        ("bad_kind_recover", bad_kind_recover),
        ("bad_kind_tables", bad_kind_tables),
        ("orphan_waiters_bit", orphan_waiters_bit),
        ("stopped_table_holder", stopped_table_holder),
    ]);
}

/// Runs `role` in a child and fails the test unless it exits 0 within the watchdog
/// (an abort inside glibc shows as a signal, a hang as the watchdog).
fn run_child(role: &str, args: &[&str]) {
    let mut c = common::spawn(role, args);
    let status = c.wait(common::WATCHDOG);
    assert!(
        status.success(),
        "child {role} {args:?} failed: {status:?} (signal 6: aborted inside glibc)"
    );
}

fn expect_corrupt<T: bytemuck::AnyBitPattern>(
    r: Result<MutexGuard<'_, T>, LockError<'_, T>>,
    kind: u32,
    what: &str,
) {
    match r {
        Err(LockError::Corrupt { found, .. }) => assert_eq!(found, kind, "{what}"),
        Err(e) => panic!("{what} with kind {kind:#x}: {e:?}, not Corrupt"),
        Ok(_) => panic!("{what} with kind {kind:#x}: locked, not Corrupt"),
    }
}

fn expect_raw_corrupt(r: Result<Acquired, RawLockError>, kind: u32, what: &str) {
    match r {
        Err(RawLockError::Corrupt { found, .. }) => assert_eq!(found, kind, "{what}"),
        other => panic!("{what} with kind {kind:#x}: {other:?}, not Corrupt"),
    }
}

fn new_mutex(seg: &Segment) -> &RobustMutex<u64> {
    // SAFETY: a fresh anonymous mapping; the mutex takes its first bytes and outlives
    // the borrow of `seg`.
    unsafe { RobustMutex::init_at(seg.as_ptr().cast(), 7) }.unwrap()
}

/// A flag word shared with forked children, in a mapping of its own.
fn flag(seg: &Segment) -> &AtomicU32 {
    // SAFETY: in bounds (checked by `at`), aligned, zero-filled shared memory that only
    // this test uses; it outlives the borrow of `seg`.
    unsafe { &*common::at::<AtomicU32>(seg, 0) }
}

/// A forked child that holds `lock` (taken before this returns) until it is killed.
fn fork_holder(lock: &RawRobustMutex) -> common::Child {
    let seg = Segment::anonymous(4096).unwrap();
    let locked = flag(&seg);
    let holder = common::fork_child(|| {
        let Ok(_acquired) = lock.lock() else {
            return 3;
        };
        locked.store(1, SeqCst);
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    });
    common::wait_until(common::WATCHDOG, "holder locked", || {
        locked.load(SeqCst) == 1
    });
    holder
}

/// A forked child locks `m` and is SIGKILLed holding it: the kernel marks it owner-died.
fn kill_holder(m: &RobustMutex<u64>) {
    fork_holder(m.raw()).kill();
    assert_eq!(m.state(), MutexState::OwnerDied);
}

/// Child: every lock entry point of a mutex whose kind word is `args[0]` is refused
/// with `Corrupt`, and so is attaching to it; putting the word back makes it usable.
fn bad_kind(args: &[String]) {
    let kind: u32 = args[0].parse().unwrap();
    let seg = Segment::anonymous(4096).unwrap();
    let m = new_mutex(&seg);
    let word = common::glibc_kind_word(m.raw());
    word.store(kind, SeqCst);
    expect_corrupt(m.try_lock(), kind, "try_lock");
    expect_corrupt(m.lock_timeout(Duration::from_secs(1)), kind, "lock_timeout");
    expect_corrupt(
        m.lock_deadline(Instant::now() + Duration::from_secs(1)),
        kind,
        "lock_deadline",
    );
    expect_corrupt(m.lock(), kind, "lock");
    expect_raw_corrupt(m.raw().try_lock(), kind, "raw try_lock");
    expect_raw_corrupt(m.raw().lock(), kind, "raw lock");
    // SAFETY: the mapping is valid, READY and outlives the reference.
    match unsafe { RobustMutex::<u64>::attach(seg.as_ptr().cast()) } {
        Err(Error::Corrupt(why)) => assert!(why.contains("kind"), "{why}"),
        other => panic!("attach with kind {kind:#x}: {other:?}, not Corrupt"),
    }
    word.store(common::GLIBC_ROBUST_KIND, SeqCst);
    assert_eq!(*m.lock().expect("lock with the kind restored"), 7);
}

#[test]
fn corrupt_kind_word_is_refused_not_trusted() {
    for kind in BAD_KINDS {
        run_child("bad_kind", &[&kind.to_string()]);
    }
}

/// Child: a holder dies; the kind word is then made non-robust. glibc would take the
/// plain path and wait forever for the word the dead owner left; the lock calls report
/// `Corrupt` instead.
fn bad_kind_dead_holder(_: &[String]) {
    let seg = Segment::anonymous(4096).unwrap();
    let m = new_mutex(&seg);
    let word = common::glibc_kind_word(m.raw());
    kill_holder(m);
    let kind = ERRORCHECK | PSHARED;
    word.store(kind, SeqCst);
    expect_corrupt(m.lock(), kind, "lock");
    expect_raw_corrupt(m.raw().lock(), kind, "raw lock");
    expect_corrupt(m.lock_timeout(Duration::from_secs(1)), kind, "lock_timeout");
    word.store(common::GLIBC_ROBUST_KIND, SeqCst);
    assert!(m.lock().unwrap_err().is_owner_died());
}

#[test]
fn non_robust_kind_with_a_dead_holder_is_corrupt_not_a_hang() {
    run_child("bad_kind_dead_holder", &[]);
}

/// Child: a lock word with the waiters bit and no owner (no thread id, not owner-died),
/// a value neither glibc nor the kernel leaves. glibc's lock would sleep on it forever;
/// `lock`, `try_lock` and the timed lock report `Corrupt`.
fn orphan_waiters_bit(_: &[String]) {
    const FUTEX_WAITERS: u32 = 0x8000_0000;
    let seg = Segment::anonymous(4096).unwrap();
    let m = new_mutex(&seg);
    let lock_word = common::glibc_lock_word(m.raw());
    assert_eq!(lock_word.load(SeqCst), 0);
    lock_word.store(FUTEX_WAITERS, SeqCst);
    expect_corrupt(m.try_lock(), FUTEX_WAITERS, "try_lock");
    expect_corrupt(m.lock(), FUTEX_WAITERS, "lock");
    expect_corrupt(
        m.lock_timeout(Duration::from_millis(100)),
        FUTEX_WAITERS,
        "lock_timeout",
    );
    lock_word.store(0, SeqCst);
    assert_eq!(*m.lock().expect("lock with the word cleared"), 7);
}

#[test]
fn waiters_bit_without_an_owner_is_corrupt_not_a_hang() {
    run_child("orphan_waiters_bit", &[]);
}

/// Child: the successor of a dead holder locks (owner died); the kind word is then
/// corrupted. `make_consistent` and `unlock` refuse instead of calling glibc.
fn bad_kind_make_consistent(args: &[String]) {
    let kind: u32 = args[0].parse().unwrap();
    let seg = Segment::anonymous(4096).unwrap();
    let m = new_mutex(&seg);
    let word = common::glibc_kind_word(m.raw());
    kill_holder(m);
    assert_eq!(m.raw().lock(), Ok(Acquired::OwnerDied));
    word.store(kind, SeqCst);
    // SAFETY: this thread holds the lock (just acquired, owner died).
    match unsafe { m.raw().make_consistent() } {
        Err(RawLockError::Corrupt { found, .. }) => assert_eq!(found, kind),
        other => panic!("make_consistent with kind {kind:#x}: {other:?}, not Corrupt"),
    }
    // SAFETY: this thread holds the lock.
    let unlocked = unsafe { m.raw().unlock() };
    assert!(matches!(
        unlocked,
        Err(RawLockError::Corrupt { found, .. }) if found == kind
    ));
    // Nothing was released behind the corruption's back: still held by this thread.
    assert!(matches!(
        m.state(),
        MutexState::Locked {
            inconsistent: true,
            ..
        }
    ));
}

#[test]
fn make_consistent_refuses_a_corrupt_kind_word() {
    for kind in [
        PRIO_PROTECT | ERRORCHECK | PSHARED,
        PRIO_PROTECT | ROBUST | ERRORCHECK | PSHARED,
    ] {
        run_child("bad_kind_make_consistent", &[&kind.to_string()]);
    }
}

/// Child: what `shmsync recover --mark-consistent` does, through the library, on a
/// region whose owner-died mutex has a priority-protect kind word: it reports the
/// object as corrupt and carries on with the others.
fn bad_kind_recover(_: &[String]) {
    let region = Region::from_segment(Segment::anonymous(1 << 16).unwrap()).unwrap();
    let m: &RobustMutex<u64> = region.get_or_init("m", 7).unwrap();
    let other: &RobustMutex<u64> = region.get_or_init("other", 8).unwrap();
    let word = common::glibc_kind_word(m.raw());
    kill_holder(m);
    kill_holder(other);
    word.store(PRIO_PROTECT | ERRORCHECK | PSHARED, SeqCst);
    let opts = RecoverOptions {
        mark_consistent: true,
        ..RecoverOptions::default()
    };
    let actions = inspect::recover(&region, opts).unwrap();
    let about_m: Vec<_> = actions.actions().filter(|a| a.object == "m").collect();
    assert!(
        about_m.iter().any(|a| a.what.contains("corrupt")),
        "{actions:?}"
    );
    assert_eq!(m.state(), MutexState::OwnerDied, "{actions:?}");
    // The healthy mutex was still recovered.
    assert_eq!(*other.try_lock().expect("recovered"), 8, "{actions:?}");
}

#[test]
fn recover_mark_consistent_reports_a_corrupt_kind_word() {
    run_child("bad_kind_recover", &[]);
}

/// Child: the embedded locks — a lease table's and a seqlock's writer lock — refuse a
/// corrupt kind word in every call that takes them, and on attach.
fn bad_kind_tables(_: &[String]) {
    let kind = PRIO_PROTECT | ERRORCHECK | PSHARED;
    let seg = Segment::anonymous(8192).unwrap();
    // SAFETY: a fresh mapping large enough for both objects, which outlives them.
    let sem: &LeasedSemaphore =
        unsafe { LeasedSemaphore::init_at(seg.as_ptr().cast(), 2) }.unwrap();
    common::glibc_kind_word(sem.table_lock()).store(kind, SeqCst);
    let corrupt = |r: shmsync::Result<()>, what: &str| match r {
        Err(Error::Corrupt(why)) => assert!(why.contains("kind"), "{what}: {why}"),
        other => panic!("{what}: {other:?}, not Corrupt"),
    };
    corrupt(sem.try_acquire().map(drop), "try_acquire");
    corrupt(sem.acquire().map(drop), "acquire");
    corrupt(
        sem.acquire_timeout(Duration::from_secs(1)).map(drop),
        "acquire_timeout",
    );
    corrupt(sem.reclaim_dead().map(drop), "reclaim_dead");
    // SAFETY: valid, READY and outlives the reference.
    corrupt(
        unsafe { LeasedSemaphore::<64>::attach(seg.as_ptr().cast()) }.map(drop),
        "leased attach",
    );

    // SAFETY: the second half of the mapping, 8-aligned, unused by anything else.
    let seq: &SeqLock<u64> = unsafe { SeqLock::init_at(seg.as_ptr().add(4096).cast(), 5) }.unwrap();
    common::glibc_kind_word(seq.writer_lock()).store(kind, SeqCst);
    match seq.write(|v| *v += 1) {
        Err(SeqLockError::Lock(RawLockError::Corrupt { found, .. })) => assert_eq!(found, kind),
        other => panic!("seqlock write: {other:?}, not Corrupt"),
    }
    assert_eq!(seq.read(), 5);
    // SAFETY: valid, READY and outlives the reference.
    match unsafe { SeqLock::<u64>::attach(seg.as_ptr().add(4096).cast()) } {
        Err(Error::Corrupt(_)) => {}
        other => panic!("seqlock attach: {other:?}, not Corrupt"),
    }
}

#[test]
fn embedded_locks_refuse_a_corrupt_kind_word() {
    run_child("bad_kind_tables", &[]);
}

/// Child (args: region name): holds three of four permits, then a forked process takes
/// the lease table's lock and is stopped. `try_acquire` reports would-block; a dropped
/// permit returns within its bound leaving its lease recorded; `release` hands its
/// permit back, or, converted into `Error`, leaves the lease recorded; once the holder
/// is killed everything works again. Exits holding the two leases left recorded, which
/// the parent reclaims.
fn stopped_table_holder(args: &[String]) {
    let region = Region::open(&Location::parse(&args[0]).unwrap()).unwrap();
    let sem: &LeasedSemaphore = region.get("sem").unwrap();
    let dropped = sem.acquire().unwrap();
    let released = sem.acquire().unwrap();
    let converted = sem.acquire().unwrap();
    let mut holder = fork_holder(sem.table_lock());
    holder.signal(libc::SIGSTOP);
    common::wait_until(common::WATCHDOG, "holder stopped", || {
        common::all_threads_stopped(holder.pid())
    });

    // Would-block, not a wait for the stopped holder (a permit is free).
    assert_eq!(sem.value(), 1);
    assert!(matches!(sem.try_acquire(), Err(Error::WouldBlock(_))));

    // A drop gives up after its bound and leaves the lease recorded.
    let start = Instant::now();
    drop(dropped);
    assert!(start.elapsed() >= RELEASE_WAIT, "{:?}", start.elapsed());
    assert_eq!(sem.value(), 1);

    // `release` reports the same and hands the permit back.
    let err = released.release().unwrap_err();
    assert!(matches!(err.error(), Error::TimedOut(_)), "{err}");
    let released = err.into_permit();
    assert_eq!(sem.value(), 1);

    // Converted into the crate's error (as `?` does), the lease stays recorded.
    let err: Error = converted.release().unwrap_err().into();
    assert!(matches!(err, Error::TimedOut(_)), "{err}");
    assert_eq!(sem.value(), 1);

    // The holder runs on, then dies holding the lock: everything works again.
    holder.signal(libc::SIGCONT);
    holder.kill();
    released.release().expect("release after the holder died");
    assert_eq!(sem.value(), 2);
    let me = std::process::id();
    let leases = sem.leases().unwrap();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!((leases[0].identity.pid, leases[0].permits), (me, 2));
    let p = sem.try_acquire().expect("a free permit");
    drop(p);
    assert_eq!(sem.value(), 2);
    // Nothing is reclaimed from a live process.
    assert_eq!(sem.reclaim_dead().unwrap().permits(), 0);
}

#[test]
fn stopped_table_holder_blocks_neither_try_acquire_nor_a_permit_drop() {
    let name = common::ShmName::new("stopped");
    let location = Location::parse(name.as_str()).unwrap();
    let region = Region::create(&location, 1 << 16).unwrap();
    let sem: &LeasedSemaphore = region.get_or_init("sem", 4).unwrap();
    let mut child = common::spawn("stopped_table_holder", &[name.as_str()]);
    let pid = child.pid() as u32;
    child.expect_success(common::WATCHDOG);
    // The leases of the dropped and the converted permit stayed recorded until their
    // process was gone.
    let reclaimed = sem.reclaim_dead().unwrap();
    assert_eq!(reclaimed.holders.len(), 1, "{reclaimed:?}");
    assert_eq!(reclaimed.holders[0].0.pid, pid);
    assert_eq!(reclaimed.permits(), 2);
    assert_eq!(sem.value(), 4);
}

#[test]
fn names_with_control_characters_are_refused() {
    let region = Region::from_segment(Segment::anonymous(1 << 16).unwrap()).unwrap();
    for name in [
        "a\u{1b}[2Kforged", // ESC: a terminal escape
        "bell\u{7}",
        "nl\nx",
        "tab\tx",
        "del\u{7f}",
        "csi\u{9b}2K", // C1 control (CSI)
        "\u{85}",      // C1 control (NEL)
    ] {
        match region.get_or_init::<Semaphore>(name, 0) {
            Err(Error::InvalidName { name: n, reason }) => {
                assert_eq!(n, name);
                assert!(reason.contains("control character"), "{reason}");
            }
            other => panic!("{name:?}: {other:?}, not InvalidName"),
        }
        assert!(matches!(
            region.get::<Semaphore>(name),
            Err(Error::InvalidName { .. })
        ));
    }
    assert!(region.entries().unwrap().is_empty());
    // Printable non-ASCII names are fine.
    region.get_or_init::<Semaphore>("café-€-名前", 1).unwrap();
    assert_eq!(region.entries().unwrap().len(), 1);
}
