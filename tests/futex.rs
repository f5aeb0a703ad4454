//! The shared futex across real processes: a waiter in a child is woken by the parent
//! through every segment backing (each process maps the segment at its own address, so
//! only a shared futex — keyed by the page, not the address — can match), deadlines,
//! wake counts, and an EINTR storm that must not end a wait early.
#![allow(clippy::disallowed_types)]
mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{ShmName, SysvKey, TempPath};
use shmsync::test_hooks::Deadline;
use shmsync::test_hooks::{self as futex, WaitOutcome};
use shmsync::Segment;

const LEN: usize = 4096;
/// The futex word the child waits on; it stays 0, so only a real wake ends the wait.
const WORD: usize = 0;
/// Set to 1 by a child just before it waits (a counter when several children wait).
const READY: usize = 64;
/// A child's report: the wait's outcome (see `code`), per child slot.
const OUTCOME: usize = 128;
/// How many SIGUSR1 handlers ran in the EINTR child.
const SIGNALS: usize = 192;
/// How long a child waits before giving up on the parent (a failure, never expected).
const CHILD_WAIT: Duration = Duration::from_secs(20);
/// How long the parent keeps trying to wake a child before failing the test.
const WAKE_WITHIN: Duration = Duration::from_secs(10);

#[test]
fn child_role() {
    common::dispatch(&[
        ("wait_posix", |a| {
            run_waiter(&Segment::posix_open(&a[0]).unwrap())
        }),
        ("wait_sysv", |a| {
            run_waiter(&Segment::sysv_open(a[0].parse().unwrap()).unwrap())
        }),
        ("wait_file", |a| {
            run_waiter(&Segment::file_open(&a[0]).unwrap())
        }),
        ("wait_memfd", |a| {
            // SAFETY: the parent cleared CLOEXEC on its socketpair end and passed its
            // number; this process owns the inherited descriptor.
            let sock = UnixStream::from(unsafe { OwnedFd::from_raw_fd(a[0].parse().unwrap()) });
            run_waiter(&Segment::recv_memfd(&sock).unwrap());
        }),
    ]);
}

fn run_waiter(seg: &Segment) {
    seg.require_len(LEN).unwrap();
    assert_eq!(
        waiter(seg.as_ptr(), 0),
        0,
        "the wait did not end with a wake"
    );
}

fn word(base: *mut u8, offset: usize) -> &'static AtomicU32 {
    // SAFETY: every segment here is LEN bytes and page-aligned, `offset` is a multiple
    // of 4 below LEN, and the reference is never used after the segment is dropped (the
    // 'static does not escape the test or child that owns the mapping).
    unsafe { &*base.add(offset).cast::<AtomicU32>() }
}

fn code(o: WaitOutcome) -> u32 {
    match o {
        WaitOutcome::Woken => 1,
        WaitOutcome::ValueChanged => 2,
        WaitOutcome::TimedOut => 3,
    }
}

/// A child's wait, async-signal-safe (forked children run it): announce, wait once on
/// WORD (== 0) with a far deadline, report the outcome in slot `slot`. 0 if woken.
fn waiter(base: *mut u8, slot: usize) -> i32 {
    // Relaxed: READY only tells the parent to start looking; whether this process is
    // really asleep is proven by the parent's wake returning 1.
    word(base, READY).fetch_add(1, Ordering::Relaxed);
    let outcome = futex::wait(word(base, WORD), 0, Some(Deadline::after(CHILD_WAIT)));
    // Release pairs with the parent's Acquire load of the outcome after the exit.
    word(base, OUTCOME + 4 * slot).store(code(outcome), Ordering::Release);
    if outcome == WaitOutcome::Woken {
        0
    } else {
        1
    }
}

/// Whether `pid` (a single-threaded forked child) is asleep in a futex wait.
fn asleep_in_futex(pid: i32) -> bool {
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    if wchan.contains("futex") {
        return true;
    }
    if wchan.is_empty() || wchan == "0" {
        // No wchan symbols on this kernel: fall back to the scheduler state (the child
        // does nothing else that sleeps once READY is set).
        return common::proc_state(pid) == Some('S');
    }
    false
}

/// Wakes the one waiter on WORD in `child`, retrying until the kernel reports that it
/// woke one: a wake that cannot reach the other process (private futex, wrong page)
/// never returns 1 and fails the test after WAKE_WITHIN.
fn wake_child(seg: &Segment, child: &mut common::Child) {
    let base = seg.as_ptr();
    common::wait_until(WAKE_WITHIN, "the child to start waiting", || {
        // Relaxed: only a hint; the wake count below is the proof.
        word(base, READY).load(Ordering::Relaxed) == 1
    });
    common::wait_until(
        WAKE_WITHIN,
        "a cross-process futex wake to find the waiter",
        || futex::wake(word(base, WORD), 1) == 1,
    );
    child.expect_success(common::WATCHDOG);
    // Acquire pairs with the child's Release store of its outcome.
    assert_eq!(
        word(base, OUTCOME).load(Ordering::Acquire),
        code(WaitOutcome::Woken)
    );
}

#[test]
fn anonymous_waiter_is_woken_across_fork() {
    let seg = Segment::anonymous(LEN).unwrap();
    let base = seg.as_ptr();
    let mut child = common::fork_child(|| waiter(base, 0));
    wake_child(&seg, &mut child);
}

#[test]
fn posix_waiter_is_woken_across_processes() {
    let name = ShmName::new("fx-posix");
    let seg = Segment::posix_create(name.as_str(), LEN).unwrap();
    let mut child = common::spawn("wait_posix", &[name.as_str()]);
    wake_child(&seg, &mut child);
}

#[test]
fn sysv_waiter_is_woken_across_processes() {
    let key = SysvKey::new();
    let seg = Segment::sysv_create(key.key(), LEN).unwrap();
    let mut child = common::spawn("wait_sysv", &[&key.key().to_string()]);
    wake_child(&seg, &mut child);
}

#[test]
fn file_waiter_is_woken_across_processes() {
    let path = TempPath::new("fx-file");
    let seg = Segment::file_create(path.path(), LEN).unwrap();
    let mut child = common::spawn("wait_file", &[path.as_str()]);
    wake_child(&seg, &mut child);
}

#[test]
fn memfd_waiter_is_woken_across_processes() {
    let seg = Segment::memfd_create("fx-memfd", LEN).unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    // SAFETY: F_SETFD with 0 clears FD_CLOEXEC on a descriptor we own, so the child
    // inherits it.
    let r = unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_SETFD, 0) };
    assert_eq!(r, 0);
    let mut child = common::spawn("wait_memfd", &[&theirs.as_raw_fd().to_string()]);
    drop(theirs);
    seg.send_fd(&ours).unwrap();
    wake_child(&seg, &mut child);
}

#[test]
fn deadline_expires_with_timed_out_and_not_before() {
    let name = ShmName::new("fx-deadline");
    let seg = Segment::posix_create(name.as_str(), LEN).unwrap();
    let w = word(seg.as_ptr(), WORD);
    let _wd = common::Watchdog::new(common::WATCHDOG, "a futex wait with a 50 ms deadline");
    let deadline = Deadline::after(Duration::from_millis(50));
    assert_eq!(futex::wait(w, 0, Some(deadline)), WaitOutcome::TimedOut);
    assert!(deadline.has_passed(), "TimedOut before the deadline");
    // A deadline in the past times out without sleeping; a changed word is reported.
    let past = Deadline::now().saturating_sub(Duration::from_secs(1));
    assert_eq!(futex::wait(w, 0, Some(past)), WaitOutcome::TimedOut);
    assert_eq!(futex::wait(w, 1, None), WaitOutcome::ValueChanged);
}

#[test]
fn wake_without_waiters_returns_zero() {
    let name = ShmName::new("fx-nowaiter");
    let seg = Segment::posix_create(name.as_str(), LEN).unwrap();
    assert_eq!(futex::wake(word(seg.as_ptr(), WORD), 1), 0);
    assert_eq!(futex::wake_all(word(seg.as_ptr(), WORD)), 0);
}

#[test]
fn wake_returns_how_many_woke() {
    let seg = Segment::anonymous(LEN).unwrap();
    let base = seg.as_ptr();
    let mut children: Vec<_> = (0..3)
        .map(|slot| common::fork_child(|| waiter(base, slot)))
        .collect();
    common::wait_until(WAKE_WITHIN, "three children asleep on the futex", || {
        // Relaxed: a hint; asleep_in_futex is what the wake counts rely on.
        word(base, READY).load(Ordering::Relaxed) == 3
            && children.iter().all(|c| asleep_in_futex(c.pid()))
    });
    let w = word(base, WORD);
    assert_eq!(futex::wake(w, 2), 2);
    assert_eq!(futex::wake(w, 1), 1);
    assert_eq!(futex::wake(w, 1), 0, "no waiter is left");
    for c in &mut children {
        c.expect_success(common::WATCHDOG);
    }
    for slot in 0..3 {
        // Acquire pairs with each child's Release store of its outcome.
        assert_eq!(
            word(base, OUTCOME + 4 * slot).load(Ordering::Acquire),
            code(WaitOutcome::Woken)
        );
    }
}

/// Counts SIGUSR1 deliveries in the EINTR child (its own copy of this static).
static HANDLED: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_sigusr1(_: libc::c_int) {
    // Relaxed: a counter read by the same thread after the wait returns.
    HANDLED.fetch_add(1, Ordering::Relaxed);
}

/// The EINTR child: SIGUSR1 handler without SA_RESTART (so every signal interrupts the
/// futex syscall with EINTR), then one wait with a deadline 2 s out. Async-signal-safe.
fn eintr_waiter(base: *mut u8) -> i32 {
    // SAFETY: a zeroed sigaction is valid; we set a plain handler with no SA_RESTART
    // and an empty mask; sigaction is async-signal-safe.
    let installed = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut())
    };
    if installed != 0 {
        return 2;
    }
    // Relaxed: READY only tells the parent the handler is installed; the signals it then
    // sends are ordered by the kernel, not by this store.
    word(base, READY).store(1, Ordering::Relaxed);
    let outcome = futex::wait(
        word(base, WORD),
        0,
        Some(Deadline::after(Duration::from_secs(2))),
    );
    // Relaxed: the parent reads these after reaping this process.
    word(base, SIGNALS).store(HANDLED.load(Ordering::Relaxed), Ordering::Relaxed);
    // Release pairs with the parent's Acquire load of the outcome.
    word(base, OUTCOME).store(code(outcome), Ordering::Release);
    0
}

#[test]
fn eintr_storm_neither_ends_the_wait_nor_errors() {
    let seg = Segment::anonymous(LEN).unwrap();
    let base = seg.as_ptr();
    let mut child = common::fork_child(|| eintr_waiter(base));
    common::wait_until(WAKE_WITHIN, "the EINTR child asleep on the futex", || {
        // Relaxed: a hint; asleep_in_futex confirms.
        word(base, READY).load(Ordering::Relaxed) == 1 && asleep_in_futex(child.pid())
    });
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(200) {
        child.signal(libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(1));
    }
    // Still waiting after the storm: the wake finds it (an early return would leave no
    // waiter and fail here).
    common::wait_until(
        Duration::from_secs(1),
        "the EINTR child still waiting after the storm",
        || futex::wake(word(base, WORD), 1) == 1,
    );
    child.expect_success(common::WATCHDOG);
    // Acquire pairs with the child's Release store of its outcome.
    assert_eq!(
        word(base, OUTCOME).load(Ordering::Acquire),
        code(WaitOutcome::Woken)
    );
    // Relaxed: written before the outcome's Release store.
    assert!(
        word(base, SIGNALS).load(Ordering::Relaxed) > 0,
        "no SIGUSR1 reached the waiter"
    );
}
