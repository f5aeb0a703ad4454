//! What a region or segment opener refuses to trust, reproduced as the attacks it stops:
//! symbolic links, FIFOs and devices planted at a file or POSIX segment's name.
#![allow(clippy::disallowed_types)]
mod common;

use std::ffi::CString;
use std::path::Path;

use common::{ShmName, TempPath};
use shmsync::region::{Location, RegionOptions};
use shmsync::{Error, Region, Segment};

const SIZE: usize = 1 << 16;

#[test]
fn child_role() {
    common::dispatch(&[("open_fifos", open_fifos)]);
}

/// Every way of opening `loc`, each reduced to its error (`None` if it opened).
fn every_open(loc: &Location) -> Vec<(&'static str, Option<Error>)> {
    let ro = RegionOptions::new().read_only(true);
    let any = RegionOptions::new().any_owner(true);
    let mut out = vec![
        ("open_or_create", Region::open_or_create(loc, SIZE).err()),
        ("open", Region::open(loc).err()),
        ("open read-only", Region::open_with(loc, ro).err()),
        ("open any-owner", Region::open_with(loc, any).err()),
        (
            "open_or_create any-owner",
            Region::open_or_create_with(loc, SIZE, any).err(),
        ),
    ];
    match loc {
        Location::File(path) => out.extend([
            ("file_open", Segment::file_open(path).err()),
            (
                "file_open_any_owner",
                Segment::file_open_any_owner(path).err(),
            ),
            (
                "file_open_or_size",
                Segment::file_open_or_size(path, SIZE).err(),
            ),
        ]),
        Location::Posix(name) => out.extend([
            ("posix_open", Segment::posix_open(name).err()),
            (
                "posix_open_any_owner",
                Segment::posix_open_any_owner(name).err(),
            ),
            (
                "posix_open_or_size",
                Segment::posix_open_or_size(name, SIZE).err(),
            ),
        ]),
        Location::SysV(_) => {}
    }
    out
}

/// Asserts that every way of opening `loc` is refused as `found`, naming it.
fn assert_all_refused(loc: &Location, found: &str) {
    for (how, err) in every_open(loc) {
        match err {
            Some(Error::NotRegularFile { target, found: f }) if f == found => {
                let shown = loc.to_string();
                assert_eq!(target, shown, "{how} of {loc}");
                let msg = Error::NotRegularFile { target, found: f }.to_string();
                assert!(msg.contains(&shown) && msg.contains(found), "{msg}");
            }
            other => panic!("{how} of {loc}: expected it refused as {found}, got {other:?}"),
        }
    }
}

fn mkfifo(path: &str) {
    let c = CString::new(path).unwrap();
    // SAFETY: a valid C string.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(r, 0, "mkfifo {path}: {}", std::io::Error::last_os_error());
}

fn dev_shm(name: &str) -> String {
    format!("/dev/shm{name}")
}

/// Child: `a[0]` is a FIFO path, `a[1]` a POSIX name that is a FIFO. Blocking here is
/// the failure the parent's watchdog turns into a test failure.
fn open_fifos(a: &[String]) {
    assert_all_refused(&Location::File(a[0].clone().into()), "a FIFO");
    assert_all_refused(&Location::Posix(a[1].clone()), "a FIFO");
}

#[test]
fn a_fifo_at_a_region_path_is_refused_without_blocking() {
    let path = TempPath::new("fifo");
    mkfifo(path.as_str());
    let name = ShmName::new("fifo");
    mkfifo(&dev_shm(name.as_str()));
    common::spawn("open_fifos", &[path.as_str(), name.as_str()]).expect_success(common::WATCHDOG);
}

#[test]
fn a_symlink_at_a_region_path_is_refused_and_its_target_left_byte_for_byte() {
    // A file of ours that a region open would happily initialize (all zero), and an
    // empty one it would size; a symlink at the region's path points at each in turn.
    let zeros = TempPath::new("link-zeros");
    std::fs::write(zeros.path(), vec![0u8; SIZE]).unwrap();
    let empty = TempPath::new("link-empty");
    std::fs::write(empty.path(), b"").unwrap();
    let link = TempPath::new("link");
    let loc = Location::File(link.0.clone());
    for (target, content) in [(&zeros, vec![0u8; SIZE]), (&empty, vec![])] {
        std::os::unix::fs::symlink(target.path(), link.path()).unwrap();
        assert_all_refused(&loc, "a symbolic link");
        assert!(
            std::fs::read(target.path()).unwrap() == content,
            "{}: the symlink's target was written",
            target.path().display()
        );
        // Creating never follows it either: the name exists.
        let err = Region::create(&loc, SIZE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
        std::fs::remove_file(link.path()).unwrap();
    }

    // A dangling link: nothing is created where it points.
    let nowhere = TempPath::new("link-nowhere");
    std::os::unix::fs::symlink(nowhere.path(), link.path()).unwrap();
    assert_all_refused(&loc, "a symbolic link");
    assert!(
        !nowhere.path().exists(),
        "a region was created through the link"
    );

    // The same in /dev/shm (glibc's shm_open opens with O_NOFOLLOW).
    let name = ShmName::new("link");
    std::os::unix::fs::symlink(zeros.path(), dev_shm(name.as_str())).unwrap();
    assert_all_refused(&Location::Posix(name.0.clone()), "a symbolic link");
    assert!(std::fs::read(zeros.path()).unwrap() == vec![0u8; SIZE]);
}

#[test]
fn devices_and_directories_are_refused_before_they_are_opened() {
    assert_all_refused(&Location::File("/dev/null".into()), "a character device");
    let dir = std::env::temp_dir();
    assert_all_refused(&Location::File(dir), "a directory");
    assert!(Path::new("/dev/null").exists());
}
