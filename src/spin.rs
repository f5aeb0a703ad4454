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
//! to [`SPIN_MIN`]). Once collapsed, every [`PROBE_EVERY`]th wait that outlasts the
//! untimed first rounds (below) spins the full limit as a probe, so a process whose partners start running again gets back to
//! spinning; on an oversubscribed machine a probe costs at most one [`SPIN_LIMIT`] in
//! every [`PROBE_EVERY`] waits (about 3 µs per wait on average).
//!
//! The budget is per process (a process-local variable, not in the shared segment) and
//! updated without synchronization: a lost update only skews a heuristic. It is
//! measured in time, not rounds, because a `pause` costs 4–10 ns on some CPUs and ~43 ns
//! on others.
//!
//! The clock is kept off the hand-off itself. A read costs 30–40 ns on the reference
//! machine (vDSO, TSC clocksource), as much as the cache-line transfer it would delay,
//! and a ping-pong round trip used to read it four times (start and success, on each
//! side). So the first `FREE_ROUNDS` rounds of a spin are counted, not timed: a
//! partner that answers within them (the usual case while both run) costs no clock
//! read at all, and a collapsed budget ([`SPIN_MIN`]) is spun as exactly those rounds.
//! Only a spin that outlasts them starts the clock, spins the budget on top of them
//! and reads the clock once per `ROUNDS_PER_CLOCK_READ` rounds; a success then records
//! the last reading (a lower bound of the time spent, which is all the doubling needs),
//! never a fresh one.

use core::time::Duration;

/// Upper bound on spinning before sleeping: longer than one wake-up of an idle CPU
/// (2.5–30 µs measured on the reference machine, a 2-vCPU VM; see BENCHMARKS.md), so
/// that a ping-pong pair can reach the regime where both sides spin. With 30 µs the
/// benchmark's pair fell out of that regime and stayed out on slow wake-ups.
pub(crate) const SPIN_LIMIT: Duration = Duration::from_micros(50);
/// Lower bound: a few cache-line round trips (0.15–0.25 µs each), so a partner that
/// answers at once is still caught without a system call. A budget this low is spun as
/// a fixed number of rounds without reading the clock (about this long on the reference
/// machine, where a round is a ~32 ns `pause` and a load).
pub(crate) const SPIN_MIN: Duration = Duration::from_nanos(1_000);
/// With a collapsed budget, one slow-path wait in this many probes with the full
/// limit.
pub(crate) const PROBE_EVERY: u32 = 16;
/// Spin rounds before the clock is first read: enough for a partner that is running
/// to answer (a round trip is 2–6 rounds), and the whole spin of a collapsed budget.
const FREE_ROUNDS: u32 = 24;
/// Spin rounds between two reads of the clock once it runs.
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

/// How long to spin now (beyond the `FREE_ROUNDS`), or `None` for a collapsed
/// budget that spins only those. Counts the spins that get this far, for the probes.
#[cfg(not(shmsync_loom))]
#[inline]
fn budget_ns() -> Option<Duration> {
    let (budget, count) = state::load();
    if budget == 0 {
        return Some(SPIN_LIMIT);
    }
    let count = count.wrapping_add(1);
    state::store(budget, count);
    if budget > MIN_NS {
        Some(Duration::from_nanos(budget.into()))
    } else if count % PROBE_EVERY == 0 {
        Some(SPIN_LIMIT)
    } else {
        None
    }
}

/// Records how a spin ended: with a permit after at least `spent` (the budget doubles),
/// or not (it halves).
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
    for _ in 0..FREE_ROUNDS {
        crate::sync::spin_hint();
        if ready() {
            record(true, Duration::ZERO);
            return true;
        }
    }
    spin_timed(ready)
}

/// The part of a spin that outlasts the `FREE_ROUNDS`: timed, in batches.
#[cfg(not(shmsync_loom))]
#[inline(never)]
fn spin_timed(mut ready: impl FnMut() -> bool) -> bool {
    let Some(budget) = budget_ns() else {
        record(false, SPIN_MIN);
        return false;
    };
    let start = std::time::Instant::now();
    let mut spent = Duration::ZERO;
    loop {
        for _ in 0..ROUNDS_PER_CLOCK_READ {
            crate::sync::spin_hint();
            if ready() {
                record(true, spent);
                return true;
            }
        }
        spent = start.elapsed();
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
