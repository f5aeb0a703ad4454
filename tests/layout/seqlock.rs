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
    // 160 bytes of overhead (header 24 + writer lock 64 + gap 64 + seq 8), then two
    // copies of ceil(size_of::<T>() / 8) words; always 8-aligned.
    let cases: [(usize, usize, usize); 8] = [
        (size_of::<SeqLock<()>>(), align_of::<SeqLock<()>>(), 160),
        (
            size_of::<SeqLock<u8>>(),
            align_of::<SeqLock<u8>>(),
            160 + 2 * 8,
        ),
        (
            size_of::<SeqLock<u64>>(),
            align_of::<SeqLock<u64>>(),
            160 + 2 * 8,
        ),
        (
            size_of::<SeqLock<[u8; 13]>>(),
            align_of::<SeqLock<[u8; 13]>>(),
            160 + 2 * 16,
        ),
        (
            size_of::<SeqLock<Align16>>(),
            align_of::<SeqLock<Align16>>(),
            160 + 2 * 16,
        ),
        (
            size_of::<SeqLock<u128>>(),
            align_of::<SeqLock<u128>>(),
            160 + 2 * 16,
        ),
        (
            size_of::<SeqLock<[u64; 8]>>(),
            align_of::<SeqLock<[u64; 8]>>(),
            160 + 2 * 64,
        ),
        (
            size_of::<SeqLock<[u64; 512]>>(),
            align_of::<SeqLock<[u64; 512]>>(),
            160 + 2 * 4096,
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
    assert_eq!(u32_at(&b, 24), MAGIC, "writer lock header");
    assert_eq!(u32_at(&b, 28), Kind::Mutex as u32);
    assert!(b[88..152].iter().all(|&x| x == 0), "the gap is zero");
    assert_eq!(u64_at(&b, 152), 0, "seq");
    assert_eq!(u64_at(&b, 160), value, "copy 0");
    assert_eq!(u64_at(&b, 168), value, "copy 1");

    lock.store(7).unwrap();
    let b = bytes::<u64>(&seg);
    assert_eq!(u64_at(&b, 152), 2, "seq = 2 · version");
    assert_eq!(u64_at(&b, 160), value, "copy 0 untouched");
    assert_eq!(u64_at(&b, 168), 7, "version 1 lives in copy 1");
    assert!(
        b[88..152].iter().all(|&x| x == 0),
        "writes leave the gap alone"
    );
}

#[test]
fn odd_sized_copies_are_zero_padded() {
    let seg = Segment::anonymous(4096).unwrap();
    let value: [u8; 13] = *b"thirteen byte";
    // SAFETY: fresh, exclusive mapping outliving the lock.
    unsafe { SeqLock::init_at(seg.as_ptr().cast(), value) }.unwrap();
    let b = bytes::<[u8; 13]>(&seg);
    assert_eq!(u32_at(&b, 20), 13, "aux = size_of::<T>()");
    for copy in [160, 176] {
        assert_eq!(&b[copy..copy + 13], &value);
        assert_eq!(&b[copy + 13..copy + 16], &[0, 0, 0]);
    }
}

#[test]
fn reader_words_never_share_a_cache_line_with_the_writer_lock() {
    // glibc writes the writer lock's `__lock` .. `__list` (bytes 48..88 of the seqlock)
    // on every lock and unlock; readers load `seq` and the copies (from byte 152). For
    // every 8-aligned placement the two ranges fall on different 64-byte lines.
    let seg = Segment::anonymous(4096).unwrap();
    for off in (0..64).step_by(8) {
        let at = seg.as_ptr().wrapping_add(off);
        // SAFETY: fresh, exclusive mapping, large enough at every offset tried.
        let lock = unsafe { SeqLock::init_at(at.cast(), 5u64) }.unwrap();
        lock.store(6).unwrap();
        let base = at as usize;
        let writer_last_line = (base + 87) / 64;
        let reader_first_line = (base + 152) / 64;
        assert!(writer_last_line < reader_first_line, "offset {off}");
        // What a reader loads really starts there: `seq` holds 2 · version.
        // SAFETY: inside the live mapping, 8-aligned; no writer runs now.
        let seq = unsafe { at.add(152).cast::<u64>().read() };
        assert_eq!(seq, 2, "offset {off}");
    }
}
