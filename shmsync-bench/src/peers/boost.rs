//! Boost.Interprocess, compiled from `peers/boost.cpp` by the build script: the POSIX
//! back end (`interprocess_mutex`, `interprocess_semaphore`: a pshared
//! `pthread_mutex_t` and `sem_t`), the spin back end (`ipcdetail::spin_mutex`,
//! `ipcdetail::spin_semaphore`: what `BOOST_INTERPROCESS_FORCE_GENERIC_EMULATION`
//! selects) and `interprocess_sharable_mutex` (reader-writer).

use std::ffi::c_void;

use crate::harness::shared_bytes;
use crate::impls::{Contender, Lock, Payload, Rw, Sem, Visit};

extern "C" {
    fn shb_mutex_size() -> usize;
    fn shb_mutex_align() -> usize;
    fn shb_mutex_init(p: *mut c_void);
    fn shb_mutex_lock(p: *mut c_void);
    fn shb_mutex_unlock(p: *mut c_void);
    fn shb_spin_mutex_size() -> usize;
    fn shb_spin_mutex_align() -> usize;
    fn shb_spin_mutex_init(p: *mut c_void);
    fn shb_spin_mutex_lock(p: *mut c_void);
    fn shb_spin_mutex_unlock(p: *mut c_void);
    fn shb_sem_size() -> usize;
    fn shb_sem_align() -> usize;
    fn shb_sem_init(p: *mut c_void, initial: u32);
    fn shb_sem_post(p: *mut c_void);
    fn shb_sem_wait(p: *mut c_void);
    fn shb_spin_sem_size() -> usize;
    fn shb_spin_sem_align() -> usize;
    fn shb_spin_sem_init(p: *mut c_void, initial: u32);
    fn shb_spin_sem_post(p: *mut c_void);
    fn shb_spin_sem_wait(p: *mut c_void);
    fn shb_sharable_size() -> usize;
    fn shb_sharable_align() -> usize;
    fn shb_sharable_init(p: *mut c_void);
    fn shb_sharable_lock(p: *mut c_void);
    fn shb_sharable_unlock(p: *mut c_void);
    fn shb_sharable_lock_sharable(p: *mut c_void);
    fn shb_sharable_unlock_sharable(p: *mut c_void);
    fn shb_boost_version() -> u32;
}

/// A Boost object at the start of a fresh shared page and the value it guards right
/// after it (offset rounded up to 8), as a C++ struct would lay them out.
fn object(size: usize, align: usize) -> Result<(*mut c_void, *mut u8), String> {
    let value_at = size.next_multiple_of(8);
    if align > 4096 || value_at + 64 > 4096 {
        return Err(format!(
            "object of {size} B (align {align}) does not fit a page"
        ));
    }
    let p = shared_bytes(4096);
    // SAFETY: `value_at` + 64 <= 4096, inside the mapping.
    Ok((p.cast(), unsafe { p.add(value_at) }))
}

/// The version string of the headers built against, e.g. "1.74.0".
fn version() -> String {
    // SAFETY: returns a constant.
    let v = unsafe { shb_boost_version() };
    format!("{}.{}.{}", v / 100_000, v / 100 % 1000, v % 100)
}

pub fn describe() -> String {
    // SAFETY: these return constants.
    let (m, sm, s, ss, sh) = unsafe {
        (
            shb_mutex_size(),
            shb_spin_mutex_size(),
            shb_sem_size(),
            shb_spin_sem_size(),
            shb_sharable_size(),
        )
    };
    format!(
        "Boost.Interprocess {} (system headers, g++ -O2): interprocess_mutex {m} B \
         (POSIX back end: {}), spin_mutex {sm} B, interprocess_semaphore {s} B, \
         spin_semaphore {ss} B, interprocess_sharable_mutex {sh} B; all in MAP_SHARED \
         memory; no condvar ping-pong (not wired)",
        version(),
        if m == std::mem::size_of::<libc::pthread_mutex_t>() {
            "pthread_mutex_t"
        } else {
            "NOT pthread_mutex_t: the generic emulation"
        },
    )
}

macro_rules! boost_lock {
    ($ty:ident, $size:ident, $align:ident, $init:ident, $lock:ident, $unlock:ident) => {
        pub struct $ty {
            lock: *mut c_void,
            value: *mut u64,
        }
        // SAFETY: a process-shared Boost mutex and the counter it guards; the counter
        // is touched only under the mutex.
        unsafe impl Sync for $ty {}
        impl $ty {
            fn make() -> Result<&'static Self, String> {
                // SAFETY: these return constants.
                let (lock, value) = object(unsafe { $size() }, unsafe { $align() })?;
                // SAFETY: `lock` is a fresh page, aligned for any Boost object, not yet
                // shared with another process.
                unsafe { $init(lock) };
                Ok(Box::leak(Box::new(Self {
                    lock,
                    value: value.cast(),
                })))
            }
        }
        impl Lock for $ty {
            #[inline]
            fn bump(&self) -> u64 {
                // SAFETY: an initialized mutex; the counter is touched only under it.
                unsafe {
                    $lock(self.lock);
                    *self.value += 1;
                    let v = *self.value;
                    $unlock(self.lock);
                    v
                }
            }
            fn total(&self) -> u64 {
                // SAFETY: as in `bump`.
                unsafe {
                    $lock(self.lock);
                    let v = *self.value;
                    $unlock(self.lock);
                    v
                }
            }
        }
    };
}

boost_lock!(
    BoostMutex,
    shb_mutex_size,
    shb_mutex_align,
    shb_mutex_init,
    shb_mutex_lock,
    shb_mutex_unlock
);
boost_lock!(
    BoostSpinMutex,
    shb_spin_mutex_size,
    shb_spin_mutex_align,
    shb_spin_mutex_init,
    shb_spin_mutex_lock,
    shb_spin_mutex_unlock
);

macro_rules! boost_sem {
    ($ty:ident, $size:ident, $align:ident, $init:ident, $post:ident, $wait:ident) => {
        pub struct $ty(*mut c_void);
        // SAFETY: a process-shared Boost semaphore, usable from any thread.
        unsafe impl Sync for $ty {}
        impl $ty {
            fn make() -> Result<&'static Self, String> {
                // SAFETY: these return constants.
                let (p, _) = object(unsafe { $size() }, unsafe { $align() })?;
                // SAFETY: a fresh page, aligned for any Boost object, not yet shared.
                unsafe { $init(p, 0) };
                Ok(Box::leak(Box::new(Self(p))))
            }
        }
        impl Sem for $ty {
            #[inline]
            fn post(&self) {
                // SAFETY: an initialized semaphore.
                unsafe { $post(self.0) }
            }
            #[inline]
            fn wait(&self) {
                // SAFETY: an initialized semaphore.
                unsafe { $wait(self.0) }
            }
        }
    };
}

boost_sem!(
    BoostSem,
    shb_sem_size,
    shb_sem_align,
    shb_sem_init,
    shb_sem_post,
    shb_sem_wait
);
boost_sem!(
    BoostSpinSem,
    shb_spin_sem_size,
    shb_spin_sem_align,
    shb_spin_sem_init,
    shb_spin_sem_post,
    shb_spin_sem_wait
);

pub struct BoostSharable {
    lock: *mut c_void,
    value: *mut Payload,
}

// SAFETY: a process-shared Boost sharable mutex and the payload it guards, read under
// the sharable (read) lock and written under the exclusive one.
unsafe impl Sync for BoostSharable {}

impl BoostSharable {
    fn make() -> Result<&'static Self, String> {
        // SAFETY: these return constants.
        let (lock, value) = object(unsafe { shb_sharable_size() }, unsafe {
            shb_sharable_align()
        })?;
        // SAFETY: a fresh page, aligned for any Boost object, not yet shared.
        unsafe { shb_sharable_init(lock) };
        Ok(Box::leak(Box::new(Self {
            lock,
            value: value.cast(),
        })))
    }
}

impl Rw for BoostSharable {
    #[inline]
    fn write(&self, v: &Payload) {
        // SAFETY: an initialized sharable mutex; the payload is written under the
        // exclusive lock.
        unsafe {
            shb_sharable_lock(self.lock);
            std::ptr::write(self.value, *v);
            shb_sharable_unlock(self.lock);
        }
    }
    #[inline]
    fn read(&self) -> Payload {
        // SAFETY: as in `write`; the payload is read under the sharable lock.
        unsafe {
            shb_sharable_lock_sharable(self.lock);
            let v = std::ptr::read(self.value);
            shb_sharable_unlock_sharable(self.lock);
            v
        }
    }
}

pub fn visit(v: &mut impl Visit) {
    v.lock(Contender {
        id: "boost",
        name: "Boost interprocess_mutex (POSIX)",
        make: BoostMutex::make,
    });
    v.lock(Contender {
        id: "boost-spin",
        name: "Boost spin_mutex",
        make: BoostSpinMutex::make,
    });
    v.sem(
        Contender {
            id: "boost",
            name: "Boost interprocess_semaphore (POSIX)",
            make: BoostSem::make,
        },
        true,
    );
    v.sem(
        Contender {
            id: "boost-spin",
            name: "Boost spin_semaphore",
            make: BoostSpinSem::make,
        },
        // Its wait spins, then yields and sleeps a tick: it never waits on a futex but
        // gives way, so it progresses oversubscribed.
        true,
    );
    v.rw(Contender {
        id: "boost",
        name: "Boost interprocess_sharable_mutex",
        make: BoostSharable::make,
    });
}
