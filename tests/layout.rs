//! Pins every shared layout: sizes, alignments and the initial bytes of each object. A
//! failure here means the on-segment format changed: bump `header::FORMAT_VERSION`.
#![allow(clippy::disallowed_types)]

mod common;

#[path = "layout/foundation.rs"]
mod foundation;
#[path = "layout/mutex.rs"]
mod mutex;
#[path = "layout/rwlock.rs"]
mod rwlock;
#[path = "layout/semaphore.rs"]
mod semaphore;
#[path = "layout/seqlock.rs"]
mod seqlock;
