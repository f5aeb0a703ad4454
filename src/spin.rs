//! Adaptive spinning: how long a waiter (semaphore, condvar) watches its word before it
//! sleeps.
//!
//! Spinning turns a hand-off between two processes that are both running into a
//! cache-line round trip (a few hundred nanoseconds) instead of a `FUTEX_WAKE` plus the
//! wake-up of an idle CPU (about 10 µs on the reference machine). Once both sides of a
//! ping-pong spin, neither sleeps again and no system call is made; to get there, one
//! spin must outlast the partner's wake-up from a sleep, which is why the limit is a
//! few tens of microseconds rather than a few (the benchmark's ping-pong shows the
//! difference: with a 5 µs bound the pair never leaves the sleep/wake regime).
//!
//! Spinning only pays when the poster is running on another CPU right now. When
//! processes outnumber CPUs the poster is usually descheduled and every spin round is
//! CPU time the poster needed, so the budget adapts per process: a spin that ends with
//! a permit doubles it (up to [`SPIN_LIMIT`]); a spin that ends in sleep halves it (down
//! to [`SPIN_MIN`]). Once collapsed, every [`PROBE_EVERY`]th slow-path wait spins the
//! full limit as a probe, so a process whose partners start running again gets back to
//! spinning; on an oversubscribed machine a probe costs at most one [`SPIN_LIMIT`] in
//! every [`PROBE_EVERY`] waits (about 3 µs per wait on average).
//!
//! The budget is per process (a process-local variable, not in the shared segment) and
//! updated without synchronization: a lost update only skews a heuristic. It is
//! measured in time, not rounds, because a `pause` costs 4–10 ns on some CPUs and ~43 ns
//! on others.

use core::time::Duration;

/// Upper bound on spinning before sleeping: longer than one wake-up of an idle CPU
/// (2.5–30 µs measured on the reference machine, a 2-vCPU VM; see BENCHMARKS.md), so
/// that a ping-pong pair can reach the regime where both sides spin. With 30 µs the
/// benchmark's pair fell out of that regime and stayed out on slow wake-ups.
pub(crate) const SPIN_LIMIT: Duration = Duration::from_micros(50);
/// Lower bound: a few cache-line round trips (0.15–0.25 µs each), so a partner that
/// answers at once is still caught without a system call.
pub(crate) const SPIN_MIN: Duration = Duration::from_nanos(1_000);
/// With a collapsed budget, one slow-path wait in this many probes with the full
/// limit.
pub(crate) const PROBE_EVERY: u32 = 16;
/// Spin rounds between two reads of the clock.
const ROUNDS_PER_CLOCK_READ: u32 = 8;

#[cfg(not(shmsync_loom))]
mod state {
    use crate::sync::ProcessLocalU64;

    /// Low 32 bits: the budget in nanoseconds; high 32 bits: slow-path wait
    /// counter. Zero means "not yet set": start at the full limit.
    static STATE: ProcessLocalU64 = ProcessLocalU64::new(0);

    pub(super) fn load() -> (u32, u32) {
        let s = STATE.get();
        (s as u32, (s >> 32) as u32)
    }

    pub(super) fn store(budget: u32, count: u32) {
        STATE.set(u64::from(budget) | u64::from(count) << 32);
    }
}

const LIMIT_NS: u32 = SPIN_LIMIT.as_nanos() as u32;
const MIN_NS: u32 = SPIN_MIN.as_nanos() as u32;

/// How long to spin now.
#[cfg(not(shmsync_loom))]
#[inline]
fn budget_ns() -> Duration {
    let (budget, count) = state::load();
    if budget == 0 {
        return SPIN_LIMIT;
    }
    let count = count.wrapping_add(1);
    state::store(budget, count);
    if budget <= MIN_NS && count % PROBE_EVERY == 0 {
        SPIN_LIMIT
    } else {
        Duration::from_nanos(budget.into())
    }
}

/// Records how a spin ended: with a permit after `spent` (the budget doubles), or not
/// (it halves).
#[cfg(not(shmsync_loom))]
#[inline]
fn record(success: bool, spent: Duration) {
    let (budget, count) = state::load();
    let budget = if budget == 0 { LIMIT_NS } else { budget };
    let spent = u32::try_from(spent.as_nanos()).unwrap_or(u32::MAX);
    let next = if success {
        budget
            .max(spent.saturating_add(1))
            .saturating_mul(2)
            .min(LIMIT_NS)
    } else {
        (budget / 2).max(MIN_NS)
    };
    if next != budget {
        state::store(next, count);
    }
}

/// Spins for the adaptive budget until `ready()` returns true; returns whether it did.
/// Records the outcome in the process's budget.
#[cfg(not(shmsync_loom))]
#[inline]
pub(crate) fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    let budget = budget_ns();
    let start = std::time::Instant::now();
    loop {
        // Check the clock once per batch: reading it (vDSO) costs about as much as a
        // few rounds.
        for _ in 0..ROUNDS_PER_CLOCK_READ {
            crate::sync::spin_hint();
            if ready() {
                record(true, start.elapsed());
                return true;
            }
        }
        let spent = start.elapsed();
        if spent >= budget {
            record(false, spent);
            return false;
        }
    }
}

/// Under loom: one round, so the models explore the spin path without a
/// process-global heuristic making executions differ (loom replays them).
#[cfg(shmsync_loom)]
pub(crate) fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    crate::sync::spin_hint();
    ready()
}
