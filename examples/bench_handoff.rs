//! Hand-off measurements beside glibc, interleaved per repetition, medians printed:
//! semaphore ping-pong against the one-cache-line spinning floor, the contended
//! `RobustMutex` at several process counts (with how often the lock changed process),
//! and the seqlock writer's rate while a reader runs.
//!
//! ```text
//! cargo run --release --example bench_handoff -- pingpong [reps]
//! cargo run --release --example bench_handoff -- contended [reps] [procs...]
//! cargo run --release --example bench_handoff -- seqwriter [reps]
//! cargo run --release --example bench_handoff -- oversub [reps]
//! cargo run --release --example bench_handoff -- condvar [reps]
//! valgrind --tool=callgrind target/release/examples/bench_handoff uncontended
//! ```
//!
//! The process is single-threaded, so `fork` is safe here.
#![allow(clippy::disallowed_types)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmsync::{Condvar, RobustMutex, Segment, Semaphore, SeqLock};

/// A zeroed `T` in its own anonymous shared mapping, inherited by fork children; leaked.
fn shared<T>() -> *mut T {
    let seg = Segment::anonymous(std::mem::size_of::<T>().max(4096)).expect("mmap");
    let p = seg.as_ptr().cast::<T>();
    std::mem::forget(seg);
    p
}

/// Forks a child that runs `f` and exits.
fn fork(f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the program is single-threaded, so the child may do anything the parent
    // could; it leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: prctl with PR_SET_PDEATHSIG has no memory preconditions.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        f();
        // SAFETY: always safe.
        unsafe { libc::_exit(0) };
    }
    pid
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn glibc_mutex(robust: bool) -> *mut libc::pthread_mutex_t {
    let m = shared::<libc::pthread_mutex_t>();
    // SAFETY: attribute and mutex storage are valid; the mutex is initialized once,
    // before any fork.
    unsafe {
        let mut a = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        libc::pthread_mutexattr_init(a.as_mut_ptr());
        libc::pthread_mutexattr_setpshared(a.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        if robust {
            libc::pthread_mutexattr_setrobust(a.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
        }
        libc::pthread_mutex_init(m, a.as_ptr());
        libc::pthread_mutexattr_destroy(a.as_mut_ptr());
    }
    m
}

/// Runs `work` in `procs` processes at once (this one included); wall time in ns.
fn in_procs(procs: usize, work: impl Fn() + Copy) -> f64 {
    let t = Instant::now();
    let kids: Vec<_> = (1..procs).map(|_| fork(work)).collect();
    work();
    for k in kids {
        reap(k);
    }
    t.elapsed().as_nanos() as f64
}

// ---------------------------------------------------------------------------------

fn pingpong_ours(n: u64) -> f64 {
    let a = shared::<Semaphore>();
    let b = shared::<Semaphore>();
    // SAFETY: fresh shared mappings, exclusive during init, leaked.
    let (a, b) = unsafe {
        (
            Semaphore::init_at(a, 0).unwrap(),
            Semaphore::init_at(b, 0).unwrap(),
        )
    };
    let child = fork(|| {
        for _ in 0..n {
            a.wait();
            b.post().unwrap();
        }
    });
    let t = Instant::now();
    for _ in 0..n {
        a.post().unwrap();
        b.wait();
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    reap(child);
    ns
}

fn pingpong_floor(n: u64) -> f64 {
    // SAFETY: a zeroed mapping is a valid AtomicU64 (0), shared with the child.
    let x: &'static AtomicU64 = unsafe { &*shared::<AtomicU64>() };
    let child = fork(|| {
        for i in 0..n {
            while x.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            x.store(2 * i + 2, Ordering::Release);
        }
    });
    let t = Instant::now();
    for i in 0..n {
        x.store(2 * i + 1, Ordering::Release);
        while x.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    reap(child);
    ns
}

fn pingpong(reps: usize) {
    let n = 200_000;
    let (mut ours, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        ours.push(pingpong_ours(n));
        floor.push(pingpong_floor(n));
    }
    let (o, f) = (median(ours), median(floor));
    println!(
        "semaphore ping-pong: ours {o:.1} ns, floor {f:.1} ns, ratio {:.2}x (median of {reps})",
        o / f
    );
}

// ---------------------------------------------------------------------------------

/// The protected state: the counter and the last process to increment it, so that the
/// number of times the lock changed process can be counted.
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Counter {
    count: u64,
    last: u64,
    changes: u64,
}

impl Counter {
    fn bump(&mut self, me: u64) {
        self.count += 1;
        if self.last != me {
            self.changes += 1;
            self.last = me;
        }
    }
}

fn contended_ours(procs: usize, n: u64) -> (f64, f64) {
    // SAFETY: fresh shared mapping, exclusive during init, leaked.
    let m = unsafe { RobustMutex::init_at(shared(), Counter::default()).unwrap() };
    let ns = in_procs(procs, || {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() } as u64;
        for _ in 0..n {
            m.lock().unwrap_or_else(|_| panic!("lock")).bump(me);
        }
    });
    let c = *m.lock().unwrap_or_else(|_| panic!("lock"));
    assert_eq!(c.count, procs as u64 * n, "lost increments");
    (ns / c.count as f64, c.changes as f64 / c.count as f64)
}

fn contended_glibc(procs: usize, n: u64, robust: bool) -> (f64, f64) {
    let m = glibc_mutex(robust) as usize;
    let c = shared::<Counter>() as usize;
    let ns = in_procs(procs, || {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() } as u64;
        for _ in 0..n {
            // SAFETY: an initialized pshared mutex; the counter is touched only under it.
            unsafe {
                libc::pthread_mutex_lock(m as *mut _);
                (*(c as *mut Counter)).bump(me);
                libc::pthread_mutex_unlock(m as *mut _);
            }
        }
    });
    // SAFETY: every child has exited.
    let c = unsafe { *(c as *const Counter) };
    assert_eq!(c.count, procs as u64 * n, "lost increments");
    (ns / c.count as f64, c.changes as f64 / c.count as f64)
}

fn contended(reps: usize, procs: &[usize]) {
    let n = 1_000_000;
    for &p in procs {
        let (mut o, mut r, mut g) = (Vec::new(), Vec::new(), Vec::new());
        let (mut oc, mut rc) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let (ns, ch) = contended_ours(p, n);
            o.push(ns);
            oc.push(ch);
            let (ns, ch) = contended_glibc(p, n, true);
            r.push(ns);
            rc.push(ch);
            g.push(contended_glibc(p, n, false).0);
        }
        let (o, r, g) = (median(o), median(r), median(g));
        println!(
            "contended {p} procs: ours {o:.1} ns (owner changes {:.3}/op), glibc robust {r:.1} ns ({:.3}/op), plain {g:.1} ns; ours/robust {:.3}x, ours/plain {:.3}x (median of {reps})",
            median(oc),
            median(rc),
            o / r,
            o / g
        );
    }
}

// ---------------------------------------------------------------------------------

type Payload = [u64; 8];

/// Writes per second in a child while this process reads continuously.
fn seqwriter_ours(time: Duration) -> f64 {
    // SAFETY: zeroed mappings are valid atomics.
    let (stop, writes) = unsafe { (&*shared::<AtomicU64>(), &*shared::<AtomicU64>()) };
    // SAFETY: fresh shared mapping, exclusive during init, leaked.
    let lock = unsafe { SeqLock::init_at(shared(), [0u64; 8]).unwrap() };
    let child = fork(move || {
        let mut i = 0u64;
        while stop.load(Ordering::Relaxed) == 0 {
            i += 1;
            lock.store([i; 8]).unwrap();
        }
        writes.store(i, Ordering::Relaxed);
    });
    let t = Instant::now();
    while t.elapsed() < time {
        for _ in 0..256 {
            let v: Payload = lock.read();
            assert!(v.iter().all(|&w| w == v[0]), "torn read");
        }
    }
    stop.store(1, Ordering::Relaxed);
    let secs = t.elapsed().as_secs_f64();
    reap(child);
    writes.load(Ordering::Relaxed) as f64 / secs
}

fn seqwriter_glibc(time: Duration) -> f64 {
    // SAFETY: zeroed mappings are valid atomics.
    let (stop, writes) = unsafe { (&*shared::<AtomicU64>(), &*shared::<AtomicU64>()) };
    let rw = shared::<libc::pthread_rwlock_t>();
    // SAFETY: valid storage, initialized once before the fork.
    unsafe {
        let mut a = std::mem::MaybeUninit::<libc::pthread_rwlockattr_t>::uninit();
        libc::pthread_rwlockattr_init(a.as_mut_ptr());
        libc::pthread_rwlockattr_setpshared(a.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        libc::pthread_rwlock_init(rw, a.as_ptr());
    }
    let data = shared::<Payload>();
    let child = fork(move || {
        let mut i = 0u64;
        while stop.load(Ordering::Relaxed) == 0 {
            i += 1;
            // SAFETY: initialized pshared rwlock; payload written under the write lock.
            unsafe {
                libc::pthread_rwlock_wrlock(rw);
                std::ptr::write_volatile(data, [i; 8]);
                libc::pthread_rwlock_unlock(rw);
            }
        }
        writes.store(i, Ordering::Relaxed);
    });
    let t = Instant::now();
    while t.elapsed() < time {
        for _ in 0..256 {
            // SAFETY: initialized pshared rwlock; payload read under the read lock.
            let v = unsafe {
                libc::pthread_rwlock_rdlock(rw);
                let v: Payload = std::ptr::read_volatile(data);
                libc::pthread_rwlock_unlock(rw);
                v
            };
            assert!(v.iter().all(|&w| w == v[0]), "torn read");
        }
    }
    stop.store(1, Ordering::Relaxed);
    let secs = t.elapsed().as_secs_f64();
    reap(child);
    writes.load(Ordering::Relaxed) as f64 / secs
}

fn seqwriter(reps: usize) {
    let time = Duration::from_millis(500);
    let (mut o, mut g) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        o.push(seqwriter_ours(time));
        g.push(seqwriter_glibc(time));
    }
    let (o, g) = (median(o), median(g));
    println!(
        "writer under one reader: seqlock {:.2} M/s, glibc rwlock writer {:.2} M/s, ratio {:.2}x (median of {reps})",
        o / 1e6,
        g / 1e6,
        o / g
    );
}

// ---------------------------------------------------------------------------------

/// 4 pairs (8 processes) ping-ponging at once; ns per round trip.
fn oversub_ours(n: u64) -> f64 {
    let mut kids = Vec::new();
    let t = Instant::now();
    for _ in 0..4 {
        // SAFETY: fresh shared mappings, exclusive during init, leaked.
        let (a, b) = unsafe {
            (
                Semaphore::init_at(shared(), 0).unwrap(),
                Semaphore::init_at(shared(), 0).unwrap(),
            )
        };
        kids.push(fork(move || {
            for _ in 0..n {
                a.wait();
                b.post().unwrap();
            }
        }));
        kids.push(fork(move || {
            for _ in 0..n {
                a.post().unwrap();
                b.wait();
            }
        }));
    }
    for k in kids {
        reap(k);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn oversub_glibc(n: u64) -> f64 {
    let mut kids = Vec::new();
    let t = Instant::now();
    for _ in 0..4 {
        let (a, b) = (
            shared::<libc::sem_t>() as usize,
            shared::<libc::sem_t>() as usize,
        );
        // SAFETY: valid storage, initialized before the forks that use it.
        unsafe {
            libc::sem_init(a as *mut _, 1, 0);
            libc::sem_init(b as *mut _, 1, 0);
        }
        kids.push(fork(move || {
            for _ in 0..n {
                // SAFETY: initialized pshared semaphores in leaked mappings.
                unsafe {
                    while libc::sem_wait(a as *mut _) != 0 {}
                    libc::sem_post(b as *mut _);
                }
            }
        }));
        kids.push(fork(move || {
            for _ in 0..n {
                // SAFETY: as above.
                unsafe {
                    libc::sem_post(a as *mut _);
                    while libc::sem_wait(b as *mut _) != 0 {}
                }
            }
        }));
    }
    for k in kids {
        reap(k);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn oversub(reps: usize) {
    let n = 20_000;
    let (mut o, mut g) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        o.push(oversub_ours(n));
        g.push(oversub_glibc(n));
    }
    let (o, g) = (median(o), median(g));
    println!(
        "oversubscribed ping-pong (8 procs): ours {o:.0} ns, glibc {g:.0} ns, ratio {:.2}x (median of {reps})",
        o / g
    );
}

// ---------------------------------------------------------------------------------

/// Condvar ping-pong: a turn word under the mutex; round trip in ns.
fn condvar_ours(n: u64) -> f64 {
    // SAFETY: fresh shared mappings, exclusive during init, leaked.
    let (m, cv) = unsafe {
        (
            RobustMutex::init_at(shared(), 0u64).unwrap(),
            Condvar::init_at(shared()).unwrap(),
        )
    };
    let play = move |first: bool| {
        let mut g = m.lock().unwrap_or_else(|_| panic!("lock"));
        for i in 0..n {
            let my_turn = if first { 2 * i } else { 2 * i + 1 };
            while *g != my_turn {
                g = cv.wait(g).unwrap_or_else(|_| panic!("wait"));
            }
            *g += 1;
            cv.notify_one();
        }
    };
    let t = Instant::now();
    let child = fork(move || play(false));
    play(true);
    reap(child);
    t.elapsed().as_nanos() as f64 / n as f64
}

fn condvar_glibc(n: u64) -> f64 {
    let m = glibc_mutex(false) as usize;
    let cv = shared::<libc::pthread_cond_t>() as usize;
    // SAFETY: valid storage, initialized once before the fork.
    unsafe {
        let mut a = std::mem::MaybeUninit::<libc::pthread_condattr_t>::uninit();
        libc::pthread_condattr_init(a.as_mut_ptr());
        libc::pthread_condattr_setpshared(a.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        libc::pthread_cond_init(cv as *mut _, a.as_ptr());
    }
    // An atomic only so the compiler re-reads it after each wait; touched under the
    // mutex, so Relaxed is enough.
    // SAFETY: a zeroed mapping is a valid AtomicU64.
    let turn: &'static AtomicU64 = unsafe { &*shared::<AtomicU64>() };
    let play = move |first: bool| {
        // SAFETY: initialized pshared mutex and condvar; `turn` is touched only under
        // the mutex.
        unsafe {
            libc::pthread_mutex_lock(m as *mut _);
            for i in 0..n {
                let my_turn = if first { 2 * i } else { 2 * i + 1 };
                while turn.load(Ordering::Relaxed) != my_turn {
                    libc::pthread_cond_wait(cv as *mut _, m as *mut _);
                }
                turn.fetch_add(1, Ordering::Relaxed);
                libc::pthread_cond_signal(cv as *mut _);
            }
            libc::pthread_mutex_unlock(m as *mut _);
        }
    };
    let t = Instant::now();
    let child = fork(move || play(false));
    play(true);
    reap(child);
    t.elapsed().as_nanos() as f64 / n as f64
}

fn condvar(reps: usize) {
    let n = 50_000;
    let (mut o, mut g) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        o.push(condvar_ours(n));
        g.push(condvar_glibc(n));
    }
    let (o, g) = (median(o), median(g));
    println!(
        "condvar ping-pong: ours {o:.0} ns, glibc {g:.0} ns, ratio {:.2}x (median of {reps})",
        o / g
    );
}

/// One million uncontended operations of each kind, for instruction counts under
/// `valgrind --tool=callgrind` (divide each function's inclusive count by 10^6).
fn uncontended() {
    const N: u32 = 1_000_000;
    // SAFETY: fresh shared mappings, exclusive during init, leaked.
    let (m, sem, sl) = unsafe {
        (
            RobustMutex::init_at(shared(), 0u64).unwrap(),
            Semaphore::init_at(shared(), 0).unwrap(),
            SeqLock::init_at(shared(), [0u64; 8]).unwrap(),
        )
    };
    let g = glibc_mutex(true);
    #[inline(never)]
    fn ours_lock(m: &RobustMutex<u64>) {
        *m.lock().unwrap_or_else(|_| panic!("lock")) += 1;
    }
    #[inline(never)]
    fn glibc_lock(m: *mut libc::pthread_mutex_t) {
        // SAFETY: an initialized mutex, used by this thread only.
        unsafe {
            libc::pthread_mutex_lock(m);
            libc::pthread_mutex_unlock(m);
        }
    }
    #[inline(never)]
    fn sem_post_wait(s: &Semaphore) {
        s.post().unwrap();
        s.wait();
    }
    #[inline(never)]
    fn seq_store(s: &SeqLock<Payload>, i: u64) {
        s.store([i; 8]).unwrap();
    }
    #[inline(never)]
    fn seq_read(s: &SeqLock<Payload>) -> u64 {
        s.read()[7]
    }
    let mut x = 0;
    for i in 0..u64::from(N) {
        ours_lock(m);
        glibc_lock(g);
        sem_post_wait(sem);
        seq_store(sl, i);
        x ^= seq_read(sl);
    }
    println!("done ({x})");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(7);
    match args.first().map(String::as_str) {
        Some("pingpong") => pingpong(reps),
        Some("contended") => {
            let procs: Vec<usize> = args[2..].iter().filter_map(|s| s.parse().ok()).collect();
            contended(reps, if procs.is_empty() { &[2, 4, 8] } else { &procs });
        }
        Some("seqwriter") => seqwriter(reps),
        Some("oversub") => oversub(reps),
        Some("condvar") => condvar(reps),
        Some("uncontended") => uncontended(),
        _ => {
            eprintln!(
                "usage: bench_handoff pingpong|contended|seqwriter|oversub [reps] [procs...]"
            );
            std::process::exit(2);
        }
    }
}
