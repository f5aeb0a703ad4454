//! Loom models of the reader-writer lock's protocol: reader registration against a
//! writer's drain (the Dekker pair), the drain's wake-up by the last reader, readers'
//! wake-up by the writer's unlock, reclaim of a dead reader's slot waking the writer,
//! a writer dying mid-write, and a reader dying while it waits in the writer mutex.
//! Runs on the faithful futex model, so a lost wakeup is a reported deadlock.
//!
//! The payload is two words every writer keeps equal: a torn read shows up as unequal
//! words, and loom's cell tracking reports any read racing a write.
#![cfg(shmsync_loom)]

use loom::sync::Arc;
use loom::thread;
use shmsync::{ReadGuard, RobustRwLock, RwLockError, WriteError, WriteGuard};

type Lock = RobustRwLock<[u64; 2], 2>;

/// `loom::model` with a preemption bound of 3 unless `LOOM_MAX_PREEMPTIONS` says
/// otherwise: unbounded, these three-thread models with spinning and futex waits take
/// hours; with 3 they take seconds and still catch a missing wake-up or fence.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

fn read_whole(lock: &Lock) -> u64 {
    let g = lock.read().unwrap();
    assert_eq!(g[0], g[1], "torn read");
    g[0]
}

fn bump(lock: &Lock) {
    let mut g = lock.write().unwrap();
    g[0] += 1;
    g[1] += 1;
}

/// A writer and a reader: the reader sees 0 or 1, whole; the writer's drain and the
/// reader's registration never both go through.
#[test]
fn reader_and_writer_exclude() {
    model(|| {
        let lock = Arc::new(Lock::new([0; 2]));
        let l = lock.clone();
        let w = thread::spawn(move || bump(&l));
        let seen = read_whole(&lock);
        assert!(seen <= 1);
        w.join().unwrap();
        assert_eq!(read_whole(&lock), 1);
    });
}

/// Two readers and a writer: whichever reader leaves last must wake a draining writer,
/// and the writer's unlock must wake readers asleep behind it.
#[test]
fn two_readers_one_writer_no_lost_wakeup() {
    model(|| {
        let lock = Arc::new(Lock::new([0; 2]));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let l = lock.clone();
                thread::spawn(move || read_whole(&l))
            })
            .collect();
        bump(&lock);
        for r in readers {
            assert!(r.join().unwrap() <= 1);
        }
    });
}

/// Two writers: mutual exclusion through the writer mutex and the drain.
#[test]
fn two_writers_exclude() {
    model(|| {
        let lock = Arc::new(Lock::new([0; 2]));
        let l = lock.clone();
        let w = thread::spawn(move || bump(&l));
        bump(&lock);
        w.join().unwrap();
        assert_eq!(read_whole(&lock), 2);
    });
}

/// A reader dies holding its slot; a writer waits in its drain; reclaiming the dead
/// reader's slot must wake it.
#[test]
fn reclaiming_a_dead_reader_wakes_the_writer() {
    model(|| {
        let lock = Arc::new(Lock::new([0; 2]));
        let g = lock.read().unwrap();
        let slot = ReadGuard::slot(&g);
        core::mem::forget(g); // the reader "dies"
        let l = lock.clone();
        let w = thread::spawn(move || bump(&l));
        assert_eq!(lock.raw().reclaim_dead_with(|s| s == slot), 1);
        w.join().unwrap();
        assert_eq!(read_whole(&lock), 1);
        assert!(lock.raw().readers().is_empty());
    });
}

/// A writer dies after writing one word; a reader running meanwhile never sees the
/// torn pair: it reads before the writer started, or after the repair, or it is told
/// the data is inconsistent (it found the dead writer's mutex and marked the repair).
/// Either way the next writer is asked to repair.
#[test]
fn a_dead_writer_is_repaired_before_readers_see_the_data() {
    model(|| {
        let lock = Arc::new(Lock::new([0; 2]));
        let l = lock.clone();
        let dying = thread::spawn(move || {
            let mut g = l.write().unwrap();
            g[0] = 1;
            WriteGuard::abandon(g);
        });
        let l = lock.clone();
        let reader = thread::spawn(move || {
            // Before the writer started (0) or after the repair (1); never torn.
            match l.read() {
                Ok(g) => assert_eq!(g[0], g[1], "torn read"),
                Err(e) => assert_eq!(e, RwLockError::Inconsistent),
            }
        });
        dying.join().unwrap();
        match lock.write() {
            Err(WriteError::OwnerDied(mut g)) => {
                g[1] = g[0];
                drop(g.make_consistent());
            }
            other => panic!("expected OwnerDied, got {other:?}"),
        }
        reader.join().unwrap();
        assert_eq!(read_whole(&lock), 1);
    });
}

/// A reader dies while it passes through the writer mutex (where it waited for a
/// writer): it left the data whole, so every writer gets a clean write lock — never
/// `OwnerDied` — and readers are never refused, whichever side runs first.
#[test]
fn a_reader_dying_in_the_writer_mutex_leaves_nothing_to_repair() {
    model(|| {
        let lock = Arc::new(Lock::new([0; 2]));
        let l = lock.clone();
        let w = thread::spawn(move || bump(&l));
        lock.raw().die_passing_through_writer_mutex();
        w.join().unwrap();
        assert_eq!(read_whole(&lock), 1);
        bump(&lock);
        assert_eq!(read_whole(&lock), 2);
        assert!(!lock.raw().needs_repair());
    });
}
