//! Loom models of the lease table: acquire/release with blocking, reclaim of a dead
//! holder's permits waking a waiter, and repair after a holder died inside the table
//! lock.
#![cfg(shmsync_loom)]

use loom::sync::Arc;
use loom::thread;
use shmsync::{LeasedSemaphore, ProcessIdentity};

/// A fake process identity; the models decide which ones are "dead".
fn id(pid: u32) -> ProcessIdentity {
    ProcessIdentity {
        pid,
        _pad: 0,
        start_time: u64::from(pid) * 10,
        pid_ns: 1,
    }
}

#[test]
fn blocked_acquirer_is_woken_by_release() {
    loom::model(|| {
        let sem = Arc::new(LeasedSemaphore::<2>::new(1));
        let s = sem.clone();
        let t = thread::spawn(move || {
            let p = s.acquire_as(id(2), None).unwrap();
            drop(p);
        });
        let p = sem.acquire_as(id(1), None).unwrap();
        drop(p);
        t.join().unwrap();
        assert_eq!(sem.value(), 1);
    });
}

#[test]
fn reclaiming_a_dead_holder_wakes_a_waiter() {
    loom::model(|| {
        let sem = Arc::new(LeasedSemaphore::<2>::new(1));
        // Process 1 takes the only permit and "dies" holding it.
        sem.acquire_as(id(1), None).unwrap().forget();
        let s = sem.clone();
        let t = thread::spawn(move || {
            let p = s.acquire_as(id(2), None).unwrap();
            assert_eq!(p.identity(), id(2));
            drop(p);
        });
        let r = sem.reclaim_dead_with(|i| i.pid == 1).unwrap();
        assert_eq!(r.holders, vec![(id(1), 1)]);
        t.join().unwrap();
        assert_eq!(sem.value(), 1);
        // Nothing is left to reclaim, and the live holder's lease was never touched.
        assert!(sem
            .reclaim_dead_with(|i| i.pid == 1)
            .unwrap()
            .holders
            .is_empty());
    });
}

#[test]
fn live_holder_is_not_reclaimed_concurrently() {
    loom::model(|| {
        let sem = Arc::new(LeasedSemaphore::<2>::new(2));
        let s = sem.clone();
        let t = thread::spawn(move || {
            let p = s.acquire_as(id(2), None).unwrap();
            drop(p);
        });
        sem.acquire_as(id(1), None).unwrap().forget();
        let r = sem.reclaim_dead_with(|i| i.pid == 1).unwrap();
        assert_eq!(r.holders, vec![(id(1), 1)]);
        t.join().unwrap();
        assert_eq!(sem.value(), 2);
    });
}

#[test]
fn holder_dying_inside_the_table_lock_is_repaired() {
    loom::model(|| {
        let sem = Arc::new(LeasedSemaphore::<2>::new(1));
        let p = sem.acquire_as(id(1), None).unwrap();
        let s = sem.clone();
        let t = thread::spawn(move || {
            drop(s.acquire_as(id(2), None).unwrap());
        });
        // Another process dies while holding the table lock.
        let lock = sem.table_lock();
        let _ = lock.lock().unwrap();
        // SAFETY: held by this thread just above.
        unsafe { lock.abandon() };
        drop(p);
        t.join().unwrap();
        assert_eq!(sem.value(), 1);
    });
}
