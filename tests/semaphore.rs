//! The semaphore across real process boundaries: cross-process wake, a file-backed
//! mapping across fork (tst-sem3), post races (tst-sem14), overflow (tst-sem15), many
//! waiters, killed waiters, EINTR storms, deadlines and an oversubscribed ping-pong.
#![allow(clippy::disallowed_types)]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const MAX_VALUE: u32 = Semaphore::MAX_VALUE;
use shmsync::{Error, Segment, SemError, Semaphore};

#[test]
fn child_role() {
    common::dispatch(&[("wait_once", wait_once)]);
}

/// Child: attaches to the semaphore at offset 0 of POSIX segment `args[0]` and waits.
fn wait_once(args: &[String]) {
    let seg = Segment::posix_open(&args[0]).unwrap();
    // SAFETY: the parent placed a semaphore at offset 0; the mapping outlives `sem`.
    let sem = unsafe { Semaphore::attach(seg.as_ptr().cast()) }.unwrap();
    sem.wait();
}

/// A semaphore at `offset` in `seg`, initialized to `value`.
fn sem_at(seg: &Segment, offset: usize, value: u32) -> &Semaphore {
    // SAFETY: in bounds and 4-aligned (offsets used are multiples of 64), in a mapping
    // that outlives the reference; nobody else uses it yet.
    unsafe { Semaphore::init_at(common::at(seg, offset), value) }.unwrap()
}

fn grace() {
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn a_sleeping_waiter_in_another_process_is_woken() {
    let name = common::ShmName::new("semwake");
    let seg = Segment::posix_create(name.as_str(), 4096).unwrap();
    let sem = sem_at(&seg, 0, 0);
    let mut child = common::spawn("wait_once", &[name.as_str()]);
    common::wait_until(common::WATCHDOG, "the child to sleep in wait", || {
        sem.sleepers() == 1
    });
    grace();
    assert!(
        child.try_wait().is_none(),
        "the waiter returned without a permit"
    );
    assert_eq!(sem.sleepers(), 1);
    sem.post().unwrap();
    // With a private futex the child would never wake: the watchdog fails the test.
    child.expect_success(common::WATCHDOG);
    assert_eq!((sem.value(), sem.sleepers()), (0, 0));
}

/// A temporary file mapped `MAP_SHARED`; removed and unmapped on drop.
struct FileMapping {
    path: std::path::PathBuf,
    ptr: *mut u8,
    len: usize,
}

impl FileMapping {
    fn new(len: usize) -> FileMapping {
        use std::os::fd::AsRawFd;
        let path =
            std::env::temp_dir().join(common::unique_name("semfile").trim_start_matches('/'));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        file.set_len(len as u64).unwrap();
        // SAFETY: a new shared mapping of an open file of `len` bytes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        FileMapping {
            path,
            ptr: ptr.cast(),
            len,
        }
    }
}

impl Drop for FileMapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping; nothing borrows it any more (tests drop it last).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn file_backed_semaphores_across_fork() {
    // tst-sem3: semaphores in a MAP_SHARED file mapping, used by a forked child.
    let map = FileMapping::new(4096);
    // SAFETY: two semaphores at offsets 0 and 64 of a fresh 4096-byte mapping that
    // outlives them.
    let (a, b) = unsafe {
        (
            Semaphore::init_at(map.ptr.cast(), 0).unwrap(),
            Semaphore::init_at(map.ptr.add(64).cast(), 0).unwrap(),
        )
    };
    const ROUNDS: u32 = 200;
    // The child only waits and posts: futex calls and atomics, async-signal-safe.
    let mut child = common::fork_child(|| {
        for _ in 0..ROUNDS {
            a.wait();
            if b.post().is_err() {
                return 1;
            }
        }
        0
    });
    let _w = common::Watchdog::new(common::WATCHDOG, "file-backed ping-pong");
    for _ in 0..ROUNDS {
        a.post().unwrap();
        b.wait();
    }
    child.expect_success(common::WATCHDOG);
    assert_eq!((a.value(), b.value()), (0, 0));
}

#[test]
fn concurrent_posts_from_threads_and_processes_are_exact() {
    // tst-sem14: posts race with each other and with waits; the count stays exact.
    const POSTS: u32 = 20_000;
    let seg = Segment::anonymous(4096).unwrap();
    let sem = sem_at(&seg, 0, 0);
    let mut children: Vec<_> = (0..2)
        .map(|_| {
            common::fork_child(|| {
                for _ in 0..POSTS {
                    if sem.post().is_err() {
                        return 1;
                    }
                }
                0
            })
        })
        .collect();
    let _w = common::Watchdog::new(common::WATCHDOG, "post races");
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..POSTS {
                    sem.post().unwrap();
                }
            });
        }
        // Two threads take half of what is posted while posting goes on.
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..POSTS {
                    sem.wait();
                }
            });
        }
    });
    for c in &mut children {
        c.expect_success(common::WATCHDOG);
    }
    assert_eq!(sem.value(), 4 * POSTS - 2 * POSTS);
    assert_eq!(sem.sleepers(), 0);
}

#[test]
fn overflow_is_refused_and_changes_nothing() {
    // tst-sem15.
    let seg = Segment::anonymous(4096).unwrap();
    let sem = sem_at(&seg, 0, MAX_VALUE);
    assert_eq!(sem.post(), Err(SemError::Overflow));
    assert_eq!(sem.value(), MAX_VALUE);
    sem.wait();
    assert_eq!(sem.post_n(2), Err(SemError::Overflow));
    assert_eq!(sem.value(), MAX_VALUE - 1);
    sem.post_n(1).unwrap();
    assert_eq!(sem.value(), MAX_VALUE);
    let zero = sem_at(&seg, 64, 0);
    assert_eq!(zero.post_n(u32::MAX), Err(SemError::Overflow));
    assert_eq!(zero.post_n(MAX_VALUE + 1), Err(SemError::Overflow));
    assert_eq!(zero.value(), 0);
    zero.post_n(0).unwrap();
    assert_eq!(zero.value(), 0);
    // SAFETY: in bounds and aligned, unused.
    let r = unsafe { Semaphore::init_at(common::at(&seg, 128), MAX_VALUE + 1) };
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    assert_eq!(
        SemError::Overflow.to_string(),
        "semaphore value would exceed its maximum (i32::MAX)"
    );
}

#[test]
fn attach_checks_only_alignment() {
    let seg = Segment::anonymous(4096).unwrap();
    // SAFETY: all-zero, in bounds, aligned: a semaphore with value 0.
    let sem = unsafe { Semaphore::attach(common::at(&seg, 0)) }.unwrap();
    assert_eq!((sem.value(), sem.sleepers()), (0, 0));
    assert_eq!(sem.try_wait(), Err(SemError::WouldBlock));
    // SAFETY: misaligned and null pointers are reported before any access.
    unsafe {
        let odd = seg.as_ptr().add(2).cast::<Semaphore>();
        assert!(matches!(
            Semaphore::attach(odd),
            Err(Error::Misaligned { align: 4, .. })
        ));
        assert!(matches!(
            Semaphore::init_at(odd, 0),
            Err(Error::Misaligned { .. })
        ));
        assert!(matches!(
            Semaphore::attach(std::ptr::null()),
            Err(Error::Misaligned { .. })
        ));
    }
}

#[test]
fn post_n_wakes_exactly_n_of_five_sleeping_processes() {
    let seg = Segment::anonymous(4096).unwrap();
    let sem = sem_at(&seg, 0, 0);
    let mut children: Vec<_> = (0..5)
        .map(|_| {
            common::fork_child(|| {
                sem.wait();
                0
            })
        })
        .collect();
    common::wait_until(common::WATCHDOG, "five sleepers", || sem.sleepers() == 5);
    let exited = |cs: &mut Vec<common::Child>| cs.iter_mut().filter_map(|c| c.try_wait()).count();
    sem.post_n(3).unwrap();
    common::wait_until(common::WATCHDOG, "three waiters to finish", || {
        exited(&mut children) == 3
    });
    grace();
    assert_eq!(exited(&mut children), 3, "post_n(3) woke more than three");
    assert_eq!((sem.value(), sem.sleepers()), (0, 2));
    sem.post_n(2).unwrap();
    for c in &mut children {
        c.expect_success(common::WATCHDOG);
    }
    assert_eq!((sem.value(), sem.sleepers()), (0, 0));
}

#[test]
fn a_killed_sleeper_loses_no_permit() {
    let seg = Segment::anonymous(4096).unwrap();
    let sem = sem_at(&seg, 0, 0);
    let mut victim = common::fork_child(|| {
        sem.wait();
        0
    });
    let mut survivor = common::fork_child(|| {
        sem.wait();
        0
    });
    common::wait_until(common::WATCHDOG, "two sleepers", || sem.sleepers() == 2);
    victim.kill();
    // The victim's registration stays (documented: it only costs a futile wake).
    assert_eq!(sem.sleepers(), 2);
    sem.post().unwrap();
    survivor.expect_success(common::WATCHDOG);
    assert_eq!((sem.value(), sem.sleepers()), (0, 1));
    // Later posts and waits still work, with nothing lost or invented.
    sem.post_n(2).unwrap();
    assert_eq!(sem.value(), 2);
    sem.wait();
    sem.wait();
    assert_eq!(sem.try_wait(), Err(SemError::WouldBlock));
    let mut next = common::fork_child(|| {
        sem.wait();
        0
    });
    common::wait_until(common::WATCHDOG, "a new sleeper", || sem.sleepers() == 2);
    sem.post().unwrap();
    next.expect_success(common::WATCHDOG);
    assert_eq!(sem.value(), 0);
}

extern "C" fn ignore_signal(_: libc::c_int) {}

#[test]
fn an_eintr_storm_loses_nothing() {
    const WAITERS: usize = 3;
    const WAITS: u32 = 5;
    let seg = Segment::anonymous(4096).unwrap();
    let sem = sem_at(&seg, 0, 0);
    let mut children: Vec<_> = (0..WAITERS)
        .map(|_| {
            common::fork_child(|| {
                // SAFETY: installing a no-op handler without SA_RESTART (so the futex
                // wait really returns EINTR); sigaction is async-signal-safe.
                unsafe {
                    let mut sa: libc::sigaction = std::mem::zeroed();
                    sa.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
                    sa.sa_flags = 0;
                    libc::sigemptyset(&mut sa.sa_mask);
                    if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
                        return 2;
                    }
                }
                for i in 0..WAITS {
                    // Alternate untimed and timed waits: neither may return early.
                    if i % 2 == 0 {
                        sem.wait();
                    } else if sem.wait_timeout(Duration::from_secs(30)).is_err() {
                        return 1;
                    }
                }
                0
            })
        })
        .collect();
    common::wait_until(common::WATCHDOG, "all waiters asleep", || {
        sem.sleepers() == WAITERS as u32
    });
    let storm = |until: Instant| {
        while Instant::now() < until {
            for c in &children {
                c.signal(libc::SIGUSR1);
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    };
    storm(Instant::now() + Duration::from_millis(300));
    assert_eq!(
        sem.value(),
        0,
        "a signal made a waiter return without a permit"
    );
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..WAITERS as u32 * WAITS {
                sem.post().unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            done.store(true, Ordering::Release);
        });
        while !done.load(Ordering::Acquire) {
            storm(Instant::now() + Duration::from_millis(10));
        }
    });
    for c in &mut children {
        c.expect_success(common::WATCHDOG);
    }
    assert_eq!((sem.value(), sem.sleepers()), (0, 0));
}

#[test]
fn deadlines_past_zero_and_far() {
    let sem = Semaphore::new(0);
    let past = Instant::now() - Duration::from_secs(1);
    let t = Instant::now();
    assert_eq!(sem.wait_deadline(past), Err(SemError::TimedOut));
    assert_eq!(sem.wait_timeout(Duration::ZERO), Err(SemError::TimedOut));
    assert!(t.elapsed() < common::WATCHDOG);
    assert_eq!(
        sem.wait_timeout(Duration::from_millis(20)),
        Err(SemError::TimedOut)
    );
    assert_eq!((sem.value(), sem.sleepers()), (0, 0));
    sem.post_n(3).unwrap();
    assert_eq!(sem.wait_deadline(past), Ok(()));
    assert_eq!(sem.wait_timeout(Duration::ZERO), Ok(()));
    assert_eq!(sem.wait_timeout(Duration::MAX), Ok(()));
    // Far-future deadlines saturate instead of overflowing, and still wake on a post.
    let _w = common::Watchdog::new(common::WATCHDOG, "Duration::MAX wait");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| sem.wait_timeout(Duration::MAX));
        common::wait_until(common::WATCHDOG, "the far-deadline waiter to sleep", || {
            sem.sleepers() == 1
        });
        sem.post().unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(()));
    });
    assert_eq!(sem.value(), 0);
}

#[test]
fn a_waiter_that_spun_hot_still_falls_asleep() {
    // A ping-pong drives the child's spin budget to its maximum; then it waits on a
    // semaphore nobody posts. It must end up asleep in the kernel, not spinning.
    const ROUNDS: u32 = 20_000;
    let seg = Segment::anonymous(4096).unwrap();
    let (a, b, idle) = (
        sem_at(&seg, 0, 0),
        sem_at(&seg, 64, 0),
        sem_at(&seg, 128, 0),
    );
    let mut child = common::fork_child(|| {
        for _ in 0..ROUNDS {
            a.wait();
            if b.post().is_err() {
                return 1;
            }
        }
        idle.wait();
        0
    });
    for _ in 0..ROUNDS {
        a.post().unwrap();
        b.wait();
    }
    common::wait_until(common::WATCHDOG, "the child to sleep in the kernel", || {
        idle.sleepers() == 1 && common::proc_state(child.pid()) == Some('S')
    });
    // A spinning process reads `R`; sample for a while so that a spin that merely
    // paused between rounds cannot pass.
    for _ in 0..50 {
        assert_eq!(
            common::proc_state(child.pid()),
            Some('S'),
            "the idle waiter is not asleep"
        );
        std::thread::sleep(Duration::from_millis(4));
    }
    idle.post().unwrap();
    child.expect_success(common::WATCHDOG);
    assert_eq!((idle.value(), idle.sleepers()), (0, 0));
}

#[test]
fn oversubscribed_ping_pong_finishes() {
    // 8 processes (4 pairs) on this machine's 2 CPUs: the adaptive spin must back off
    // rather than starve the partners. Bounded by the watchdog; no timing assertion.
    const ROUNDS: u32 = 2000;
    let seg = Segment::anonymous(4096).unwrap();
    let mut children = Vec::new();
    for pair in 0..4 {
        let a = sem_at(&seg, pair * 128, 0);
        let b = sem_at(&seg, pair * 128 + 64, 0);
        children.push(common::fork_child(|| {
            for _ in 0..ROUNDS {
                a.wait();
                if b.post().is_err() {
                    return 1;
                }
            }
            0
        }));
        children.push(common::fork_child(|| {
            for _ in 0..ROUNDS {
                if a.post().is_err() {
                    return 1;
                }
                b.wait();
            }
            0
        }));
    }
    for c in &mut children {
        c.expect_success(common::WATCHDOG);
    }
}

/// Not a test of behaviour: prints uncontended and cross-process ping-pong timings of
/// this semaphore and of glibc's `sem_t` measured in the same run. Run with
/// `cargo test --release --test semaphore -- --ignored --nocapture measure`.
#[test]
#[ignore]
fn measure_against_glibc() {
    const N: u32 = 5_000_000;
    const R: u32 = 50_000;
    let seg = Segment::anonymous(4096).unwrap();
    let sem = sem_at(&seg, 0, 0);
    let gsem: *mut libc::sem_t = common::at(&seg, 1024);
    let gsem2: *mut libc::sem_t = common::at(&seg, 2048);
    // SAFETY: in-bounds, aligned storage for two sem_t in a shared mapping.
    unsafe {
        assert_eq!(libc::sem_init(gsem, 1, 0), 0);
        assert_eq!(libc::sem_init(gsem2, 1, 0), 0);
    }
    for _ in 0..2 {
        let t = Instant::now();
        for _ in 0..N {
            sem.post().unwrap();
            sem.wait();
        }
        let ours = t.elapsed().as_nanos() as f64 / f64::from(N);
        let t = Instant::now();
        for _ in 0..N {
            // SAFETY: an initialized pshared sem_t.
            unsafe {
                libc::sem_post(gsem);
                libc::sem_wait(gsem);
            }
        }
        let glibc = t.elapsed().as_nanos() as f64 / f64::from(N);
        println!(
            "uncontended post+wait: shmsync {ours:.1} ns, glibc sem_t {glibc:.1} ns, ratio {:.2}",
            ours / glibc
        );
    }
    let a = sem_at(&seg, 64, 0);
    let b = sem_at(&seg, 128, 0);
    for _ in 0..2 {
        let mut c = common::fork_child(|| {
            for _ in 0..R {
                a.wait();
                let _ = b.post();
            }
            0
        });
        let t = Instant::now();
        for _ in 0..R {
            a.post().unwrap();
            b.wait();
        }
        let ours = t.elapsed().as_nanos() as f64 / f64::from(R);
        c.expect_success(common::WATCHDOG);
        let mut c = common::fork_child(|| {
            for _ in 0..R {
                // SAFETY: initialized pshared sem_t in the inherited shared mapping.
                unsafe {
                    libc::sem_wait(gsem);
                    libc::sem_post(gsem2);
                }
            }
            0
        });
        let t = Instant::now();
        for _ in 0..R {
            // SAFETY: as above.
            unsafe {
                libc::sem_post(gsem);
                libc::sem_wait(gsem2);
            }
        }
        let glibc = t.elapsed().as_nanos() as f64 / f64::from(R);
        c.expect_success(common::WATCHDOG);
        println!(
            "2-process ping-pong round trip: shmsync {ours:.0} ns, glibc sem_t {glibc:.0} ns, ratio {:.2}",
            ours / glibc
        );
    }
}
