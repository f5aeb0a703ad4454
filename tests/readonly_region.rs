//! Read-only region opens across real processes and users: the mapping is `PROT_READ`,
//! nothing is ever written, every call that would write is `Error::ReadOnly` (never a
//! fault), and a second user with read permission only can read a region's table and
//! objects (what `shmsync inspect` does).
#![allow(clippy::disallowed_types)]
mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{ShmName, SysvKey, TempPath};
use shmsync::inspect::{self, RecoverOptions};
use shmsync::{
    Condvar, Error, LeasedSemaphore, RawRobustMutex, Region, Segment, Semaphore, SeqLock,
};
use shmsync::{Location, RegionOptions};

const SIZE: usize = 1 << 16;
const NAMES: [&str; 5] = ["lock", "sem", "leases", "seq", "cv"];

#[test]
fn child_role() {
    common::dispatch(&[("read_only_reader", read_only_reader)]);
}

/// One location per named backing; the guards remove them on every exit path.
struct Places {
    _shm: ShmName,
    _key: SysvKey,
    _path: TempPath,
    locs: [Location; 3],
}

impl Places {
    fn new(tag: &str) -> Places {
        let shm = ShmName::new(tag);
        let key = SysvKey::new();
        let path = TempPath::new(tag);
        let locs = [
            Location::Posix(shm.0.clone()),
            Location::SysV(key.key()),
            Location::File(path.0.clone()),
        ];
        Places {
            _shm: shm,
            _key: key,
            _path: path,
            locs,
        }
    }
}

/// Creates a region at `loc` holding one object of every kind: a locked mutex, a
/// semaphore of value 3, a leased semaphore with one permit out (leaked on purpose: the
/// state stays), a seqlock and a condvar.
fn populated(loc: &Location, opts: RegionOptions) -> Region {
    let region = Region::create_with(loc, SIZE, opts).unwrap();
    let lock = region.get_or_init::<RawRobustMutex>(NAMES[0], ()).unwrap();
    assert_eq!(lock.try_lock().unwrap(), shmsync::Acquired::Clean);
    region.get_or_init::<Semaphore>(NAMES[1], 3).unwrap();
    let leases = region
        .get_or_init::<LeasedSemaphore<4>>(NAMES[2], 2)
        .unwrap();
    std::mem::forget(leases.try_acquire().unwrap());
    region.get_or_init::<SeqLock<u64>>(NAMES[3], 7).unwrap();
    region.get_or_init::<Condvar>(NAMES[4], ()).unwrap();
    region
}

fn bytes(seg: &Segment) -> Vec<u8> {
    // SAFETY: the mapping is `len` bytes long and lives as long as `seg`; nothing else
    // writes to it while the test reads it.
    unsafe { std::slice::from_raw_parts(seg.as_ptr(), seg.len()) }.to_vec()
}

fn is_read_only_error<T>(r: shmsync::Result<T>) -> bool {
    matches!(r, Err(Error::ReadOnly { .. }))
}

/// What a read-only opener may and may not do; the process dies with SIGSEGV if
/// anything writes to the `PROT_READ` mapping.
fn check_read_only(region: &Region) {
    assert!(region.is_read_only());
    assert!(region.segment().is_read_only());
    let names: Vec<String> = region
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, NAMES);
    let report = inspect::inspect(region).unwrap();
    assert_eq!(report.reports.len(), NAMES.len());
    for r in &report.reports {
        assert!(
            !r.state.starts_with("unreadable"),
            "{}: {}",
            r.entry.name,
            r.state
        );
    }
    assert!(report.reports[0].state.starts_with("locked"), "{report:?}");
    assert!(report.reports[1].state.starts_with("value 3"), "{report:?}");
    // The calls that write, or hand out objects whose methods write, are refused.
    assert!(is_read_only_error(region.get::<RawRobustMutex>(NAMES[0])));
    assert!(is_read_only_error(region.get::<Semaphore>(NAMES[1])));
    assert!(is_read_only_error(
        region.get_or_init::<Semaphore>(NAMES[1], 1)
    ));
    assert!(is_read_only_error(
        region.get_or_init::<Semaphore>("new", 1)
    ));
    assert!(is_read_only_error(region.release_dead_claim()));
    let err = inspect::recover(region, RecoverOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::ReadOnly { op: "recover", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("read-only"), "{err}");
    let dry = RecoverOptions {
        dry_run: true,
        ..RecoverOptions::default()
    };
    inspect::recover(region, dry).unwrap();
}

/// Runs as the second user: `a[0]` is a region another user made with mode 0644.
fn read_only_reader(a: &[String]) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_ne!(euid, 0, "the reader runs unprivileged");
    let loc = Location::parse(&a[0]).unwrap();
    // Another user's region needs the explicit opt-in, read-only or not.
    let err = Region::open_with(&loc, RegionOptions::new().read_only(true)).unwrap_err();
    assert!(matches!(err, Error::ForeignOwner { .. }), "{loc}: {err}");
    // Read-write is refused by the OS: we may only read it.
    let err = Region::open_with(&loc, RegionOptions::new().any_owner(true)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{loc}: {err}");
    let opts = RegionOptions::new().read_only(true).any_owner(true);
    let region = Region::open_with(&loc, opts).unwrap();
    check_read_only(&region);
}

#[test]
fn read_only_open_maps_prot_read_and_refuses_every_write() {
    let places = Places::new("ro-own");
    for loc in &places.locs {
        let rw = populated(loc, RegionOptions::new());
        let before = bytes(rw.segment());
        let ro = Region::open_with(loc, RegionOptions::new().read_only(true)).unwrap();
        check_read_only(&ro);
        assert!(
            bytes(rw.segment()) == before,
            "{loc}: a read-only open wrote"
        );

        // The pages really are read-only: a write kills the writer with SIGSEGV.
        let p = ro.segment().as_ptr() as usize;
        let mut child = common::fork_child(|| {
            // SAFETY: deliberately writes to a PROT_READ page; the fault kills this child.
            unsafe { (p as *mut u8).add(4000).write(1) };
            0
        });
        let status = child.wait(common::WATCHDOG);
        assert_eq!(status.signal(), Some(libc::SIGSEGV), "{loc}: {status:?}");

        // A read-only segment handed back makes a read-only region whatever the options.
        let again = Region::from_segment(ro.into_segment()).unwrap();
        assert!(again.is_read_only());
        assert!(is_read_only_error(again.get::<Semaphore>(NAMES[1])));

        // Creating read-only makes no sense and is refused up front.
        let ro_opts = RegionOptions::new().read_only(true);
        for r in [
            Region::create_with(loc, SIZE, ro_opts),
            Region::open_or_create_with(loc, SIZE, ro_opts),
        ] {
            assert!(matches!(r, Err(Error::InvalidArgument(_))), "{loc}: {r:?}");
        }
    }
}

#[test]
fn read_only_open_of_an_uninitialized_segment_writes_nothing() {
    let name = ShmName::new("ro-zero");
    let seg = Segment::posix_create(name.as_str(), SIZE).unwrap();
    let loc = Location::Posix(name.0.clone());
    // `initialize` is on (the default) but read-only wins: it only waits, then says so.
    let opts = RegionOptions::new()
        .read_only(true)
        .wait(Duration::from_millis(200));
    let r = Region::open_with(&loc, opts);
    assert!(matches!(r, Err(Error::Uninitialized { .. })), "{r:?}");
    assert!(
        bytes(&seg).iter().all(|&b| b == 0),
        "a read-only open wrote"
    );
}

#[test]
fn second_user_reads_a_0644_region_read_only() {
    let Some(user) = common::second_user("second_user_reads_a_0644_region_read_only") else {
        return;
    };
    let places = Places::new("ro-other");
    for loc in &places.locs {
        let rw = populated(loc, RegionOptions::new().mode(0o644));
        // The umask may have removed bits from a POSIX object's or file's mode.
        match loc {
            Location::Posix(name) => set_mode(&format!("/dev/shm{name}")),
            Location::File(path) => set_mode(path.to_str().unwrap()),
            Location::SysV(_) => {}
        }
        let before = bytes(rw.segment());
        common::spawn_as(user, "read_only_reader", &[&loc.to_string()])
            .expect_success(common::WATCHDOG);
        assert!(bytes(rw.segment()) == before, "{loc}: the reader wrote");
    }
}

fn set_mode(path: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}
