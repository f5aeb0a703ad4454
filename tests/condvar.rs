//! `Condvar` across real processes: producer/consumer, a waiter SIGKILLed while
//! waiting, notify_one waking one of several sleepers, timeouts, and OwnerDied passed
//! through the relock.
//!
//! Forked children only lock, unlock, wait, notify, touch plain shared data and `_exit`.
#![allow(clippy::disallowed_types)]
mod common;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use shmsync::{Condvar, LockError, MutexGuard, RobustMutex, Segment};

/// Offsets in the test segment.
const CV1: usize = 512;
const CV2: usize = 520;
const CTL: usize = 2048;

fn ctl<T>(seg: &Segment, index: usize) -> &T {
    // SAFETY: in bounds (checked by `at`), 8-aligned, zero-filled shared memory used
    // only through this test's atomics; it outlives the borrow of `seg`.
    unsafe { &*common::at::<T>(seg, CTL + 8 * index) }
}

fn place<T: bytemuck::AnyBitPattern>(
    seg: &Segment,
    value: T,
) -> (&RobustMutex<T>, &Condvar, &Condvar) {
    assert!(std::mem::size_of::<RobustMutex<T>>() <= CV1);
    // SAFETY: a fresh anonymous mapping of 4096 bytes; the mutex, the two condvars and
    // the control words do not overlap, and all outlive the borrow of `seg`.
    unsafe {
        (
            RobustMutex::init_at(seg.as_ptr().cast(), value).unwrap(),
            Condvar::init_at(seg.as_ptr().add(CV1).cast()).unwrap(),
            // Zero-filled memory is a valid condvar: attach, not init.
            Condvar::attach(seg.as_ptr().add(CV2).cast()).unwrap(),
        )
    }
}

#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Queue {
    head: u32,
    len: u32,
    closed: u32,
    _pad: u32,
    buf: [u64; 4],
}

#[test]
fn producers_and_consumers_across_processes() {
    const ITEMS: u64 = 2000;
    let seg = Segment::anonymous(4096).unwrap();
    let (m, not_empty, not_full) = place(
        &seg,
        Queue {
            head: 0,
            len: 0,
            closed: 0,
            _pad: 0,
            buf: [0; 4],
        },
    );
    let sums: [&AtomicU64; 2] = [ctl(&seg, 0), ctl(&seg, 1)];
    let counts: [&AtomicU64; 2] = [ctl(&seg, 2), ctl(&seg, 3)];

    let mut producers: Vec<_> = (0..2u64)
        .map(|p| {
            common::fork_child(move || {
                for i in 1..=ITEMS {
                    let Ok(q) = m.lock() else { return 1 };
                    let Ok(mut q) = not_full.wait_while(q, |q| q.len as usize == q.buf.len())
                    else {
                        return 2;
                    };
                    let tail = (q.head + q.len) as usize % q.buf.len();
                    q.buf[tail] = p * ITEMS + i;
                    q.len += 1;
                    drop(q);
                    not_empty.notify_one();
                }
                0
            })
        })
        .collect();
    let mut consumers: Vec<_> = (0..2)
        .map(|c| {
            let (sum, count) = (sums[c], counts[c]);
            common::fork_child(move || loop {
                let Ok(q) = m.lock() else { return 1 };
                let Ok(mut q) = not_empty.wait_while(q, |q| q.len == 0 && q.closed == 0) else {
                    return 2;
                };
                if q.len == 0 {
                    return 0; // closed and drained
                }
                let v = q.buf[q.head as usize];
                q.head = (q.head + 1) % q.buf.len() as u32;
                q.len -= 1;
                drop(q);
                not_full.notify_one();
                sum.fetch_add(v, SeqCst);
                count.fetch_add(1, SeqCst);
            })
        })
        .collect();
    for p in &mut producers {
        p.expect_success(common::WATCHDOG);
    }
    m.lock().unwrap().closed = 1;
    not_empty.notify_all();
    for c in &mut consumers {
        c.expect_success(common::WATCHDOG);
    }
    let n = 2 * ITEMS;
    assert_eq!(counts.iter().map(|c| c.load(SeqCst)).sum::<u64>(), n);
    assert_eq!(
        sums.iter().map(|s| s.load(SeqCst)).sum::<u64>(),
        n * (n + 1) / 2
    );
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Gate {
    /// Incremented under the lock by each waiter just before it first waits.
    waiting: u32,
    /// Permits to leave; each woken waiter takes one.
    tokens: u32,
    /// Waiters that took a token and left.
    done: u32,
    flag: u32,
}

/// Child body: wait for a token, take it, count itself done.
fn gate_waiter(m: &RobustMutex<Gate>, cv: &Condvar) -> i32 {
    let Ok(mut g) = m.lock() else { return 1 };
    g.waiting += 1;
    let Ok(mut g) = cv.wait_while(g, |g| g.tokens == 0) else {
        return 2;
    };
    g.tokens -= 1;
    g.done += 1;
    0
}

/// Waits until `n` waiters have registered and released the mutex, and all `pids`
/// sleep (in the condvar's futex: the mutex is free and nothing else blocks them).
fn until_asleep(m: &RobustMutex<Gate>, n: u32, pids: &[i32]) {
    common::wait_until(common::WATCHDOG, "waiters asleep in the condvar", || {
        // Taking the lock proves each registered waiter has left its critical section
        // (it released the mutex inside `wait`).
        m.lock().unwrap().waiting == n && pids.iter().all(|&p| common::proc_state(p) == Some('S'))
    });
}

#[test]
fn a_waiter_killed_while_waiting_consumes_no_notification() {
    let seg = Segment::anonymous(4096).unwrap();
    let (m, cv, _) = place(
        &seg,
        Gate {
            waiting: 0,
            tokens: 0,
            done: 0,
            flag: 0,
        },
    );
    let mut victim = common::fork_child(|| gate_waiter(m, cv));
    until_asleep(m, 1, &[victim.pid()]);
    let mut survivor = common::fork_child(|| gate_waiter(m, cv));
    until_asleep(m, 2, &[victim.pid(), survivor.pid()]);

    victim.kill();
    // The victim died in the condvar, not holding the mutex: no OwnerDied.
    let mut g = m
        .try_lock()
        .expect("the dead waiter left the mutex free and consistent");
    g.tokens = 1;
    drop(g);
    cv.notify_one();
    survivor.expect_success(common::WATCHDOG);
    assert_eq!(
        *m.lock().unwrap(),
        Gate {
            waiting: 2,
            tokens: 0,
            done: 1,
            flag: 0
        }
    );
}

#[test]
fn notify_one_wakes_one_of_three_then_notify_all_the_rest() {
    let seg = Segment::anonymous(4096).unwrap();
    let (m, cv, _) = place(
        &seg,
        Gate {
            waiting: 0,
            tokens: 0,
            done: 0,
            flag: 0,
        },
    );
    let mut waiters: Vec<_> = (0..3)
        .map(|_| common::fork_child(|| gate_waiter(m, cv)))
        .collect();
    let pids: Vec<i32> = waiters.iter().map(|w| w.pid()).collect();
    until_asleep(m, 3, &pids);

    // Enough tokens for everyone: any waiter that wakes leaves, so a notify_one that
    // woke more than one would show as done > 1.
    m.lock().unwrap().tokens = 3;
    cv.notify_one();
    common::wait_until(common::WATCHDOG, "one waiter to leave", || {
        m.lock().unwrap().done >= 1
    });
    std::thread::sleep(Duration::from_millis(100));
    let g = m.lock().unwrap();
    assert_eq!(
        (g.done, g.tokens),
        (1, 2),
        "notify_one woke more than one waiter"
    );
    drop(g);
    let still: Vec<i32> = waiters
        .iter_mut()
        .filter_map(|w| w.try_wait().is_none().then(|| w.pid()))
        .collect();
    assert_eq!(still.len(), 2);
    assert!(still.iter().all(|&p| common::proc_state(p) == Some('S')));

    cv.notify_all();
    for w in &mut waiters {
        w.expect_success(common::WATCHDOG);
    }
    assert_eq!(
        *m.lock().unwrap(),
        Gate {
            waiting: 3,
            tokens: 0,
            done: 3,
            flag: 0
        }
    );
}

#[test]
fn timed_waits_time_out_holding_the_lock_again() {
    let seg = Segment::anonymous(4096).unwrap();
    let (m, cv, _) = place(
        &seg,
        Gate {
            waiting: 0,
            tokens: 0,
            done: 0,
            flag: 0,
        },
    );
    let _w = common::Watchdog::new(common::WATCHDOG, "a timed condvar wait");

    let g = m.lock().unwrap();
    let (g, r) = cv.wait_timeout(g, Duration::from_millis(20)).unwrap();
    assert!(r.timed_out());
    // The lock is held again: a self-relock is refused.
    assert!(matches!(m.try_lock(), Err(LockError::Deadlock)));
    let (g, r) = cv
        .wait_deadline(g, Instant::now() - Duration::from_millis(5))
        .unwrap();
    assert!(r.timed_out(), "a past deadline times out at once");
    let (g, r) = cv.wait_timeout(g, Duration::ZERO).unwrap();
    assert!(r.timed_out());
    let (g, r) = cv
        .wait_timeout_while(g, Duration::from_millis(20), |g| g.flag == 0)
        .unwrap();
    assert!(r.timed_out());
    let (g, r) = cv
        .wait_timeout_while(g, Duration::ZERO, |g| g.flag != 0)
        .unwrap();
    assert!(!r.timed_out(), "a false condition returns without waiting");
    assert!(matches!(m.try_lock(), Err(LockError::Deadlock)));

    // Notified in time: timed_out() is false. The child can lock only once we wait.
    let mut notifier = common::fork_child(|| {
        let Ok(mut g) = m.lock() else { return 1 };
        g.flag = 1;
        drop(g);
        cv.notify_one();
        0
    });
    let (g, r) = cv
        .wait_timeout_while(g, common::WATCHDOG, |g| g.flag == 0)
        .unwrap();
    assert!(!r.timed_out());
    assert_eq!(g.flag, 1);
    drop(g);
    notifier.expect_success(common::WATCHDOG);
}

#[test]
fn the_relock_passes_owner_died_through() {
    let seg = Segment::anonymous(4096).unwrap();
    let (m, cv, _) = place(
        &seg,
        Gate {
            waiting: 0,
            tokens: 0,
            done: 0,
            flag: 0,
        },
    );
    let _w = common::Watchdog::new(common::WATCHDOG, "a wait whose notifier dies");
    let g = m.lock().unwrap();
    // The child gets the lock only once we wait; it sets the flag, notifies, and dies
    // still holding the lock.
    let mut notifier = common::fork_child(|| {
        let Ok(mut g) = m.lock() else { return 1 };
        g.flag = 1;
        cv.notify_one();
        std::mem::forget(g);
        0
    });
    match cv.wait_while(g, |g| g.flag == 0) {
        Err(LockError::OwnerDied(g)) => {
            assert_eq!(g.flag, 1);
            let g: MutexGuard<'_, Gate> = g.make_consistent();
            drop(g);
        }
        other => panic!("expected OwnerDied from the relock, got {other:?}"),
    }
    notifier.expect_success(common::WATCHDOG);
    assert_eq!(m.lock().unwrap().flag, 1);
}
