//! rustix-futex-sync with its `shm` feature: `shm::Mutex` and `shm::RwLock`, std's
//! futex locks without `FUTEX_PRIVATE_FLAG`, so they work across processes. It has no
//! semaphore.

use rustix_futex_sync::shm::{Mutex, RwLock};

use crate::harness::place_value;
use crate::impls::{Contender, Lock, Payload, Rw, Visit};

pub fn describe() -> String {
    "rustix-futex-sync 0.4 (feature shm): Mutex, RwLock; no semaphore".into()
}

pub struct RustixMutex(Mutex<u64>);

impl RustixMutex {
    fn make() -> Result<&'static Self, String> {
        Ok(place_value(Self(Mutex::new(0))))
    }
}

impl Lock for RustixMutex {
    #[inline]
    fn bump(&self) -> u64 {
        let mut g = self.0.lock();
        *g += 1;
        *g
    }
    fn total(&self) -> u64 {
        *self.0.lock()
    }
}

pub struct RustixRwLock(RwLock<Payload>);

impl RustixRwLock {
    fn make() -> Result<&'static Self, String> {
        Ok(place_value(Self(RwLock::new([0; 8]))))
    }
}

impl Rw for RustixRwLock {
    #[inline]
    fn write(&self, v: &Payload) {
        *self.0.write() = *v;
    }
    #[inline]
    fn read(&self) -> Payload {
        *self.0.read()
    }
}

pub fn visit(v: &mut impl Visit) {
    v.lock(Contender {
        id: "rustix",
        name: "rustix-futex-sync Mutex",
        make: RustixMutex::make,
    });
    v.rw(Contender {
        id: "rustix",
        name: "rustix-futex-sync RwLock",
        make: RustixRwLock::make,
    });
}
