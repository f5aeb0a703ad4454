//! Loom models of the condvar protocol (sequence word + futex) with the robust mutex.
//!
//! The futex model is faithful: a waiter stays queued until a wake removes it, so a lost
//! wakeup shows up as a deadlock (every thread blocked), which loom reports.
//!
//! Run: `RUSTFLAGS="--cfg shmsync_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p
//! shmsync-loom-tests --release --target-dir target/loom --test condvar`
#![cfg(shmsync_loom)]

use loom::sync::Arc;
use loom::thread;
use shmsync::{Condvar, RobustMutex};

type Shared = Arc<(RobustMutex<u32>, Condvar)>;

fn shared() -> Shared {
    Arc::new((RobustMutex::new(0), Condvar::new()))
}

/// Waits (checking under the mutex) until the value is non-zero.
fn wait_for_flag(s: &Shared) {
    let (m, cv) = &**s;
    let g = m.lock().unwrap();
    let g = cv.wait_while(g, |v| *v == 0).unwrap();
    assert_ne!(*g, 0);
}

/// One waiter, a notifier that sets the flag under the mutex and then notify_one: the
/// waiter always finishes, whatever the interleaving (no lost wakeup).
#[test]
fn no_lost_wakeup_with_notify_one() {
    loom::model(|| {
        let s = shared();
        let s2 = s.clone();
        let waiter = thread::spawn(move || wait_for_flag(&s2));
        *s.0.lock().unwrap() = 1;
        s.1.notify_one();
        waiter.join().unwrap();
    });
}

/// Same, with the notification sent while still holding the mutex.
#[test]
fn no_lost_wakeup_when_notifying_under_the_lock() {
    loom::model(|| {
        let s = shared();
        let s2 = s.clone();
        let waiter = thread::spawn(move || wait_for_flag(&s2));
        let mut g = s.0.lock().unwrap();
        *g = 1;
        s.1.notify_one();
        drop(g);
        waiter.join().unwrap();
    });
}

/// Two waiters and one notify_all: both always finish.
#[test]
fn notify_all_releases_two_waiters() {
    loom::model(|| {
        let s = shared();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || wait_for_flag(&s))
            })
            .collect();
        *s.0.lock().unwrap() = 1;
        s.1.notify_all();
        for w in waiters {
            w.join().unwrap();
        }
    });
}

/// Two waiters, each needing one token; two (token, notify_one) pairs. Every
/// notify_one must wake at least one waiter that still needs a token, or one waiter
/// sleeps forever.
#[test]
fn each_notify_one_wakes_at_least_one_waiter() {
    loom::model(|| {
        let s = shared();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || {
                    let (m, cv) = &*s;
                    let g = m.lock().unwrap();
                    let mut g = cv.wait_while(g, |tokens| *tokens == 0).unwrap();
                    *g -= 1;
                })
            })
            .collect();
        for _ in 0..2 {
            *s.0.lock().unwrap() += 1;
            s.1.notify_one();
        }
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(*s.0.lock().unwrap(), 0);
    });
}
