//! Region: race-free initialization across processes, crash during initialization,
//! hostile segments, bad names.
#![allow(clippy::disallowed_types)]
mod common;

use std::time::Duration;

use shmsync::{Error, RawRobustMutex, Region, Segment};
use shmsync::{Location, RegionOptions};

const SIZE: usize = 1 << 16;

#[test]
fn child_role() {
    common::dispatch(&[
        ("race", race),
        ("create_region", create_region),
        ("add_object", add_object),
        ("sleep_forever", |_| loop {
            std::thread::sleep(Duration::from_secs(1));
        }),
    ]);
}

fn race(args: &[String]) {
    let loc = Location::parse(&args[0]).unwrap();
    common::start_at(&args[1]);
    let region = Region::open_or_create(&loc, SIZE).unwrap();
    let m = region.get_or_init::<RawRobustMutex>("m", ()).unwrap();
    let n = region.get_or_init::<RawRobustMutex>("n", ()).unwrap();
    assert!(m.lock().is_ok());
    // SAFETY: held by this thread.
    assert_eq!(unsafe { m.unlock() }, Ok(()));
    assert!(!core::ptr::eq(m, n));
}

fn create_region(args: &[String]) {
    let loc = Location::parse(&args[0]).unwrap();
    let _region = Region::create(&loc, SIZE).unwrap();
}

fn add_object(args: &[String]) {
    let loc = Location::parse(&args[0]).unwrap();
    let region = Region::open(&loc).unwrap();
    region.get_or_init::<RawRobustMutex>(&args[1], ()).unwrap();
}

#[test]
fn racing_processes_end_with_one_region_and_one_object_each() {
    for round in 0..3 {
        let name = common::ShmName::new("race");
        let at = common::start_time_in(Duration::from_millis(300));
        let mut kids: Vec<_> = (0..6)
            .map(|_| common::spawn("race", &[name.as_str(), &at]))
            .collect();
        for k in &mut kids {
            k.expect_success(common::WATCHDOG);
        }
        let region = Region::open(&Location::parse(name.as_str()).unwrap()).unwrap();
        let entries = region.entries().unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["m", "n"], "round {round}");
        assert!(region.is_ready());
        assert_eq!(region.claim_holder().0, 0, "claim left held");
    }
}

#[test]
fn a_region_initializer_killed_mid_init_is_taken_over() {
    let name = common::ShmName::new("initkill");
    common::kill_at_failpoint("create_region", &[name.as_str()], "region-init");
    let loc = Location::parse(name.as_str()).unwrap();
    let region = Region::open(&loc).unwrap();
    assert!(region.is_ready());
    assert_eq!(
        region.creator().pid,
        std::process::id(),
        "we re-initialized it"
    );
    assert!(region.entries().unwrap().is_empty());
    region.get_or_init::<RawRobustMutex>("m", ()).unwrap();
}

#[test]
fn an_object_initializer_killed_mid_init_is_taken_over() {
    let name = common::ShmName::new("objkill");
    let loc = Location::parse(name.as_str()).unwrap();
    let region = Region::create(&loc, SIZE).unwrap();
    region.get_or_init::<RawRobustMutex>("first", ()).unwrap();
    common::kill_at_failpoint("add_object", &[name.as_str(), "second"], "object-init");
    // The half-made object is not visible...
    assert!(matches!(
        region.get::<RawRobustMutex>("second"),
        Err(Error::NotFound(_))
    ));
    // ...and the next initializer takes over the dead claim and makes it.
    let m = region.get_or_init::<RawRobustMutex>("second", ()).unwrap();
    assert!(m.try_lock().is_ok());
    // SAFETY: held by this thread.
    unsafe { m.unlock() }.unwrap();
    let names: Vec<_> = region
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["first", "second"]);
}

#[test]
fn wrong_type_full_table_and_bad_names_are_errors() {
    let region = Region::from_segment_with(
        Segment::anonymous(SIZE).unwrap(),
        RegionOptions {
            capacity: 2,
            ..RegionOptions::default()
        },
    )
    .unwrap();
    region.get_or_init::<RawRobustMutex>("a", ()).unwrap();
    region.get_or_init::<RawRobustMutex>("b", ()).unwrap();
    assert!(matches!(
        region.get_or_init::<RawRobustMutex>("c", ()),
        Err(Error::Full("region table"))
    ));
    assert!(matches!(
        region.get::<RawRobustMutex>("zzz"),
        Err(Error::NotFound(_))
    ));
    let long = "x".repeat(41);
    for bad in ["", long.as_str(), "a\0b"] {
        assert!(matches!(
            region.get::<RawRobustMutex>(bad),
            Err(Error::InvalidName { .. })
        ));
    }
    // A region too small for its own table.
    assert!(matches!(
        Region::from_segment(Segment::anonymous(100).unwrap()),
        Err(Error::TooSmall { .. })
    ));
    // Space runs out before the table does.
    let tiny = Region::from_segment(Segment::anonymous(4096 + 64).unwrap()).unwrap();
    tiny.get_or_init::<RawRobustMutex>("a", ()).unwrap();
    assert!(matches!(
        tiny.get_or_init::<RawRobustMutex>("b", ()),
        Err(Error::Full("region space"))
    ));
}

#[test]
fn missing_foreign_and_mismatched_segments_are_clear_errors() {
    let missing = Location::parse(&common::unique_name("missing")).unwrap();
    let err = Region::open(&missing).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    assert!(
        err.to_string().contains("shmsync-t"),
        "error names the segment: {err}"
    );

    // Not a region: non-zero garbage is never overwritten.
    let name = common::ShmName::new("garbage");
    {
        let seg = Segment::posix_create(name.as_str(), SIZE).unwrap();
        // SAFETY: fresh private mapping of SIZE bytes.
        unsafe { std::ptr::write_bytes(seg.as_ptr(), 0xAB, 64) };
    }
    let loc = Location::parse(name.as_str()).unwrap();
    assert!(matches!(Region::open(&loc), Err(Error::BadMagic { .. })));

    // A region written by an incompatible build: poke the format word (offset 8).
    let name2 = common::ShmName::new("format");
    let loc2 = Location::parse(name2.as_str()).unwrap();
    {
        let r = Region::create(&loc2, SIZE).unwrap();
        // SAFETY: offset 8..16 is the header's format word, inside the mapping; no
        // other process uses this fresh region.
        unsafe { *r.segment().as_ptr().add(8).cast::<u64>() ^= 0xff << 32 };
    }
    match Region::open(&loc2) {
        Err(Error::FormatMismatch { field, .. }) => assert_eq!(field, "size of pthread_mutex_t"),
        other => panic!("{other:?}"),
    }
    // Creating over an existing name is EEXIST, not a silent reuse.
    assert_eq!(
        Region::create(&loc2, SIZE).unwrap_err().raw_os_error(),
        Some(libc::EEXIST)
    );
}

/// The packed identity of a process that has certainly exited (a reaped child).
fn dead_claimant() -> u64 {
    let mut child = common::spawn("sleep_forever", &[]);
    let id = shmsync::ProcessIdentity::of_pid(child.pid() as u32).unwrap();
    child.kill();
    assert_eq!(id.liveness(), shmsync::Liveness::Dead);
    id.packed()
}

#[test]
fn a_header_half_written_by_a_dead_initializer_is_taken_over() {
    // Every prefix of the header's initialization: magic only; magic and kind; magic,
    // kind and format — each with state INITIALIZING and the claim held by a dead pid.
    let dead = dead_claimant();
    for written in 1..=3 {
        let name = common::ShmName::new("halfinit");
        {
            let seg = Segment::posix_create(name.as_str(), SIZE).unwrap();
            let base = seg.as_ptr();
            // SAFETY: offsets inside the fresh mapping, which nobody else uses.
            unsafe {
                *base.add(16).cast::<u32>() = 1; // state INITIALIZING
                *base.cast::<u32>() = shmsync::inspect::MAGIC;
                if written >= 2 {
                    *base.add(4).cast::<u32>() = shmsync::Kind::Region as u32;
                }
                if written >= 3 {
                    *base.add(8).cast::<u64>() = shmsync::inspect::FORMAT;
                }
                *base.add(24).cast::<u64>() = dead; // claim
            }
        }
        let loc = Location::parse(name.as_str()).unwrap();
        let region = Region::open(&loc).unwrap_or_else(|e| panic!("prefix {written}: {e}"));
        assert!(region.is_ready());
        region.get_or_init::<RawRobustMutex>("m", ()).unwrap();
    }
}

#[test]
fn a_name_abandoned_at_size_zero_is_sized_by_open_or_create() {
    let name = common::ShmName::new("unsized");
    let c = std::ffi::CString::new(name.as_str()).unwrap();
    // A creator that died between its exclusive create and ftruncate.
    // SAFETY: a valid C string; the descriptor is closed right away.
    unsafe {
        let fd = libc::shm_open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            0o600,
        );
        assert!(fd >= 0);
        libc::close(fd);
    }
    let loc = Location::parse(name.as_str()).unwrap();
    assert!(
        matches!(Region::open(&loc), Err(Error::TimedOut(_))),
        "plain open cannot size it"
    );
    let region = Region::open_or_create(&loc, SIZE).unwrap();
    assert_eq!(region.segment().len(), SIZE);
    region.get_or_init::<RawRobustMutex>("m", ()).unwrap();
}
