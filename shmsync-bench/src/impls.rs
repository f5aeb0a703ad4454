//! What the harness measures: three protocols (a lock guarding a counter, a counting
//! semaphore, a reader-writer cell of 64 bytes) and their shmsync and glibc
//! implementations, and reader-writer locks guarding a counter (the lock's own cost).
//! Peers implement the same traits in `crate::peers`.
//!
//! Every object lives in a shared mapping made before the harness forks, so all
//! processes use the same object. Where a library keeps the protected value apart from
//! its lock (glibc, Boost), the value sits right after the lock, as in a C struct.

use std::mem::MaybeUninit;

use shmsync::bytemuck::AnyBitPattern;
use shmsync::{RobustMutex, RobustRwLock, Semaphore, SeqLock};

use crate::harness::{place_value, shared};

/// The reader-writer payload: 64 bytes, written as eight equal words so that a reader
/// can tell a torn value.
pub type Payload = [u64; 8];

/// A process-shared lock guarding a `u64` counter.
pub trait Lock: Sync + 'static {
    /// Locks, adds one to the counter, unlocks; returns the counter's new value, so
    /// that a process can tell which increments were its own (hand-off counting).
    fn bump(&self) -> u64;
    /// The counter, read under the lock.
    fn total(&self) -> u64;
}

/// A process-shared counting (or, for events, binary) semaphore.
pub trait Sem: Sync + 'static {
    /// Adds a permit, waking a waiter.
    fn post(&self);
    /// Takes a permit, waiting for one.
    fn wait(&self);
}

/// A process-shared cell a writer replaces and readers copy.
pub trait Rw: Sync + 'static {
    /// Replaces the payload (exclusive with readers).
    fn write(&self, v: &Payload);
    /// Copies the payload; never a torn value.
    fn read(&self) -> Payload;
}

/// Makes one fresh object in shared memory, or says why it cannot.
pub type Make<T> = fn() -> Result<&'static T, String>;

/// One implementation of a protocol: a short id (for `op` and the callgrind script),
/// the name printed in tables, and its constructor.
pub struct Contender<T: ?Sized + 'static> {
    pub id: &'static str,
    pub name: &'static str,
    pub make: Make<T>,
}

/// Receives every implementation the binary was built with; the harness's measurements
/// implement it to collect the ones they time. Generic so that each measurement loop
/// is compiled per implementation, with no dynamic dispatch inside it.
pub trait Visit {
    fn lock<L: Lock>(&mut self, _c: Contender<L>) {}
    /// `gives_way`: whether a waiter ever gives up its CPU (sleeps or yields). A pure
    /// spinner does not, so it is not run oversubscribed.
    fn sem<S: Sem>(&mut self, _c: Contender<S>, _gives_way: bool) {}
    fn rw<R: Rw>(&mut self, _c: Contender<R>) {}
    /// A reader-writer lock guarding a counter, as a [`Lock`]: `bump` takes the write
    /// lock, `total` the read lock.
    fn rwlock<L: Lock>(&mut self, _c: Contender<L>) {}
}

/// Every implementation: shmsync, glibc, then the peers that were built.
pub fn visit_all(v: &mut impl Visit) {
    v.lock(Contender {
        id: "shmsync",
        name: "shmsync RobustMutex",
        make: ShmsyncMutex::make,
    });
    v.lock(Contender {
        id: "glibc-robust",
        name: "glibc robust pthread_mutex_t",
        make: GlibcMutex::make_robust,
    });
    v.lock(Contender {
        id: "glibc-robust-ec",
        name: "glibc robust error-checking pthread_mutex_t (RobustMutex's kind)",
        make: GlibcMutex::make_robust_errorcheck,
    });
    v.lock(Contender {
        id: "glibc",
        name: "glibc plain pthread_mutex_t",
        make: GlibcMutex::make_plain,
    });
    v.sem(
        Contender {
            id: "shmsync",
            name: "shmsync Semaphore",
            make: ShmsyncSem::make,
        },
        true,
    );
    v.sem(
        Contender {
            id: "glibc",
            name: "glibc sem_t",
            make: GlibcSem::make,
        },
        true,
    );
    v.rw(Contender {
        id: "shmsync",
        name: "shmsync SeqLock",
        make: ShmsyncSeqLock::make,
    });
    v.rw(Contender {
        id: "shmsync-rwlock",
        name: "shmsync RobustRwLock",
        make: ShmsyncRwLock::<Payload>::make,
    });
    v.rw(Contender {
        id: "glibc",
        name: "glibc pthread_rwlock_t",
        make: GlibcRwLock::<Payload>::make,
    });
    v.rwlock(Contender {
        id: "shmsync-rwlock",
        name: "shmsync RobustRwLock",
        make: ShmsyncRwLock::<u64>::make,
    });
    v.rwlock(Contender {
        id: "glibc",
        name: "glibc pthread_rwlock_t",
        make: GlibcRwLock::<u64>::make,
    });
    crate::peers::visit(v);
}

/// Places a `T` with an `init_at`-style constructor in its own shared mapping.
fn place<T>(
    init: impl FnOnce(*mut T) -> shmsync::Result<&'static T>,
) -> Result<&'static T, String> {
    init(shared::<T>()).map_err(|e| e.to_string())
}

/// A lock word (any library's) followed by the value it guards, as in a C struct.
#[repr(C)]
pub struct Guarded<L, V> {
    pub lock: L,
    pub value: V,
}

// ---------------------------------------------------------------------------------
// shmsync

pub struct ShmsyncMutex(&'static RobustMutex<u64>);

impl ShmsyncMutex {
    /// A fresh `RobustMutex<u64>` in its own shared mapping.
    pub fn make() -> Result<&'static Self, String> {
        // SAFETY: a fresh shared mapping, exclusive during init and leaked.
        let m = place(|p| unsafe { RobustMutex::init_at(p, 0u64) })?;
        Ok(Box::leak(Box::new(ShmsyncMutex(m))))
    }
}

/// The floor of a write lock whose readers write no shared word: a `RobustMutex` plus
/// the one sequentially consistent read-modify-write that announces the writer to such
/// readers (on a word of its own line, as a reader-writer lock's state word), cleared by
/// a plain store before the unlock. No reader-scalable robust write lock can do less.
pub struct MutexAnnounceFloor {
    mutex: &'static RobustMutex<u64>,
    announce: &'static Announce,
}

/// The announcement word, on a cache line of its own.
#[repr(C, align(64))]
pub struct Announce(std::sync::atomic::AtomicU32);

impl MutexAnnounceFloor {
    /// A fresh mutex and announcement word, each in its own shared mapping.
    pub fn make() -> Result<&'static Self, String> {
        // SAFETY: a fresh shared mapping, exclusive during init and leaked.
        let mutex = place(|p| unsafe { RobustMutex::init_at(p, 0u64) })?;
        let announce = place_value(Announce(std::sync::atomic::AtomicU32::new(0)));
        Ok(Box::leak(Box::new(MutexAnnounceFloor { mutex, announce })))
    }
}

impl Lock for MutexAnnounceFloor {
    #[inline]
    fn bump(&self) -> u64 {
        use std::sync::atomic::Ordering;
        let mut g = self.mutex.lock().unwrap_or_else(|_| panic!("lock"));
        // SeqCst: the writer's half of a Dekker pair with readers (here only its cost).
        self.announce.0.fetch_or(1, Ordering::SeqCst);
        *g += 1;
        let v = *g;
        // Release: what a write unlock would publish to readers.
        self.announce.0.store(0, Ordering::Release);
        v
    }
    #[inline]
    fn total(&self) -> u64 {
        *self.mutex.lock().unwrap_or_else(|_| panic!("lock"))
    }
}

impl Lock for ShmsyncMutex {
    #[inline]
    fn bump(&self) -> u64 {
        let mut g = self.0.lock().unwrap_or_else(|_| panic!("lock"));
        *g += 1;
        *g
    }
    #[inline]
    fn total(&self) -> u64 {
        *self.0.lock().unwrap_or_else(|_| panic!("lock"))
    }
}

pub struct ShmsyncSem(&'static Semaphore);

impl ShmsyncSem {
    fn make() -> Result<&'static Self, String> {
        // SAFETY: a fresh shared mapping, exclusive during init and leaked.
        let s = place(|p| unsafe { Semaphore::init_at(p, 0) })?;
        Ok(Box::leak(Box::new(ShmsyncSem(s))))
    }
}

impl Sem for ShmsyncSem {
    #[inline]
    fn post(&self) {
        self.0.post().expect("post");
    }
    #[inline]
    fn wait(&self) {
        self.0.wait();
    }
}

pub struct ShmsyncSeqLock(&'static SeqLock<Payload>);

impl ShmsyncSeqLock {
    fn make() -> Result<&'static Self, String> {
        // SAFETY: a fresh shared mapping, exclusive during init and leaked.
        let s = place(|p| unsafe { SeqLock::init_at(p, [0u64; 8]) })?;
        Ok(Box::leak(Box::new(ShmsyncSeqLock(s))))
    }
}

impl Rw for ShmsyncSeqLock {
    #[inline]
    fn write(&self, v: &Payload) {
        self.0.store(*v).expect("store");
    }
    #[inline]
    fn read(&self) -> Payload {
        self.0.read()
    }
}

pub struct ShmsyncRwLock<V: AnyBitPattern>(&'static RobustRwLock<V>);

impl<V: AnyBitPattern> ShmsyncRwLock<V> {
    fn make() -> Result<&'static Self, String> {
        // SAFETY: a fresh shared mapping (page-aligned, so 64-aligned), exclusive during
        // init and leaked.
        let l = place(|p| unsafe { RobustRwLock::init_at(p, V::zeroed()) })?;
        Ok(Box::leak(Box::new(ShmsyncRwLock(l))))
    }
}

impl Rw for ShmsyncRwLock<Payload> {
    #[inline]
    fn write(&self, v: &Payload) {
        *self.0.write().map_err(shmsync::Error::from).expect("write") = *v;
    }
    #[inline]
    fn read(&self) -> Payload {
        *self.0.read().expect("read")
    }
}

impl Lock for ShmsyncRwLock<u64> {
    #[inline]
    fn bump(&self) -> u64 {
        let mut g = self.0.write().map_err(shmsync::Error::from).expect("write");
        *g += 1;
        *g
    }
    #[inline]
    fn total(&self) -> u64 {
        *self.0.read().expect("read")
    }
}

// ---------------------------------------------------------------------------------
// glibc

pub struct GlibcMutex(*mut Guarded<libc::pthread_mutex_t, u64>);

// SAFETY: the pointee is a process-shared pthread mutex and the counter it guards; the
// counter is touched only under the mutex.
unsafe impl Sync for GlibcMutex {}

/// Initializes a process-shared pthread mutex at `m`: robust if `robust`, of the
/// error-checking type if `errorcheck` (as `RobustMutex`'s is), else the default type.
///
/// # Safety
///
/// Behavior is undefined if:
/// - `m` is not valid for writes of a `pthread_mutex_t`, or anything else uses it
///   during the call.
unsafe fn init_pthread_mutex(
    m: *mut libc::pthread_mutex_t,
    robust: bool,
    errorcheck: bool,
) -> Result<(), String> {
    let mut a = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: standard attribute initialization on valid storage; `m` is valid and
    // unused (the caller's promise).
    let rc = unsafe {
        libc::pthread_mutexattr_init(a.as_mut_ptr());
        libc::pthread_mutexattr_setpshared(a.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        if robust {
            libc::pthread_mutexattr_setrobust(a.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
        }
        if errorcheck {
            libc::pthread_mutexattr_settype(a.as_mut_ptr(), libc::PTHREAD_MUTEX_ERRORCHECK);
        }
        let rc = libc::pthread_mutex_init(m, a.as_ptr());
        libc::pthread_mutexattr_destroy(a.as_mut_ptr());
        rc
    };
    if rc != 0 {
        return Err(format!("pthread_mutex_init: error {rc}"));
    }
    Ok(())
}

impl GlibcMutex {
    fn make(robust: bool, errorcheck: bool) -> Result<&'static Self, String> {
        let g = shared::<Guarded<libc::pthread_mutex_t, u64>>();
        // SAFETY: a fresh shared mapping nothing else uses yet.
        unsafe { init_pthread_mutex(&mut (*g).lock, robust, errorcheck) }?;
        Ok(Box::leak(Box::new(GlibcMutex(g))))
    }
    fn make_robust() -> Result<&'static Self, String> {
        Self::make(true, false)
    }
    fn make_robust_errorcheck() -> Result<&'static Self, String> {
        Self::make(true, true)
    }
    fn make_plain() -> Result<&'static Self, String> {
        Self::make(false, false)
    }
}

impl Lock for GlibcMutex {
    #[inline]
    fn bump(&self) -> u64 {
        // SAFETY: an initialized pshared mutex; the counter is touched only under it.
        unsafe {
            libc::pthread_mutex_lock(&mut (*self.0).lock);
            (*self.0).value += 1;
            let v = (*self.0).value;
            libc::pthread_mutex_unlock(&mut (*self.0).lock);
            v
        }
    }
    #[inline]
    fn total(&self) -> u64 {
        // SAFETY: as in `bump`.
        unsafe {
            libc::pthread_mutex_lock(&mut (*self.0).lock);
            let v = (*self.0).value;
            libc::pthread_mutex_unlock(&mut (*self.0).lock);
            v
        }
    }
}

pub struct GlibcSem(*mut libc::sem_t);

// SAFETY: the pointee is a process-shared semaphore, safe to use from any thread.
unsafe impl Sync for GlibcSem {}

impl GlibcSem {
    fn make() -> Result<&'static Self, String> {
        let s = shared::<libc::sem_t>();
        // SAFETY: fresh shared storage; pshared = 1.
        if unsafe { libc::sem_init(s, 1, 0) } != 0 {
            return Err(format!("sem_init: {}", std::io::Error::last_os_error()));
        }
        Ok(Box::leak(Box::new(GlibcSem(s))))
    }
}

impl Sem for GlibcSem {
    #[inline]
    fn post(&self) {
        // SAFETY: an initialized pshared semaphore.
        unsafe { libc::sem_post(self.0) };
    }
    #[inline]
    fn wait(&self) {
        // SAFETY: as in `post`. EINTR is retried.
        unsafe { while libc::sem_wait(self.0) != 0 {} }
    }
}

pub struct GlibcRwLock<V>(*mut Guarded<libc::pthread_rwlock_t, V>);

// SAFETY: the pointee is a process-shared rwlock and the value it guards; the value is
// read under the read lock and written under the write lock.
unsafe impl<V> Sync for GlibcRwLock<V> {}

impl<V> GlibcRwLock<V> {
    fn make() -> Result<&'static Self, String> {
        let g = shared::<Guarded<libc::pthread_rwlock_t, V>>();
        let mut a = MaybeUninit::<libc::pthread_rwlockattr_t>::uninit();
        // SAFETY: standard attribute initialization on valid storage; `g` is fresh.
        let rc = unsafe {
            libc::pthread_rwlockattr_init(a.as_mut_ptr());
            libc::pthread_rwlockattr_setpshared(a.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            let rc = libc::pthread_rwlock_init(&mut (*g).lock, a.as_ptr());
            libc::pthread_rwlockattr_destroy(a.as_mut_ptr());
            rc
        };
        if rc != 0 {
            return Err(format!("pthread_rwlock_init: error {rc}"));
        }
        Ok(Box::leak(Box::new(GlibcRwLock(g))))
    }
}

impl Rw for GlibcRwLock<Payload> {
    #[inline]
    fn write(&self, v: &Payload) {
        // SAFETY: an initialized pshared rwlock; the payload is written under the write
        // lock.
        unsafe {
            libc::pthread_rwlock_wrlock(&mut (*self.0).lock);
            std::ptr::write(&mut (*self.0).value, *v);
            libc::pthread_rwlock_unlock(&mut (*self.0).lock);
        }
    }
    #[inline]
    fn read(&self) -> Payload {
        // SAFETY: as in `write`; the payload is read under the read lock.
        unsafe {
            libc::pthread_rwlock_rdlock(&mut (*self.0).lock);
            let v = std::ptr::read(&(*self.0).value);
            libc::pthread_rwlock_unlock(&mut (*self.0).lock);
            v
        }
    }
}

impl Lock for GlibcRwLock<u64> {
    #[inline]
    fn bump(&self) -> u64 {
        // SAFETY: an initialized pshared rwlock; the counter is written under the write
        // lock.
        unsafe {
            libc::pthread_rwlock_wrlock(&mut (*self.0).lock);
            (*self.0).value += 1;
            let v = (*self.0).value;
            libc::pthread_rwlock_unlock(&mut (*self.0).lock);
            v
        }
    }
    #[inline]
    fn total(&self) -> u64 {
        // SAFETY: as in `bump`; the counter is read under the read lock.
        unsafe {
            libc::pthread_rwlock_rdlock(&mut (*self.0).lock);
            let v = (*self.0).value;
            libc::pthread_rwlock_unlock(&mut (*self.0).lock);
            v
        }
    }
}

// ---------------------------------------------------------------------------------
// protocol models: the least any implementation of the protocol can cost

/// The least a counting semaphore's hand-off costs: `post` is one atomic add, `wait`
/// watches the count and takes a permit with a compare-and-swap, and nobody ever
/// sleeps (Boost's spin back end is this). A hand-off is the poster's add, the
/// waiter's load and the waiter's CAS: three transfers of the line where the
/// cache-line floor's store and load are two.
#[repr(C, align(64))]
pub struct SpinSemModel(std::sync::atomic::AtomicU32);

impl SpinSemModel {
    pub fn make() -> Result<&'static Self, String> {
        Ok(place_value(SpinSemModel(
            std::sync::atomic::AtomicU32::new(0),
        )))
    }
}

impl Sem for SpinSemModel {
    #[inline]
    fn post(&self) {
        // Release: pairs with the Acquire CAS of the waiter that takes the permit.
        self.0.fetch_add(1, std::sync::atomic::Ordering::Release);
    }
    #[inline]
    fn wait(&self) {
        use std::sync::atomic::Ordering;
        loop {
            // Relaxed: only picks the CAS's expected value.
            let v = self.0.load(Ordering::Relaxed);
            if v > 0
                && self
                    .0
                    .compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
    }
}

/// The least a robust two-copy seqlock costs: `SeqLock`'s protocol (`seq` made odd,
/// the other copy written, `seq` made even; readers copy and re-check) under glibc's
/// robust, error-checking, process-shared mutex (`SeqLock`'s writer lock), laid out as `SeqLock` is (the copies and `seq` off the
/// mutex's lines), with none of `SeqLock`'s checks. Under a reader that re-reads as
/// fast as it can, every write's lines are in the reader's cache, and the mutex's two
/// atomic instructions each wait for those stores to land.
#[repr(C, align(64))]
pub struct RobustSeqLockModel {
    mutex: std::cell::UnsafeCell<libc::pthread_mutex_t>,
    _apart: [u8; 128 - std::mem::size_of::<libc::pthread_mutex_t>()],
    seq: std::sync::atomic::AtomicU64,
    _line: [u8; 56],
    copies: [[std::sync::atomic::AtomicU64; 8]; 2],
}

// SAFETY: the mutex is process-shared and only used through pthread calls; the rest is
// atomics.
unsafe impl Sync for RobustSeqLockModel {}

impl RobustSeqLockModel {
    pub fn make() -> Result<&'static Self, String> {
        let p = shared::<RobustSeqLockModel>();
        // SAFETY: a fresh, zero-filled shared mapping nothing else uses yet (zero bytes
        // are valid atomics); the mutex is initialized in place, then the mapping is
        // leaked.
        unsafe {
            init_pthread_mutex((*p).mutex.get(), true, true)?;
            Ok(&*p)
        }
    }
}

impl Rw for RobustSeqLockModel {
    #[inline]
    fn write(&self, v: &Payload) {
        use std::sync::atomic::{fence, Ordering};
        // SAFETY: an initialized robust pshared mutex; this process's only writer.
        let rc = unsafe { libc::pthread_mutex_trylock(self.mutex.get()) };
        assert_eq!(rc, 0, "the model's only writer found its mutex busy");
        // Relaxed: written only under the mutex.
        let seq = self.seq.load(Ordering::Relaxed);
        let next = (seq >> 1) + 1;
        // Relaxed + Release fence: a reader that sees a word below also sees odd `seq`.
        self.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (w, &x) in self.copies[(next & 1) as usize].iter().zip(v) {
            // Relaxed: ordered by the fence above and the Release store below.
            w.store(x, Ordering::Relaxed);
        }
        // Release: publishes the copy to readers' Acquire load of `seq`.
        self.seq.store(seq + 2, Ordering::Release);
        // SAFETY: held by this thread (locked above).
        unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
    }
    #[inline]
    fn read(&self) -> Payload {
        use std::sync::atomic::{fence, Ordering};
        loop {
            // Acquire: pairs with the writer's Release store of an even `seq`.
            let c1 = self.seq.load(Ordering::Acquire);
            let version = c1 >> 1;
            let mut out = [0u64; 8];
            for (o, w) in out.iter_mut().zip(&self.copies[(version & 1) as usize]) {
                // Relaxed: validated by the re-check of `seq` below.
                *o = w.load(Ordering::Relaxed);
            }
            // Acquire fence: pairs with the writer's Release fence after its odd `seq`.
            fence(Ordering::Acquire);
            // Relaxed: ordered by the fence.
            if self.seq.load(Ordering::Relaxed) < 2 * version + 3 {
                return out;
            }
        }
    }
}
