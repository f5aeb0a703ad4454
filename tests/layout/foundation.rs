//! Pins the foundation's shared layouts: the object header, process identity, and the
//! region header and table. A change here is a format change (bump
//! `header::FORMAT_VERSION`).

use std::mem::{align_of, size_of};

use shmsync::inspect::{FORMAT, FORMAT_VERSION, MAGIC};
use shmsync::test_hooks::data_start_for;
use shmsync::test_hooks::{ObjectHeader, STATE_READY};
use shmsync::RegionOptions;
const DEFAULT_CAPACITY: u32 = shmsync::Region::DEFAULT_CAPACITY;
const MAX_NAME_LEN: usize = shmsync::Region::MAX_NAME_LEN;
use shmsync::{Kind, ProcessIdentity, RawRobustMutex, Region, Segment, Shared};

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn bytes(seg: &Segment, len: usize) -> Vec<u8> {
    // SAFETY: `len` is within the mapping, which nobody else uses in these tests.
    unsafe { std::slice::from_raw_parts(seg.as_ptr(), len) }.to_vec()
}

#[test]
fn header_and_identity_sizes() {
    assert_eq!(size_of::<ObjectHeader>(), 24);
    assert_eq!(align_of::<ObjectHeader>(), 8);
    assert_eq!(size_of::<ProcessIdentity>(), 24);
    assert_eq!(align_of::<ProcessIdentity>(), 8);
    assert_eq!(MAGIC.to_le_bytes(), *b"SHMS");
    assert_eq!(FORMAT & 0xff, FORMAT_VERSION);
    if cfg!(all(target_arch = "x86_64", target_env = "gnu")) {
        // version 3, x86_64 (1), 8-byte pointers, glibc (1), 40-byte pthread_mutex_t,
        // little endian (1).
        assert_eq!(FORMAT, 0x0001_0028_0108_0103);
    }
}

#[test]
fn region_header_and_table_bytes() {
    let region = Region::from_segment(Segment::anonymous(1 << 16).unwrap()).unwrap();
    region.get_or_init::<RawRobustMutex>("lock", ()).unwrap();
    let b = bytes(region.segment(), 4096);
    // ObjectHeader: magic, kind, format, state READY, aux 0.
    assert_eq!(&b[0..4], b"SHMS");
    assert_eq!(u32_at(&b, 4), Kind::Region as u32);
    assert_eq!(u64_at(&b, 8), FORMAT);
    assert_eq!(u32_at(&b, 16), STATE_READY);
    assert_eq!(u32_at(&b, 20), 0);
    // claim (free), size, capacity, count, next_free, data_start.
    assert_eq!(u64_at(&b, 24), 0);
    assert_eq!(u64_at(&b, 32), 1 << 16);
    assert_eq!(u32_at(&b, 40), DEFAULT_CAPACITY);
    assert_eq!(u32_at(&b, 44), 1);
    let data_start = data_start_for(DEFAULT_CAPACITY);
    assert_eq!(
        data_start, 4096,
        "the default table fills exactly the first page"
    );
    assert_eq!(u64_at(&b, 48), data_start + 64);
    assert_eq!(u64_at(&b, 56), data_start);
    // creator identity: pid, start time, pid namespace.
    let me = ProcessIdentity::current().unwrap();
    assert_eq!(u64_at(&b, 64), u64::from(me.pid));
    assert_eq!(u64_at(&b, 72), me.start_time);
    assert_eq!(u64_at(&b, 80), me.pid_ns);
    assert!(
        b[88..128].iter().all(|&x| x == 0),
        "reserved bytes are zero"
    );
    // Entry 0 at 128: kind, align, offset, size, type identity (hash, name hash, value
    // size, value align), name length, pad, name.
    let e = &b[128..128 + 96];
    let id = <RawRobustMutex as Shared>::IDENTITY;
    // The identity is part of the format: FNV-1a of the declared name
    // "shmsync.RawRobustMutex", then of that hash, size 64, align 8 and no field offsets.
    assert_eq!(id.name_hash, 0x0b0d_fbc2_5ad3_3936);
    assert_eq!(id.hash, 0x7318_4268_8eda_01be);
    assert_eq!(u32_at(e, 0), Kind::Mutex as u32);
    assert_eq!(u32_at(e, 4), 8);
    assert_eq!(u64_at(e, 8), data_start);
    assert_eq!(u64_at(e, 16), 64);
    assert_eq!(u64_at(e, 24), id.hash);
    assert_eq!(u64_at(e, 32), id.name_hash);
    assert_eq!(u32_at(e, 40), 64);
    assert_eq!(u32_at(e, 44), 8);
    assert_eq!(u32_at(e, 48), 4);
    assert_eq!(u32_at(e, 52), 0);
    assert_eq!(&e[56..60], b"lock");
    assert!(e[60..56 + MAX_NAME_LEN].iter().all(|&x| x == 0));
    assert_eq!(56 + MAX_NAME_LEN, 96);
    // Entry 1 is untouched.
    assert!(b[224..320].iter().all(|&x| x == 0));
}

#[test]
fn a_bigger_table_moves_the_data_area_to_the_next_page() {
    assert_eq!(data_start_for(1), 4096);
    assert_eq!(data_start_for(DEFAULT_CAPACITY), 4096);
    assert_eq!(data_start_for(DEFAULT_CAPACITY + 1), 8192);
    assert_eq!(data_start_for(50), 8192);
    assert_eq!(data_start_for(84), 8192);
    assert_eq!(data_start_for(100), 12288);
    assert_eq!(data_start_for(200), 20480);
    let opts = RegionOptions {
        capacity: 84,
        ..RegionOptions::default()
    };
    let region = Region::from_segment_with(Segment::anonymous(1 << 16).unwrap(), opts).unwrap();
    let m = region.get_or_init::<RawRobustMutex>("m", ()).unwrap();
    let offset = (m as *const RawRobustMutex as usize) - region.segment().as_ptr() as usize;
    assert_eq!(offset, 8192);
}
