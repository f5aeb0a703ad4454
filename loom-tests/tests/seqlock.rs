//! Loom models of the seqlock's two-copy protocol: a reader never returns a value that
//! no writer wrote completely, also when a writer dies mid-write.
//!
//! The payload is two u64 words that every writer keeps equal; a torn read shows up
//! as unequal words.
#![cfg(shmsync_loom)]

use loom::sync::Arc;
use loom::thread;
use shmsync::SeqLock;

type Payload = [u64; 2];

fn all(n: u64) -> Payload {
    [n; 2]
}

/// Asserts that `v` is one complete value and returns it.
fn whole(v: Payload) -> u64 {
    assert!(v.iter().all(|&w| w == v[0]), "torn read: {v:?}");
    v[0]
}

fn bump(v: &mut Payload) {
    for w in v.iter_mut() {
        *w += 1;
    }
}

/// One writer publishing twice (so the second write overwrites the copy a slow reader
/// of the initial value may still be reading), two readers.
#[test]
fn two_readers_one_writer() {
    loom::model(|| {
        let lock = Arc::new(SeqLock::new(all(0)));
        let w = {
            let lock = lock.clone();
            thread::spawn(move || {
                lock.store(all(1)).unwrap();
                lock.store(all(2)).unwrap();
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let lock = lock.clone();
                thread::spawn(move || {
                    let (v, version) = lock.read_versioned();
                    assert_eq!(whole(v), version, "value and version disagree");
                    assert!(version <= 2);
                })
            })
            .collect();
        w.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(lock.read(), all(2));
        assert_eq!(lock.sequence(), 2);
    });
}

/// Two writers serializing on the writer lock (read-modify-write), one reader that
/// reads twice: values are whole, versions never go backwards, no update is lost.
#[test]
fn one_reader_two_writers() {
    loom::model(|| {
        let lock = Arc::new(SeqLock::new(all(0)));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let lock = lock.clone();
                thread::spawn(move || {
                    let outcome = lock.write(bump).unwrap();
                    assert!(!outcome.repaired);
                })
            })
            .collect();
        let r = {
            let lock = lock.clone();
            thread::spawn(move || {
                let first = whole(lock.read());
                let second = whole(lock.read());
                assert!(first <= second, "went backwards: {first} then {second}");
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        r.join().unwrap();
        assert_eq!(lock.read(), all(2));
    });
}

/// A writer dies halfway through filling the unpublished copy (`__test_write_partial`
/// abandons the writer lock, as the kernel's robust-list walk would): a concurrent
/// reader only ever sees published values, and the next writer is told it repaired,
/// starts from the last published value and publishes a whole one.
#[test]
fn writer_dies_mid_write_and_next_writer_repairs() {
    loom::model(|| {
        let lock = Arc::new(SeqLock::new(all(0)));
        let dying = {
            let lock = lock.clone();
            thread::spawn(move || {
                lock.store(all(1)).unwrap();
                // One of two words of value 7, then "death".
                lock.__test_write_partial(all(7), 1).unwrap();
            })
        };
        let reader = {
            let lock = lock.clone();
            thread::spawn(move || {
                let v = whole(lock.read());
                assert!(v == 0 || v == 1 || v == 11, "read {v}, never published");
            })
        };
        dying.join().unwrap();
        assert!(
            lock.state().writing,
            "the dead writer's write stays in progress"
        );
        // Readers are not stalled by the dead writer.
        assert_eq!(lock.try_read(), Ok(all(1)));
        let outcome = lock.write(|v| v.iter_mut().for_each(|w| *w += 10)).unwrap();
        assert!(outcome.repaired, "the next writer must learn of the death");
        assert_eq!(outcome.version, 2);
        reader.join().unwrap();
        assert_eq!(lock.read(), all(11));
        assert!(!lock.state().writing);
        assert!(!lock.write(bump).unwrap().repaired);
    });
}
