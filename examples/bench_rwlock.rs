//! `RobustRwLock` against glibc's process-shared `pthread_rwlock_t` (and `RobustMutex`),
//! measured in the same run on the same machine:
//!
//! - uncontended read lock + unlock, write lock + unlock (one process);
//! - read throughput of one reader process, then two reader processes pinned to two
//!   CPUs (the ratio shows whether reads scale: glibc's readers all write one counter).
//!
//! ```text
//! cargo run --release --example bench_rwlock [seconds per throughput run, default 1]
//! ```
//!
//! Numbers vary with the machine and its load; compare the columns of one run.

#![allow(clippy::disallowed_types)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use shmsync::{RobustMutex, RobustRwLock, Segment};

const OPS: u64 = 2_000_000;
const REPEATS: usize = 5;
const RW_AT: usize = 0;
const MUTEX_AT: usize = 8192;
const GLIBC_AT: usize = 16384;
const COUNTS_AT: usize = 32768;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Shared {
    seg: Segment,
}

impl Shared {
    fn new() -> Result<Shared> {
        let seg = Segment::anonymous(1 << 16)?;
        // SAFETY: a fresh mapping, large enough; each object gets its own offset, and
        // the mapping outlives every reference (they borrow `self`).
        unsafe {
            RobustRwLock::<u64>::init_at(seg.as_ptr().add(RW_AT).cast(), 7)?;
            RobustMutex::<u64>::init_at(seg.as_ptr().add(MUTEX_AT).cast(), 7)?;
            let mut attr = std::mem::MaybeUninit::<libc::pthread_rwlockattr_t>::uninit();
            assert_eq!(libc::pthread_rwlockattr_init(attr.as_mut_ptr()), 0);
            assert_eq!(
                libc::pthread_rwlockattr_setpshared(
                    attr.as_mut_ptr(),
                    libc::PTHREAD_PROCESS_SHARED
                ),
                0
            );
            assert_eq!(
                libc::pthread_rwlock_init(self_glibc(&seg), attr.as_ptr()),
                0
            );
            libc::pthread_rwlockattr_destroy(attr.as_mut_ptr());
        }
        Ok(Shared { seg })
    }

    fn rw(&self) -> &RobustRwLock<u64> {
        // SAFETY: initialized in `new`; borrows the mapping.
        unsafe { &*self.seg.as_ptr().add(RW_AT).cast() }
    }

    fn mutex(&self) -> &RobustMutex<u64> {
        // SAFETY: initialized in `new`; borrows the mapping.
        unsafe { &*self.seg.as_ptr().add(MUTEX_AT).cast() }
    }

    fn glibc(&self) -> *mut libc::pthread_rwlock_t {
        self_glibc(&self.seg)
    }

    /// Per-process op counters (one cache line each).
    fn count(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: inside the mapping, 8-aligned, zeroed, only used atomically.
        unsafe { &*self.seg.as_ptr().add(COUNTS_AT + 64 * i).cast() }
    }
}

fn self_glibc(seg: &Segment) -> *mut libc::pthread_rwlock_t {
    // SAFETY: inside the mapping.
    unsafe { seg.as_ptr().add(GLIBC_AT).cast() }
}

#[derive(Clone, Copy)]
enum Op {
    RwRead,
    RwWrite,
    MutexLock,
    GlibcRead,
    GlibcWrite,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::RwRead => "RobustRwLock read",
            Op::RwWrite => "RobustRwLock write",
            Op::MutexLock => "RobustMutex lock",
            Op::GlibcRead => "glibc pshared rwlock rdlock",
            Op::GlibcWrite => "glibc pshared rwlock wrlock",
        }
    }

    #[inline(always)]
    fn once(self, s: &Shared) {
        match self {
            Op::RwRead => {
                black_box(*s.rw().read().unwrap());
            }
            Op::RwWrite => {
                *s.rw().write().unwrap() += 1;
            }
            Op::MutexLock => {
                *s.mutex().lock().unwrap() += 1;
            }
            // SAFETY: an initialized pshared rwlock; every lock is unlocked at once; the
            // word read under it lies inside the mapping and nobody writes it.
            Op::GlibcRead => unsafe {
                libc::pthread_rwlock_rdlock(s.glibc());
                black_box(s.seg.as_ptr().add(COUNTS_AT + 4096).cast::<u64>().read());
                libc::pthread_rwlock_unlock(s.glibc());
            },
            // SAFETY: as above.
            Op::GlibcWrite => unsafe {
                libc::pthread_rwlock_wrlock(s.glibc());
                black_box(0u8);
                libc::pthread_rwlock_unlock(s.glibc());
            },
        }
    }
}

/// Best-of-REPEATS nanoseconds per uncontended operation.
fn uncontended(s: &Shared, op: Op) -> f64 {
    (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..OPS {
                op.once(s);
            }
            t.elapsed().as_nanos() as f64 / OPS as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it;
    // sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Total operations per second of `procs` reader processes, each pinned to its own CPU,
/// running `op` for `secs`.
fn throughput(s: &Shared, op: Op, procs: usize, secs: Duration) -> Result<f64> {
    for i in 0..procs {
        s.count(i).store(0, std::sync::atomic::Ordering::SeqCst);
    }
    let mut pids = Vec::new();
    for i in 0..procs {
        // SAFETY: this program is single-threaded; the child only locks, counts and
        // `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if pid == 0 {
            pin(i);
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < secs {
                for _ in 0..1024 {
                    op.once(s);
                }
                n += 1024;
            }
            s.count(i).store(n, std::sync::atomic::Ordering::SeqCst);
            // SAFETY: `_exit` is always safe.
            unsafe { libc::_exit(0) };
        }
        pids.push(pid);
    }
    for pid in pids {
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    let total: u64 = (0..procs)
        .map(|i| s.count(i).load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    Ok(total as f64 / secs.as_secs_f64())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn main() -> Result<()> {
    let secs = Duration::from_secs_f64(
        std::env::args()
            .nth(1)
            .map_or(Ok(1.0), |a| a.parse::<f64>())?,
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("bench_rwlock: {cpus} CPUs, load average {}", loadavg());
    let s = Shared::new()?;
    pin(0);

    println!("\nuncontended lock + unlock, one process (best of {REPEATS} × {OPS}):");
    let mut ns = Vec::new();
    for op in [
        Op::RwRead,
        Op::GlibcRead,
        Op::RwWrite,
        Op::MutexLock,
        Op::GlibcWrite,
    ] {
        let t = uncontended(&s, op);
        println!("  {:<30} {t:6.1} ns", op.name());
        ns.push(t);
    }
    println!(
        "  read: RobustRwLock / glibc = {:.2}×; write: RobustRwLock / RobustMutex = {:.2}×",
        ns[0] / ns[1],
        ns[2] / ns[3]
    );

    if cpus < 2 {
        println!("\nread scaling skipped: one CPU");
        return Ok(());
    }
    println!("\nread throughput, reader processes pinned to CPUs 0 and 1 ({secs:?} each):");
    for op in [Op::RwRead, Op::GlibcRead] {
        let one = throughput(&s, op, 1, secs)?;
        let two = throughput(&s, op, 2, secs)?;
        println!(
            "  {:<30} 1 reader {:7.1} M/s, 2 readers {:7.1} M/s: {:.2}×",
            op.name(),
            one / 1e6,
            two / 1e6,
            two / one
        );
    }
    println!("\nload average after: {}", loadavg());
    Ok(())
}
