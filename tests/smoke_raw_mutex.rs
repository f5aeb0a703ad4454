//! The raw robust mutex across a real process boundary: a child dies holding it.
#![allow(clippy::disallowed_types)]
mod common;

use shmsync::{Acquired, RawRobustMutex, Segment};

#[test]
fn child_role() {
    common::dispatch(&[("lock_and_die", lock_and_die)]);
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
