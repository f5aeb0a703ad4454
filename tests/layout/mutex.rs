//! Pins the shared layouts of `RawRobustMutex`, `RobustMutex<T>` and `Condvar`: sizes,
//! alignments, the data offset, and the bytes an initialized object starts with. A
//! change here is a format change (bump `header::FORMAT_VERSION`).

use std::mem::{align_of, size_of};

use shmsync::{Condvar, Error, MutexState, RawRobustMutex, RobustMutex, Segment};

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Odd([u8; 13]);

/// `size_of::<RobustMutex<T>>()` for `align_of::<T>() <= 64`: the 64-byte raw mutex,
/// then `T`, rounded up to the struct's alignment (at least 8).
fn expected_size<T>() -> usize {
    (64 + size_of::<T>()).next_multiple_of(align_of::<T>().max(8))
}

fn check<T: bytemuck::AnyBitPattern>() {
    assert_eq!(
        size_of::<RobustMutex<T>>(),
        expected_size::<T>(),
        "{}",
        std::any::type_name::<T>()
    );
    assert_eq!(align_of::<RobustMutex<T>>(), align_of::<T>().max(8));
    // The overhead is the 64-byte raw mutex plus padding to 8 bytes.
    assert!(size_of::<RobustMutex<T>>() <= size_of::<T>().next_multiple_of(8) + 64);
    if size_of::<T>() % 8 == 0 {
        assert!(size_of::<RobustMutex<T>>() <= size_of::<T>() + 64);
    }
}

#[test]
fn sizes_and_alignments() {
    assert_eq!(size_of::<RawRobustMutex>(), 64);
    assert_eq!(align_of::<RawRobustMutex>(), 8);
    assert_eq!(size_of::<RobustMutex<u64>>(), 72);
    assert_eq!(size_of::<RobustMutex<u8>>(), 72);
    assert_eq!(size_of::<RobustMutex<[u64; 16]>>(), 192);
    assert_eq!(size_of::<RobustMutex<Line>>(), 128);
    assert_eq!(align_of::<RobustMutex<Line>>(), 64);
    check::<u8>();
    check::<u32>();
    check::<u64>();
    check::<u128>();
    check::<Odd>();
    check::<[u64; 16]>();
    check::<Line>();
    assert_eq!(size_of::<Condvar>(), 8);
    assert_eq!(align_of::<Condvar>(), 4);
}

#[test]
fn an_initialized_mutex_starts_with_these_bytes() {
    let seg = Segment::anonymous(4096).unwrap();
    let base = seg.as_ptr();
    // SAFETY: a fresh anonymous mapping that outlives `m`.
    let m = unsafe { RobustMutex::<u64>::init_at(base.cast(), 0x1122_3344_5566_7788) }.unwrap();
    // SAFETY: 72 initialized bytes at the start of the mapping; nobody writes them now.
    let bytes = unsafe { std::slice::from_raw_parts(base, 72) };
    let word32 = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let word64 = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());

    // The header: magic "SHMS", kind 1 (mutex), the format word, state 2 (READY), and
    // the low 32 bits of the creator's pid-namespace inode.
    assert_eq!(&bytes[0..4], b"SHMS");
    assert_eq!(word32(4), shmsync::Kind::Mutex as u32);
    assert_eq!(word32(4), 1);
    assert_eq!(word64(8), shmsync::inspect::FORMAT);
    assert_eq!(word32(16), shmsync::test_hooks::STATE_READY);
    assert_eq!(word32(16), 2);
    let ns = shmsync::test_hooks::current_pid_namespace().unwrap();
    assert_eq!(word32(20), ns as u32);

    // glibc's pthread_mutex_t: unlocked (__lock, __count, __owner, __nusers all 0) and
    // __kind = ERRORCHECK (2) | ROBUST (16) | PSHARED (128).
    #[cfg(all(target_env = "gnu", target_arch = "x86_64"))]
    {
        assert_eq!(&bytes[24..40], &[0; 16]);
        assert_eq!(word32(24 + 16), 2 | 16 | 128);
        assert_eq!(&bytes[44..64], &[0; 20]);
    }

    // The data, at offset 64.
    assert_eq!(word64(64), 0x1122_3344_5566_7788);
    let g = m.lock().unwrap();
    assert_eq!(&*g as *const u64 as usize - base as usize, 64);
    assert_eq!(m.raw() as *const RawRobustMutex as usize, base as usize);
    drop(g);
    assert_eq!(m.state(), MutexState::Free);
}

#[test]
fn a_condvar_is_eight_zero_bytes_and_zeroed_memory_is_one() {
    let seg = Segment::anonymous(4096).unwrap();
    let base = seg.as_ptr();
    // SAFETY: 8 bytes of a fresh, zero-filled mapping that outlives `cv`.
    let cv = unsafe { Condvar::attach(base.cast()) }.unwrap();
    let read8 = || -> [u8; 8] {
        // SAFETY: 8 bytes inside the mapping, read while no other thread or process
        // uses the condvar.
        unsafe { base.cast::<[u8; 8]>().read() }
    };
    cv.notify_one(); // bumps the sequence word
    cv.notify_all();
    assert_eq!(read8(), [2, 0, 0, 0, 0, 0, 0, 0]);
    // SAFETY: as above; nobody waits on it.
    let cv = unsafe { Condvar::init_at(base.cast()) }.unwrap();
    assert_eq!(read8(), [0; 8]);
    assert!(format!("{cv:?}").contains("seq: 0"));
    // SAFETY: misaligned and null pointers are refused before any access.
    unsafe {
        assert!(matches!(
            Condvar::attach(base.add(2).cast()),
            Err(Error::Misaligned { align: 4, .. })
        ));
        assert!(matches!(
            Condvar::init_at(std::ptr::null_mut()),
            Err(Error::Misaligned { .. })
        ));
    }
}
