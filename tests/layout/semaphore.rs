//! Pins the shared layouts of `Semaphore` and `LeasedSemaphore`: sizes, alignments and
//! the bytes an initialized object starts with. A change here is a format change.

use shmsync::inspect::{FORMAT, MAGIC};
use shmsync::{Kind, LeasedSemaphore, Segment, Semaphore};

fn bytes(seg: &Segment, range: std::ops::Range<usize>) -> Vec<u8> {
    // SAFETY: in bounds of the mapping; nothing else touches it during the test.
    unsafe { std::slice::from_raw_parts(seg.as_ptr().add(range.start), range.len()) }.to_vec()
}

#[test]
fn semaphore_is_two_u32_words() {
    assert_eq!(std::mem::size_of::<Semaphore>(), 8);
    assert_eq!(std::mem::align_of::<Semaphore>(), 4);
    let seg = Segment::anonymous(4096).unwrap();
    // SAFETY: fresh, exclusive, aligned mapping that outlives `sem`.
    let sem = unsafe { Semaphore::init_at(seg.as_ptr().cast(), 0x0102_0304) }.unwrap();
    // value (the futex word) first, then sleepers; native-endian u32s.
    let mut expected = 0x0102_0304u32.to_ne_bytes().to_vec();
    expected.extend_from_slice(&[0; 4]);
    assert_eq!(bytes(&seg, 0..8), expected);
    sem.wait();
    assert_eq!(bytes(&seg, 0..4), 0x0102_0303u32.to_ne_bytes());
    // All-zero bytes are a valid semaphore with value 0.
    // SAFETY: in bounds, aligned, zero-filled.
    let zero = unsafe { Semaphore::attach(super::common::at(&seg, 64)) }.unwrap();
    assert_eq!((zero.value(), zero.sleepers()), (0, 0));
}

#[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
#[test]
fn leased_semaphore_layout() {
    assert_eq!(std::mem::size_of::<LeasedSemaphore>(), 1640);
    assert_eq!(std::mem::size_of::<LeasedSemaphore<8>>(), 104 + 8 * 24);
    assert_eq!(std::mem::align_of::<LeasedSemaphore>(), 8);
    let seg = Segment::anonymous(4096).unwrap();
    // SAFETY: fresh, exclusive, aligned mapping that outlives `sem`.
    let sem: &LeasedSemaphore =
        unsafe { LeasedSemaphore::init_at(seg.as_ptr().cast(), 7) }.unwrap();
    let u32_at = |off: usize| u32::from_ne_bytes(bytes(&seg, off..off + 4).try_into().unwrap());
    // Header: magic, kind, format word, state READY, aux = slot count.
    assert_eq!(u32_at(0), MAGIC);
    assert_eq!(u32_at(4), Kind::LeasedSemaphore as u32);
    assert_eq!(bytes(&seg, 8..16), FORMAT.to_ne_bytes());
    assert_eq!(u32_at(16), 2);
    assert_eq!(u32_at(20), 64);
    // The table lock (a RawRobustMutex, its own header first) at 24..88.
    assert_eq!(u32_at(24), MAGIC);
    assert_eq!(u32_at(28), Kind::Mutex as u32);
    // capacity, generation, waiters, reserved at 88..104; then 64 slots of
    // (count, pid, start_time, pid_ns), all zero.
    assert_eq!(
        [u32_at(88), u32_at(92), u32_at(96), u32_at(100)],
        [7, 0, 0, 0]
    );
    assert!(bytes(&seg, 104..1640).iter().all(|&b| b == 0));
    let p = sem.acquire().unwrap();
    let me = shmsync::ProcessIdentity::current().unwrap();
    assert_eq!([u32_at(104), u32_at(108)], [1, me.pid]);
    assert_eq!(bytes(&seg, 112..120), me.start_time.to_ne_bytes());
    assert_eq!(bytes(&seg, 120..128), me.pid_ns.to_ne_bytes());
    drop(p);
    assert_eq!(u32_at(104), 0);
    // The release bumped the generation futex word once.
    assert_eq!(u32_at(92), 1);
}
