//! iceoryx2-bb-posix: `Mutex` (a pshared pthread mutex, iceoryx2's default "normal",
//! non-robust kind) and `UnnamedSemaphore` (a pshared `sem_t`), their handles placed in
//! shared memory as iceoryx2 does. Its `ReadWriteMutex` is not measured: it initializes
//! the rwlock process-private whatever the builder is told, which `describe` shows at
//! run time (a writer blocked in another process is never woken).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use iceoryx2_bb_posix::ipc_capable::Handle;
use iceoryx2_bb_posix::mutex::{Mutex, MutexBuilder, MutexHandle};
use iceoryx2_bb_posix::read_write_mutex::{ReadWriteMutexBuilder, ReadWriteMutexHandle};
use iceoryx2_bb_posix::semaphore::{
    SemaphoreInterface, UnnamedSemaphore, UnnamedSemaphoreBuilder, UnnamedSemaphoreHandle,
};

// Links iceoryx2's logger backend, which its logging calls need at link time.
use iceoryx2_bb_loggers as _;

use crate::harness::{fork, place_value, reap};
use crate::impls::{Contender, Lock, Sem, Visit};

pub fn describe() -> String {
    let rw = match rwlock_wakes_other_process() {
        Ok(true) => "ReadWriteMutex woke a writer in another process (unexpected; still \
                     not measured)"
            .to_string(),
        Ok(false) => "ReadWriteMutex NOT measured: not process-shared (built with \
                      is_interprocess_capable(true), a writer blocked in another process \
                      was not woken within 1 s of the unlock: the rwlock is initialized \
                      PTHREAD_PROCESS_PRIVATE)"
            .to_string(),
        Err(e) => format!("ReadWriteMutex NOT measured (probe failed: {e})"),
    };
    format!("iceoryx2-bb-posix 0.10: Mutex (pshared, non-robust), UnnamedSemaphore (pshared sem_t); {rw}")
}

/// Whether a writer blocked on iceoryx2's rwlock in a child process is woken when the
/// parent releases its write lock.
fn rwlock_wakes_other_process() -> Result<bool, String> {
    let handle: &'static ReadWriteMutexHandle<u64> = place_value(ReadWriteMutexHandle::new());
    let rw = ReadWriteMutexBuilder::new()
        .is_interprocess_capable(true)
        .create(0u64, handle)
        .map_err(|e| format!("{e:?}"))?;
    let rw = Box::leak(Box::new(rw));
    let got_it = place_value(AtomicU32::new(0));
    let held = rw.write_blocking_lock().map_err(|e| format!("{e:?}"))?;
    let child = fork(move || {
        let g = rw.write_blocking_lock().expect("write lock");
        // Release: pairs with the parent's Acquire load below.
        got_it.store(1, Ordering::Release);
        drop(g);
    });
    // Long enough for the child to be asleep in the kernel on the lock.
    std::thread::sleep(Duration::from_millis(200));
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(1);
    // Acquire: pairs with the child's Release store.
    while got_it.load(Ordering::Acquire) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let woke = got_it.load(Ordering::Acquire) == 1;
    if !woke {
        // SAFETY: our own child, still unreaped.
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
    let _ = reap(child);
    Ok(woke)
}

pub struct IceoryxMutex(Mutex<'static, 'static, u64>);

impl IceoryxMutex {
    fn make() -> Result<&'static Self, String> {
        let handle: &'static MutexHandle<u64> = place_value(MutexHandle::new());
        let m = MutexBuilder::new()
            .is_interprocess_capable(true)
            .create(0u64, handle)
            .map_err(|e| format!("{e:?}"))?;
        Ok(Box::leak(Box::new(Self(m))))
    }
}

impl Lock for IceoryxMutex {
    #[inline]
    fn bump(&self) -> u64 {
        let mut g = self.0.lock().expect("lock");
        *g += 1;
        *g
    }
    fn total(&self) -> u64 {
        *self.0.lock().expect("lock")
    }
}

pub struct IceoryxSem(UnnamedSemaphore<'static>);

impl IceoryxSem {
    fn make() -> Result<&'static Self, String> {
        let handle: &'static UnnamedSemaphoreHandle = place_value(UnnamedSemaphoreHandle::new());
        let s = UnnamedSemaphoreBuilder::new()
            .is_interprocess_capable(true)
            .initial_value(0)
            .create(handle)
            .map_err(|e| format!("{e:?}"))?;
        Ok(Box::leak(Box::new(Self(s))))
    }
}

impl Sem for IceoryxSem {
    #[inline]
    fn post(&self) {
        self.0.post().expect("post");
    }
    #[inline]
    fn wait(&self) {
        self.0.blocking_wait().expect("wait");
    }
}

pub fn visit(v: &mut impl Visit) {
    v.lock(Contender {
        id: "iceoryx2",
        name: "iceoryx2-bb-posix Mutex",
        make: IceoryxMutex::make,
    });
    v.sem(
        Contender {
            id: "iceoryx2",
            name: "iceoryx2-bb-posix UnnamedSemaphore",
            make: IceoryxSem::make,
        },
        true,
    );
}
