//! `RobustMutex<T>` across real processes: holders SIGKILLed while holding, waiters
//! racing for the dead owner's lock, not-recoverable mutexes, timeouts, contention, bad
//! memory, and pid namespaces.
//!
//! Forked children only lock, unlock, touch plain shared data and `_exit` (async-signal
//! safe); the pid-namespace test re-executes the test binary instead.
#![allow(clippy::disallowed_types)]
mod common;

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use shmsync::{Error, Kind, Liveness, LockError, MutexGuard, MutexState, RobustMutex, Segment};

#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Pair {
    a: u64,
    b: u64,
}

static_assertions::assert_not_impl_any!(MutexGuard<'static, u64>: Send);
static_assertions::assert_not_impl_any!(shmsync::OwnerDiedGuard<'static, u64>: Send);
static_assertions::assert_impl_all!(RobustMutex<u64>: Send, Sync);

/// Offset of the test's own bookkeeping words, past the mutex.
const CTL: usize = 2048;

fn ctl<T>(seg: &Segment, index: usize) -> &T {
    // SAFETY: in bounds (checked by `at`), 8-aligned, zero-filled shared memory that only
    // this test's atomics use; it outlives the borrow of `seg`.
    unsafe { &*common::at::<T>(seg, CTL + 8 * index) }
}

fn new_pair_mutex(seg: &Segment) -> &RobustMutex<Pair> {
    // SAFETY: a fresh anonymous mapping; the mutex takes its first bytes and outlives
    // the borrow of `seg`.
    unsafe { RobustMutex::init_at(seg.as_ptr().cast(), Pair { a: 0, b: 0 }) }.unwrap()
}

/// Child body: lock, break the invariant (`a != b`), say so, and sleep until killed.
fn hold_and_sleep(m: &RobustMutex<Pair>, locked: &AtomicU32) -> i32 {
    let Ok(mut g) = m.lock() else { return 3 };
    g.a += 1;
    locked.store(1, SeqCst);
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// Outcome codes the children record in shared memory.
fn code<T: bytemuck::AnyBitPattern>(r: Result<MutexGuard<'_, T>, LockError<'_, T>>) -> u32 {
    match r {
        Ok(_) => 1,
        Err(LockError::OwnerDied(_)) => 2,
        Err(LockError::WouldBlock) => 3,
        Err(LockError::TimedOut) => 4,
        Err(LockError::Deadlock) => 5,
        Err(LockError::NotRecoverable) => 6,
        Err(LockError::Os(_)) => 7,
        Err(LockError::Corrupt { .. }) => 8,
        Err(_) => 9,
    }
}
const OK: u32 = 1;
const OWNER_DIED: u32 = 2;
const NOT_RECOVERABLE: u32 = 6;

#[derive(Clone, Copy, Debug)]
enum Method {
    Lock,
    TryLock,
    LockTimeout,
    LockDeadline,
}

fn acquire(
    m: &RobustMutex<Pair>,
    how: Method,
) -> Result<MutexGuard<'_, Pair>, LockError<'_, Pair>> {
    match how {
        Method::Lock => m.lock(),
        Method::TryLock => m.try_lock(),
        Method::LockTimeout => m.lock_timeout(common::WATCHDOG),
        Method::LockDeadline => m.lock_deadline(Instant::now() + common::WATCHDOG),
    }
}

#[test]
fn owner_death_is_reported_by_every_acquiring_path() {
    for how in [
        Method::Lock,
        Method::TryLock,
        Method::LockTimeout,
        Method::LockDeadline,
    ] {
        let seg = Segment::anonymous(4096).unwrap();
        let m = new_pair_mutex(&seg);
        let locked: &AtomicU32 = ctl(&seg, 0);
        let mut holder = common::fork_child(|| hold_and_sleep(m, locked));
        common::wait_until(common::WATCHDOG, "the child to hold the lock", || {
            locked.load(SeqCst) == 1
        });
        assert!(
            matches!(
                m.state(),
                MutexState::Locked {
                    owner: Liveness::Alive,
                    ..
                }
            ),
            "{:?}",
            m.state()
        );
        // Blocking paths are already asleep in the lock when the holder dies (the kill
        // comes from another thread); try_lock finds the dead owner's lock afterwards.
        let killer = match how {
            Method::TryLock => {
                holder.kill();
                assert_eq!(m.state(), MutexState::OwnerDied);
                None
            }
            _ => {
                let pid = holder.pid();
                Some(std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(20));
                    // SAFETY: our own unreaped child (its pid cannot be reused yet).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }))
            }
        };
        let w = common::Watchdog::new(common::WATCHDOG, "lock after the holder's death");
        match acquire(m, how) {
            Err(LockError::OwnerDied(mut g)) => {
                assert_eq!(
                    *g,
                    Pair { a: 1, b: 0 },
                    "{how:?}: the dead owner's half-update"
                );
                assert!(matches!(
                    m.state(),
                    MutexState::Locked {
                        inconsistent: true,
                        ..
                    }
                ));
                g.b = g.a; // repair
                let g = g.make_consistent();
                assert_eq!(*g, Pair { a: 1, b: 1 });
            }
            other => panic!("{how:?}: expected OwnerDied, got {other:?}"),
        }
        drop(w);
        if let Some(k) = killer {
            k.join().unwrap();
        }
        assert_eq!(holder.wait(common::WATCHDOG).signal(), Some(libc::SIGKILL));
        assert_eq!(m.state(), MutexState::Free, "{how:?}");
        let g = acquire(m, how).unwrap_or_else(|e| panic!("{how:?} after repair: {e:?}"));
        assert_eq!(*g, Pair { a: 1, b: 1 });
    }
}

#[test]
fn unrepaired_owner_death_is_not_recoverable_everywhere_until_reinit() {
    let seg = Segment::anonymous(4096).unwrap();
    let m = new_pair_mutex(&seg);
    let locked: &AtomicU32 = ctl(&seg, 0);
    let mut holder = common::fork_child(|| hold_and_sleep(m, locked));
    common::wait_until(common::WATCHDOG, "the child to hold the lock", || {
        locked.load(SeqCst) == 1
    });
    holder.kill();

    match m.lock() {
        Err(LockError::OwnerDied(g)) => drop(g), // no make_consistent
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert_eq!(m.state(), MutexState::NotRecoverable);
    assert!(format!("{m:?}").contains("NotRecoverable"));
    // Every path reports it and leaves the lock free (glibc's trylock would leave it
    // held by this thread; RawRobustMutex undoes that).
    for (how, r) in [
        ("lock", code(m.lock())),
        ("try_lock", code(m.try_lock())),
        ("try_lock again", code(m.try_lock())),
        ("lock_timeout(0)", code(m.lock_timeout(Duration::ZERO))),
        (
            "lock_timeout(1s)",
            code(m.lock_timeout(Duration::from_secs(1))),
        ),
        ("lock_deadline(now)", code(m.lock_deadline(Instant::now()))),
    ] {
        assert_eq!(r, NOT_RECOVERABLE, "{how}");
        assert_eq!(m.state(), MutexState::NotRecoverable, "after {how}");
    }

    // Another process sees the same through every path.
    let results: [&AtomicU32; 3] = [ctl(&seg, 1), ctl(&seg, 2), ctl(&seg, 3)];
    common::fork_child(|| {
        results[0].store(code(m.lock()), SeqCst);
        results[1].store(code(m.try_lock()), SeqCst);
        results[2].store(code(m.lock_timeout(Duration::from_millis(100))), SeqCst);
        0
    })
    .expect_success(common::WATCHDOG);
    assert_eq!(results.map(|r| r.load(SeqCst)), [NOT_RECOVERABLE; 3]);

    // SAFETY: no other process uses the mutex any more (both children are reaped) and
    // this thread does not hold it.
    unsafe { m.reinit() }.unwrap();
    assert_eq!(m.state(), MutexState::Free);
    let g = m.lock().unwrap();
    assert_eq!(*g, Pair { a: 1, b: 0 }, "reinit keeps the data");
    drop(g);
    let after: &AtomicU32 = ctl(&seg, 4);
    common::fork_child(|| {
        let r = m.lock().map(|mut g| {
            g.b = g.a;
        });
        after.store(if r.is_ok() { OK } else { 0 }, SeqCst);
        0
    })
    .expect_success(common::WATCHDOG);
    assert_eq!(after.load(SeqCst), OK);
    assert_eq!(*m.lock().unwrap(), Pair { a: 1, b: 1 });
}

/// Locks through `?` the way the README shows: `into_repair` hands back the guard of
/// an owner-died lock, and every other error propagates as a `shmsync::Error`.
fn lock_and_repair(m: &RobustMutex<Pair>) -> shmsync::Result<Pair> {
    let mut g = match m.try_lock() {
        Ok(g) => g,
        Err(e) => {
            let mut repair = e.into_repair()?;
            repair.b = repair.a;
            repair.make_consistent()
        }
    };
    g.a += 1;
    g.b += 1;
    Ok(*g)
}

#[test]
fn into_repair_keeps_the_owner_died_guard_and_abandon_leaves_the_mutex_unrecoverable() {
    let seg = Segment::anonymous(4096).unwrap();
    let m = new_pair_mutex(&seg);
    let locked: &AtomicU32 = ctl(&seg, 0);
    let _w = common::Watchdog::new(common::WATCHDOG, "into_repair and abandon");

    // A live holder: the error propagates (WouldBlock), nothing changes.
    let mut holder = common::fork_child(|| hold_and_sleep(m, locked));
    common::wait_until(common::WATCHDOG, "the child to hold the lock", || {
        locked.load(SeqCst) == 1
    });
    assert!(matches!(lock_and_repair(m), Err(Error::WouldBlock(_))));
    // The holder dies mid-update: `?` does not lose the guard; the repair runs.
    holder.kill();
    assert_eq!(lock_and_repair(m).unwrap(), Pair { a: 2, b: 2 });
    assert_eq!(m.state(), MutexState::Free);

    // Abandoning is explicit and leaves the mutex not recoverable for everyone.
    locked.store(0, SeqCst);
    let mut holder = common::fork_child(|| hold_and_sleep(m, locked));
    common::wait_until(common::WATCHDOG, "the child to hold the lock", || {
        locked.load(SeqCst) == 1
    });
    holder.kill();
    let e = match m.lock() {
        Err(e) if e.is_owner_died() => e.abandon(),
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    assert!(matches!(e, Error::OwnerDied(_)), "{e}");
    assert_eq!(m.state(), MutexState::NotRecoverable);
    let r = lock_and_repair(m);
    assert!(
        matches!(&r, Err(e) if e.raw_os_error() == Some(libc::ENOTRECOVERABLE)),
        "{r:?}"
    );
}

#[test]
fn exactly_one_of_four_blocked_waiters_gets_owner_died() {
    const N: usize = 4;
    let seg = Segment::anonymous(4096).unwrap();
    let m = new_pair_mutex(&seg);
    let locked: &AtomicU32 = ctl(&seg, 0);
    let ready: &AtomicU32 = ctl(&seg, 1);
    let outcomes: Vec<&AtomicU32> = (0..N).map(|i| ctl(&seg, 2 + i)).collect();

    let mut holder = common::fork_child(|| hold_and_sleep(m, locked));
    common::wait_until(common::WATCHDOG, "the child to hold the lock", || {
        locked.load(SeqCst) == 1
    });
    let mut waiters: Vec<_> = outcomes
        .iter()
        .map(|&slot| {
            common::fork_child(move || {
                ready.fetch_add(1, SeqCst);
                let outcome = match m.lock() {
                    Ok(mut g) => {
                        let c = if g.a == g.b { OK } else { 99 };
                        g.a += 1;
                        g.b += 1;
                        c
                    }
                    Err(LockError::OwnerDied(mut g)) => {
                        g.b = g.a;
                        let mut g = g.make_consistent();
                        g.a += 1;
                        g.b += 1;
                        OWNER_DIED
                    }
                    Err(e) => 10 + code::<Pair>(Err(e)),
                };
                slot.store(outcome, SeqCst);
                0
            })
        })
        .collect();
    // Let every waiter block in the lock before the holder dies.
    common::wait_until(common::WATCHDOG, "four waiters asleep in the lock", || {
        ready.load(SeqCst) == N as u32
            && waiters
                .iter()
                .all(|w| common::proc_state(w.pid()) == Some('S'))
    });
    assert!(matches!(
        m.state(),
        MutexState::Locked { waiters: true, .. }
    ));
    holder.kill();
    for w in &mut waiters {
        w.expect_success(common::WATCHDOG);
    }
    let got: Vec<u32> = outcomes.iter().map(|o| o.load(SeqCst)).collect();
    assert_eq!(
        got.iter().filter(|&&c| c == OWNER_DIED).count(),
        1,
        "{got:?}"
    );
    assert_eq!(got.iter().filter(|&&c| c == OK).count(), N - 1, "{got:?}");
    assert_eq!(
        *m.lock().unwrap(),
        Pair {
            a: 1 + N as u64,
            b: 1 + N as u64
        }
    );
}

#[test]
fn self_relock_past_deadlines_and_zero_timeouts() {
    let seg = Segment::anonymous(4096).unwrap();
    let m = new_pair_mutex(&seg);
    let past = Instant::now() - Duration::from_millis(10);

    let g = m.lock().unwrap();
    assert!(matches!(m.lock(), Err(LockError::Deadlock)));
    assert!(matches!(m.try_lock(), Err(LockError::Deadlock)));
    assert!(matches!(
        m.lock_timeout(Duration::from_secs(1)),
        Err(LockError::Deadlock)
    ));
    assert!(matches!(m.lock_deadline(past), Err(LockError::Deadlock)));
    assert!(format!("{m:?}").contains("Locked"), "{m:?}");
    drop(g);
    assert!(format!("{m:?}").contains("Free"), "{m:?}");

    // A free lock is taken even with no time left.
    drop(m.lock_timeout(Duration::ZERO).unwrap());
    drop(m.lock_deadline(past).unwrap());

    // Held by another process: no time left means an immediate TimedOut.
    let locked: &AtomicU32 = ctl(&seg, 0);
    let mut holder = common::fork_child(|| hold_and_sleep(m, locked));
    common::wait_until(common::WATCHDOG, "the child to hold the lock", || {
        locked.load(SeqCst) == 1
    });
    let _w = common::Watchdog::new(common::WATCHDOG, "a lock call with no time left");
    assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
    assert!(matches!(m.lock_deadline(past), Err(LockError::TimedOut)));
    assert!(matches!(
        m.lock_timeout(Duration::ZERO),
        Err(LockError::TimedOut)
    ));
    assert!(matches!(
        m.lock_timeout(Duration::from_millis(20)),
        Err(LockError::TimedOut)
    ));

    // A zero timeout is a try: it takes the dead owner's lock, with OwnerDied.
    holder.kill();
    match m.lock_timeout(Duration::ZERO) {
        Err(LockError::OwnerDied(mut g)) => {
            g.b = g.a;
            drop(g.make_consistent());
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert_eq!(
        *m.lock_timeout(Duration::ZERO).unwrap(),
        Pair { a: 1, b: 1 }
    );
}

#[test]
fn four_processes_lose_no_increment() {
    const PROCS: usize = 4;
    const ROUNDS: u64 = 20_000;
    let seg = Segment::anonymous(4096).unwrap();
    let m = new_pair_mutex(&seg);
    let mut children: Vec<_> = (0..PROCS)
        .map(|_| {
            common::fork_child(|| {
                for _ in 0..ROUNDS {
                    let Ok(mut g) = m.lock() else { return 1 };
                    // Two plain read-modify-writes: any overlap would lose one or break
                    // the a == b invariant.
                    let a = g.a;
                    g.a = a + 1;
                    g.b += 1;
                }
                0
            })
        })
        .collect();
    for c in &mut children {
        c.expect_success(common::WATCHDOG);
    }
    let g = m.lock().unwrap();
    assert_eq!(
        *g,
        Pair {
            a: PROCS as u64 * ROUNDS,
            b: PROCS as u64 * ROUNDS
        }
    );
}

fn poke32(seg: &Segment, offset: usize, v: u32) -> u32 {
    // SAFETY: inside the mapping, 4-aligned; the header words are atomics, so an atomic
    // store to them is race-free even though the mutex is attached.
    let w = unsafe { &*common::at::<AtomicU32>(seg, offset) };
    w.swap(v, SeqCst)
}

fn attach(seg: &Segment, offset: usize) -> shmsync::Result<&RobustMutex<Pair>> {
    // SAFETY: the mapping is valid for 4096 bytes and outlives the borrow; nothing is
    // being initialized concurrently.
    unsafe { RobustMutex::<Pair>::attach(seg.as_ptr().add(offset).cast()) }
}

#[test]
fn attach_refuses_zeroed_foreign_and_mismatched_memory() {
    let seg = Segment::anonymous(4096).unwrap();
    assert!(matches!(
        attach(&seg, 0),
        Err(Error::Uninitialized {
            expected: Kind::Mutex
        })
    ));
    assert!(matches!(
        attach(&seg, 4),
        Err(Error::Misaligned { align: 8, .. })
    ));
    // SAFETY: null is refused before any access.
    let null = unsafe { RobustMutex::<Pair>::attach(std::ptr::null()) };
    assert!(matches!(null, Err(Error::Misaligned { addr: 0, .. })));

    let m = new_pair_mutex(&seg);
    drop(m.lock().unwrap());
    assert!(attach(&seg, 0).is_ok());

    let old = poke32(&seg, 0, 0xdead_beef);
    assert!(matches!(
        attach(&seg, 0),
        Err(Error::BadMagic { found: 0xdead_beef })
    ));
    poke32(&seg, 0, old);

    let old = poke32(&seg, 4, Kind::Condvar as u32);
    assert!(matches!(
        attach(&seg, 0),
        Err(Error::WrongKind {
            expected: Kind::Mutex,
            found: 2
        })
    ));
    poke32(&seg, 4, old);

    // Format word at offset 8: another pointer width, then another pthread_mutex_t size.
    // SAFETY: inside the mapping, 8-aligned, an atomic header word.
    let format = unsafe { &*common::at::<AtomicU64>(&seg, 8) };
    let good = format.load(SeqCst);
    assert_eq!(good, shmsync::inspect::FORMAT);
    format.store(good ^ (0xc << 16), SeqCst);
    assert!(matches!(
        attach(&seg, 0),
        Err(Error::FormatMismatch {
            field: "pointer width",
            ..
        })
    ));
    format.store((good & !(0xffff << 32)) | (24 << 32), SeqCst);
    assert!(matches!(
        attach(&seg, 0),
        Err(Error::FormatMismatch {
            field: "size of pthread_mutex_t",
            found: 24,
            ..
        })
    ));
    format.store(good, SeqCst);

    // State word at offset 16: still initializing, then garbage.
    let old = poke32(&seg, 16, 1);
    assert!(matches!(
        attach(&seg, 0),
        Err(Error::Uninitialized {
            expected: Kind::Mutex
        })
    ));
    poke32(&seg, 16, 77);
    assert!(matches!(attach(&seg, 0), Err(Error::Corrupt(_))));
    poke32(&seg, 16, old);

    // Arbitrary bytes elsewhere in the segment.
    // SAFETY: offset 1024..1088 is inside the mapping and unused.
    unsafe { std::ptr::write_bytes(seg.as_ptr().add(1024), 0xa5, 64) };
    assert!(matches!(
        attach(&seg, 1024),
        Err(Error::BadMagic { found: 0xa5a5_a5a5 })
    ));

    let m = attach(&seg, 0).unwrap();
    assert_eq!(*m.lock().unwrap(), Pair { a: 0, b: 0 });
}

#[test]
fn child_role() {
    common::dispatch(&[("ns_parent", ns_parent), ("ns_attach", ns_attach)]);
}

/// Exit code of `ns_parent` when the machine refuses a new pid namespace.
const SKIP: i32 = 77;

fn ns_parent(args: &[String]) {
    // SAFETY: unshare changes only this process's namespace for children created later.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        let e = std::io::Error::last_os_error();
        eprintln!("unshare(CLONE_NEWPID): {e}");
        std::process::exit(SKIP);
    }
    // This child is the first process of the new pid namespace.
    common::spawn("ns_attach", &[args[0].as_str()]).expect_success(common::WATCHDOG);
}

fn ns_attach(args: &[String]) {
    assert_eq!(
        shmsync::test_hooks::current_pid(),
        1,
        "not in a new pid namespace"
    );
    let seg = Segment::posix_open(&args[0]).unwrap();
    // SAFETY: the test placed a READY mutex at offset 0; the mapping outlives the call.
    let r = unsafe { RobustMutex::<u64>::attach(seg.as_ptr().cast()) };
    match r {
        Err(Error::PidNamespaceMismatch { recorded, current }) => assert_ne!(recorded, current),
        other => panic!("expected PidNamespaceMismatch, got {other:?}"),
    }
}

#[test]
fn attach_from_another_pid_namespace_is_refused() {
    let name = common::ShmName::new("mxns");
    let seg = Segment::posix_create(name.as_str(), 4096).unwrap();
    // SAFETY: a fresh, exclusive mapping that outlives `m`.
    let m = unsafe { RobustMutex::<u64>::init_at(seg.as_ptr().cast(), 7) }.unwrap();
    // SAFETY: as above; same namespace, so attach succeeds.
    assert!(unsafe { RobustMutex::<u64>::attach(seg.as_ptr().cast()) }.is_ok());
    let status = common::spawn("ns_parent", &[name.as_str()]).wait(common::WATCHDOG);
    if status.code() == Some(SKIP) {
        eprintln!(
            "SKIPPED attach_from_another_pid_namespace_is_refused: unshare(CLONE_NEWPID) refused"
        );
        return;
    }
    assert!(status.success(), "{status:?}");
    assert_eq!(*m.lock().unwrap(), 7);
}

/// glibc's unlock wakes one sleeper. If that one dies before it takes the lock and
/// nobody wakes another (Linux, since 5.5, does when it walks the dead waiter's robust
/// list and finds the word 0 — not when a thread took the lock meanwhile without the
/// waiters bit), the sleepers behind it sleep until someone else sleeps on the lock and
/// unlocks it. The stand-in for the woken waiter is a process that sleeps on the lock
/// word as glibc's waiters do (waiters bit set beside the owner's id) but without a
/// robust list, and exits when woken; the real waiter queued behind it still gets the
/// lock, because its sleeps are capped.
#[test]
fn a_waiter_that_dies_with_the_wake_up_strands_nobody() {
    const FUTEX_WAITERS: u32 = 0x8000_0000;
    let seg = Segment::anonymous(4096).unwrap();
    let m = new_pair_mutex(&seg);
    let got: &AtomicU32 = ctl(&seg, 0);
    let word = common::glibc_lock_word(m.raw());
    let g = m.lock().unwrap();
    let mut stand_in = common::fork_child(|| {
        let seen = word.load(SeqCst);
        let sleeping = seen | FUTEX_WAITERS;
        if seen == 0
            || word
                .compare_exchange(seen, sleeping, SeqCst, SeqCst)
                .is_err()
        {
            return 3;
        }
        // SAFETY: FUTEX_WAIT on a live, aligned word of a shared mapping; no timeout.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                sleeping,
                std::ptr::null::<libc::timespec>(),
            )
        };
        0
    });
    common::wait_until(
        common::WATCHDOG,
        "the stand-in asleep on the lock word",
        || common::proc_state(stand_in.pid()) == Some('S'),
    );
    let mut waiter = common::fork_child(|| match m.lock() {
        Ok(_) => {
            got.store(1, SeqCst);
            0
        }
        Err(_) => 2,
    });
    common::wait_until(common::WATCHDOG, "the waiter asleep behind it", || {
        common::proc_state(waiter.pid()) == Some('S')
    });
    // glibc wakes one sleeper: the stand-in, first in the futex's queue, which leaves.
    drop(g);
    waiter.expect_success(common::WATCHDOG);
    assert_eq!(got.load(SeqCst), 1);
    // Should the wake-up have gone to the waiter instead, the stand-in still sleeps.
    // SAFETY: FUTEX_WAKE on a live, aligned word of a shared mapping.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
    stand_in.expect_success(common::WATCHDOG);
}
