//! Pins `RobustRwLock<T>`'s shared layout: sizes, alignments, and the bytes `init_at`,
//! a read lock and a write lock leave behind. A change here is a format change (bump
//! `FORMAT_VERSION`).
#![cfg(all(target_arch = "x86_64", target_env = "gnu", not(shmsync_loom)))]

use std::mem::{align_of, size_of};

use shmsync::inspect::RawRobustRwLock;
use shmsync::inspect::{FORMAT, MAGIC};
use shmsync::{Kind, RobustRwLock, Segment};

#[test]
fn sizes_and_alignments() {
    // 128 bytes (header 24, state 4, drain 4, high-water mark 4, drain slot 4, writer
    // mutex 64, reclaim count 8, padding 16), one 64-byte
    // line per reader slot, then the data rounded up to 64; always 64-aligned.
    assert_eq!(size_of::<RawRobustRwLock>(), 128 + 64 * 64);
    assert_eq!(align_of::<RawRobustRwLock>(), 64);
    assert_eq!(size_of::<RawRobustRwLock<1>>(), 192);
    let cases: [(usize, usize, usize); 5] = [
        (
            size_of::<RobustRwLock<u8>>(),
            align_of::<RobustRwLock<u8>>(),
            4224 + 64,
        ),
        (
            size_of::<RobustRwLock<u64>>(),
            align_of::<RobustRwLock<u64>>(),
            4224 + 64,
        ),
        (
            size_of::<RobustRwLock<[u64; 8]>>(),
            align_of::<RobustRwLock<[u64; 8]>>(),
            4224 + 64,
        ),
        (
            size_of::<RobustRwLock<[u64; 9]>>(),
            align_of::<RobustRwLock<[u64; 9]>>(),
            4224 + 128,
        ),
        (
            size_of::<RobustRwLock<u64, 4>>(),
            align_of::<RobustRwLock<u64, 4>>(),
            384 + 64,
        ),
    ];
    for (size, align, expected) in cases {
        assert_eq!((size, align), (expected, 64));
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// A snapshot of the lock's bytes (no other thread runs while it is taken).
fn bytes(seg: &Segment) -> Vec<u8> {
    // SAFETY: the mapping is live and longer than the lock, and no other thread writes
    // it during the copy.
    unsafe { std::slice::from_raw_parts(seg.as_ptr(), size_of::<RobustRwLock<u64, 4>>()) }.to_vec()
}

#[test]
fn initial_bytes_and_what_locks_leave() {
    let seg = Segment::anonymous(4096).unwrap();
    // Garbage first: init must write every byte the lock uses.
    // SAFETY: fresh, exclusive mapping.
    unsafe { seg.as_ptr().write_bytes(0xa5, 4096) };
    let value = 0x1122_3344_5566_7788u64;
    // SAFETY: fresh, exclusive mapping outliving `lock`.
    let lock = unsafe { RobustRwLock::<u64, 4>::init_at(seg.as_ptr().cast(), value) }.unwrap();
    let b = bytes(&seg);
    assert_eq!(u32_at(&b, 0), MAGIC);
    assert_eq!(u32_at(&b, 4), Kind::RwLock as u32);
    assert_eq!(u64_at(&b, 8), FORMAT);
    assert_eq!(u32_at(&b, 16), 2, "state READY");
    assert_eq!(u32_at(&b, 20), 4, "aux = reader slots");
    assert_eq!(u32_at(&b, 24), 0, "state word");
    assert_eq!(u32_at(&b, 28), 0, "drain word");
    assert_eq!(u32_at(&b, 32), 0, "high-water mark");
    assert_eq!(u32_at(&b, 36), 0, "slot a draining writer waits for");
    assert_eq!(u32_at(&b, 40), MAGIC, "writer mutex header");
    assert_eq!(u32_at(&b, 44), Kind::Mutex as u32);
    assert_eq!(u64_at(&b, 104), 0, "reclaim count");
    assert!(b[128..384].iter().all(|&x| x == 0), "four empty slots");
    assert_eq!(u64_at(&b, 384), value, "data after the slots");

    let r = lock.read().unwrap();
    let slot = shmsync::ReadGuard::slot(&r);
    let b = bytes(&seg);
    let at = 128 + 64 * slot;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u64;
    assert_eq!(u64_at(&b, at), 1 << 32 | tid, "claim 1 by this thread");
    assert_eq!(
        u64_at(&b, at + 8),
        shmsync::ProcessIdentity::current().unwrap().packed(),
        "this process"
    );
    assert_eq!(slot, 0, "the lowest free slot");
    assert_eq!(u32_at(&b, 32), 1, "high-water mark above it");
    drop(r);
    let b = bytes(&seg);
    assert_eq!(u64_at(&b, at), 1 << 32, "free; the claim count stays");
    assert_eq!(u64_at(&b, at + 8), 0);

    let w = lock.write().unwrap();
    assert_eq!(u32_at(&bytes(&seg), 24), 1, "WRITER");
    drop(w);
    assert_eq!(u32_at(&bytes(&seg), 24), 0);
}
