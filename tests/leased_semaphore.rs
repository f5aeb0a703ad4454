//! The leased semaphore across real processes: a SIGKILLed holder's permits are
//! reclaimed (exactly, and only a dead holder's), a reclaim wakes a blocked acquirer in
//! another process, a reused pid is told apart by its start time, and SIGKILL at any
//! point of acquire/release never makes the derived count drift. Tools read leases
//! without the table lock and reclaim with a deadline or past a dead lock owner the
//! kernel never marked; untimed waiters survive a lost wake-up, and a timed-out waiter
//! does not stay registered.
#![allow(clippy::disallowed_types)]
mod common;

use std::time::Duration;

use shmsync::{
    Acquired, Error, LeasedSemaphore, Liveness, MutexState, ProcessIdentity, RawRobustMutex,
    Segment,
};

#[test]
fn child_role() {
    common::dispatch(&[
        ("hold", hold),
        ("acquire_once", acquire_once),
        ("churn", churn),
        ("hold_table", hold_table),
        ("hold_table_and_die_unlisted", hold_table_and_die_unlisted),
    ]);
}

fn attach(seg: &Segment) -> &LeasedSemaphore {
    // SAFETY: the parent placed a READY leased semaphore at offset 0; the mapping
    // outlives the reference.
    unsafe { LeasedSemaphore::attach(seg.as_ptr().cast()) }.unwrap()
}

/// Child: acquires `args[1]` permits and keeps them until killed.
fn hold(args: &[String]) {
    let seg = Segment::posix_open(&args[0]).unwrap();
    let sem = attach(&seg);
    for _ in 0..args[1].parse::<u32>().unwrap() {
        sem.acquire().unwrap().forget();
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Child: blocks for one permit, returns it, exits.
fn acquire_once(args: &[String]) {
    let seg = Segment::posix_open(&args[0]).unwrap();
    let sem = attach(&seg);
    let p = sem.acquire_timeout(common::WATCHDOG).unwrap();
    drop(p);
}

/// Child: acquires and releases as fast as it can, holding 0–2 permits, until killed.
fn churn(args: &[String]) {
    let seg = Segment::posix_open(&args[0]).unwrap();
    let sem = attach(&seg);
    loop {
        let a = sem.acquire().unwrap();
        let b = sem.try_acquire().unwrap();
        drop(a);
        drop(b);
    }
}

/// Child: takes one permit for good, then holds the table lock until killed.
fn hold_table(args: &[String]) {
    let seg = Segment::posix_open(&args[0]).unwrap();
    let sem = attach(&seg);
    sem.acquire().unwrap().forget();
    assert_eq!(sem.table_lock().lock(), Ok(Acquired::Clean));
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Child: takes one permit for good, locks the table, then replaces this thread's
/// robust list with an empty one and exits: the kernel never marks the table lock
/// owner-died (as when a process held more than 2048 robust locks).
fn hold_table_and_die_unlisted(args: &[String]) {
    let seg = Segment::posix_open(&args[0]).unwrap();
    let sem = attach(&seg);
    sem.acquire().unwrap().forget();
    assert_eq!(sem.table_lock().lock(), Ok(Acquired::Clean));
    common::exit_without_robust_list();
}

fn create(seg: &Segment, capacity: u32) -> &LeasedSemaphore {
    // SAFETY: a fresh, exclusive 4096-byte mapping (larger than the object) that
    // outlives the reference.
    unsafe { LeasedSemaphore::init_at(seg.as_ptr().cast(), capacity) }.unwrap()
}

fn posix(name: &common::ShmName) -> Segment {
    Segment::posix_create(name.as_str(), 4096).unwrap()
}

fn holder_pid(sem: &LeasedSemaphore, pid: i32) -> Option<(u32, Liveness)> {
    sem.leases()
        .unwrap()
        .into_iter()
        .find(|l| l.identity.pid == pid as u32)
        .map(|l| (l.permits, l.liveness))
}

#[test]
fn a_killed_holders_permits_are_reclaimed_and_a_live_holders_are_not() {
    let name = common::ShmName::new("lease");
    let seg = posix(&name);
    let sem = create(&seg, 4);
    let mine = sem.acquire().unwrap();
    let mut child = common::spawn("hold", &[name.as_str(), "2"]);
    common::wait_until(common::WATCHDOG, "the child to hold 2 permits", || {
        holder_pid(sem, child.pid()) == Some((2, Liveness::Alive))
    });
    assert_eq!(sem.value(), 1);
    // Both alive: nothing to reclaim.
    assert!(sem.reclaim_dead().unwrap().holders.is_empty());
    child.kill();
    assert_eq!(holder_pid(sem, child.pid()), Some((2, Liveness::Dead)));
    let reclaimed = sem.reclaim_dead().unwrap();
    assert_eq!(reclaimed.holders.len(), 1);
    assert_eq!(reclaimed.holders[0].0.pid, child.pid() as u32);
    assert_eq!(reclaimed.holders[0].1, 2);
    assert_eq!(reclaimed.permits(), 2);
    assert_eq!(sem.value(), 3);
    // Our own lease is untouched and still ours to release.
    assert_eq!(
        holder_pid(sem, std::process::id() as i32),
        Some((1, Liveness::Alive))
    );
    drop(mine);
    assert_eq!(sem.value(), 4);
    assert!(sem.leases().unwrap().is_empty());
}

#[test]
fn a_reclaim_wakes_an_acquirer_blocked_in_another_process() {
    let name = common::ShmName::new("leasewake");
    let seg = posix(&name);
    let sem = create(&seg, 1);
    let mut holder = common::spawn("hold", &[name.as_str(), "1"]);
    common::wait_until(common::WATCHDOG, "the holder", || sem.value() == 0);
    let mut waiter = common::spawn("acquire_once", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "the waiter to sleep", || {
        sem.waiters() == 1
    });
    holder.kill();
    assert_eq!(sem.reclaim_dead().unwrap().permits(), 1);
    waiter.expect_success(common::WATCHDOG);
    assert_eq!((sem.value(), sem.waiters()), (1, 0));
}

#[test]
fn a_reused_pid_is_told_apart_by_start_time() {
    let seg = Segment::anonymous(4096).unwrap();
    // SAFETY: fresh, exclusive mapping that outlives `sem`.
    let sem: &LeasedSemaphore =
        unsafe { LeasedSemaphore::init_at(seg.as_ptr().cast(), 5) }.unwrap();
    let me = ProcessIdentity::current().unwrap();
    // An earlier process that had our pid: same pid, other start time.
    let ghost = ProcessIdentity {
        start_time: me.start_time.wrapping_sub(1),
        ..me
    };
    // A holder in another pid namespace: its liveness cannot be checked from here.
    let foreign = ProcessIdentity {
        pid_ns: me.pid_ns ^ 1,
        ..me
    };
    sem.acquire_as(ghost, None).unwrap().forget();
    sem.acquire_as(ghost, None).unwrap().forget();
    sem.acquire_as(foreign, None).unwrap().forget();
    let real = sem.acquire().unwrap();
    assert_eq!(sem.leases().unwrap().len(), 3);
    assert_eq!(sem.value(), 1);
    let reclaimed = sem.reclaim_dead().unwrap();
    assert_eq!(reclaimed.holders, vec![(ghost, 2)]);
    let leases = sem.leases().unwrap();
    assert_eq!(leases.len(), 2);
    assert!(leases
        .iter()
        .any(|l| l.identity == me && l.liveness == Liveness::Alive));
    assert!(leases
        .iter()
        .any(|l| l.identity == foreign && l.liveness == Liveness::Unknown));
    assert_eq!(sem.value(), 3);
    drop(real);
    assert_eq!(sem.value(), 4);
}

#[test]
fn threads_of_one_process_share_one_lease() {
    let seg = Segment::anonymous(4096).unwrap();
    // SAFETY: fresh, exclusive mapping that outlives `sem`.
    let sem: &LeasedSemaphore =
        unsafe { LeasedSemaphore::init_at(seg.as_ptr().cast(), 2) }.unwrap();
    let _w = common::Watchdog::new(common::WATCHDOG, "threads sharing a lease");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..300 {
                    let p = sem.acquire().unwrap();
                    assert!(sem.leases().unwrap().len() == 1);
                    drop(p);
                }
            });
        }
    });
    assert_eq!(sem.value(), 2);
    assert!(sem.leases().unwrap().is_empty());
    // A permit moved to another thread is still released by this process.
    let p = sem.acquire().unwrap();
    std::thread::spawn(move || drop(p)).join().unwrap();
    assert_eq!(sem.value(), 2);
}

#[test]
fn timeouts_try_and_a_full_table() {
    let seg = Segment::anonymous(4096).unwrap();
    // SAFETY: fresh, exclusive mapping that outlives `sem`.
    let sem: &LeasedSemaphore<2> =
        unsafe { LeasedSemaphore::init_at(seg.as_ptr().cast(), 3) }.unwrap();
    let id = |pid| ProcessIdentity::new(pid, 1, 1);
    let a = sem.acquire_as(id(1), None).unwrap();
    let b = sem.acquire_as(id(2), None).unwrap();
    // Two slots, both in use by other holders: a third holder finds the table full.
    assert!(matches!(
        sem.acquire_as(id(3), None),
        Err(Error::Full("lease table"))
    ));
    let c = sem.acquire_as(id(2), None).unwrap();
    assert_eq!(sem.value(), 0);
    assert!(matches!(
        sem.try_acquire_as(id(1)),
        Err(Error::WouldBlock(_))
    ));
    let t = std::time::Instant::now();
    assert!(matches!(
        sem.acquire_timeout(Duration::from_millis(20)),
        Err(Error::TimedOut(_))
    ));
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert!(matches!(
        sem.acquire_timeout(Duration::ZERO),
        Err(Error::TimedOut(_))
    ));
    assert_eq!(sem.waiters(), 0);
    drop((a, b, c));
    assert_eq!(sem.value(), 3);
    let past = std::time::Instant::now() - Duration::from_secs(1);
    drop(sem.acquire_deadline(past).unwrap());
    drop(sem.acquire_timeout(Duration::MAX).unwrap());
    assert_eq!(sem.value(), 3);
}

#[test]
fn attach_validates_the_header() {
    let seg = Segment::anonymous(8192).unwrap();
    // SAFETY: every pointer below is in bounds of the 8192-byte mapping (or misaligned,
    // which is reported before any access), and the mapping outlives the test.
    unsafe {
        let zero = LeasedSemaphore::<64>::attach(seg.as_ptr().cast());
        assert!(matches!(zero, Err(Error::Uninitialized { .. })), "{zero:?}");
        RawRobustMutex::init_at(seg.as_ptr().cast()).unwrap();
        let mutex = LeasedSemaphore::<64>::attach(seg.as_ptr().cast());
        assert!(matches!(mutex, Err(Error::WrongKind { .. })), "{mutex:?}");
        let at = seg.as_ptr().add(4096).cast();
        LeasedSemaphore::<64>::init_at(at, 1).unwrap();
        assert!(LeasedSemaphore::<64>::attach(at).is_ok());
        let other = LeasedSemaphore::<8>::attach(at.cast());
        assert!(
            matches!(
                other,
                Err(Error::FormatMismatch {
                    field: "lease table slots",
                    expected: 8,
                    found: 64
                })
            ),
            "{other:?}"
        );
        let odd = LeasedSemaphore::<64>::attach(seg.as_ptr().add(4).cast());
        assert!(matches!(odd, Err(Error::Misaligned { .. })));
        let big = LeasedSemaphore::<64>::init_at(at, u32::MAX);
        assert!(matches!(big, Err(Error::InvalidArgument(_))));
    }
}

#[test]
fn sigkill_during_acquire_and_release_never_makes_the_count_drift() {
    const CAPACITY: u32 = 3;
    let name = common::ShmName::new("leasekill");
    let seg = posix(&name);
    let sem = create(&seg, CAPACITY);
    for round in 0..6u64 {
        let mut children: Vec<_> = (0..2)
            .map(|_| common::spawn("churn", &[name.as_str()]))
            .collect();
        common::wait_until(common::WATCHDOG, "the churners to start", || {
            sem.leases().unwrap().len() == 2
        });
        // Kill at a varying point in their loops, sometimes inside the table lock.
        std::thread::sleep(Duration::from_micros(300 + round * 1700));
        for c in &mut children {
            c.kill();
        }
        let _w = common::Watchdog::new(common::WATCHDOG, "reclaim after SIGKILL");
        sem.reclaim_dead().unwrap();
        assert_eq!(sem.value(), CAPACITY, "round {round}: the count drifted");
        assert!(sem.leases().unwrap().is_empty());
        // The table still works (including after an owner-died table lock).
        let p = sem.acquire_timeout(common::WATCHDOG).unwrap();
        assert_eq!(sem.value(), CAPACITY - 1);
        drop(p);
    }
}

#[test]
fn tools_read_leases_and_reclaim_with_a_deadline_while_a_live_process_holds_the_table() {
    let name = common::ShmName::new("leasetool");
    let seg = posix(&name);
    let sem = create(&seg, 2);
    let mut child = common::spawn("hold_table", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "the child to hold the table lock", || {
        matches!(sem.table_lock().state(), MutexState::Locked { .. })
    });
    let _w = common::Watchdog::new(common::WATCHDOG, "tools on a held table lock");
    // The reader takes no lock: it answers although the table lock is held.
    let leases = sem.leases().unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].identity.pid, child.pid() as u32);
    assert_eq!(
        (leases[0].permits, leases[0].liveness),
        (1, Liveness::Alive)
    );
    // Reclaim gives up at its deadline instead of blocking; the try form at once.
    let r = sem.reclaim_dead_timeout(Duration::from_millis(50));
    assert!(
        matches!(r, Err(Error::TimedOut("lease table lock"))),
        "{r:?}"
    );
    let r = sem.reclaim_dead_deadline(std::time::Instant::now() + Duration::from_millis(50));
    assert!(
        matches!(r, Err(Error::TimedOut("lease table lock"))),
        "{r:?}"
    );
    let r = sem.try_reclaim_dead();
    assert!(
        matches!(r, Err(Error::WouldBlock("lease table lock"))),
        "{r:?}"
    );
    // Once the holder is dead, reclaim gets the owner-died lock and the permit back.
    child.kill();
    let r = sem.reclaim_dead_timeout(common::WATCHDOG).unwrap();
    assert_eq!(r.holders.len(), 1);
    assert_eq!(r.holders[0].0.pid, child.pid() as u32);
    assert_eq!(sem.value(), 2);
    drop(sem.acquire_timeout(common::WATCHDOG).unwrap());
}

#[test]
fn reclaim_gets_past_a_dead_table_lock_owner_the_kernel_never_marked() {
    let name = common::ShmName::new("leaseunlisted");
    let seg = posix(&name);
    let sem = create(&seg, 1);
    common::spawn("hold_table_and_die_unlisted", &[name.as_str()]).expect_success(common::WATCHDOG);
    match sem.table_lock().state() {
        MutexState::Locked { owner, .. } => assert_eq!(owner, Liveness::Dead),
        other => panic!("expected a table lock held by a dead owner, got {other:?}"),
    }
    let _w = common::Watchdog::new(common::WATCHDOG, "reclaim past an unmarked dead owner");
    let r = sem.reclaim_dead().unwrap();
    assert_eq!(r.permits(), 1);
    assert_eq!(sem.value(), 1);
    drop(sem.acquire_timeout(common::WATCHDOG).unwrap());
}

#[test]
fn a_waiter_timing_out_on_a_contended_table_lock_does_not_stay_registered() {
    let seg = Segment::anonymous(4096).unwrap();
    // SAFETY: fresh, exclusive mapping that outlives `sem`.
    let sem: &LeasedSemaphore =
        unsafe { LeasedSemaphore::init_at(seg.as_ptr().cast(), 1) }.unwrap();
    let _w = common::Watchdog::new(common::WATCHDOG, "a timed-out waiter");
    let held = sem.acquire().unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| sem.acquire_timeout(Duration::from_millis(100)).map(drop));
        common::wait_until(common::WATCHDOG, "the waiter to sleep", || {
            sem.waiters() == 1
        });
        // Hold the table lock until the waiter has given up: its deadline passes while
        // it is registered and the lock is contended.
        let lock = sem.table_lock();
        assert_eq!(lock.lock(), Ok(Acquired::Clean));
        let r = waiter.join().unwrap();
        // SAFETY: locked by this thread just above.
        assert_eq!(unsafe { lock.unlock() }, Ok(()));
        assert!(matches!(r, Err(Error::TimedOut(_))), "{r:?}");
    });
    assert_eq!(sem.waiters(), 0);
    drop(held);
    assert_eq!(sem.value(), 1);
}

#[test]
fn an_untimed_waiter_recovers_from_a_lost_wake_up() {
    /// Offset of `waiters` in the `#[repr(C)]` layout: header (24), robust mutex (64),
    /// capacity (4), generation (4).
    const WAITERS_OFFSET: usize = 96;
    let seg = Segment::anonymous(4096).unwrap();
    // SAFETY: fresh, exclusive mapping that outlives `sem`.
    let sem: &LeasedSemaphore =
        unsafe { LeasedSemaphore::init_at(seg.as_ptr().cast(), 1) }.unwrap();
    let _w = common::Watchdog::new(common::WATCHDOG, "an untimed waiter after a lost wake");
    let held = sem.acquire().unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| drop(sem.acquire().unwrap()));
        common::wait_until(common::WATCHDOG, "the waiter to sleep", || {
            sem.waiters() == 1
        });
        // Lose the waiter's registration, so the release below skips its FUTEX_WAKE
        // (as a wake lost to a killed process would be).
        // SAFETY: `waiters` is an aligned u32 inside the live object in `seg`, which
        // outlives this borrow; every access to it is atomic.
        let waiters = unsafe { &*common::at::<std::sync::atomic::AtomicU32>(&seg, WAITERS_OFFSET) };
        assert_eq!(waiters.swap(0, std::sync::atomic::Ordering::SeqCst), 1);
        drop(held);
        // The waiter's capped sleep ends, it looks again and takes the permit.
        waiter.join().unwrap();
    });
    assert_eq!((sem.value(), sem.waiters()), (1, 0));
}
