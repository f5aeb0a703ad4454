//! The shared futex: wait on and wake a 32-bit word that may live in memory shared with
//! other processes, with absolute `CLOCK_MONOTONIC` deadlines.
//!
//! `FUTEX_PRIVATE_FLAG` never appears here. A private futex is keyed by (address space,
//! virtual address), so a waiter in another process would never be woken; a shared
//! futex is keyed by the underlying page, which is what a shared segment needs. (This is
//! also why the `atomic-wait` crate, which always uses the private flag and has no
//! timeouts, cannot be the waiting layer.)
//!
//! [`Deadline`] is the crate's one notion of time: an absolute point on
//! `CLOCK_MONOTONIC`. `Duration` APIs convert once at entry, so a wait interrupted by a
//! signal (EINTR) and retried never stretches its total time.

// This is the OS layer under the shim (`crate::sync` re-exports it as `futex_impl`),
// and its public functions take std's `AtomicU32` so that other crates can use them on
// their own words; it is the one module besides `sync.rs` allowed to name std atomics.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, Instant};

#[cfg(not(shmsync_loom))]
use core::sync::atomic::AtomicU32;

/// An absolute point in time on `CLOCK_MONOTONIC`, the clock `std::time::Instant` uses on
/// Linux and the one every timed wait in this crate sleeps against.
///
/// The nanosecond field is always normalized (`< 1_000_000_000`); far-future deadlines
/// saturate instead of overflowing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    secs: u64,
    nanos: u32,
}

const NANOS_PER_SEC: u32 = 1_000_000_000;
/// Deadlines are clamped here so they always fit a `timespec`'s signed `tv_sec`.
const MAX_SECS: u64 = i64::MAX as u64;

impl Deadline {
    /// The current time.
    pub fn now() -> Deadline {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on
        // Linux, so the call cannot fail.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Deadline {
            secs: ts.tv_sec as u64,
            nanos: ts.tv_nsec as u32,
        }
    }

    /// `timeout` from now; saturates at the far future instead of overflowing.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline::now().saturating_add(timeout)
    }

    /// The same point in time as `instant` (`Instant` is `CLOCK_MONOTONIC` on Linux; the
    /// conversion reads both clocks once, so it is exact to within a few nanoseconds).
    pub fn from_instant(instant: Instant) -> Deadline {
        let now_i = Instant::now();
        let now = Deadline::now();
        match instant.checked_duration_since(now_i) {
            Some(ahead) => now.saturating_add(ahead),
            None => now.saturating_sub(now_i.duration_since(instant)),
        }
    }

    /// This deadline plus `d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Deadline {
        let mut secs = self.secs.saturating_add(d.as_secs());
        let mut nanos = self.nanos + d.subsec_nanos();
        if nanos >= NANOS_PER_SEC {
            nanos -= NANOS_PER_SEC;
            secs = secs.saturating_add(1);
        }
        if secs >= MAX_SECS {
            return Deadline {
                secs: MAX_SECS,
                nanos: NANOS_PER_SEC - 1,
            };
        }
        Deadline { secs, nanos }
    }

    /// This deadline minus `d`, saturating at the clock's zero.
    pub fn saturating_sub(self, d: Duration) -> Deadline {
        let total = Duration::new(self.secs, self.nanos).saturating_sub(d);
        Deadline {
            secs: total.as_secs(),
            nanos: total.subsec_nanos(),
        }
    }

    /// Time left until this deadline (zero if it has passed).
    // Used by the musl lock path and the test hooks.
    #[allow(dead_code)]
    pub fn remaining(self) -> Duration {
        let now = Deadline::now();
        Duration::new(self.secs, self.nanos).saturating_sub(Duration::new(now.secs, now.nanos))
    }

    /// Whether the deadline has passed.
    pub fn has_passed(self) -> bool {
        Deadline::now() >= self
    }

    /// As a `timespec` for the kernel or for `pthread_mutex_clocklock`.
    pub fn to_timespec(self) -> libc::timespec {
        libc::timespec {
            tv_sec: self.secs as libc::time_t,
            tv_nsec: self.nanos as libc::c_long,
        }
    }
}

/// The longest any single futex sleep lasts before the waiter wakes up and re-checks
/// its condition, whatever its own deadline. A process killed between making a
/// condition true and waking the sleepers (a `post`, `notify` or lease release cut off
/// before its `FUTEX_WAKE`) must not leave them asleep until their deadline — possibly
/// never; with this bound they find out within half a second. The cost is two wake-ups
/// a second for an idle sleeper.
pub(crate) const MAX_SLEEP: Duration = Duration::from_millis(500);

/// The deadline of one sleep: the caller's, but no later than [`MAX_SLEEP`] from now.
/// The flag says whether a time-out of this sleep is the caller's (`true`: report it)
/// or only the cap's (`false`: re-check and sleep again).
///
/// Under loom the cap is not applied: an untimed wait must stay untimed there, or the
/// model could no longer report a lost wakeup as a deadlock.
#[cfg(not(shmsync_loom))]
pub(crate) fn sleep_deadline(deadline: Option<Deadline>) -> (Option<Deadline>, bool) {
    let cap = Deadline::after(MAX_SLEEP);
    match deadline {
        Some(d) if d <= cap => (Some(d), true),
        _ => (Some(cap), false),
    }
}

/// Under loom: the caller's deadline, uncapped.
#[cfg(shmsync_loom)]
pub(crate) fn sleep_deadline(deadline: Option<Deadline>) -> (Option<Deadline>, bool) {
    (deadline, deadline.is_some())
}

/// How a [`wait`] ended. Callers always re-check their condition: a futex may wake
/// spuriously, and a wake may be meant for another waiter on the same word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken by [`wake`] (or spuriously).
    Woken,
    /// The word no longer held `expected` when the wait began (EAGAIN).
    ValueChanged,
    /// The deadline passed.
    TimedOut,
}

/// Sleeps while `*word == expected`, until woken or until `deadline` (absolute,
/// `CLOCK_MONOTONIC`) passes.
///
/// The kernel compares the word and queues the caller atomically with respect to
/// [`wake`], so a wake that follows a change of the word can never be lost. EINTR is
/// retried internally against the same absolute deadline; a deadline already past
/// returns [`WaitOutcome::TimedOut`] without sleeping.
#[cfg(not(shmsync_loom))]
pub fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitOutcome {
    let ts = deadline.map(Deadline::to_timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(core::ptr::null(), |t| t as *const libc::timespec);
    loop {
        // SAFETY: `word.as_ptr()` points to a live, aligned u32 for the duration of the
        // call (it is borrowed); `ts_ptr` is null or points to `ts`, which outlives the
        // call. FUTEX_WAIT_BITSET without FUTEX_CLOCK_REALTIME takes an absolute
        // CLOCK_MONOTONIC time; no FUTEX_PRIVATE_FLAG, so the futex is shared.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET,
                expected,
                ts_ptr,
                core::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        if r == 0 {
            return WaitOutcome::Woken;
        }
        match errno() {
            libc::EAGAIN => return WaitOutcome::ValueChanged,
            libc::ETIMEDOUT => return WaitOutcome::TimedOut,
            // A signal handler ran; the word and the absolute deadline are re-checked by
            // the kernel on the next round.
            libc::EINTR => continue,
            // EFAULT/EINVAL/ENOSYS cannot happen for a borrowed, aligned word and a
            // normalized timespec; report a spurious wake so callers re-check rather
            // than spin on an error.
            _ => return WaitOutcome::Woken,
        }
    }
}

/// Wakes up to `n` waiters sleeping on `word` in any process; returns how many woke.
#[cfg(not(shmsync_loom))]
pub fn wake(word: &AtomicU32, n: u32) -> u32 {
    let n = n.min(i32::MAX as u32);
    // SAFETY: `word.as_ptr()` points to a live, aligned u32 (it is borrowed); FUTEX_WAKE
    // only uses the address as a key and never writes through it. Shared futex: no
    // FUTEX_PRIVATE_FLAG.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    if r < 0 {
        0
    } else {
        r as u32
    }
}

/// Wakes every waiter on `word`; returns how many woke.
#[cfg(not(shmsync_loom))]
#[cfg(feature = "test-hooks")]
pub fn wake_all(word: &AtomicU32) -> u32 {
    wake(word, i32::MAX as u32)
}

#[cfg(not(shmsync_loom))]
pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_normalizes_and_saturates() {
        let d = Deadline {
            secs: 1,
            nanos: 999_999_999,
        }
        .saturating_add(Duration::from_nanos(2));
        assert_eq!(d, Deadline { secs: 2, nanos: 1 });
        let far = Deadline::now().saturating_add(Duration::MAX);
        assert_eq!(far.to_timespec().tv_sec, i64::MAX);
        assert!(far.to_timespec().tv_nsec < 1_000_000_000);
        assert_eq!(
            Deadline::now().saturating_sub(Duration::MAX),
            Deadline { secs: 0, nanos: 0 }
        );
    }

    #[test]
    fn from_instant_round_trips() {
        let i = Instant::now() + Duration::from_millis(50);
        let d = Deadline::from_instant(i);
        let left = d.remaining();
        assert!(left > Duration::from_millis(40) && left <= Duration::from_millis(50));
        let past = Deadline::from_instant(Instant::now() - Duration::from_millis(5));
        assert!(past.has_passed());
    }

    #[cfg(not(shmsync_loom))]
    #[test]
    fn wait_past_deadline_and_value_changed() {
        let w = AtomicU32::new(7);
        assert_eq!(wait(&w, 8, None), WaitOutcome::ValueChanged);
        let past = Deadline::now().saturating_sub(Duration::from_secs(1));
        assert_eq!(wait(&w, 7, Some(past)), WaitOutcome::TimedOut);
        let soon = Deadline::after(Duration::from_millis(10));
        assert_eq!(wait(&w, 7, Some(soon)), WaitOutcome::TimedOut);
        assert!(soon.has_passed());
        assert_eq!(wake(&w, 1), 0);
    }
}
