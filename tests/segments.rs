//! Every segment backing across a real process boundary, and every way of getting one
//! wrong: bad names, missing segments, size 0, smaller than needed, double creation,
//! foreign owners, creators that size late or never.
#![allow(clippy::disallowed_types)]
mod common;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{ShmName, SysvKey, TempPath};
use shmsync::{Error, Segment};

const LEN: usize = 4096;
const TO_CHILD: &[u8; 16] = b"parent-to-child!";
const TO_PARENT: &[u8; 16] = b"child-to-parent!";
const MSG_DOWN: usize = 64;
const MSG_UP: usize = 128;

#[test]
fn child_role() {
    common::dispatch(&[
        ("exchange_posix", |a| {
            let seg = Segment::posix_open(&a[0]).unwrap();
            assert_eq!(child_exchange(seg.as_ptr()), 0);
        }),
        ("exchange_sysv", |a| {
            let seg = Segment::sysv_open(a[0].parse().unwrap()).unwrap();
            assert_eq!(child_exchange(seg.as_ptr()), 0);
        }),
        ("exchange_file", |a| {
            let seg = Segment::file_open(&a[0]).unwrap();
            assert_eq!(child_exchange(seg.as_ptr()), 0);
        }),
        ("exchange_memfd", |a| {
            // SAFETY: the parent cleared CLOEXEC on its socketpair end and passed its
            // number; this process owns the inherited descriptor.
            let sock = UnixStream::from(unsafe { OwnedFd::from_raw_fd(a[0].parse().unwrap()) });
            let seg = Segment::recv_memfd(&sock).unwrap();
            assert_eq!(seg.len(), LEN);
            assert_eq!(child_exchange(seg.as_ptr()), 0);
        }),
    ]);
}

fn phase(base: *mut u8) -> &'static AtomicU32 {
    // SAFETY: every segment here is at least LEN bytes, page-aligned, and outlives the
    // exchange that uses this reference (the 'static is never held past it).
    unsafe { &*base.cast::<AtomicU32>() }
}

/// The child's half of the exchange; async-signal-safe (no allocation) so that a forked
/// child may run it. Waits for the parent's message (phase 1), checks it, answers
/// (phase 2). Returns 0 on success.
fn child_exchange(base: *mut u8) -> i32 {
    let phase = phase(base);
    let mut waited_ms = 0;
    // Acquire pairs with the parent's Release store of phase 1 after writing TO_CHILD.
    while phase.load(Ordering::Acquire) != 1 {
        if waited_ms > 20_000 {
            return 2;
        }
        // SAFETY: usleep is async-signal-safe and has no preconditions.
        unsafe { libc::usleep(1000) };
        waited_ms += 1;
    }
    // SAFETY: MSG_DOWN..+16 and MSG_UP..+16 are inside the LEN-byte segment; the parent
    // does not touch them while phase is 1.
    unsafe {
        if std::slice::from_raw_parts(base.add(MSG_DOWN), 16) != TO_CHILD {
            return 3;
        }
        base.add(MSG_UP)
            .copy_from_nonoverlapping(TO_PARENT.as_ptr(), 16);
    }
    // Release pairs with the parent's Acquire load that waits for phase 2.
    phase.store(2, Ordering::Release);
    0
}

/// The parent's half: writes its message, waits for the child's answer, checks it and
/// the child's exit status.
fn parent_exchange(seg: &Segment, child: &mut common::Child) {
    seg.require_len(LEN).unwrap();
    let base = seg.as_ptr();
    // SAFETY: in bounds; the child reads it only after phase 1.
    unsafe {
        base.add(MSG_DOWN)
            .copy_from_nonoverlapping(TO_CHILD.as_ptr(), 16)
    };
    // Release pairs with the child's Acquire load of phase 1.
    phase(base).store(1, Ordering::Release);
    // Acquire pairs with the child's Release store of phase 2 after writing TO_PARENT.
    common::wait_until(common::WATCHDOG, "the child's answer", || {
        phase(base).load(Ordering::Acquire) == 2
    });
    // SAFETY: in bounds; the child wrote it before phase 2 and writes nothing more.
    let answer = unsafe { std::slice::from_raw_parts(base.add(MSG_UP), 16) };
    assert_eq!(answer, TO_PARENT);
    child.expect_success(common::WATCHDOG);
}

fn os_errno<T: std::fmt::Debug>(r: shmsync::Result<T>) -> i32 {
    match r {
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("not an OS error: {e:?}")),
        Ok(v) => panic!("expected an OS error, got {v:?}"),
    }
}

#[test]
fn anonymous_round_trip_with_fork() {
    let seg = Segment::anonymous(LEN).unwrap();
    let base = seg.as_ptr();
    let mut child = common::fork_child(|| child_exchange(base));
    parent_exchange(&seg, &mut child);
}

#[test]
fn posix_round_trip() {
    let name = ShmName::new("seg-posix");
    let seg = Segment::posix_create(name.as_str(), LEN).unwrap();
    let mut child = common::spawn("exchange_posix", &[name.as_str()]);
    parent_exchange(&seg, &mut child);
}

#[test]
fn sysv_round_trip() {
    let key = SysvKey::new();
    let seg = Segment::sysv_create(key.key(), LEN).unwrap();
    assert!(matches!(seg.backing(), shmsync::Backing::SysV { .. }));
    let mut child = common::spawn("exchange_sysv", &[&key.key().to_string()]);
    parent_exchange(&seg, &mut child);
}

#[test]
fn file_round_trip() {
    let path = TempPath::new("seg-file");
    let seg = Segment::file_create(path.path(), LEN).unwrap();
    let mut child = common::spawn("exchange_file", &[path.as_str()]);
    parent_exchange(&seg, &mut child);
}

/// One end of a socketpair made inheritable (CLOEXEC cleared) for a spawned child.
fn inheritable_pair() -> (UnixStream, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    // SAFETY: F_SETFD with 0 clears FD_CLOEXEC on a descriptor we own.
    let r = unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_SETFD, 0) };
    assert_eq!(r, 0);
    (ours, theirs)
}

#[test]
fn memfd_round_trip_over_scm_rights() {
    let seg = Segment::memfd_create("seg-memfd", LEN).unwrap();
    let (ours, theirs) = inheritable_pair();
    let mut child = common::spawn("exchange_memfd", &[&theirs.as_raw_fd().to_string()]);
    drop(theirs);
    seg.send_fd(&ours).unwrap();
    parent_exchange(&seg, &mut child);
}

#[test]
fn bad_names_and_keys_are_refused() {
    for bad in ["noslash", "/a/b", "/", "/.."] {
        assert!(
            matches!(
                Segment::posix_create(bad, LEN),
                Err(Error::InvalidName { .. })
            ),
            "{bad}"
        );
        assert!(
            matches!(Segment::posix_open(bad), Err(Error::InvalidName { .. })),
            "{bad}"
        );
    }
    assert!(matches!(
        Segment::memfd_create("a\0b", LEN),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        Segment::memfd_create(&"m".repeat(250), LEN),
        Err(Error::InvalidName { .. })
    ));
    assert!(Segment::file_create("/nonexistent-dir-shmsync/x", LEN).is_err());
    assert!(Segment::file_create("bad\0path", LEN).is_err());
    for r in [
        Segment::sysv_create(libc::IPC_PRIVATE, LEN).map(drop),
        Segment::sysv_open(libc::IPC_PRIVATE).map(drop),
        Segment::sysv_remove(libc::IPC_PRIVATE),
    ] {
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    }
    assert!(matches!(
        shmsync::ftok("/", 0),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        os_errno(shmsync::ftok("/no/such/shmsync/path", 1)),
        libc::ENOENT
    );
}

#[test]
fn missing_segments_are_enoent_naming_the_target() {
    let name = ShmName::new("seg-missing");
    let err = Segment::posix_open(name.as_str()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert!(err.to_string().contains(name.as_str()), "{err}");
    assert_eq!(os_errno(Segment::posix_unlink(name.as_str())), libc::ENOENT);

    let key = SysvKey::new();
    assert_eq!(os_errno(Segment::sysv_open(key.key())), libc::ENOENT);
    assert_eq!(os_errno(Segment::sysv_remove(key.key())), libc::ENOENT);

    let path = TempPath::new("seg-missing");
    let err = Segment::file_open(path.path()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert!(err.to_string().contains(path.as_str()), "{err}");
}

#[test]
fn zero_length_is_refused_and_leaves_nothing_behind() {
    let zero = |r: shmsync::Result<Segment>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(zero(Segment::anonymous(0)));
    assert!(zero(Segment::memfd_create("zero", 0)));

    let name = ShmName::new("seg-zero");
    assert!(zero(Segment::posix_create(name.as_str(), 0)));
    assert_eq!(os_errno(Segment::posix_open(name.as_str())), libc::ENOENT);

    let key = SysvKey::new();
    assert!(zero(Segment::sysv_create(key.key(), 0)));
    assert_eq!(os_errno(Segment::sysv_open(key.key())), libc::ENOENT);

    let path = TempPath::new("seg-zero");
    assert!(zero(Segment::file_create(path.path(), 0)));
    assert!(!path.path().exists());
}

fn assert_sized(seg: &Segment, len: usize) {
    assert_eq!(seg.len(), len);
    seg.require_len(len).unwrap();
    match seg.require_len(len + 1) {
        Err(Error::TooSmall { needed, available }) => {
            assert_eq!((needed, available), (len + 1, len))
        }
        other => panic!("expected TooSmall, got {other:?}"),
    }
}

#[test]
fn openers_see_the_creators_size_and_require_len_checks_it() {
    const ODD: usize = 5000; // not a page multiple
    let name = ShmName::new("seg-size");
    let _a = Segment::posix_create(name.as_str(), ODD).unwrap();
    assert_sized(&Segment::posix_open(name.as_str()).unwrap(), ODD);

    let key = SysvKey::new();
    let _b = Segment::sysv_create(key.key(), ODD).unwrap();
    assert_sized(&Segment::sysv_open(key.key()).unwrap(), ODD);

    let path = TempPath::new("seg-size");
    let _c = Segment::file_create(path.path(), ODD).unwrap();
    assert_sized(&Segment::file_open(path.path()).unwrap(), ODD);

    let m = Segment::memfd_create("seg-size", ODD).unwrap();
    let (x, y) = UnixStream::pair().unwrap();
    m.send_fd(&x).unwrap();
    assert_sized(&Segment::recv_memfd(&y).unwrap(), ODD);
}

#[test]
fn double_create_is_eexist_and_keeps_the_first() {
    let name = ShmName::new("seg-twice");
    let first = Segment::posix_create(name.as_str(), LEN).unwrap();
    assert_eq!(
        os_errno(Segment::posix_create(name.as_str(), LEN)),
        libc::EEXIST
    );

    let key = SysvKey::new();
    let first_v = Segment::sysv_create(key.key(), LEN).unwrap();
    assert_eq!(os_errno(Segment::sysv_create(key.key(), LEN)), libc::EEXIST);

    let path = TempPath::new("seg-twice");
    let first_f = Segment::file_create(path.path(), LEN).unwrap();
    assert_eq!(
        os_errno(Segment::file_create(path.path(), LEN)),
        libc::EEXIST
    );

    // The failed second creation removed nothing: each is still shared with an opener.
    for (seg, again) in [
        (&first, Segment::posix_open(name.as_str()).unwrap()),
        (&first_v, Segment::sysv_open(key.key()).unwrap()),
        (&first_f, Segment::file_open(path.path()).unwrap()),
    ] {
        // SAFETY: both mappings are LEN bytes; nothing else uses them.
        unsafe {
            seg.as_ptr().add(10).write(0xA5);
            assert_eq!(again.as_ptr().add(10).read(), 0xA5);
        }
    }
}

const NOBODY: u32 = 65534;

fn skip_foreign(what: &str, e: impl std::fmt::Display) {
    eprintln!(
        "SKIPPED foreign-owner check for {what}: cannot give it to uid {NOBODY} ({e}); needs root"
    );
}

#[test]
fn foreign_owner_is_refused_unless_asked_for() {
    let owned_by_nobody = |r: shmsync::Result<Segment>| {
        matches!(
            r,
            Err(Error::ForeignOwner {
                owner_uid: NOBODY,
                ..
            })
        )
    };

    let name = ShmName::new("seg-foreign");
    let _seg = Segment::posix_create(name.as_str(), LEN).unwrap();
    let shm = std::fs::File::open(format!("/dev/shm{}", name.as_str())).unwrap();
    match std::os::unix::fs::fchown(&shm, Some(NOBODY), None) {
        Err(e) => skip_foreign("POSIX", e),
        Ok(()) => {
            let err = Segment::posix_open(name.as_str());
            assert!(owned_by_nobody(err), "POSIX");
            assert_eq!(
                Segment::posix_open_any_owner(name.as_str()).unwrap().len(),
                LEN
            );
        }
    }

    let path = TempPath::new("seg-foreign");
    let _seg = Segment::file_create(path.path(), LEN).unwrap();
    let file = std::fs::File::open(path.path()).unwrap();
    match std::os::unix::fs::fchown(&file, Some(NOBODY), None) {
        Err(e) => skip_foreign("file", e),
        Ok(()) => {
            assert!(owned_by_nobody(Segment::file_open(path.path())), "file");
            assert_eq!(
                Segment::file_open_any_owner(path.path()).unwrap().len(),
                LEN
            );
        }
    }

    let key = SysvKey::new();
    let _seg = Segment::sysv_create(key.key(), LEN).unwrap();
    // SAFETY: shmget/shmctl read scalars and read/write the stat buffer we own.
    let set = unsafe {
        let id = libc::shmget(key.key(), 0, 0);
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        assert_eq!(libc::shmctl(id, libc::IPC_STAT, &mut ds), 0);
        ds.shm_perm.uid = NOBODY;
        libc::shmctl(id, libc::IPC_SET, &mut ds)
    };
    if set != 0 {
        skip_foreign("SysV", std::io::Error::last_os_error());
    } else {
        assert!(owned_by_nobody(Segment::sysv_open(key.key())), "SysV");
        assert_eq!(Segment::sysv_open_any_owner(key.key()).unwrap().len(), LEN);
    }
}

#[test]
fn memfd_is_sealed_and_unsealed_or_odd_descriptors_are_refused() {
    let seg = Segment::memfd_create("seg-seal", LEN).unwrap();
    let fd = seg.fd().expect("a memfd segment has a descriptor");
    // SAFETY: ftruncate on a descriptor we borrow; the seal must refuse it (EPERM).
    let r = unsafe { libc::ftruncate(fd.as_raw_fd(), 0) };
    assert_eq!(r, -1, "a sealed memfd must not shrink");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPERM)
    );

    // An unsealed memfd: a peer could truncate it, so it is refused.
    // SAFETY: a valid C string literal and flags.
    let raw = unsafe { libc::memfd_create(c"unsealed".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0);
    // SAFETY: just created; nothing else owns it.
    let unsealed = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sizing a descriptor we own.
    let r = unsafe { libc::ftruncate(unsealed.as_raw_fd(), LEN as libc::off_t) };
    assert_eq!(r, 0);
    assert!(matches!(
        Segment::from_memfd(unsealed),
        Err(Error::InvalidArgument(_))
    ));

    // Only a memfd segment has something to send.
    let (a, b) = UnixStream::pair().unwrap();
    let anon = Segment::anonymous(LEN).unwrap();
    assert!(anon.fd().is_none());
    assert!(matches!(anon.send_fd(&a), Err(Error::InvalidArgument(_))));

    // The received descriptor is close-on-exec.
    seg.send_fd(&a).unwrap();
    let got = Segment::recv_memfd(&b).unwrap();
    // SAFETY: F_GETFD on a descriptor we borrow.
    let flags = unsafe { libc::fcntl(got.fd().unwrap().as_raw_fd(), libc::F_GETFD) };
    assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);

    // A message without a descriptor, then a closed peer.
    use std::io::Write;
    (&a).write_all(b"x").unwrap();
    assert!(Segment::recv_memfd(&b).is_err());
    drop(a);
    let err = Segment::recv_memfd(&b).unwrap_err();
    assert!(
        matches!(&err, Error::Os { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof),
        "{err:?}"
    );
}

/// Sends one message carrying `n` copies of `fd` (`n` <= 8).
fn send_fds(sock: &UnixStream, fd: i32, n: usize) {
    let mut byte = [b'M'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut buf = [0u64; 8];
    let bytes = (n * 4) as u32;
    // SAFETY: a zeroed msghdr is valid; the control buffer is 64 bytes, aligned for
    // cmsghdr, and holds CMSG_SPACE(n * 4) <= 48 bytes; everything outlives sendmsg.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = buf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(bytes) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(bytes) as _;
        let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
        for i in 0..n {
            data.add(i).write_unaligned(fd);
        }
        libc::sendmsg(sock.as_fd().as_raw_fd(), &msg, 0)
    };
    assert_eq!(sent, 1, "sendmsg: {}", std::io::Error::last_os_error());
}

#[test]
fn messages_with_several_descriptors_are_refused() {
    let seg = Segment::memfd_create("seg-many", LEN).unwrap();
    let fd = seg.fd().unwrap().as_raw_fd();
    let (a, b) = UnixStream::pair().unwrap();
    // Two fit the receive buffer (its control space is padded to 8 bytes).
    send_fds(&a, fd, 2);
    let err = Segment::recv_memfd(&b).unwrap_err();
    assert!(err.to_string().contains("more than one"), "{err}");
    // Three do not: the kernel truncates the control message (MSG_CTRUNC).
    send_fds(&a, fd, 3);
    let err = Segment::recv_memfd(&b).unwrap_err();
    assert!(err.to_string().contains("MSG_CTRUNC"), "{err}");
    // The socket is still usable afterwards.
    seg.send_fd(&a).unwrap();
    assert_eq!(Segment::recv_memfd(&b).unwrap().len(), LEN);
}

/// Creates `path` empty (as a creator between `open` and `ftruncate` would leave it) and
/// returns the descriptor.
fn unsized_posix(name: &str) -> OwnedFd {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid C string.
    let fd = unsafe {
        libc::shm_open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o600,
        )
    };
    assert!(fd >= 0, "shm_open: {}", std::io::Error::last_os_error());
    // SAFETY: just opened; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn unsized_file(path: &std::path::Path) -> OwnedFd {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap()
        .into()
}

/// Sizes `fd` to LEN from another thread after 50 ms.
fn size_later(fd: OwnedFd) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        std::fs::File::from(fd).set_len(LEN as u64).unwrap();
    })
}

#[test]
fn opener_waits_for_a_creator_that_sizes_late() {
    let name = ShmName::new("seg-late");
    let sizer = size_later(unsized_posix(name.as_str()));
    assert_eq!(Segment::posix_open(name.as_str()).unwrap().len(), LEN);
    sizer.join().unwrap();

    let path = TempPath::new("seg-late");
    let sizer = size_later(unsized_file(path.path()));
    assert_eq!(Segment::file_open(path.path()).unwrap().len(), LEN);
    sizer.join().unwrap();
}

#[test]
fn opener_times_out_on_a_segment_never_sized() {
    let name = ShmName::new("seg-never");
    let _fd = unsized_posix(name.as_str());
    assert!(matches!(
        Segment::posix_open(name.as_str()),
        Err(Error::TimedOut(_))
    ));

    let path = TempPath::new("seg-never");
    let _fd = unsized_file(path.path());
    assert!(matches!(
        Segment::file_open(path.path()),
        Err(Error::TimedOut(_))
    ));
}
