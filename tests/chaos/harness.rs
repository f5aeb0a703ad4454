//! The chaos suite's harness: knobs, seeds and the random generator, reporting,
//! and the children (setup, killing, the SIGUSR1 storm) every scenario uses.

use shmsync::{Location, RegionOptions};
use shmsync::{LockError, Region, RobustMutex};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{self, Rng};

/// Exit code of a child whose own check failed (its panic hook `_exit`s with it).
pub(crate) const CHILD_FAILED: i32 = 99;
/// Bound on any lock or wait inside a child (a child that hits it fails).
pub(crate) const CHILD_BOUND: Duration = Duration::from_secs(20);
/// Bound on the parent's checks (lock every object, drain a queue, ...).
pub(crate) const CHECK_BOUND: Duration = Duration::from_secs(10);
/// Bound on a whole round: the watchdog prints the state and aborts after it.
pub(crate) const ROUND_BOUND: Duration = Duration::from_secs(120);
pub(crate) const REGION_SIZE: usize = 1 << 16;

pub(crate) fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// One scenario's run: its seed, how long it runs, and the round in progress.
pub(crate) struct Plan {
    pub(crate) scenario: &'static str,
    pub(crate) seed: u64,
    pub(crate) rounds: u64,
    pub(crate) until: Option<Instant>,
    pub(crate) round: u64,
    pub(crate) started: Instant,
}

impl Plan {
    pub(crate) fn new(scenario: &'static str, default_rounds: u64) -> Plan {
        Plan::with_seed(scenario, default_rounds, None)
    }

    /// A plan with `seed` unless `SHMSYNC_CHAOS_SEED` is set (a second part of one test
    /// reuses the first part's seed, so one printed seed replays the whole test).
    pub(crate) fn with_seed(
        scenario: &'static str,
        default_rounds: u64,
        seed: Option<u64>,
    ) -> Plan {
        let seed = env_u64("SHMSYNC_CHAOS_SEED").or(seed).unwrap_or_else(|| {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            t ^ (u64::from(std::process::id()) << 32)
        });
        let rounds = env_u64("SHMSYNC_CHAOS_ROUNDS").unwrap_or(default_rounds);
        let secs = env_u64("SHMSYNC_CHAOS_SECS");
        let until = secs.map(|s| Instant::now() + Duration::from_secs(s));
        match secs {
            Some(s) => eprintln!(
                "chaos {scenario}: seed {seed:#x} (replay: SHMSYNC_CHAOS_SEED={seed:#x}), for {s} s"
            ),
            None => eprintln!(
                "chaos {scenario}: seed {seed:#x} (replay: SHMSYNC_CHAOS_SEED={seed:#x}), {rounds} rounds"
            ),
        }
        Plan {
            scenario,
            seed,
            rounds,
            until,
            round: 0,
            started: Instant::now(),
        }
    }

    /// This scenario's random stream (the seed mixed with the scenario's name, so each
    /// scenario gets its own stream from one printed seed).
    pub(crate) fn rng(&self) -> Rng {
        let mut h = self.seed;
        for b in self.scenario.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Rng(h)
    }

    /// Whether to run another round (advancing the round counter).
    pub(crate) fn next_round(&mut self) -> bool {
        let more = match self.until {
            Some(until) => self.round == 0 || Instant::now() < until,
            None => self.round < self.rounds,
        };
        if more {
            self.round += 1;
        }
        more
    }

    pub(crate) fn procs(&self) -> usize {
        env_u64("SHMSYNC_CHAOS_PROCS").unwrap_or(2).max(1) as usize
    }

    /// Fails the scenario: the seed, the round, the message and the region's state.
    pub(crate) fn fail(&self, region: Option<&Region>, msg: &str) -> ! {
        let state = region.map(report).unwrap_or_default();
        panic!(
            "chaos {} FAILED in round {} (seed {:#x}; replay with SHMSYNC_CHAOS_SEED={:#x}): {msg}\n{state}",
            self.scenario, self.round, self.seed, self.seed
        );
    }

    /// Polls `cond` every millisecond for up to `timeout`; fails with the region's state.
    pub(crate) fn wait_for(
        &self,
        region: Option<&Region>,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut() -> bool,
    ) {
        let start = Instant::now();
        while !cond() {
            if start.elapsed() > timeout {
                self.fail(
                    region,
                    &format!("hang: {what} not reached within {timeout:?}"),
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Arms the per-round watchdog.
    /// Aborts the test process if the round still runs after its bound, after printing
    /// the region's state (read through a fresh mapping) and removing the region's name.
    /// The children die with the test (PDEATHSIG).
    pub(crate) fn watchdog(&self, loc: &Location) -> common::Watchdog {
        let what = format!(
            "chaos {} round {} (seed {:#x}; replay with SHMSYNC_CHAOS_SEED={:#x})",
            self.scenario, self.round, self.seed, self.seed
        );
        let (timeout, loc) = (ROUND_BOUND, loc.clone());
        common::Watchdog::with_report(timeout, move || {
            eprintln!("watchdog: {what} still running after {timeout:?}: hang");
            let opts = RegionOptions {
                initialize: false,
                wait: Duration::from_millis(100),
                ..RegionOptions::default()
            };
            match Region::open_with(&loc, opts) {
                Ok(r) => {
                    eprintln!("{}", report(&r));
                    // Never unmapped: the watchdog aborts next.
                    std::mem::forget(r);
                }
                Err(e) => eprintln!("(cannot open {loc} to inspect it: {e})"),
            }
            let _ = loc.remove();
        })
    }

    pub(crate) fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// What `shmsync inspect` would print: every object and its state.
pub(crate) fn report(region: &Region) -> String {
    match shmsync::inspect::inspect(region) {
        Ok(r) => {
            let mut s = format!(
                "state of region {}: {} objects (capacity {}), {} of {} bytes used, creator pid {} ({:?}), claim {:?}\n",
                r.location.as_deref().unwrap_or("<anonymous>"),
                r.objects,
                r.capacity,
                r.used,
                r.size,
                r.creator_pid,
                r.creator,
                r.claim
            );
            for o in &r.reports {
                s.push_str(&format!(
                    "  {:<12} {:<16} {}{}\n",
                    o.entry.name,
                    o.entry.kind.to_string(),
                    o.state,
                    if o.needs_recovery {
                        "   [needs recovery]"
                    } else {
                        ""
                    }
                ));
            }
            s
        }
        Err(e) => format!("inspect failed: {e}\n"),
    }
}

/// Fails if this test process left anything in /dev/shm (our names all start with
/// `shmsync-t<pid>-`).
pub(crate) fn assert_no_leftovers() {
    let prefix = format!("shmsync-t{}-", std::process::id());
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}

/// In a child: a failed check anywhere (any thread) exits the process at once with
/// `CHILD_FAILED`, so the parent sees it die on its own instead of by its SIGKILL.
pub(crate) fn child_setup() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        // SAFETY: `_exit` is always safe to call.
        unsafe { libc::_exit(CHILD_FAILED) };
    }));
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

/// In a child that is a storm target: installs a SIGUSR1 handler *without* SA_RESTART
/// (every blocking call it is in returns EINTR), then writes the marker file so the
/// parent starts signalling it (before that, SIGUSR1 would kill it).
pub(crate) fn join_storm(marker: &str) {
    if marker == "-" {
        return;
    }
    // SAFETY: a zeroed sigaction is valid; we set a handler that does nothing
    // (async-signal-safe) and an empty mask; the old action is not needed.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()),
            0,
            "sigaction"
        );
    }
    std::fs::write(marker, b"ready").expect("write storm marker");
}

/// A thread sending SIGUSR1 every ~100 µs to every registered child that is ready.
/// The storm's targets: (pid, marker file, marker seen).
pub(crate) type StormTargets = Arc<Mutex<Vec<(i32, PathBuf, bool)>>>;

pub(crate) struct Storm {
    pub(crate) targets: StormTargets,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) sent: Arc<AtomicU64>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

impl Storm {
    pub(crate) fn start() -> Storm {
        let targets: StormTargets = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (t, s, n) = (targets.clone(), stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            // Relaxed: a stop flag; nothing else is published through it.
            while !s.load(Ordering::Relaxed) {
                {
                    let mut targets = t.lock().unwrap();
                    for (pid, marker, ready) in targets.iter_mut() {
                        if !*ready {
                            *ready = marker.exists();
                        }
                        if *ready {
                            // SAFETY: `pid` is our child and not yet reaped: `unregister`
                            // removes it (under this lock) before anyone reaps it, so
                            // the pid cannot have been reused.
                            unsafe { libc::kill(*pid, libc::SIGUSR1) };
                            // Relaxed: a statistic.
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        });
        Storm {
            targets,
            stop,
            sent,
            thread: Some(thread),
        }
    }

    pub(crate) fn register(&self, pid: i32, marker: PathBuf) {
        self.targets.lock().unwrap().push((pid, marker, false));
    }

    pub(crate) fn unregister(&self, pid: i32) {
        self.targets.lock().unwrap().retain(|(p, _, _)| *p != pid);
    }

    pub(crate) fn sent(&self) -> u64 {
        // Relaxed: a statistic read after the fact.
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        // Relaxed: see the loop.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A worker process (and its storm marker, removed on drop).
pub(crate) struct Worker {
    pub(crate) child: common::Child,
    pub(crate) role: &'static str,
    pub(crate) _marker: Option<common::TempPath>,
    pub(crate) storm: Option<StormTargets>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Before the child (killed and reaped by its own drop) can be reaped: the storm
        // must never signal a pid that may have been reused.
        if let Some(t) = &self.storm {
            if let Ok(mut t) = t.lock() {
                t.retain(|(p, _, _)| *p != self.child.pid());
            }
        }
    }
}

/// Starts a worker: `args` then the storm marker path (`-` without a storm).
pub(crate) fn start_worker(role: &'static str, args: &[&str], storm: Option<&Storm>) -> Worker {
    let marker = storm.map(|_| common::TempPath::new("storm"));
    let mut all: Vec<&str> = args.to_vec();
    all.push(marker.as_ref().map_or("-", |m| m.as_str()));
    let child = common::spawn(role, &all);
    if let (Some(s), Some(m)) = (storm, &marker) {
        s.register(child.pid(), m.path().to_path_buf());
    }
    Worker {
        child,
        role,
        _marker: marker,
        storm: storm.map(|s| s.targets.clone()),
    }
}

/// SIGKILLs a worker and checks that it died of that signal: a worker that exited on its
/// own failed one of its checks (or crashed).
pub(crate) fn kill_worker(
    plan: &Plan,
    region: Option<&Region>,
    w: &mut Worker,
    storm: Option<&Storm>,
) {
    if let Some(s) = storm {
        s.unregister(w.child.pid());
    }
    let status = w.child.kill();
    if status.signal() != Some(libc::SIGKILL) {
        plan.fail(
            region,
            &format!(
                "{} worker {} ended on its own ({status:?}) before it was killed",
                w.role,
                w.child.pid()
            ),
        );
    }
}

pub(crate) fn spin(n: u64) {
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

/// Stores one step of a multi-step update. The steps must reach memory in program order,
/// so that a process killed between two of them leaves exactly the earlier ones behind:
/// plain stores to the guarded data may legally be merged, sunk to the unlock or
/// reordered by the compiler (nothing in the language makes a `&mut` write observable
/// to another process before the unlock), so every step is a volatile store: volatile
/// accesses keep their order relative to each other, x86 keeps the order of stores,
/// and a SIGKILLed thread's retired stores still land.
pub(crate) fn put(field: &mut u64, value: u64) {
    // SAFETY: `field` is a valid, aligned, exclusive reference.
    unsafe { std::ptr::write_volatile(field, value) };
    compiler_fence(Ordering::SeqCst);
}

pub(crate) fn open_region(name: &str) -> Region {
    let opts = RegionOptions {
        wait: CHILD_BOUND,
        ..RegionOptions::default()
    };
    Region::open_with(&Location::parse(name).unwrap(), opts).expect("open region")
}

/// Adds one to a counter mutex (children announce themselves with it).
pub(crate) fn bump(counter: &RobustMutex<u64>) {
    match counter.lock_timeout(CHILD_BOUND) {
        Ok(mut g) => *g += 1,
        Err(LockError::OwnerDied(mut g)) => {
            *g += 1;
            drop(g.make_consistent());
        }
        Err(e) => panic!("counter lock: {e}"),
    }
}

pub(crate) fn read_counter(plan: &Plan, region: &Region, counter: &RobustMutex<u64>) -> u64 {
    match counter.lock_timeout(CHECK_BOUND) {
        Ok(g) => *g,
        Err(LockError::OwnerDied(g)) => *g.make_consistent(),
        Err(e) => plan.fail(Some(region), &format!("counter lock: {e}")),
    }
}

/// Returns a permit, retrying while the table lock stays busy past `RELEASE_WAIT` (a
/// loaded machine, a peer SIGKILLed while holding it being repaired): a release that
/// still fails after 30 tries is a real error.
pub(crate) fn release_patiently<const SLOTS: usize>(mut permit: shmsync::Permit<'_, SLOTS>) {
    for _ in 0..30 {
        match permit.release() {
            Ok(()) => return,
            Err(e) => permit = e.into_permit(),
        }
    }
    permit.release().expect("release");
}

pub(crate) fn plan_fail_static(msg: &str) -> ! {
    panic!("chaos seqlock FAILED: {msg}");
}

/// Reader statistics (readers publish them now and then).
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub(crate) struct ReadStats {
    pub(crate) reads: u64,
    pub(crate) max_version: u64,
}

pub(crate) fn add_stats(m: &RobustMutex<ReadStats>, reads: u64, version: u64) {
    let mut g = match m.lock_timeout(CHILD_BOUND) {
        Ok(g) => g,
        Err(LockError::OwnerDied(g)) => g.make_consistent(),
        Err(e) => panic!("stats: {e}"),
    };
    g.reads += reads;
    g.max_version = g.max_version.max(version);
}
