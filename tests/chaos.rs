//! The multi-process chaos suite: worker processes (this test binary re-executed
//! with a role, see `common::spawn`) hammer one region while the test SIGKILLs them at
//! random moments, then checks each primitive's invariant.
//!
//! Knobs (environment):
//! - `SHMSYNC_CHAOS_SEED`: the seed (decimal or 0x-hex). Printed on every run; a failure
//!   message repeats it, so any run can be replayed (the random choices, not the
//!   scheduler's interleavings).
//! - `SHMSYNC_CHAOS_ROUNDS`: rounds per scenario (defaults sized for the CI profile).
//! - `SHMSYNC_CHAOS_SECS`: run each scenario for this many seconds instead (the soak).
//! - `SHMSYNC_CHAOS_PROCS`: worker processes per role (default 2).
//! - `SHMSYNC_CHAOS_THREADS`: threads per mutex worker (default 4).
//!
//! Every blocking step is bounded: the harness uses timed calls, and a per-round watchdog
//! prints the seed and `inspect` of the region, removes the region and aborts if anything
//! still blocks. Region names are `ShmName` guards (removed pass or fail) and each test
//! ends by checking that nothing it created is left in /dev/shm.
//!
//! Run: `cargo nextest run --release --run-ignored only -E 'test(/^stress_chaos/)'`.
//!
//! Layout: `chaos/harness.rs` holds what every scenario uses; each scenario is one
//! file in `chaos/`, and its entry point below keeps the `stress_chaos_*` name.
#![allow(clippy::disallowed_types)]

mod common;
#[path = "chaos/harness.rs"]
mod harness;
#[path = "chaos/mutexes.rs"]
mod mutexes;
#[path = "chaos/queue.rs"]
mod queue;
#[path = "chaos/region.rs"]
mod region;
#[path = "chaos/rwlock.rs"]
mod rwlock;
#[path = "chaos/semaphore.rs"]
mod semaphore;
#[path = "chaos/seqlock.rs"]
mod seqlock;

#[test]
fn child_role() {
    common::dispatch(&[
        ("mutex_worker", mutexes::mutex_worker),
        ("producer", queue::producer),
        ("consumer", queue::consumer),
        ("racer", region::racer),
        ("permit_worker", semaphore::permit_worker),
        ("seq_writer", seqlock::seq_writer),
        ("seq_reader", seqlock::seq_reader),
        ("rw_writer", rwlock::rw_writer),
        ("rw_reader", rwlock::rw_reader),
    ]);
}

#[test]
#[ignore = "stress: run by scripts/test.sh in release"]
fn stress_chaos_mutexes() {
    mutexes::stress_chaos_mutexes();
}

#[test]
#[ignore = "stress: run by scripts/test.sh in release"]
fn stress_chaos_condvar() {
    queue::stress_chaos_condvar();
}

#[test]
#[ignore = "stress: run by scripts/test.sh in release"]
fn stress_chaos_signals() {
    queue::stress_chaos_signals();
}

#[test]
#[ignore = "stress: run by scripts/test.sh in release"]
fn stress_chaos_region() {
    region::stress_chaos_region();
}

#[test]
#[ignore = "stress: run by scripts/test.sh in release"]
fn stress_chaos_semaphore() {
    semaphore::stress_chaos_semaphore();
}

#[test]
#[ignore = "stress: run by scripts/test.sh in release"]
fn stress_chaos_seqlock() {
    seqlock::stress_chaos_seqlock();
}

#[test]
#[ignore = "stress: run by scripts/test.sh in release"]
fn stress_chaos_rwlock() {
    rwlock::stress_chaos_rwlock();
}
