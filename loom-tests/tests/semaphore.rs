//! Loom models of the semaphore protocol: no lost wakeup, permits conserved, timeouts
//! consume nothing.
#![cfg(shmsync_loom)]

use loom::sync::Arc;
use loom::thread;
use shmsync::{SemError, Semaphore};
use std::time::Duration;

/// A deadline the real clock never reaches during the model, so only the model's
/// simulated timeout can end a timed wait (keeps executions deterministic).
fn far() -> std::time::Instant {
    std::time::Instant::now() + Duration::from_secs(3600)
}

#[test]
fn post_wakes_a_blocked_waiter() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let s = sem.clone();
        let t = thread::spawn(move || s.wait());
        sem.post().unwrap();
        // A lost wakeup would leave `t` asleep forever: loom reports the deadlock.
        t.join().unwrap();
        assert_eq!(sem.value(), 0);
        assert_eq!(sem.sleepers(), 0);
    });
}

#[test]
fn two_waiters_two_posters() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = sem.clone();
                thread::spawn(move || s.wait())
            })
            .collect();
        let s = sem.clone();
        let poster = thread::spawn(move || s.post().unwrap());
        sem.post().unwrap();
        poster.join().unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(sem.value(), 0);
    });
}

#[test]
fn post_n_wakes_k_waiters() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = sem.clone();
                thread::spawn(move || s.wait())
            })
            .collect();
        sem.post_n(2).unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(sem.value(), 0);
    });
}

#[test]
fn count_is_conserved_with_try_wait() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(1));
        let s = sem.clone();
        let t = thread::spawn(move || s.try_wait().is_ok() as u32);
        sem.post().unwrap();
        let mine = sem.try_wait().is_ok() as u32;
        let theirs = t.join().unwrap();
        // initial + posts - successful waits
        assert_eq!(sem.value(), 1 + 1 - mine - theirs);
    });
}

#[test]
fn timed_out_waiter_consumes_nothing() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let s = sem.clone();
        let t = thread::spawn(move || s.wait_deadline(far()));
        sem.post().unwrap();
        match t.join().unwrap() {
            Ok(()) => assert_eq!(sem.value(), 0),
            Err(e) => {
                assert_eq!(e, SemError::TimedOut);
                assert_eq!(sem.value(), 1, "a timed-out waiter took a permit");
            }
        }
        assert_eq!(sem.sleepers(), 0);
    });
}

#[test]
fn timed_and_untimed_waiters_share_posts() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let s = sem.clone();
        let timed = thread::spawn(move || s.wait_deadline(far()).is_ok() as u32);
        let s = sem.clone();
        let blocking = thread::spawn(move || s.wait());
        sem.post_n(2).unwrap();
        // The blocking waiter must always finish, whatever the timed one did.
        blocking.join().unwrap();
        let got = timed.join().unwrap();
        assert_eq!(sem.value(), 1 - got);
    });
}
