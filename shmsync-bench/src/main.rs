//! Cross-process benchmark harness: shmsync against glibc, in the same run, on the same
//! machine, over memory in a shared mapping.
//!
//! ```text
//! cargo run --release -p shmsync-bench -- all      # the full table (about a minute)
//! cargo run --release -p shmsync-bench -- quick    # tiny counts: checks that it all works
//! ```
//!
//! Each figure is the median of several repetitions. Ratios are shmsync / glibc for
//! times (lower is better) and shmsync / glibc for throughputs where marked (higher is
//! better). The process is single-threaded, so `fork` is safe here.
#![allow(clippy::disallowed_types)]

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmsync::{Condvar, RobustMutex, Segment, Semaphore, SeqLock};

/// A `T` in its own anonymous shared mapping, inherited by fork children. Leaked: the
/// harness is a short-lived process.
fn shared<T>() -> *mut T {
    let seg = Segment::anonymous(std::mem::size_of::<T>().max(4096)).expect("mmap");
    let p = seg.as_ptr().cast::<T>();
    std::mem::forget(seg);
    p
}

/// Forks a child that runs `f` and exits.
fn fork(f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the harness is single-threaded, so the child may do anything the parent
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

struct Cfg {
    reps: usize,
    n_fast: u64,
    n_pingpong: u64,
    n_contended: u64,
    n_condvar: u64,
    n_oversub: u64,
    seqlock_time: Duration,
}

// ---------------------------------------------------------------------------------
// glibc helpers

fn glibc_mutex(robust: bool) -> *mut libc::pthread_mutex_t {
    let m = shared::<libc::pthread_mutex_t>();
    let mut a = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: standard attribute initialization on valid storage; `m` is a fresh
    // shared mapping.
    unsafe {
        libc::pthread_mutexattr_init(a.as_mut_ptr());
        libc::pthread_mutexattr_setpshared(a.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        if robust {
            libc::pthread_mutexattr_setrobust(a.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
        }
        assert_eq!(libc::pthread_mutex_init(m, a.as_ptr()), 0);
        libc::pthread_mutexattr_destroy(a.as_mut_ptr());
    }
    m
}

fn glibc_sem(value: u32) -> *mut libc::sem_t {
    let s = shared::<libc::sem_t>();
    // SAFETY: fresh shared storage; pshared = 1.
    assert_eq!(unsafe { libc::sem_init(s, 1, value) }, 0);
    s
}

fn glibc_rwlock() -> *mut libc::pthread_rwlock_t {
    let rw = shared::<libc::pthread_rwlock_t>();
    let mut a = MaybeUninit::<libc::pthread_rwlockattr_t>::uninit();
    // SAFETY: standard attribute initialization on valid storage.
    unsafe {
        libc::pthread_rwlockattr_init(a.as_mut_ptr());
        libc::pthread_rwlockattr_setpshared(a.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        assert_eq!(libc::pthread_rwlock_init(rw, a.as_ptr()), 0);
    }
    rw
}

fn glibc_cond() -> *mut libc::pthread_cond_t {
    let c = shared::<libc::pthread_cond_t>();
    let mut a = MaybeUninit::<libc::pthread_condattr_t>::uninit();
    // SAFETY: standard attribute initialization on valid storage.
    unsafe {
        libc::pthread_condattr_init(a.as_mut_ptr());
        libc::pthread_condattr_setpshared(a.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        libc::pthread_condattr_setclock(a.as_mut_ptr(), libc::CLOCK_MONOTONIC);
        assert_eq!(libc::pthread_cond_init(c, a.as_ptr()), 0);
    }
    c
}

fn place<T>(init: impl FnOnce(*mut T) -> shmsync::Result<&'static T>) -> &'static T {
    init(shared::<T>()).expect("init_at")
}

// ---------------------------------------------------------------------------------
// uncontended, in one process

fn time_loop(n: u64, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// Times `ours` and `theirs` alternately, `cfg.reps` times each, and returns the two
/// medians: alternating keeps drift (frequency, vCPU placement) from favouring a side.
fn interleaved(cfg: &Cfg, mut ours: impl FnMut(), mut theirs: impl FnMut()) -> (f64, f64) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..cfg.reps {
        a.push(time_loop(cfg.n_fast, &mut ours));
        b.push(time_loop(cfg.n_fast, &mut theirs));
    }
    (median(a), median(b))
}

fn mutex_uncontended(cfg: &Cfg) -> (f64, f64) {
    let ours = place(|p| {
        // SAFETY: fresh shared mapping, exclusive during init, leaked (outlives 'static).
        unsafe { RobustMutex::init_at(p, 0u64) }
    });
    let theirs = glibc_mutex(true);
    let counter = shared::<u64>();
    let (a, b) = interleaved(
        cfg,
        || {
            let mut g = ours.lock().unwrap_or_else(|_| panic!("lock"));
            *g += 1;
        },
        || {
            // SAFETY: initialized pshared robust mutex; the counter is touched
            // only under it.
            unsafe {
                libc::pthread_mutex_lock(theirs);
                *counter += 1;
                libc::pthread_mutex_unlock(theirs);
            }
        },
    );
    (a, b)
}

/// The hardware floor of post+wait on one shared word: two uncontended locked
/// read-modify-writes (what both shmsync and glibc must do: one to add, one to take).
fn two_rmw_floor(cfg: &Cfg) -> f64 {
    let w = shared::<AtomicU64>();
    // SAFETY: a zeroed mapping is a valid AtomicU64.
    let w: &'static AtomicU64 = unsafe { &*w };
    median(
        (0..cfg.reps)
            .map(|_| {
                time_loop(cfg.n_fast, || {
                    w.fetch_add(1, Ordering::SeqCst);
                    let v = w.load(Ordering::Relaxed);
                    let _ = w.compare_exchange(v, v - 1, Ordering::Acquire, Ordering::Relaxed);
                })
            })
            .collect(),
    )
}

fn sem_uncontended(cfg: &Cfg) -> (f64, f64) {
    let ours = place(|p| {
        // SAFETY: fresh shared mapping, exclusive during init, leaked.
        unsafe { Semaphore::init_at(p, 0) }
    });
    let theirs = glibc_sem(0);
    let (a, b) = interleaved(
        cfg,
        || {
            ours.post().unwrap();
            ours.wait();
        },
        || {
            // SAFETY: initialized pshared semaphore.
            unsafe {
                libc::sem_post(theirs);
                libc::sem_wait(theirs);
            }
        },
    );
    (a, b)
}

type Payload = [u64; 8];

fn seqlock_uncontended(cfg: &Cfg) -> (f64, f64) {
    let ours = place(|p| {
        // SAFETY: fresh shared mapping, exclusive during init, leaked.
        unsafe { SeqLock::init_at(p, [7u64; 8]) }
    });
    let rw = glibc_rwlock();
    let data = shared::<Payload>();
    let (mut sink, mut sink2) = (0u64, 0u64);
    let (a, b) = interleaved(
        cfg,
        || {
            sink = sink.wrapping_add(std::hint::black_box(ours.read())[3]);
        },
        || {
            // SAFETY: initialized pshared rwlock; the payload is read under it.
            unsafe {
                libc::pthread_rwlock_rdlock(rw);
                let v: Payload = std::ptr::read(data);
                libc::pthread_rwlock_unlock(rw);
                sink2 = sink2.wrapping_add(std::hint::black_box(v)[3]);
            }
        },
    );
    std::hint::black_box((sink, sink2));
    (a, b)
}

// ---------------------------------------------------------------------------------
// cross-process

/// Round trip (ns) between two processes with two semaphores.
fn pingpong(n: u64, post: fn(usize), wait: fn(usize)) -> f64 {
    let child = fork(|| {
        for _ in 0..n {
            wait(0);
            post(1);
        }
    });
    let t = Instant::now();
    for _ in 0..n {
        post(0);
        wait(1);
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    reap(child);
    ns
}

static mut OUR_SEMS: [*const Semaphore; 2] = [std::ptr::null(); 2];
static mut GLIBC_SEMS: [*mut libc::sem_t; 2] = [std::ptr::null_mut(); 2];

fn our_post(i: usize) {
    // SAFETY: set before any fork, read-only afterwards; points into a leaked mapping.
    unsafe { (*OUR_SEMS[i]).post().unwrap() }
}
fn our_wait(i: usize) {
    // SAFETY: as in `our_post`.
    unsafe { (*OUR_SEMS[i]).wait() }
}
fn glibc_post(i: usize) {
    // SAFETY: set before any fork, read-only afterwards; initialized pshared semaphores.
    unsafe { libc::sem_post(GLIBC_SEMS[i]) };
}
fn glibc_wait(i: usize) {
    // SAFETY: as in `glibc_post`.
    unsafe { while libc::sem_wait(GLIBC_SEMS[i]) != 0 {} }
}

fn setup_sems() {
    for i in 0..2 {
        let ours = place(|p| {
            // SAFETY: fresh shared mapping, exclusive during init, leaked.
            unsafe { Semaphore::init_at(p, 0) }
        });
        // SAFETY: single-threaded; written before any fork.
        unsafe {
            OUR_SEMS[i] = ours;
            GLIBC_SEMS[i] = glibc_sem(0);
        }
    }
}

fn spin_floor(n: u64) -> f64 {
    let x = shared::<AtomicU64>();
    // SAFETY: a fresh zeroed mapping is a valid AtomicU64 (0), shared with the child.
    let x: &'static AtomicU64 = unsafe { &*x };
    x.store(0, Ordering::SeqCst);
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

/// Two processes incrementing one counter under the mutex; ns per increment.
fn contended(n: u64) -> (f64, f64) {
    let ours = place(|p| {
        // SAFETY: fresh shared mapping, exclusive during init, leaked.
        unsafe { RobustMutex::init_at(p, 0u64) }
    });
    let bump = move || {
        for _ in 0..n {
            *ours.lock().unwrap_or_else(|_| panic!("lock")) += 1;
        }
    };
    let t = Instant::now();
    let child = fork(bump);
    bump();
    reap(child);
    let a = t.elapsed().as_nanos() as f64 / (2 * n) as f64;
    let total = *ours.lock().unwrap_or_else(|_| panic!("lock"));
    assert_eq!(total, 2 * n, "lost increments");

    let m = glibc_mutex(true);
    let counter = shared::<u64>();
    let bump = move || {
        for _ in 0..n {
            // SAFETY: initialized pshared robust mutex; the counter is touched only
            // under it.
            unsafe {
                libc::pthread_mutex_lock(m);
                *counter += 1;
                libc::pthread_mutex_unlock(m);
            }
        }
    };
    let t = Instant::now();
    let child = fork(bump);
    bump();
    reap(child);
    let b = t.elapsed().as_nanos() as f64 / (2 * n) as f64;
    (a, b)
}

/// Condvar ping-pong: a turn word under the mutex; round trip in ns.
fn condvar_pingpong(n: u64) -> (f64, f64) {
    let m = place(|p| {
        // SAFETY: fresh shared mapping, exclusive during init, leaked.
        unsafe { RobustMutex::init_at(p, 0u64) }
    });
    let cv = place(|p| {
        // SAFETY: fresh shared mapping, exclusive during init, leaked.
        unsafe { Condvar::init_at(p) }
    });
    let play = move |me: u64, first: bool| {
        let mut g = m.lock().unwrap_or_else(|_| panic!("lock"));
        for i in 0..n {
            let my_turn = if first { 2 * i } else { 2 * i + 1 };
            while *g != my_turn {
                g = cv.wait(g).unwrap_or_else(|_| panic!("wait"));
            }
            *g += 1;
            cv.notify_one();
        }
        let _ = me;
    };
    let t = Instant::now();
    let child = fork(move || play(1, false));
    play(0, true);
    reap(child);
    let a = t.elapsed().as_nanos() as f64 / n as f64;

    let gm = glibc_mutex(false);
    let gc = glibc_cond();
    // An atomic only so the compiler re-reads it after each wait; it is touched under
    // the mutex, so Relaxed is enough.
    let turn = shared::<AtomicU64>();
    let gplay = move |first: bool| {
        // SAFETY: initialized pshared mutex and condvar; `turn` is touched only under
        // the mutex.
        unsafe {
            libc::pthread_mutex_lock(gm);
            for i in 0..n {
                let my_turn = if first { 2 * i } else { 2 * i + 1 };
                while (*turn).load(Ordering::Relaxed) != my_turn {
                    libc::pthread_cond_wait(gc, gm);
                }
                (*turn).fetch_add(1, Ordering::Relaxed);
                libc::pthread_cond_signal(gc);
            }
            libc::pthread_mutex_unlock(gm);
        }
    };
    let t = Instant::now();
    let child = fork(move || gplay(false));
    gplay(true);
    reap(child);
    let b = t.elapsed().as_nanos() as f64 / n as f64;
    (a, b)
}

/// Reads per second in this process while a child writes continuously.
fn seqlock_vs_writer(time: Duration) -> (f64, f64) {
    let stop = shared::<AtomicU64>();
    // SAFETY: zeroed mapping is a valid AtomicU64.
    let stop: &'static AtomicU64 = unsafe { &*stop };
    let ours = place(|p| {
        // SAFETY: fresh shared mapping, exclusive during init, leaked.
        unsafe { SeqLock::init_at(p, [0u64; 8]) }
    });
    let child = fork(move || {
        let mut i = 0u64;
        while stop.load(Ordering::Relaxed) == 0 {
            i += 1;
            ours.store([i; 8]).unwrap();
        }
    });
    let (mut reads, t) = (0u64, Instant::now());
    while t.elapsed() < time {
        for _ in 0..256 {
            let v = ours.read();
            assert!(v.iter().all(|&w| w == v[0]), "torn read");
        }
        reads += 256;
    }
    let a = reads as f64 / t.elapsed().as_secs_f64();
    stop.store(1, Ordering::Relaxed);
    reap(child);

    stop.store(0, Ordering::Relaxed);
    let rw = glibc_rwlock();
    let data = shared::<Payload>();
    let child = fork(move || {
        let mut i = 0u64;
        while stop.load(Ordering::Relaxed) == 0 {
            i += 1;
            // SAFETY: initialized pshared rwlock; payload written under the write lock.
            unsafe {
                libc::pthread_rwlock_wrlock(rw);
                std::ptr::write(data, [i; 8]);
                libc::pthread_rwlock_unlock(rw);
            }
        }
    });
    let (mut reads, t) = (0u64, Instant::now());
    while t.elapsed() < time {
        for _ in 0..256 {
            // SAFETY: initialized pshared rwlock; payload read under the read lock.
            let v = unsafe {
                libc::pthread_rwlock_rdlock(rw);
                let v: Payload = std::ptr::read(data);
                libc::pthread_rwlock_unlock(rw);
                v
            };
            assert!(v.iter().all(|&w| w == v[0]), "torn read");
        }
        reads += 256;
    }
    let b = reads as f64 / t.elapsed().as_secs_f64();
    stop.store(1, Ordering::Relaxed);
    reap(child);
    (a, b)
}

/// 4 pairs (8 processes) ping-ponging at once on this machine; ns per round trip,
/// averaged over pairs.
fn oversubscribed(n: u64, ours: bool) -> f64 {
    const PAIRS: usize = 4;
    let t = Instant::now();
    let mut kids = Vec::new();
    for _ in 0..PAIRS {
        if ours {
            let a = place(|p| {
                // SAFETY: fresh shared mapping, exclusive during init, leaked.
                unsafe { Semaphore::init_at(p, 0) }
            });
            let b = place(|p| {
                // SAFETY: as above.
                unsafe { Semaphore::init_at(p, 0) }
            });
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
        } else {
            let (a, b) = (glibc_sem(0), glibc_sem(0));
            let (a, b) = (a as usize, b as usize);
            kids.push(fork(move || {
                for _ in 0..n {
                    // SAFETY: initialized pshared semaphores in leaked mappings.
                    unsafe {
                        while libc::sem_wait(a as *mut libc::sem_t) != 0 {}
                        libc::sem_post(b as *mut libc::sem_t);
                    }
                }
            }));
            kids.push(fork(move || {
                for _ in 0..n {
                    // SAFETY: as above.
                    unsafe {
                        libc::sem_post(a as *mut libc::sem_t);
                        while libc::sem_wait(b as *mut libc::sem_t) != 0 {}
                    }
                }
            }));
        }
    }
    for k in kids {
        reap(k);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

// ---------------------------------------------------------------------------------

struct Row {
    op: &'static str,
    ours: f64,
    glibc: f64,
    unit: &'static str,
    /// For throughputs, the ratio is ours/glibc and higher is better.
    higher_is_better: bool,
    target: &'static str,
    met: bool,
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let cfg = match mode.as_str() {
        "all" => Cfg {
            reps: 5,
            n_fast: 5_000_000,
            n_pingpong: 200_000,
            n_contended: 2_000_000,
            n_condvar: 100_000,
            n_oversub: 20_000,
            seqlock_time: Duration::from_millis(500),
        },
        "quick" => Cfg {
            reps: 1,
            n_fast: 10_000,
            n_pingpong: 2_000,
            n_contended: 10_000,
            n_condvar: 1_000,
            n_oversub: 500,
            seqlock_time: Duration::from_millis(20),
        },
        other => {
            eprintln!("usage: shmsync-bench [all|quick] (got {other:?})");
            std::process::exit(2);
        }
    };
    let reps = |f: &mut dyn FnMut() -> (f64, f64)| {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..cfg.reps {
            let (x, y) = f();
            a.push(x);
            b.push(y);
        }
        (median(a), median(b))
    };
    let mut rows = Vec::new();

    let (a, b) = mutex_uncontended(&cfg);
    rows.push(Row {
        op: "RobustMutex lock+unlock, uncontended",
        ours: a,
        glibc: b,
        unit: "ns",
        higher_is_better: false,
        target: "<= 1.05x",
        met: a <= 1.05 * b,
    });
    let (a, b) = sem_uncontended(&cfg);
    rows.push(Row {
        op: "Semaphore post+wait, uncontended",
        ours: a,
        glibc: b,
        unit: "ns",
        higher_is_better: false,
        target: "<= 0.6x",
        met: a <= 0.6 * b,
    });
    let floor = two_rmw_floor(&cfg);
    rows.push(Row {
        op: "  same, vs two bare locked RMWs (hardware floor)",
        ours: a,
        glibc: floor,
        unit: "ns",
        higher_is_better: false,
        target: "(reference)",
        met: true,
    });
    let (a, b) = seqlock_uncontended(&cfg);
    rows.push(Row {
        op: "SeqLock read 64 B vs rwlock rdlock+copy",
        ours: a,
        glibc: b,
        unit: "ns",
        higher_is_better: false,
        target: "<= 0.3x",
        met: a <= 0.3 * b,
    });

    setup_sems();
    let (a, b) = reps(&mut || {
        (
            pingpong(cfg.n_pingpong, our_post, our_wait),
            pingpong(cfg.n_pingpong, glibc_post, glibc_wait),
        )
    });
    let floor = median((0..cfg.reps).map(|_| spin_floor(cfg.n_pingpong)).collect());
    rows.push(Row {
        op: "Semaphore ping-pong round trip, 2 processes",
        ours: a,
        glibc: b,
        unit: "ns",
        higher_is_better: false,
        target: "<= 0.1x",
        met: a <= 0.1 * b,
    });
    rows.push(Row {
        op: "  same, vs spinning floor (one cache line)",
        ours: a,
        glibc: floor,
        unit: "ns",
        higher_is_better: false,
        target: "<= 3x floor",
        met: a <= 3.0 * floor,
    });
    let (a, b) = reps(&mut || contended(cfg.n_contended));
    rows.push(Row {
        op: "RobustMutex 2-process counter, per increment",
        ours: a,
        glibc: b,
        unit: "ns",
        higher_is_better: false,
        target: "<= 1.0x",
        met: a <= b,
    });
    let (a, b) = reps(&mut || condvar_pingpong(cfg.n_condvar));
    rows.push(Row {
        op: "Condvar ping-pong round trip",
        ours: a,
        glibc: b,
        unit: "ns",
        higher_is_better: false,
        target: "<= 1.0x",
        met: a <= b,
    });
    let (a, b) = reps(&mut || seqlock_vs_writer(cfg.seqlock_time));
    rows.push(Row {
        op: "SeqLock reads/s while a process writes",
        ours: a,
        glibc: b,
        unit: "reads/s",
        higher_is_better: true,
        target: ">= 10x",
        met: a >= 10.0 * b,
    });
    let (a, b) = reps(&mut || {
        (
            oversubscribed(cfg.n_oversub, true),
            oversubscribed(cfg.n_oversub, false),
        )
    });
    rows.push(Row {
        op: "Oversubscribed ping-pong, 8 procs on this machine",
        ours: a,
        glibc: b,
        unit: "ns",
        higher_is_better: false,
        target: "<= 1.5x",
        met: a <= 1.5 * b,
    });

    println!(
        "shmsync-bench {mode}: {} CPUs, median of {} runs",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cfg.reps
    );
    println!("| operation | shmsync | glibc | ratio | target | met |");
    println!("|---|---:|---:|---:|---|---|");
    for r in &rows {
        let ratio = r.ours / r.glibc;
        let fmt = |v: f64| {
            if r.unit == "reads/s" {
                format!("{:.1} M/s", v / 1e6)
            } else {
                format!("{v:.1} ns")
            }
        };
        println!(
            "| {} | {} | {} | {:.3}x{} | {} | {} |",
            r.op,
            fmt(r.ours),
            fmt(r.glibc),
            ratio,
            if r.higher_is_better {
                " (higher is better)"
            } else {
                ""
            },
            r.target,
            if r.met { "yes" } else { "no" }
        );
    }
}
