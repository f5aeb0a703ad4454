//! The raw robust mutex across a real process boundary: a child dies holding it.
#![allow(clippy::disallowed_types)]
mod common;

use shmsync::{Acquired, RawRobustMutex, Segment};

#[test]
fn child_role() {
    common::dispatch(&[
        ("lock_and_die", lock_and_die),
        ("lock_and_die_unlisted", lock_and_die_unlisted),
    ]);
}

/// The kernel's `struct robust_list_head`.
#[repr(C)]
struct RobustListHead {
    next: *const RobustListHead,
    futex_offset: libc::c_long,
    pending: *const u8,
}

/// Locks, then replaces this thread's robust list with an empty one and exits: the
/// kernel never marks the mutex owner-died (as when an owner held > 2048 robust locks).
fn lock_and_die_unlisted(args: &[String]) {
    let seg = Segment::posix_open(&args[0]).unwrap();
    // SAFETY: the parent placed a READY mutex at offset 0; the mapping outlives `m`.
    let m = unsafe { RawRobustMutex::attach(seg.as_ptr().cast()) }.unwrap();
    assert_eq!(m.lock(), Ok(Acquired::Clean));
    let head = Box::leak(Box::new(RobustListHead {
        next: std::ptr::null(),
        futex_offset: 0,
        pending: std::ptr::null(),
    }));
    head.next = head as *const RobustListHead;
    // SAFETY: `head` is a valid, leaked (never freed) empty robust list head of the
    // size the kernel expects; the process exits right after.
    let r = unsafe {
        libc::syscall(
            libc::SYS_set_robust_list,
            head as *const RobustListHead,
            std::mem::size_of::<RobustListHead>(),
        )
    };
    assert_eq!(r, 0, "set_robust_list: {}", std::io::Error::last_os_error());
    // SAFETY: _exit skips atexit handlers; glibc's own list is no longer registered.
    unsafe { libc::_exit(0) };
}

fn lock_and_die(args: &[String]) {
    let seg = Segment::posix_open(&args[0]).unwrap();
    // SAFETY: the parent placed a READY mutex at offset 0; the mapping outlives `m`.
    let m = unsafe { RawRobustMutex::attach(seg.as_ptr().cast()) }.unwrap();
    assert_eq!(m.lock(), Ok(Acquired::Clean));
    // Exit without unlocking: the kernel's robust-list walk marks it owner-died.
    std::process::exit(0);
}

#[test]
fn owner_death_is_reported_to_the_next_locker() {
    let name = common::ShmName::new("rawmx");
    let seg = Segment::posix_create(name.as_str(), 4096).unwrap();
    // SAFETY: fresh, exclusive, 4096-byte mapping that outlives `m`.
    let m = unsafe { RawRobustMutex::init_at(seg.as_ptr().cast()) }.unwrap();
    common::spawn("lock_and_die", &[name.as_str()]).expect_success(common::WATCHDOG);
    assert_eq!(m.state(), shmsync::MutexState::OwnerDied);
    let _w = common::Watchdog::new(common::WATCHDOG, "lock after owner death");
    assert_eq!(m.lock(), Ok(Acquired::OwnerDied));
    // SAFETY: held by this thread.
    unsafe {
        m.make_consistent().unwrap();
        assert_eq!(m.unlock(), 0);
    }
    assert_eq!(m.lock(), Ok(Acquired::Clean));
    assert_eq!(m.lock(), Err(shmsync::RawLockError::Deadlock));
    // SAFETY: held by this thread.
    assert_eq!(unsafe { m.unlock() }, 0);
}

#[test]
fn a_dead_owner_the_kernel_missed_is_released() {
    let name = common::ShmName::new("rawmx-unlisted");
    let seg = Segment::posix_create(name.as_str(), 4096).unwrap();
    // SAFETY: fresh, exclusive, 4096-byte mapping that outlives `m`.
    let m = unsafe { RawRobustMutex::init_at(seg.as_ptr().cast()) }.unwrap();
    common::spawn("lock_and_die_unlisted", &[name.as_str()]).expect_success(common::WATCHDOG);
    match m.state() {
        shmsync::MutexState::Locked { owner, .. } => assert_eq!(owner, shmsync::Liveness::Dead),
        other => panic!("expected locked by a dead owner, got {other:?}"),
    }
    // Without help, every locker would wait forever.
    assert_eq!(m.try_lock(), Err(shmsync::RawLockError::WouldBlock));
    assert!(m.release_dead_owner().is_some());
    assert_eq!(m.state(), shmsync::MutexState::OwnerDied);
    assert_eq!(m.release_dead_owner(), None, "nothing left to release");
    let _w = common::Watchdog::new(common::WATCHDOG, "lock after releasing a dead owner");
    assert_eq!(m.lock(), Ok(Acquired::OwnerDied));
    // SAFETY: held by this thread.
    unsafe {
        m.make_consistent().unwrap();
        assert_eq!(m.unlock(), 0);
    }
}
