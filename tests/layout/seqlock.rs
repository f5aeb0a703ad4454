//! Pins `SeqLock<T>`'s shared layout: sizes, alignments, and the bytes `init_at` and a
//! write leave behind. A change here is a format change (bump `FORMAT_VERSION`).
#![cfg(all(target_arch = "x86_64", target_env = "gnu", not(shmsync_loom)))]

use std::mem::{align_of, size_of};

use bytemuck::{Pod, Zeroable};
use shmsync::inspect::{FORMAT, MAGIC};
use shmsync::{Kind, Segment, SeqLock};

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(16))]
struct Align16 {
    a: [u64; 2],
}

#[test]
fn sizes_and_alignments() {
    // 96 bytes of overhead (header 24 + seq 8 + writer lock 64), then two copies of
    // ceil(size_of::<T>() / 8) words; always 8-aligned.
    let cases: [(usize, usize, usize); 8] = [
        (size_of::<SeqLock<()>>(), align_of::<SeqLock<()>>(), 96),
        (
            size_of::<SeqLock<u8>>(),
            align_of::<SeqLock<u8>>(),
            96 + 2 * 8,
        ),
        (
            size_of::<SeqLock<u64>>(),
            align_of::<SeqLock<u64>>(),
            96 + 2 * 8,
        ),
        (
            size_of::<SeqLock<[u8; 13]>>(),
            align_of::<SeqLock<[u8; 13]>>(),
            96 + 2 * 16,
        ),
        (
            size_of::<SeqLock<Align16>>(),
            align_of::<SeqLock<Align16>>(),
            96 + 2 * 16,
        ),
        (
            size_of::<SeqLock<u128>>(),
            align_of::<SeqLock<u128>>(),
            96 + 2 * 16,
        ),
        (
            size_of::<SeqLock<[u64; 8]>>(),
            align_of::<SeqLock<[u64; 8]>>(),
            96 + 2 * 64,
        ),
        (
            size_of::<SeqLock<[u64; 512]>>(),
            align_of::<SeqLock<[u64; 512]>>(),
            96 + 2 * 4096,
        ),
    ];
    for (size, align, expected) in cases {
        assert_eq!((size, align), (expected, 8));
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// A snapshot of the seqlock's bytes (no writer runs while it is taken).
fn bytes<T>(seg: &Segment) -> Vec<u8> {
    // SAFETY: the mapping is live and at least size_of::<SeqLock<T>>() long, and no
    // other thread writes it during the copy.
    unsafe { std::slice::from_raw_parts(seg.as_ptr(), size_of::<SeqLock<T>>()) }.to_vec()
}

#[test]
fn initial_bytes() {
    let seg = Segment::anonymous(4096).unwrap();
    let value = 0x1122_3344_5566_7788u64;
    // SAFETY: fresh, exclusive mapping outliving `lock`.
    let lock = unsafe { SeqLock::init_at(seg.as_ptr().cast(), value) }.unwrap();
    let b = bytes::<u64>(&seg);
    assert_eq!(u32_at(&b, 0), MAGIC);
    assert_eq!(u32_at(&b, 4), Kind::SeqLock as u32);
    assert_eq!(u64_at(&b, 8), FORMAT);
    assert_eq!(u32_at(&b, 16), 2, "state READY");
    assert_eq!(u32_at(&b, 20), 8, "aux = size_of::<T>()");
    assert_eq!(u64_at(&b, 24), 0, "seq");
    assert_eq!(u32_at(&b, 32), MAGIC, "writer lock header");
    assert_eq!(u32_at(&b, 36), Kind::Mutex as u32);
    assert_eq!(u64_at(&b, 96), value, "copy 0");
    assert_eq!(u64_at(&b, 104), value, "copy 1");

    lock.store(7).unwrap();
    let b = bytes::<u64>(&seg);
    assert_eq!(u64_at(&b, 24), 2, "seq = 2 · version");
    assert_eq!(u64_at(&b, 96), value, "copy 0 untouched");
    assert_eq!(u64_at(&b, 104), 7, "version 1 lives in copy 1");
}

#[test]
fn odd_sized_copies_are_zero_padded() {
    let seg = Segment::anonymous(4096).unwrap();
    let value: [u8; 13] = *b"thirteen byte";
    // SAFETY: fresh, exclusive mapping outliving the lock.
    unsafe { SeqLock::init_at(seg.as_ptr().cast(), value) }.unwrap();
    let b = bytes::<[u8; 13]>(&seg);
    assert_eq!(u32_at(&b, 20), 13, "aux = size_of::<T>()");
    for copy in [96, 112] {
        assert_eq!(&b[copy..copy + 13], &value);
        assert_eq!(&b[copy + 13..copy + 16], &[0, 0, 0]);
    }
}
