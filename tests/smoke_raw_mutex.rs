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

/// Locks, then replaces this thread's robust list with an empty one and exits: the
/// kernel never marks the mutex owner-died (as when an owner held > 2048 robust locks).
fn lock_and_die_unlisted(args: &[String]) {
    let seg = Segment::posix_open(&args[0]).unwrap();
    // SAFETY: the parent placed a READY mutex at offset 0; the mapping outlives `m`.
    let m = unsafe { RawRobustMutex::attach(seg.as_ptr().cast()) }.unwrap();
    assert_eq!(m.lock(), Ok(Acquired::Clean));
    common::exit_without_robust_list();
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
        assert_eq!(m.unlock(), Ok(()));
    }
    assert_eq!(m.lock(), Ok(Acquired::Clean));
    assert_eq!(m.lock(), Err(shmsync::RawLockError::Deadlock));
    // SAFETY: held by this thread.
    assert_eq!(unsafe { m.unlock() }, Ok(()));
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
    // Without help, every locker would wait forever; the bounded forms give up.
    assert_eq!(m.try_lock(), Err(shmsync::RawLockError::WouldBlock));
    let _bounded = common::Watchdog::new(common::WATCHDOG, "bounded locks of a held mutex");
    let short = std::time::Duration::from_millis(50);
    assert_eq!(m.lock_timeout(short), Err(shmsync::RawLockError::TimedOut));
    assert_eq!(
        m.lock_deadline(std::time::Instant::now() + short),
        Err(shmsync::RawLockError::TimedOut)
    );
    assert!(m.release_dead_owner().is_some());
    assert_eq!(m.state(), shmsync::MutexState::OwnerDied);
    assert_eq!(m.release_dead_owner(), None, "nothing left to release");
    let _w = common::Watchdog::new(common::WATCHDOG, "lock after releasing a dead owner");
    assert_eq!(m.lock(), Ok(Acquired::OwnerDied));
    // SAFETY: held by this thread.
    unsafe {
        m.make_consistent().unwrap();
        assert_eq!(m.unlock(), Ok(()));
    }
}
