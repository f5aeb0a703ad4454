//! raw_sync: `locks::Mutex` and `locks::RwLock` (pshared pthread objects behind a boxed
//! trait object), `events::Event` (pshared pthread condvar + mutex) and
//! `events::BusyEvent` (an atomic flag, pure busy-wait). Events are binary (auto-reset),
//! which is all a ping-pong needs.

use raw_sync::events::{BusyEvent, Event, EventImpl, EventInit, EventState};
use raw_sync::locks::{LockImpl, LockInit, Mutex, RwLock};
use raw_sync::Timeout;

use crate::harness::shared_bytes;
use crate::impls::{Contender, Lock, Payload, Rw, Sem, Visit};

pub fn describe() -> String {
    "raw_sync 0.1: Mutex, RwLock (pshared pthread), Event (pshared condvar), BusyEvent \
     (busy-wait: not run oversubscribed); no semaphore type (events stand in)"
        .into()
}

/// A raw_sync lock (initialized at the start of a fresh shared page) and its data
/// (a second page of the same mapping).
fn new_lock<L: LockInit>() -> Result<&'static dyn LockImpl, String> {
    let p = shared_bytes(8192);
    // SAFETY: a fresh, page-aligned mapping of two pages: the lock's few dozen bytes at
    // the start of the first, its data at the start of the second; leaked, so it
    // outlives the returned lock.
    let (lock, _) = unsafe { L::new(p, p.add(4096)) }.map_err(|e| e.to_string())?;
    Ok(Box::leak(lock))
}

pub struct RawSyncMutex(&'static dyn LockImpl);

// SAFETY: a pshared pthread mutex; its data is touched only under it.
unsafe impl Sync for RawSyncMutex {}

impl RawSyncMutex {
    fn make() -> Result<&'static Self, String> {
        Ok(Box::leak(Box::new(Self(new_lock::<Mutex>()?))))
    }
}

impl Lock for RawSyncMutex {
    #[inline]
    fn bump(&self) -> u64 {
        let g = self.0.lock().expect("lock");
        // SAFETY: the data pointer is the u64 this mutex guards, held now.
        unsafe {
            *(*g).cast::<u64>() += 1;
            *(*g).cast::<u64>()
        }
    }
    fn total(&self) -> u64 {
        let g = self.0.lock().expect("lock");
        // SAFETY: as in `bump`.
        unsafe { *(*g).cast::<u64>() }
    }
}

pub struct RawSyncRwLock(&'static dyn LockImpl);

// SAFETY: a pshared pthread rwlock; its data is read under the read lock and written
// under the write lock.
unsafe impl Sync for RawSyncRwLock {}

impl RawSyncRwLock {
    fn make() -> Result<&'static Self, String> {
        Ok(Box::leak(Box::new(Self(new_lock::<RwLock>()?))))
    }
}

impl Rw for RawSyncRwLock {
    #[inline]
    fn write(&self, v: &Payload) {
        let g = self.0.lock().expect("lock");
        // SAFETY: the data pointer is the payload this lock guards, held exclusively.
        unsafe { std::ptr::write((*g).cast::<Payload>(), *v) };
    }
    #[inline]
    fn read(&self) -> Payload {
        let g = self.0.rlock().expect("rlock");
        // SAFETY: the data pointer is the payload this lock guards, held for reading.
        unsafe { std::ptr::read((*g).cast::<Payload>()) }
    }
}

pub struct RawSyncEvent(&'static dyn EventImpl);

// SAFETY: a process-shared event, usable from any thread.
unsafe impl Sync for RawSyncEvent {}

impl RawSyncEvent {
    fn new<E: EventInit>() -> Result<&'static Self, String> {
        let p = shared_bytes(4096);
        // SAFETY: a fresh, page-aligned mapping, larger than any event, leaked.
        let (e, _) = unsafe { E::new(p, true) }.map_err(|e| e.to_string())?;
        Ok(Box::leak(Box::new(Self(Box::leak(e)))))
    }
    fn make_cond() -> Result<&'static Self, String> {
        Self::new::<Event>()
    }
    fn make_busy() -> Result<&'static Self, String> {
        Self::new::<BusyEvent>()
    }
}

impl Sem for RawSyncEvent {
    #[inline]
    fn post(&self) {
        self.0.set(EventState::Signaled).expect("set");
    }
    #[inline]
    fn wait(&self) {
        self.0.wait(Timeout::Infinite).expect("wait");
    }
}

pub fn visit(v: &mut impl Visit) {
    v.lock(Contender {
        id: "raw_sync",
        name: "raw_sync Mutex",
        make: RawSyncMutex::make,
    });
    v.sem(
        Contender {
            id: "raw_sync-event",
            name: "raw_sync Event (condvar)",
            make: RawSyncEvent::make_cond,
        },
        true,
    );
    v.sem(
        Contender {
            id: "raw_sync-busy",
            name: "raw_sync BusyEvent",
            make: RawSyncEvent::make_busy,
        },
        false,
    );
    v.rw(Contender {
        id: "raw_sync",
        name: "raw_sync RwLock",
        make: RawSyncRwLock::make,
    });
}
