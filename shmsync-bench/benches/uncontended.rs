//! Uncontended, in-process costs against glibc, over memory in a shared mapping, in the
//! same run: `cargo bench -p shmsync-bench --bench uncontended`.
//!
//! - `RobustMutex` lock+unlock vs a raw glibc robust pshared `pthread_mutex_t`;
//! - `Semaphore` post+wait vs glibc pshared `sem_t`;
//! - `SeqLock` read of a 64-byte payload vs `pthread_rwlock_t` pshared rdlock + copy +
//!   unlock.
//!
//! The cross-process figures (ping-pong, contention, oversubscription) are in the
//! `shmsync-bench` harness.
#![allow(clippy::disallowed_types, missing_docs)]

use std::hint::black_box;
use std::mem::MaybeUninit;

use criterion::{criterion_group, criterion_main, Criterion};
use shmsync::{RobustMutex, Segment, Semaphore, SeqLock};

/// A fresh zeroed shared mapping for one `T`, leaked (benchmarks are short-lived).
fn shared<T>() -> *mut T {
    let seg = Segment::anonymous(std::mem::size_of::<T>().max(4096)).unwrap();
    let p = seg.as_ptr().cast();
    std::mem::forget(seg);
    p
}

fn mutex(c: &mut Criterion) {
    let mut g = c.benchmark_group("mutex lock+unlock");
    // SAFETY: fresh, exclusive shared mapping, leaked so it outlives the reference.
    let ours = unsafe { RobustMutex::init_at(shared(), 0u64) }.unwrap();
    g.bench_function("shmsync RobustMutex", |b| {
        b.iter(|| {
            let mut guard = ours.lock().unwrap_or_else(|_| panic!("lock"));
            *guard += 1;
        })
    });
    let m = shared::<libc::pthread_mutex_t>();
    let mut a = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: standard attribute setup on valid storage; `m` is fresh shared memory.
    unsafe {
        libc::pthread_mutexattr_init(a.as_mut_ptr());
        libc::pthread_mutexattr_setpshared(a.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        libc::pthread_mutexattr_setrobust(a.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
        assert_eq!(libc::pthread_mutex_init(m, a.as_ptr()), 0);
    }
    let counter = shared::<u64>();
    g.bench_function("glibc robust pshared pthread_mutex_t", |b| {
        b.iter(|| {
            // SAFETY: initialized mutex; the counter is touched only under it.
            unsafe {
                libc::pthread_mutex_lock(m);
                *counter += 1;
                libc::pthread_mutex_unlock(m);
            }
        })
    });
    g.finish();
}

fn semaphore(c: &mut Criterion) {
    let mut g = c.benchmark_group("semaphore post+wait");
    // SAFETY: fresh, exclusive shared mapping, leaked.
    let ours = unsafe { Semaphore::init_at(shared(), 0) }.unwrap();
    g.bench_function("shmsync Semaphore", |b| {
        b.iter(|| {
            ours.post().unwrap();
            ours.wait();
        })
    });
    let s = shared::<libc::sem_t>();
    // SAFETY: fresh shared storage; pshared.
    assert_eq!(unsafe { libc::sem_init(s, 1, 0) }, 0);
    g.bench_function("glibc pshared sem_t", |b| {
        b.iter(|| {
            // SAFETY: initialized semaphore.
            unsafe {
                libc::sem_post(s);
                libc::sem_wait(s);
            }
        })
    });
    g.finish();
}

type Payload = [u64; 8];

fn seqlock(c: &mut Criterion) {
    let mut g = c.benchmark_group("read 64 bytes");
    // SAFETY: fresh, exclusive shared mapping, leaked.
    let ours = unsafe { SeqLock::init_at(shared(), [7u64; 8]) }.unwrap();
    g.bench_function("shmsync SeqLock read", |b| {
        b.iter(|| black_box(ours.read()))
    });
    let rw = shared::<libc::pthread_rwlock_t>();
    let mut a = MaybeUninit::<libc::pthread_rwlockattr_t>::uninit();
    // SAFETY: standard attribute setup on valid storage.
    unsafe {
        libc::pthread_rwlockattr_init(a.as_mut_ptr());
        libc::pthread_rwlockattr_setpshared(a.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        assert_eq!(libc::pthread_rwlock_init(rw, a.as_ptr()), 0);
    }
    let data = shared::<Payload>();
    g.bench_function("glibc pshared pthread_rwlock_t rdlock+copy+unlock", |b| {
        b.iter(|| {
            // SAFETY: initialized rwlock; the payload is read under the read lock.
            unsafe {
                libc::pthread_rwlock_rdlock(rw);
                let v: Payload = std::ptr::read(data);
                libc::pthread_rwlock_unlock(rw);
                black_box(v)
            }
        })
    });
    g.finish();
}

criterion_group!(benches, mutex, semaphore, seqlock);
criterion_main!(benches);
