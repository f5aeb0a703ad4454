//! What a region or segment opener refuses to trust, reproduced as the attacks it stops:
//! symbolic links, FIFOs and devices planted at a file or POSIX segment's name; a SysV
//! segment whose creator handed its owner uid to us; segments another user owns or may
//! access through group/other permission bits.
#![allow(clippy::disallowed_types)]
mod common;

use std::ffi::CString;
use std::path::Path;

use common::{ShmName, SysvKey, TempPath};
use shmsync::{Error, Region, Segment};
use shmsync::{Location, RegionOptions};

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

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// `IPC_STAT` of the SysV segment `key`.
fn sysv_stat(key: libc::key_t) -> libc::shmid_ds {
    // SAFETY: shmget/shmctl read scalars and fill the stat buffer we own.
    unsafe {
        let id = libc::shmget(key, 0, 0);
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        assert_eq!(libc::shmctl(id, libc::IPC_STAT, &mut ds), 0);
        ds
    }
}

/// Removes the SysV segment `key` on drop, whoever created it.
struct RemoveSysv(libc::key_t);

impl Drop for RemoveSysv {
    fn drop(&mut self) {
        // SAFETY: shmget/shmctl only read scalars; IPC_RMID ignores the buffer.
        unsafe {
            let id = libc::shmget(self.0, 0, 0);
            if id >= 0 {
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            }
        }
    }
}

fn all_zero(seg: &Segment) -> bool {
    // SAFETY: the mapping is `len` bytes long; nothing writes it while we read.
    unsafe { std::slice::from_raw_parts(seg.as_ptr(), seg.len()) }
        .iter()
        .all(|&b| b == 0)
}

#[test]
fn a_sysv_segment_whose_creator_gave_us_its_uid_is_refused_and_left_unwritten() {
    let what = "a_sysv_segment_whose_creator_gave_us_its_uid_is_refused_and_left_unwritten";
    let Some(user) = common::second_user(what) else {
        return;
    };
    let key = SysvKey::new().key();
    let _remove = RemoveSysv(key);
    let victim = euid();
    // The attacker creates the segment and hands its owner uid to the victim with
    // IPC_SET; as creator (cuid) it keeps read-write access.
    let mut attacker = common::fork_child(|| {
        if !common::become_user(user) {
            return 2;
        }
        // SAFETY: shmget/shmctl read scalars and read/write the stat buffer we own.
        unsafe {
            let id = libc::shmget(key, SIZE, libc::IPC_CREAT | libc::IPC_EXCL | 0o600);
            if id < 0 {
                return 3;
            }
            let mut ds: libc::shmid_ds = std::mem::zeroed();
            if libc::shmctl(id, libc::IPC_STAT, &mut ds) != 0 {
                return 4;
            }
            ds.shm_perm.uid = victim;
            if libc::shmctl(id, libc::IPC_SET, &mut ds) != 0 {
                return 5;
            }
        }
        0
    });
    attacker.expect_success(common::WATCHDOG);
    let ds = sysv_stat(key);
    assert_eq!((ds.shm_perm.uid, ds.shm_perm.cuid), (victim, user.uid));
    assert_eq!(ds.shm_perm.mode & 0o777, 0o600);

    let loc = Location::SysV(key);
    for (how, r) in [
        ("open_or_create", Region::open_or_create(&loc, SIZE).err()),
        ("open", Region::open(&loc).err()),
        (
            "open read-only",
            Region::open_with(&loc, RegionOptions::new().read_only(true)).err(),
        ),
        ("sysv_open", Segment::sysv_open(key).err()),
    ] {
        match r {
            Some(e @ Error::ForeignCreator { creator_uid, .. }) if creator_uid == user.uid => {
                let msg = e.to_string();
                for part in [&format!("{key:#x}"), "cuid", "any-owner"] {
                    assert!(msg.contains(part), "{how}: {msg:?} lacks {part:?}");
                }
            }
            other => panic!("{how}: expected ForeignCreator, got {other:?}"),
        }
    }
    // Nothing was written; the explicit opt-in accepts the segment.
    let seg = Segment::sysv_open_any_owner(key).unwrap();
    assert!(
        all_zero(&seg),
        "the refused open wrote to the attacker's segment"
    );

    // Why it must be refused: the creator can still write what the victim would store.
    let mut writer = common::fork_child(|| {
        if !common::become_user(user) {
            return 2;
        }
        // SAFETY: attaching the segment created above (SIZE bytes) and writing inside it.
        unsafe {
            let p = libc::shmat(libc::shmget(key, 0, 0), std::ptr::null(), 0);
            if p as isize == -1 {
                return 3;
            }
            p.cast::<u8>().add(100).write(0x5A);
            libc::shmdt(p);
        }
        0
    });
    writer.expect_success(common::WATCHDOG);
    // SAFETY: offset 100 is inside the SIZE-byte mapping.
    assert_eq!(unsafe { seg.as_ptr().add(100).read_volatile() }, 0x5A);
}

/// Sets the exact permission bits of a POSIX object or file (the umask applied at
/// creation may have removed some).
fn chmod(loc: &Location, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let path = match loc {
        Location::Posix(name) => dev_shm(name).into(),
        Location::File(path) => path.clone(),
        Location::SysV(_) => return,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_segment_of_ours_that_group_or_others_may_access_is_refused_unless_any_owner() {
    for bit in [0o040, 0o020, 0o010, 0o004, 0o002, 0o001] {
        let mode = 0o600 | bit;
        let shm = ShmName::new("mode");
        let key = SysvKey::new();
        let path = TempPath::new("mode");
        for loc in [
            Location::Posix(shm.0.clone()),
            Location::SysV(key.key()),
            Location::File(path.0.clone()),
        ] {
            drop(Region::create_with(&loc, SIZE, RegionOptions::new().mode(mode)).unwrap());
            chmod(&loc, mode);
            let segment_open = match &loc {
                Location::Posix(name) => Segment::posix_open(name).err(),
                Location::SysV(key) => Segment::sysv_open(*key).err(),
                Location::File(path) => Segment::file_open(path).err(),
            };
            for (how, r) in [
                ("segment open", segment_open),
                ("open", Region::open(&loc).err()),
                ("open_or_create", Region::open_or_create(&loc, SIZE).err()),
                (
                    "open read-only",
                    Region::open_with(&loc, RegionOptions::new().read_only(true)).err(),
                ),
            ] {
                match r {
                    Some(e @ Error::OpenToOthers { mode: m, .. }) if m == mode => {
                        let msg = e.to_string();
                        for part in [
                            loc.to_string().replace("sysv:", "SysV key "),
                            format!("{mode:04o}"),
                            "any-owner".into(),
                        ] {
                            assert!(msg.contains(&part), "{how} {loc}: {msg:?} lacks {part:?}");
                        }
                    }
                    other => {
                        panic!("{how} of {loc} mode {mode:o}: expected OpenToOthers, got {other:?}")
                    }
                }
            }
            let any = RegionOptions::new().any_owner(true);
            Region::open_with(&loc, any).unwrap();
            Region::open_with(&loc, any.read_only(true)).unwrap();
        }
    }
}

#[test]
fn posix_objects_and_files_of_another_user_are_refused_unless_any_owner() {
    let what = "posix_objects_and_files_of_another_user_are_refused_unless_any_owner";
    let Some(user) = common::second_user(what) else {
        return;
    };
    let shm = ShmName::new("theirs");
    let path = TempPath::new("theirs");
    let (c_shm, c_path) = (
        CString::new(shm.as_str()).unwrap(),
        CString::new(path.as_str()).unwrap(),
    );
    // The other user makes both, sized and zero-filled, private to itself (0600).
    let mut other = common::fork_child(|| {
        if !common::become_user(user) {
            return 2;
        }
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC;
        // SAFETY: valid C strings made before the fork; the descriptors are ours.
        unsafe {
            for fd in [
                libc::shm_open(c_shm.as_ptr(), flags, 0o600),
                libc::open(c_path.as_ptr(), flags, 0o600),
            ] {
                if fd < 0 || libc::ftruncate(fd, SIZE as libc::off_t) != 0 {
                    return 3;
                }
                libc::close(fd);
            }
        }
        0
    });
    other.expect_success(common::WATCHDOG);
    for loc in [
        Location::Posix(shm.0.clone()),
        Location::File(path.0.clone()),
    ] {
        for (how, r) in [
            ("open_or_create", Region::open_or_create(&loc, SIZE).err()),
            ("open", Region::open(&loc).err()),
            (
                "open read-only",
                Region::open_with(&loc, RegionOptions::new().read_only(true)).err(),
            ),
        ] {
            match r {
                Some(e @ Error::ForeignOwner { owner_uid, .. }) if owner_uid == user.uid => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(&loc.to_string()) && msg.contains("any-owner"),
                        "{msg}"
                    );
                }
                other => panic!("{how} of {loc}: expected ForeignOwner, got {other:?}"),
            }
        }
        let file = match &loc {
            Location::Posix(name) => dev_shm(name).into(),
            Location::File(path) => path.clone(),
            Location::SysV(_) => unreachable!(),
        };
        assert!(
            std::fs::read(&file).unwrap() == vec![0u8; SIZE],
            "{loc}: a refused open wrote"
        );
        // The explicit opt-in accepts it (as root, read-write).
        let any = RegionOptions::new().any_owner(true);
        assert!(
            Region::open_or_create_with(&loc, SIZE, any).is_ok(),
            "{loc}"
        );
    }
}
