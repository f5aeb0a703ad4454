//! The multi-process chaos suite (issue 7): worker processes (this test binary re-executed
//! with a role, see `common::spawn`) hammer one region while the test SIGKILLs them at
//! random moments, then checks each primitive's invariant.
//!
//! Knobs (environment):
//! - `SHMSYNC_CHAOS_SEED`: the seed (decimal or 0x-hex). Printed on every run; a failure
//!   message repeats it, so any run can be replayed (the random choices, not the
//!   scheduler's interleavings).
//! - `SHMSYNC_CHAOS_ROUNDS`: rounds per scenario (defaults sized for the CI profile).
//! - `SHMSYNC_CHAOS_SECS`: run each scenario for this many seconds instead (the soak).
//! - `SHMSYNC_CHAOS_PROCS`: worker processes per role (default 2).
//! - `SHMSYNC_CHAOS_THREADS`: threads per mutex worker (default 4).
//!
//! Every blocking step is bounded: the harness uses timed calls, and a per-round watchdog
//! prints the seed and `inspect` of the region, removes the region and aborts if anything
//! still blocks. Region names are `ShmName` guards (removed pass or fail) and each test
//! ends by checking that nothing it created is left in /dev/shm.
//!
//! Run: `cargo nextest run --release --run-ignored only -E 'test(/^stress_chaos/)'`.
#![allow(clippy::disallowed_types)]
mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shmsync::{
    Condvar, LeasedSemaphore, Liveness, LockError, MutexGuard, OwnerDiedGuard, Region, RobustMutex,
    RobustRwLock, RwLockError, SeqLock, WriteError,
};
use shmsync::{Location, RegionOptions};

/// Exit code of a child whose own check failed (its panic hook `_exit`s with it).
const CHILD_FAILED: i32 = 99;
/// Bound on any lock or wait inside a child (a child that hits it fails).
const CHILD_BOUND: Duration = Duration::from_secs(20);
/// Bound on the parent's checks (lock every object, drain a queue, ...).
const CHECK_BOUND: Duration = Duration::from_secs(10);
/// Bound on a whole round: the watchdog prints the state and aborts after it.
const ROUND_BOUND: Duration = Duration::from_secs(120);
const REGION_SIZE: usize = 1 << 16;

#[test]
fn child_role() {
    common::dispatch(&[
        ("mutex_worker", mutex_worker),
        ("producer", producer),
        ("consumer", consumer),
        ("racer", racer),
        ("permit_worker", permit_worker),
        ("seq_writer", seq_writer),
        ("seq_reader", seq_reader),
        ("rw_writer", rw_writer),
        ("rw_reader", rw_reader),
    ]);
}

// ---------------------------------------------------------------------------------------
// Knobs, randomness, reporting
// ---------------------------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// splitmix64: small, fast, good enough to pick victims and delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn micros(&mut self, max: u64) -> Duration {
        Duration::from_micros(self.below(max + 1))
    }
}

/// One scenario's run: its seed, how long it runs, and the round in progress.
struct Plan {
    scenario: &'static str,
    seed: u64,
    rounds: u64,
    until: Option<Instant>,
    round: u64,
    started: Instant,
}

impl Plan {
    fn new(scenario: &'static str, default_rounds: u64) -> Plan {
        Plan::with_seed(scenario, default_rounds, None)
    }

    /// A plan with `seed` unless `SHMSYNC_CHAOS_SEED` is set (a second part of one test
    /// reuses the first part's seed, so one printed seed replays the whole test).
    fn with_seed(scenario: &'static str, default_rounds: u64, seed: Option<u64>) -> Plan {
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
    fn rng(&self) -> Rng {
        let mut h = self.seed;
        for b in self.scenario.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Rng(h)
    }

    /// Whether to run another round (advancing the round counter).
    fn next_round(&mut self) -> bool {
        let more = match self.until {
            Some(until) => self.round == 0 || Instant::now() < until,
            None => self.round < self.rounds,
        };
        if more {
            self.round += 1;
        }
        more
    }

    fn procs(&self) -> usize {
        env_u64("SHMSYNC_CHAOS_PROCS").unwrap_or(2).max(1) as usize
    }

    /// Fails the scenario: the seed, the round, the message and the region's state.
    fn fail(&self, region: Option<&Region>, msg: &str) -> ! {
        let state = region.map(report).unwrap_or_default();
        panic!(
            "chaos {} FAILED in round {} (seed {:#x}; replay with SHMSYNC_CHAOS_SEED={:#x}): {msg}\n{state}",
            self.scenario, self.round, self.seed, self.seed
        );
    }

    /// Polls `cond` every millisecond for up to `timeout`; fails with the region's state.
    fn wait_for(
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
    fn watchdog(&self, loc: &Location) -> RoundWatchdog {
        RoundWatchdog::arm(
            ROUND_BOUND,
            format!(
                "chaos {} round {} (seed {:#x}; replay with SHMSYNC_CHAOS_SEED={:#x})",
                self.scenario, self.round, self.seed, self.seed
            ),
            loc.clone(),
        )
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// What `shmsync inspect` would print: every object and its state.
fn report(region: &Region) -> String {
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

/// Aborts the test process if a round still runs after its bound, after printing the
/// region's state (read through a fresh mapping) and removing the region's name. The
/// children die with the test (PDEATHSIG).
struct RoundWatchdog(Option<mpsc::Sender<()>>);

impl RoundWatchdog {
    fn arm(timeout: Duration, what: String, loc: Location) -> RoundWatchdog {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
                eprintln!("watchdog: {what} still running after {timeout:?}: hang");
                let opts = RegionOptions {
                    initialize: false,
                    wait: Duration::from_millis(100),
                    ..RegionOptions::default()
                };
                match Region::open_with(&loc, opts) {
                    Ok(r) => {
                        eprintln!("{}", report(&r));
                        // Never unmapped: we abort next.
                        std::mem::forget(r);
                    }
                    Err(e) => eprintln!("(cannot open {loc} to inspect it: {e})"),
                }
                let _ = loc.remove();
                std::process::abort();
            }
        });
        RoundWatchdog(Some(tx))
    }
}

impl Drop for RoundWatchdog {
    fn drop(&mut self) {
        drop(self.0.take());
    }
}

/// Fails if this test process left anything in /dev/shm (our names all start with
/// `shmsync-t<pid>-`).
fn assert_no_leftovers() {
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

// ---------------------------------------------------------------------------------------
// Children: setup, killing, the SIGUSR1 storm
// ---------------------------------------------------------------------------------------

/// In a child: a failed check anywhere (any thread) exits the process at once with
/// `CHILD_FAILED`, so the parent sees it die on its own instead of by its SIGKILL.
fn child_setup() {
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
fn join_storm(marker: &str) {
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
type StormTargets = Arc<Mutex<Vec<(i32, PathBuf, bool)>>>;

struct Storm {
    targets: StormTargets,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Storm {
    fn start() -> Storm {
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

    fn register(&self, pid: i32, marker: PathBuf) {
        self.targets.lock().unwrap().push((pid, marker, false));
    }

    fn unregister(&self, pid: i32) {
        self.targets.lock().unwrap().retain(|(p, _, _)| *p != pid);
    }

    fn sent(&self) -> u64 {
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
struct Worker {
    child: common::Child,
    role: &'static str,
    _marker: Option<common::TempPath>,
    storm: Option<StormTargets>,
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
fn start_worker(role: &'static str, args: &[&str], storm: Option<&Storm>) -> Worker {
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
fn kill_worker(plan: &Plan, region: Option<&Region>, w: &mut Worker, storm: Option<&Storm>) {
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

fn spin(n: u64) {
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
fn put(field: &mut u64, value: u64) {
    // SAFETY: `field` is a valid, aligned, exclusive reference.
    unsafe { std::ptr::write_volatile(field, value) };
    compiler_fence(Ordering::SeqCst);
}

fn open_region(name: &str) -> Region {
    let opts = RegionOptions {
        wait: CHILD_BOUND,
        ..RegionOptions::default()
    };
    Region::open_with(&Location::parse(name).unwrap(), opts).expect("open region")
}

/// Adds one to a counter mutex (children announce themselves with it).
fn bump(counter: &RobustMutex<u64>) {
    match counter.lock_timeout(CHILD_BOUND) {
        Ok(mut g) => *g += 1,
        Err(LockError::OwnerDied(mut g)) => {
            *g += 1;
            drop(g.make_consistent());
        }
        Err(e) => panic!("counter lock: {e}"),
    }
}

fn read_counter(plan: &Plan, region: &Region, counter: &RobustMutex<u64>) -> u64 {
    match counter.lock_timeout(CHECK_BOUND) {
        Ok(g) => *g,
        Err(LockError::OwnerDied(g)) => *g.make_consistent(),
        Err(e) => plan.fail(Some(region), &format!("counter lock: {e}")),
    }
}

// ---------------------------------------------------------------------------------------
// Scenario 1: 100 robust mutexes (glibc's tst-robust8)
// ---------------------------------------------------------------------------------------

const MUTEXES: usize = 100;

/// Guarded by each mutex: `a` and `b` move together in two steps (`a += 1`, spin,
/// `b += 1`), so a healthy lock always shows `a == b` and one whose owner died shows
/// `a == b` or `a == b + 1`. The counters record every recovery (by anyone).
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Pair {
    a: u64,
    b: u64,
    owner_died: u64,
    repairs: u64,
}
shmsync::shared_type!(Pair = "chaos.Pair", fields: a, b, owner_died, repairs);

impl Pair {
    /// The repair after OwnerDied; `Err` if the dead owner left an impossible state.
    fn recover(&mut self) -> Result<(), String> {
        if self.a != self.b && self.a != self.b + 1 {
            return Err(format!("owner died leaving {self:?}"));
        }
        self.owner_died += 1;
        if self.a != self.b {
            self.b = self.a;
            self.repairs += 1;
        }
        Ok(())
    }
}

fn mutex_names() -> impl Iterator<Item = String> {
    (0..MUTEXES).map(|i| format!("m{i}"))
}

/// Child: `threads` threads lock 1–3 random mutexes each (ascending order, randomly by
/// lock / try_lock / lock_timeout), check `a == b`, update the pair in two steps, unlock;
/// forever, until killed.
fn mutex_worker(args: &[String]) {
    child_setup();
    let region = open_region(&args[0]);
    let seed: u64 = args[1].parse().unwrap();
    let threads: u64 = args[2].parse().unwrap();
    let ms: Vec<&RobustMutex<Pair>> = mutex_names()
        .map(|n| region.get::<RobustMutex<Pair>>(&n).expect("mutex"))
        .collect();
    bump(region.get::<RobustMutex<u64>>("ready").unwrap());
    std::thread::scope(|s| {
        for t in 0..threads {
            let ms = &ms;
            s.spawn(move || {
                let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x9e37_79b9));
                loop {
                    let mut picks: Vec<usize> =
                        (0..1 + rng.below(3)).map(|_| rng.index(MUTEXES)).collect();
                    picks.sort_unstable();
                    picks.dedup();
                    let mut held: Vec<MutexGuard<'_, Pair>> = Vec::new();
                    for i in picks {
                        let got = match rng.below(3) {
                            0 => ms[i].lock(),
                            1 => ms[i].try_lock(),
                            _ => ms[i].lock_timeout(rng.micros(2000)),
                        };
                        match got {
                            Ok(g) => {
                                assert_eq!(g.a, g.b, "healthy mutex m{i} shows a != b: {:?}", *g);
                                held.push(g);
                            }
                            Err(LockError::OwnerDied(mut g)) => {
                                g.recover().unwrap_or_else(|e| panic!("m{i}: {e}"));
                                held.push(g.make_consistent());
                            }
                            Err(LockError::WouldBlock | LockError::TimedOut) => {}
                            Err(e) => panic!("m{i}: unexpected {e:?}"),
                        }
                    }
                    for g in &mut held {
                        let (a, b) = (g.a, g.b);
                        put(&mut g.a, a + 1);
                        spin(rng.below(300));
                        put(&mut g.b, b + 1);
                    }
                    drop(held);
                    spin(rng.below(100));
                }
            });
        }
    });
}

#[test]
#[ignore = "stress: run by scripts/test.sh in release"]
fn stress_chaos_mutexes() {
    let mut plan = Plan::new("mutexes", 100);
    let procs = plan.procs();
    let threads = env_u64("SHMSYNC_CHAOS_THREADS").unwrap_or(4).max(1);
    let mut rng = plan.rng();
    let name = common::ShmName::new("chaos-mx");
    let loc = Location::parse(name.as_str()).unwrap();
    let opts = RegionOptions {
        capacity: 128,
        ..RegionOptions::default()
    };
    let region = Region::create_with(&loc, REGION_SIZE, opts).unwrap();
    let ms: Vec<&RobustMutex<Pair>> = mutex_names()
        .map(|n| region.get_or_init(&n, Pair::default()).unwrap())
        .collect();
    let ready = region.get_or_init::<RobustMutex<u64>>("ready", 0).unwrap();
    let (mut kills, mut parent_recoveries) = (0u64, 0u64);

    while plan.next_round() {
        let _watchdog = plan.watchdog(&loc);
        let threads_arg = threads.to_string();
        let spawn = |rng: &mut Rng| {
            let seed = rng.next().to_string();
            start_worker("mutex_worker", &[name.as_str(), &seed, &threads_arg], None)
        };
        let r0 = read_counter(&plan, &region, ready);
        let mut kids: Vec<Worker> = (0..procs).map(|_| spawn(&mut rng)).collect();
        plan.wait_for(Some(&region), CHECK_BOUND, "workers attached", || {
            read_counter(&plan, &region, ready) >= r0 + procs as u64
        });
        // Random kills while the others run (a replacement starts at once), then kill
        // everyone left.
        for _ in 0..1 + rng.below(3) {
            std::thread::sleep(rng.micros(5000));
            let i = rng.index(kids.len());
            kill_worker(&plan, Some(&region), &mut kids[i], None);
            kills += 1;
            kids[i] = spawn(&mut rng);
        }
        std::thread::sleep(rng.micros(5000));
        for k in &mut kids {
            kill_worker(&plan, Some(&region), k, None);
            kills += 1;
        }
        // Every mutex is acquirable: Ok with a == b, or OwnerDied (repaired here).
        for (i, m) in ms.iter().enumerate() {
            match m.lock_timeout(CHECK_BOUND) {
                Ok(g) if g.a == g.b => {}
                Ok(g) => plan.fail(
                    Some(&region),
                    &format!("healthy mutex m{i} shows a != b: {:?}", *g),
                ),
                Err(LockError::OwnerDied(mut g)) => {
                    if let Err(e) = g.recover() {
                        plan.fail(Some(&region), &format!("m{i}: {e}"));
                    }
                    parent_recoveries += 1;
                    drop(g.make_consistent());
                }
                Err(LockError::TimedOut) => plan.fail(
                    Some(&region),
                    &format!("hang: m{i} not acquirable within {CHECK_BOUND:?} after the kills"),
                ),
                Err(e) => plan.fail(Some(&region), &format!("m{i}: {e:?}")),
            }
        }
    }

    let mut total = Pair::default();
    for m in &ms {
        let g = m.lock_timeout(CHECK_BOUND).expect("final lock");
        total.a += g.a;
        total.owner_died += g.owner_died;
        total.repairs += g.repairs;
    }
    eprintln!(
        "chaos mutexes RESULT: seed {:#x}, {} rounds in {:.1} s, {} processes x {} threads, {} kills, \
         {} critical sections, {} OwnerDied recoveries ({} by the checker), {} repairs (a != b), \
         0 healthy locks with a != b, 0 hangs",
        plan.seed,
        plan.round,
        plan.elapsed(),
        procs,
        threads,
        kills,
        total.a,
        total.owner_died,
        parent_recoveries,
        total.repairs
    );
    drop(ms);
    drop(region);
    drop(name);
    assert_no_leftovers();
}

// ---------------------------------------------------------------------------------------
// Scenario 2 (and 6): a bounded queue with a mutex and two condvars
// ---------------------------------------------------------------------------------------

const QCAP: u64 = 8;

/// A bounded FIFO of item ids. Producers push `produced + 1`; consumers pop and record it
/// under the same lock. Each update is undo-logged: the old indices are saved and
/// `j_valid` set before touching them, cleared after; whoever gets OwnerDied rolls an
/// unfinished update back, so a process killed mid-update neither loses nor duplicates
/// an item. Hence, exactly and always: `head == consumed`, `tail == produced`, the queue
/// holds `consumed + 1 ..= produced` in order, and every consumer pops `consumed + 1`.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Queue {
    head: u64,
    tail: u64,
    produced: u64,
    consumed: u64,
    buf: [u64; QCAP as usize],
    j_valid: u64,
    j_head: u64,
    j_tail: u64,
    j_produced: u64,
    j_consumed: u64,
    owner_died: u64,
    rollbacks: u64,
}
shmsync::shared_type!(Queue = "chaos.Queue");

impl Queue {
    fn len(&self) -> u64 {
        self.tail.wrapping_sub(self.head)
    }

    fn check(&self) -> Result<(), String> {
        let ok = self.head == self.consumed
            && self.tail == self.produced
            && self.tail >= self.head
            && self.len() <= QCAP
            && (self.head..self.tail).all(|k| self.buf[(k % QCAP) as usize] == k + 1);
        if ok {
            Ok(())
        } else {
            Err(format!("queue invariant broken: {self:?}"))
        }
    }

    fn begin(&mut self) {
        let (h, t, p, c) = (self.head, self.tail, self.produced, self.consumed);
        put(&mut self.j_head, h);
        put(&mut self.j_tail, t);
        put(&mut self.j_produced, p);
        put(&mut self.j_consumed, c);
        put(&mut self.j_valid, 1);
    }

    fn commit(&mut self) {
        put(&mut self.j_valid, 0);
    }

    /// After OwnerDied: undo an unfinished update. Idempotent, so a recoverer killed
    /// midway is simply redone by the next.
    fn recover(&mut self) {
        self.owner_died += 1;
        if self.j_valid != 0 {
            let (h, t, p, c) = (self.j_head, self.j_tail, self.j_produced, self.j_consumed);
            put(&mut self.head, h);
            put(&mut self.tail, t);
            put(&mut self.produced, p);
            put(&mut self.consumed, c);
            self.rollbacks += 1;
            put(&mut self.j_valid, 0);
        }
    }
}

struct QueueRefs<'r> {
    m: &'r RobustMutex<Queue>,
    not_empty: &'r Condvar,
    not_full: &'r Condvar,
}

impl<'r> QueueRefs<'r> {
    fn get(region: &'r Region) -> QueueRefs<'r> {
        QueueRefs {
            m: region.get_or_init("queue", Queue::default()).unwrap(),
            not_empty: region.get_or_init("not_empty", ()).unwrap(),
            not_full: region.get_or_init("not_full", ()).unwrap(),
        }
    }

    /// OwnerDied (from a lock or a wait's relock): roll back, check, wake everyone (the
    /// dead owner may have changed the queue without notifying).
    fn recovered(&self, mut g: OwnerDiedGuard<'r, Queue>) -> Result<MutexGuard<'r, Queue>, String> {
        g.recover();
        g.check()?;
        let g = g.make_consistent();
        self.not_empty.notify_all();
        self.not_full.notify_all();
        Ok(g)
    }

    fn lock(&self, bound: Duration) -> Result<MutexGuard<'r, Queue>, String> {
        match self.m.lock_timeout(bound) {
            Ok(g) => Ok(g),
            Err(LockError::OwnerDied(g)) => self.recovered(g),
            Err(LockError::TimedOut) => {
                Err(format!("hang: queue lock not acquired within {bound:?}"))
            }
            Err(e) => Err(format!("queue lock: {e:?}")),
        }
    }

    /// Waits on `cv` while `blocked`; `Err` on anything but a clean or OwnerDied relock.
    fn wait_while(
        &self,
        cv: &Condvar,
        mut g: MutexGuard<'r, Queue>,
        blocked: impl Fn(&Queue) -> bool,
    ) -> Result<MutexGuard<'r, Queue>, String> {
        while blocked(&g) {
            g = match cv.wait_timeout(g, CHILD_BOUND) {
                Ok((g, _)) => g,
                Err(LockError::OwnerDied(g)) => self.recovered(g)?,
                Err(e) => return Err(format!("condvar wait: {e:?}")),
            };
        }
        Ok(g)
    }
}

fn producer(args: &[String]) {
    child_setup();
    let region = open_region(&args[0]);
    let mut rng = Rng(args[1].parse().unwrap());
    join_storm(&args[2]);
    let q = QueueRefs::get(&region);
    loop {
        let g = q.lock(CHILD_BOUND).unwrap();
        let mut g = q.wait_while(q.not_full, g, |q| q.len() >= QCAP).unwrap();
        g.check().unwrap();
        let id = g.produced + 1;
        let slot = (g.tail % QCAP) as usize;
        put(&mut g.buf[slot], id);
        g.begin();
        let (t, p) = (g.tail, g.produced);
        put(&mut g.tail, t + 1);
        spin(rng.below(200));
        put(&mut g.produced, p + 1);
        g.commit();
        // Notify before unlocking: a producer killed after unlocking cannot leave an
        // item nobody was told about; one killed before is recovered (with a notify).
        q.not_empty.notify_all();
        drop(g);
        spin(rng.below(2000));
    }
}

fn consumer(args: &[String]) {
    child_setup();
    let region = open_region(&args[0]);
    let mut rng = Rng(args[1].parse().unwrap());
    join_storm(&args[2]);
    let q = QueueRefs::get(&region);
    loop {
        let g = q.lock(CHILD_BOUND).unwrap();
        let mut g = q.wait_while(q.not_empty, g, |q| q.len() == 0).unwrap();
        g.check().unwrap();
        let item = g.buf[(g.head % QCAP) as usize];
        assert_eq!(item, g.consumed + 1, "popped the wrong item: {:?}", *g);
        g.begin();
        let (h, c) = (g.head, g.consumed);
        put(&mut g.head, h + 1);
        spin(rng.below(200));
        put(&mut g.consumed, c + 1);
        g.commit();
        q.not_full.notify_all();
        drop(g);
        spin(rng.below(2000));
    }
}

struct QueueFigures {
    kills: u64,
    produced: u64,
    consumed: u64,
    queued: u64,
    owner_died: u64,
    rollbacks: u64,
    drains: u64,
}

/// Producers and consumers killed at random. Each round: chaos, then every producer is
/// killed and the surviving consumers must drain the queue within `CHECK_BOUND` (their
/// own waits are longer, `CHILD_BOUND`, so only a real wakeup drains it in time), then
/// everyone is killed and the accounting must be exact.
fn queue_scenario(plan: &mut Plan, storm: Option<&Storm>) -> QueueFigures {
    let procs = plan.procs();
    let mut rng = plan.rng();
    let name = common::ShmName::new("chaos-q");
    let loc = Location::parse(name.as_str()).unwrap();
    let region = Region::create(&loc, REGION_SIZE).unwrap();
    let q = QueueRefs::get(&region);
    let mut fig = QueueFigures {
        kills: 0,
        produced: 0,
        consumed: 0,
        queued: 0,
        owner_died: 0,
        rollbacks: 0,
        drains: 0,
    };
    let lock = |plan: &Plan| {
        q.lock(CHECK_BOUND)
            .unwrap_or_else(|e| plan.fail(Some(&region), &e))
    };

    while plan.next_round() {
        let _watchdog = plan.watchdog(&loc);
        let spawn = |role: &'static str, rng: &mut Rng| {
            start_worker(role, &[name.as_str(), &rng.next().to_string()], storm)
        };
        let mut kids: Vec<Worker> = Vec::new();
        for role in ["producer", "consumer"] {
            for _ in 0..procs {
                kids.push(spawn(role, &mut rng));
            }
        }
        let before = lock(plan).consumed;
        std::thread::sleep(Duration::from_millis(5));
        for _ in 0..1 + rng.below(4) {
            std::thread::sleep(rng.micros(10_000));
            let i = rng.index(kids.len());
            kill_worker(plan, Some(&region), &mut kids[i], storm);
            fig.kills += 1;
            kids[i] = spawn(kids[i].role, &mut rng);
        }
        // Drain: no producer left; the consumers must empty the queue.
        for k in kids.iter_mut().filter(|k| k.role == "producer") {
            kill_worker(plan, Some(&region), k, storm);
            fig.kills += 1;
        }
        drop(lock(plan));
        plan.wait_for(
            Some(&region),
            CHECK_BOUND,
            "surviving consumers to drain the queue (a consumer sleeps while items wait)",
            || lock(plan).len() == 0,
        );
        fig.drains += 1;
        for k in kids.iter_mut().filter(|k| k.role == "consumer") {
            kill_worker(plan, Some(&region), k, storm);
            fig.kills += 1;
        }
        let g = lock(plan);
        if let Err(e) = g.check() {
            drop(g);
            plan.fail(Some(&region), &e);
        }
        if g.consumed == before && g.produced == before {
            // Nothing moved this round, which only a dead protocol explains when
            // producers and consumers ran for milliseconds.
            eprintln!(
                "chaos {}: round {} moved no item (slow start?)",
                plan.scenario, plan.round
            );
        }
    }
    let g = lock(plan);
    fig.produced = g.produced;
    fig.consumed = g.consumed;
    fig.queued = g.len();
    fig.owner_died = g.owner_died;
    fig.rollbacks = g.rollbacks;
    assert_eq!(fig.produced, fig.consumed + fig.queued, "accounting");
    drop(g);
    drop(region);
    drop(name);
    assert_no_leftovers();
    fig
}

#[test]
#[ignore = "stress: run by scripts/test.sh in release"]
fn stress_chaos_condvar() {
    let mut plan = Plan::new("condvar", 80);
    let f = queue_scenario(&mut plan, None);
    eprintln!(
        "chaos condvar RESULT: seed {:#x}, {} rounds in {:.1} s, {} kills, produced {} = consumed {} + queued {} \
         (exact), {} OwnerDied recoveries, {} rolled-back updates, {} drains, 0 lost wakeups, 0 hangs",
        plan.seed,
        plan.round,
        plan.elapsed(),
        f.kills,
        f.produced,
        f.consumed,
        f.queued,
        f.owner_died,
        f.rollbacks,
        f.drains
    );
}

#[test]
#[ignore = "stress: run by scripts/test.sh in release"]
fn stress_chaos_signals() {
    let mut plan = Plan::new("signals", 40);
    let storm = Storm::start();
    let f = queue_scenario(&mut plan, Some(&storm));
    let queue_rounds = plan.round;
    let mut plan2 = Plan::with_seed("signals-semaphore", 25, Some(plan.seed));
    let p = permit_scenario(&mut plan2, Some(&storm));
    let sent = storm.sent();
    drop(storm);
    assert!(sent > 0, "the storm sent no signal");
    eprintln!(
        "chaos signals RESULT (SIGUSR1 storm every ~100 us, no SA_RESTART): seed {:#x}, {} s, {} SIGUSR1 sent; \
         queue: {} rounds, {} kills, produced {} = consumed {} + queued {} (exact), {} OwnerDied recoveries, \
         {} rolled-back updates; leased semaphore: {} rounds, {} kills, {} permits reclaimed, {} exact checks; \
         0 errors surfaced, 0 hangs",
        plan.seed,
        plan.elapsed() as u64,
        sent,
        queue_rounds,
        f.kills,
        f.produced,
        f.consumed,
        f.queued,
        f.owner_died,
        f.rollbacks,
        plan2.round,
        p.kills,
        p.reclaimed,
        p.checks
    );
}

// ---------------------------------------------------------------------------------------
// Scenario 5: racing region creation with a process killed during initialization
// ---------------------------------------------------------------------------------------

/// The objects every racer creates or attaches, in a per-racer random order.
const RACE_OBJECTS: [&str; 3] = ["pair", "cv", "count"];

/// Child: open_or_create the region, get_or_init every object, then one two-step update
/// of the pair under its mutex and one increment of the count.
fn racer(args: &[String]) {
    child_setup();
    let loc = Location::parse(&args[0]).unwrap();
    let mut rng = Rng(args[1].parse().unwrap());
    common::start_at(&args[2]);
    let opts = RegionOptions {
        wait: CHILD_BOUND,
        ..RegionOptions::default()
    };
    let region = Region::open_or_create_with(&loc, REGION_SIZE, opts).expect("open_or_create");
    let mut order = RACE_OBJECTS.to_vec();
    if rng.below(2) == 0 {
        order.reverse();
    }
    for name in order {
        let got = match name {
            "pair" => region
                .get_or_init_with::<RobustMutex<Pair>>(name, Pair::default(), CHILD_BOUND)
                .map(|_| ()),
            "cv" => region
                .get_or_init_with::<Condvar>(name, (), CHILD_BOUND)
                .map(|_| ()),
            _ => region
                .get_or_init_with::<RobustMutex<u64>>(name, 0, CHILD_BOUND)
                .map(|_| ()),
        };
        got.unwrap_or_else(|e| panic!("get_or_init {name}: {e}"));
    }
    let pair = region.get::<RobustMutex<Pair>>("pair").unwrap();
    let mut g = match pair.lock_timeout(CHILD_BOUND) {
        Ok(g) => g,
        Err(LockError::OwnerDied(mut g)) => {
            g.recover().unwrap();
            g.make_consistent()
        }
        Err(e) => panic!("pair: {e}"),
    };
    assert_eq!(g.a, g.b);
    let (a, b) = (g.a, g.b);
    put(&mut g.a, a + 1);
    spin(rng.below(5000));
    put(&mut g.b, b + 1);
    drop(g);
    bump(region.get::<RobustMutex<u64>>("count").unwrap());
}

#[test]
#[ignore = "stress: run by scripts/test.sh in release"]
fn stress_chaos_region() {
    let mut plan = Plan::new("region", 60);
    let racers = plan.procs() * 2;
    let mut rng = plan.rng();
    let (mut failpoint_kills, mut random_kills, mut late_kills, mut finished) = (0u64, 0, 0, 0);
    while plan.next_round() {
        let name = common::ShmName::new("chaos-rg");
        let loc = Location::parse(name.as_str()).unwrap();
        let _watchdog = plan.watchdog(&loc);
        let at = common::start_time_in(Duration::from_millis(30));
        // One racer (most rounds) stops at a failpoint if it gets there; one other is
        // killed at a random moment around the start.
        let fp_racer = (rng.below(4) != 0).then(|| rng.index(racers));
        let fp = ["region-init", "object-init"][rng.index(2)];
        let victim = (rng.index(racers - 1) + 1 + fp_racer.unwrap_or(0)) % racers;
        let marker = common::TempPath::new("fp");
        let mut kids: Vec<common::Child> = (0..racers)
            .map(|i| {
                let seed = rng.next().to_string();
                let args = [name.as_str(), seed.as_str(), at.as_str()];
                if Some(i) == fp_racer {
                    common::spawn_with_env(
                        "racer",
                        &args,
                        &[
                            ("SHMSYNC_TEST_FAILPOINT", fp),
                            ("SHMSYNC_TEST_FAILPOINT_MARKER", marker.as_str()),
                        ],
                    )
                } else {
                    common::spawn("racer", &args)
                }
            })
            .collect();
        let mut killed = vec![false; racers];
        common::start_at(&at);
        std::thread::sleep(rng.micros(2000));
        if kids[victim].try_wait().is_none() {
            kids[victim].kill();
            random_kills += 1;
            killed[victim] = true;
        } else {
            late_kills += 1;
        }
        if let Some(i) = fp_racer {
            // It either reaches the failpoint (it was the initializer) or finishes.
            plan.wait_for(
                None,
                CHECK_BOUND,
                "the failpoint racer to stop or finish",
                || marker.path().exists() || kids[i].try_wait().is_some(),
            );
            if marker.path().exists() {
                kids[i].kill();
                failpoint_kills += 1;
                killed[i] = true;
            }
        }
        let (mut ok, mut unfinished) = (0u64, 0u64);
        for (i, k) in kids.iter_mut().enumerate() {
            // Longer than the racers' own bounds, so a stuck racer reports its error.
            let bound = CHILD_BOUND + CHECK_BOUND;
            let start = Instant::now();
            let status = loop {
                if let Some(st) = k.try_wait() {
                    break st;
                }
                if start.elapsed() > bound {
                    let wchan = std::fs::read_to_string(format!("/proc/{}/wchan", k.pid()))
                        .unwrap_or_default();
                    let region = Region::open_with(
                        &loc,
                        RegionOptions {
                            initialize: false,
                            wait: Duration::from_millis(100),
                            ..RegionOptions::default()
                        },
                    );
                    plan.fail(
                        region.as_ref().ok(),
                        &format!("hang: racer {i} (pid {}, wchan {wchan:?}) still running after {bound:?}", k.pid()),
                    );
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            if killed[i] {
                // Killed (or it finished just before the signal landed).
                if status.success() {
                    ok += 1;
                } else {
                    unfinished += 1;
                }
                continue;
            }
            if !status.success() {
                let region = Region::open_with(
                    &loc,
                    RegionOptions {
                        initialize: false,
                        wait: Duration::from_millis(100),
                        ..RegionOptions::default()
                    },
                );
                plan.fail(
                    region.as_ref().ok(),
                    &format!("surviving racer {i} failed: {status:?}"),
                );
            }
            ok += 1;
        }
        finished += ok;
        // One READY region with each object exactly once, and consistent objects.
        let region = Region::open(&loc).unwrap_or_else(|e| plan.fail(None, &format!("open: {e}")));
        if !region.is_ready() {
            plan.fail(Some(&region), "region not READY");
        }
        let mut names: Vec<String> = region
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort();
        let mut expected: Vec<String> = RACE_OBJECTS.iter().map(|s| s.to_string()).collect();
        expected.sort();
        if names != expected {
            plan.fail(
                Some(&region),
                &format!("objects {names:?}, expected {expected:?}"),
            );
        }
        let (claim, liveness) = region.claim_holder();
        if claim != 0 && liveness != shmsync::Liveness::Dead {
            plan.fail(
                Some(&region),
                "table claim held by a live process after the race",
            );
        }
        region.get::<Condvar>("cv").unwrap();
        let count = match region
            .get::<RobustMutex<u64>>("count")
            .unwrap()
            .lock_timeout(CHECK_BOUND)
        {
            Ok(g) => *g,
            Err(LockError::OwnerDied(g)) => *g.make_consistent(),
            Err(e) => plan.fail(Some(&region), &format!("count lock: {e:?}")),
        };
        let pair = region.get::<RobustMutex<Pair>>("pair").unwrap();
        let a = match pair.lock_timeout(CHECK_BOUND) {
            Ok(g) if g.a == g.b => g.a,
            Err(LockError::OwnerDied(mut g)) => {
                g.recover().unwrap_or_else(|e| plan.fail(None, &e));
                g.make_consistent().a
            }
            other => plan.fail(Some(&region), &format!("pair: {:?}", other.map(|g| *g))),
        };
        // Racers that finished updated both; a killed one may have done either, both or
        // neither.
        let killed_n = unfinished;
        if a < ok || a > ok + killed_n || count < ok || count > ok + killed_n {
            plan.fail(
                Some(&region),
                &format!(
                    "{ok} racers finished, {killed_n} killed, but pair.a = {a}, count = {count}"
                ),
            );
        }
        drop(region);
    }
    eprintln!(
        "chaos region RESULT: seed {:#x}, {} rounds in {:.1} s, {} racers per round, {} killed at a failpoint \
         (region-init/object-init), {} killed at random, {} random kills too late, {} racers finished, \
         always one READY region with each object once, 0 hangs",
        plan.seed,
        plan.round,
        plan.elapsed(),
        racers,
        failpoint_kills,
        random_kills,
        late_kills,
        finished
    );
    assert_no_leftovers();
}

// ---------------------------------------------------------------------------------------
// Scenario 3: leased semaphore permits, holders killed, reclaim_dead
// ---------------------------------------------------------------------------------------

const PERMITS: u32 = 4;

/// Child: two threads acquire permits (timed or try), hold them a moment, and release
/// them — or, now and then, `forget` them (leaked until this process dies and the
/// permit is reclaimed).
fn permit_worker(args: &[String]) {
    child_setup();
    let region = open_region(&args[0]);
    let seed: u64 = args[1].parse().unwrap();
    join_storm(&args[2]);
    let sem = region.get::<LeasedSemaphore>("permits").expect("permits");
    bump(region.get::<RobustMutex<u64>>("ready").unwrap());
    std::thread::scope(|s| {
        for t in 0..2u64 {
            s.spawn(move || {
                let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x9e37_79b9));
                loop {
                    let permit = if rng.below(4) == 0 {
                        match sem.try_acquire() {
                            Ok(p) => Some(p),
                            Err(shmsync::Error::WouldBlock(_)) => None,
                            Err(e) => panic!("try_acquire: {e}"),
                        }
                    } else {
                        match sem.acquire_timeout(rng.micros(3000)) {
                            Ok(p) => Some(p),
                            Err(shmsync::Error::TimedOut(_)) => None,
                            Err(e) => panic!("acquire_timeout: {e}"),
                        }
                    };
                    if let Some(p) = permit {
                        spin(rng.below(3000));
                        if rng.below(64) == 0 {
                            p.forget();
                        } else {
                            release_patiently(p);
                        }
                    }
                    spin(rng.below(500));
                }
            });
        }
    });
}

/// `/proc/<pid>/stat`'s state letter.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

struct PermitFigures {
    kills: u64,
    reclaimed: u64,
    dead_holders: u64,
    checks: u64,
}

/// Workers killed at random; after each kill `reclaim_dead`. Every round the live
/// workers are frozen (SIGSTOP, none inside the table lock), dead holders reclaimed, and
/// then exactly: value + permits leased to live workers == capacity, and every lease
/// belongs to a live worker. At the end of a round everyone is killed and the value must
/// be back to the capacity.
fn permit_scenario(plan: &mut Plan, storm: Option<&Storm>) -> PermitFigures {
    let procs = plan.procs() + 1;
    let mut rng = plan.rng();
    let name = common::ShmName::new("chaos-sem");
    let loc = Location::parse(name.as_str()).unwrap();
    let region = Region::create(&loc, REGION_SIZE).unwrap();
    let sem = region
        .get_or_init::<LeasedSemaphore>("permits", PERMITS)
        .unwrap();
    let ready = region.get_or_init::<RobustMutex<u64>>("ready", 0).unwrap();
    let mut fig = PermitFigures {
        kills: 0,
        reclaimed: 0,
        dead_holders: 0,
        checks: 0,
    };
    let reclaim = |plan: &Plan, fig: &mut PermitFigures| {
        let r = sem
            .reclaim_dead()
            .unwrap_or_else(|e| plan.fail(Some(&region), &format!("reclaim_dead: {e}")));
        fig.reclaimed += r.permits();
        fig.dead_holders += r.holders.len() as u64;
    };

    while plan.next_round() {
        let _watchdog = plan.watchdog(&loc);
        let spawn = |rng: &mut Rng| {
            start_worker(
                "permit_worker",
                &[name.as_str(), &rng.next().to_string()],
                storm,
            )
        };
        let r0 = read_counter(plan, &region, ready);
        let mut kids: Vec<Worker> = (0..procs).map(|_| spawn(&mut rng)).collect();
        plan.wait_for(Some(&region), CHECK_BOUND, "workers attached", || {
            read_counter(plan, &region, ready) >= r0 + procs as u64
        });
        for _ in 0..1 + rng.below(3) {
            std::thread::sleep(rng.micros(8000));
            let i = rng.index(kids.len());
            kill_worker(plan, Some(&region), &mut kids[i], storm);
            fig.kills += 1;
            reclaim(plan, &mut fig);
            kids[i] = spawn(&mut rng);
        }
        std::thread::sleep(rng.micros(5000));
        // Kill one more and freeze the rest, outside the table lock.
        let i = rng.index(kids.len());
        kill_worker(plan, Some(&region), &mut kids[i], storm);
        fig.kills += 1;
        let live: Vec<i32> = kids
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, k)| k.child.pid())
            .collect();
        let mut frozen = false;
        for _ in 0..1000 {
            for &pid in &live {
                // SAFETY: our own unreaped children.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
            }
            plan.wait_for(Some(&region), CHECK_BOUND, "workers to stop", || {
                // Stopped ('T'), or dead on its own ('Z': reported when it is killed).
                live.iter()
                    .all(|&p| matches!(proc_state(p), Some('T' | 'Z') | None))
            });
            if !matches!(
                sem.table_lock().state(),
                shmsync::MutexState::Locked {
                    owner: Liveness::Alive,
                    ..
                }
            ) {
                frozen = true;
                break;
            }
            for &pid in &live {
                // SAFETY: our own unreaped children.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
            std::thread::sleep(rng.micros(200));
        }
        if !frozen {
            plan.fail(
                Some(&region),
                "could not freeze the workers outside the table lock",
            );
        }
        reclaim(plan, &mut fig);
        let leases = sem
            .leases()
            .unwrap_or_else(|e| plan.fail(Some(&region), &format!("leases: {e}")));
        let leased: u64 = leases.iter().map(|l| u64::from(l.permits)).sum();
        let value = u64::from(sem.value());
        let stray: Vec<_> = leases
            .iter()
            .filter(|l| !live.contains(&(l.identity.pid as i32)) || l.liveness != Liveness::Alive)
            .collect();
        if value + leased != u64::from(PERMITS) || !stray.is_empty() {
            plan.fail(
                Some(&region),
                &format!(
                    "value {value} + leased to live workers {leased} != {PERMITS}, or leases of \
                     processes that are not live workers: {stray:?} (all: {leases:?})"
                ),
            );
        }
        fig.checks += 1;
        for &pid in &live {
            // SAFETY: our own unreaped children.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        std::thread::sleep(rng.micros(3000));
        for k in &mut kids {
            if k.child.try_wait().is_none() {
                kill_worker(plan, Some(&region), k, storm);
                fig.kills += 1;
            }
        }
        reclaim(plan, &mut fig);
        let (value, leases) = (sem.value(), sem.leases().unwrap_or_default());
        if value != PERMITS || !leases.is_empty() {
            plan.fail(
                Some(&region),
                &format!("everyone dead and reclaimed, yet value {value} of {PERMITS}, leases {leases:?}"),
            );
        }
    }
    drop(region);
    drop(name);
    assert_no_leftovers();
    fig
}

#[test]
#[ignore = "stress: run by scripts/test.sh in release"]
fn stress_chaos_semaphore() {
    let mut plan = Plan::new("semaphore", 60);
    let f = permit_scenario(&mut plan, None);
    eprintln!(
        "chaos semaphore RESULT: seed {:#x}, {} rounds in {:.1} s, {} kills, {} permits reclaimed from {} dead \
         holders, {} frozen checks value + live leases == {PERMITS} (exact), 0 hangs",
        plan.seed,
        plan.round,
        plan.elapsed(),
        f.kills,
        f.reclaimed,
        f.dead_holders,
        f.checks
    );
}

// ---------------------------------------------------------------------------------------
// Scenario 4: seqlock writers killed mid-write, readers checksum every read
// ---------------------------------------------------------------------------------------

/// The seqlock's value: a version, 13 words derived from it, and a checksum over all.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Rec {
    version: u64,
    words: [u64; 13],
    writer: u64,
    check: u64,
}
shmsync::shared_type!(Rec = "chaos.Rec", fields: version, words, writer, check);

impl Rec {
    fn sum(&self) -> u64 {
        let mut h = self.version ^ 0x5eed;
        for w in self.words.iter().chain([&self.writer]) {
            h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    fn next(&mut self, writer: u64) {
        self.version += 1;
        for (i, w) in self.words.iter_mut().enumerate() {
            *w = self.version.wrapping_mul(i as u64 + 3) ^ writer;
        }
        self.writer = writer;
        self.check = self.sum();
    }

    fn valid(&self) -> bool {
        self.check == self.sum()
    }
}

/// Reader statistics (readers publish them now and then).
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct ReadStats {
    reads: u64,
    max_version: u64,
}
shmsync::shared_type!(ReadStats = "chaos.ReadStats", fields: reads, max_version);

fn add_stats(m: &RobustMutex<ReadStats>, reads: u64, version: u64) {
    let mut g = match m.lock_timeout(CHILD_BOUND) {
        Ok(g) => g,
        Err(LockError::OwnerDied(g)) => g.make_consistent(),
        Err(e) => panic!("stats: {e}"),
    };
    g.reads += reads;
    g.max_version = g.max_version.max(version);
}

/// Child: writes forever (read-modify-write of the record); now and then stops halfway
/// through a write (`__test_write_partial`) and SIGKILLs itself.
fn seq_writer(args: &[String]) {
    child_setup();
    let region = open_region(&args[0]);
    let mut rng = Rng(args[1].parse().unwrap());
    let seq = region.get::<SeqLock<Rec>>("rec").expect("rec");
    let committed = region.get::<RobustMutex<ReadStats>>("committed").unwrap();
    let me = u64::from(std::process::id());
    loop {
        if rng.below(400) == 0 {
            let mut torn = seq.read();
            torn.next(me);
            torn.check ^= 1;
            let words = rng.index(core::mem::size_of::<Rec>() / 8);
            seq.__test_write_partial(torn, words)
                .expect("partial write");
            // SAFETY: kill(getpid()) is always safe; we die holding the writer lock.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        let mut version = 0;
        let outcome = seq
            .write_timeout(CHILD_BOUND, |r| {
                r.next(me);
                version = r.version;
            })
            .expect("write");
        if outcome.repaired {
            add_stats(committed, 1, version);
        } else {
            add_stats(committed, 0, version);
        }
        spin(rng.below(3000));
    }
}

/// Child: reads forever; every read must pass its checksum and versions never go back.
fn seq_reader(args: &[String]) {
    child_setup();
    let region = open_region(&args[0]);
    let seq = region.get::<SeqLock<Rec>>("rec").expect("rec");
    let stats = region.get::<RobustMutex<ReadStats>>("reads").unwrap();
    bump(region.get::<RobustMutex<u64>>("ready").unwrap());
    let (mut last, mut reads) = (0u64, 0u64);
    loop {
        let r = seq.read_timeout(CHILD_BOUND).expect("read_deadline");
        assert!(r.valid(), "torn read: {r:?}");
        assert!(r.version >= last, "version went back from {last}: {r:?}");
        last = r.version;
        reads += 1;
        if reads % 1024 == 0 {
            add_stats(stats, 1024, last);
        }
    }
}

#[test]
#[ignore = "stress: run by scripts/test.sh in release"]
fn stress_chaos_seqlock() {
    let mut plan = Plan::new("seqlock", 50);
    let procs = plan.procs();
    let mut rng = plan.rng();
    let name = common::ShmName::new("chaos-seq");
    let loc = Location::parse(name.as_str()).unwrap();
    let region = Region::create(&loc, REGION_SIZE).unwrap();
    let mut init = Rec::default();
    init.check = init.sum();
    let seq = region.get_or_init::<SeqLock<Rec>>("rec", init).unwrap();
    // `committed`: writers record each version they published (max) and, in `reads`,
    // how many of their writes repaired a dead writer's leftovers.
    let committed = region
        .get_or_init::<RobustMutex<ReadStats>>("committed", ReadStats::default())
        .unwrap();
    let stats = region
        .get_or_init::<RobustMutex<ReadStats>>("reads", ReadStats::default())
        .unwrap();
    let ready = region.get_or_init::<RobustMutex<u64>>("ready", 0).unwrap();
    let (mut kills, mut self_kills, mut repairs, mut parent_reads) = (0u64, 0u64, 0u64, 0u64);
    let read_stats = |m: &RobustMutex<ReadStats>| match m.lock_timeout(CHECK_BOUND) {
        Ok(g) => *g,
        Err(LockError::OwnerDied(g)) => *g.make_consistent(),
        Err(e) => plan_fail_static(&format!("stats lock: {e:?}")),
    };
    let mut max_seen = 0u64;

    while plan.next_round() {
        let _watchdog = plan.watchdog(&loc);
        let spawn = |role: &'static str, rng: &mut Rng| {
            start_worker(role, &[name.as_str(), &rng.next().to_string()], None)
        };
        let r0 = read_counter(&plan, &region, ready);
        let mut readers: Vec<Worker> = (0..procs).map(|_| spawn("seq_reader", &mut rng)).collect();
        let mut writers: Vec<Worker> = (0..procs).map(|_| spawn("seq_writer", &mut rng)).collect();
        plan.wait_for(Some(&region), CHECK_BOUND, "readers attached", || {
            read_counter(&plan, &region, ready) >= r0 + procs as u64
        });
        let mut check_read = |plan: &Plan, max_seen: &mut u64| {
            let r = seq
                .read_timeout(CHECK_BOUND)
                .unwrap_or_else(|e| plan.fail(Some(&region), &format!("read: {e}")));
            if !r.valid() || r.version < *max_seen {
                plan.fail(
                    Some(&region),
                    &format!("torn or stale read {r:?} (seen {max_seen})"),
                );
            }
            *max_seen = r.version;
            parent_reads += 1;
        };
        for _ in 0..2 + rng.below(4) {
            let until = Instant::now() + rng.micros(6000);
            while Instant::now() < until {
                check_read(&plan, &mut max_seen);
            }
            // Writers that stopped mid-write and killed themselves: replace them.
            for w in &mut writers {
                if w.child.try_wait().is_some() {
                    kill_worker(&plan, Some(&region), w, None);
                    self_kills += 1;
                    *w = spawn("seq_writer", &mut rng);
                }
            }
            let i = rng.index(writers.len());
            kill_worker(&plan, Some(&region), &mut writers[i], None);
            kills += 1;
            writers[i] = spawn("seq_writer", &mut rng);
        }
        std::thread::sleep(rng.micros(3000));
        for w in &mut writers {
            let self_killed = w.child.try_wait().is_some();
            kill_worker(&plan, Some(&region), w, None);
            if self_killed {
                self_kills += 1;
            } else {
                kills += 1;
            }
        }
        // Readers never stalled: they keep reading through the repair.
        match seq.repair(std::time::Instant::now() + CHECK_BOUND) {
            Ok(true) => repairs += 1,
            Ok(false) => {}
            Err(e) => plan.fail(Some(&region), &format!("repair: {e}")),
        }
        if seq.is_torn() {
            plan.fail(Some(&region), "still torn after repair");
        }
        check_read(&plan, &mut max_seen);
        let c = read_stats(committed);
        if max_seen < c.max_version {
            plan.fail(
                Some(&region),
                &format!(
                    "after repair the value is version {max_seen}, but version {} was committed",
                    c.max_version
                ),
            );
        }
        for r in &mut readers {
            kill_worker(&plan, Some(&region), r, None);
        }
    }
    let reads = read_stats(stats);
    let c = read_stats(committed);
    eprintln!(
        "chaos seqlock RESULT: seed {:#x}, {} rounds in {:.1} s, {} writers killed at random, {} killed \
         themselves mid-write (__test_write_partial), {} versions published, {} repairs by the next writer, \
         {} by repair(), {} checksummed reads by reader processes (+{} by the checker), 0 torn reads, 0 hangs",
        plan.seed,
        plan.round,
        plan.elapsed(),
        kills,
        self_kills,
        max_seen,
        c.reads,
        repairs,
        reads.reads,
        parent_reads
    );
    drop(region);
    drop(name);
    assert_no_leftovers();
}

fn plan_fail_static(msg: &str) -> ! {
    panic!("chaos seqlock FAILED: {msg}");
}

/// Returns a permit, retrying while the table lock stays busy past `RELEASE_WAIT` (a
/// loaded machine, a peer SIGKILLed while holding it being repaired): a release that
/// still fails after 30 tries is a real error.
fn release_patiently<const SLOTS: usize>(mut permit: shmsync::Permit<'_, SLOTS>) {
    for _ in 0..30 {
        match permit.release() {
            Ok(()) => return,
            Err(e) => permit = e.into_permit(),
        }
    }
    permit.release().expect("release");
}

// ---------------------------------------------------------------------------------------
// Scenario 5: reader-writer lock, readers and writers killed mid-operation
// ---------------------------------------------------------------------------------------

/// The rwlock's data: a version, 13 words derived from it, the pid of a writer inside
/// (0 when none), and a checksum over the version and the words.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct RwRec {
    version: u64,
    words: [u64; 13],
    busy: u64,
    check: u64,
}
shmsync::shared_type!(RwRec = "chaos.RwRec", fields: version, words, busy, check);

impl RwRec {
    fn sum(&self) -> u64 {
        let mut h = self.version ^ 0x0bad_5eed;
        for w in &self.words {
            h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    fn valid(&self) -> bool {
        self.check == self.sum()
    }

    /// Writes the next version one store at a time; `stop_after` stops (and returns
    /// false) after that many words, leaving the record torn.
    fn advance(&mut self, writer: u64, stop_after: Option<usize>) -> bool {
        put(&mut self.busy, writer);
        let v = self.version + 1;
        put(&mut self.version, v);
        for i in 0..self.words.len() {
            if stop_after == Some(i) {
                return false;
            }
            put(&mut self.words[i], v.wrapping_mul(i as u64 + 7) ^ writer);
        }
        let check = self.sum();
        put(&mut self.check, check);
        put(&mut self.busy, 0);
        true
    }
}

type RwChaos = RobustRwLock<RwRec>;

/// Child: writes forever. A clean acquisition must find a whole record and no writer
/// inside; after a dead writer (`OwnerDied`) it redoes the update and counts a repair.
/// Now and then stops halfway through a write and SIGKILLs itself.
fn rw_writer(args: &[String]) {
    child_setup();
    let region = open_region(&args[0]);
    let mut rng = Rng(args[1].parse().unwrap());
    let lock = region.get::<RwChaos>("rw").expect("rw");
    let committed = region.get::<RobustMutex<ReadStats>>("committed").unwrap();
    let me = u64::from(std::process::id());
    loop {
        let (version, repaired) = match lock.write_timeout(CHILD_BOUND) {
            Ok(mut g) => {
                assert!(g.valid() && g.busy == 0, "writer found {:?}", *g);
                if rng.below(300) == 0 {
                    let at = rng.index(g.words.len());
                    g.advance(me, Some(at));
                    // SAFETY: kill(getpid()) is always safe; we die holding the lock.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                }
                g.advance(me, None);
                (g.version, false)
            }
            Err(WriteError::OwnerDied(mut g)) => {
                // Redo the dead writer's update from the version it started.
                if !g.valid() {
                    g.version -= u64::from(g.busy != 0);
                }
                g.advance(me, None);
                let v = g.version;
                drop(g.make_consistent());
                (v, true)
            }
            Err(WriteError::Failed(e)) => panic!("write: {e}"),
        };
        add_stats(committed, u64::from(repaired), version);
        spin(rng.below(3000));
    }
}

/// Child: reads forever; every read is whole, has no writer inside, and versions never
/// go back. `Inconsistent` (a writer died, not yet repaired) is counted and retried.
/// Now and then SIGKILLs itself while holding a read lock.
fn rw_reader(args: &[String]) {
    child_setup();
    let region = open_region(&args[0]);
    let mut rng = Rng(args[1].parse().unwrap());
    let lock = region.get::<RwChaos>("rw").expect("rw");
    let stats = region.get::<RobustMutex<ReadStats>>("reads").unwrap();
    let refused = region.get::<RobustMutex<u64>>("refused").unwrap();
    bump(region.get::<RobustMutex<u64>>("ready").unwrap());
    let (mut last, mut reads) = (0u64, 0u64);
    loop {
        match lock.read_timeout(CHILD_BOUND) {
            Ok(g) => {
                assert!(g.valid() && g.busy == 0, "torn read: {:?}", *g);
                assert!(g.version >= last, "version went back from {last}: {:?}", *g);
                last = g.version;
                reads += 1;
                if reads % 1024 == 0 {
                    add_stats(stats, 1024, last);
                }
                if rng.below(2000) == 0 {
                    std::mem::forget(g);
                    add_stats(stats, reads % 1024, last);
                    // SAFETY: kill(getpid()) is always safe; we die holding a read lock.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                }
            }
            Err(RwLockError::Inconsistent) => {
                bump(refused);
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => panic!("read: {e}"),
        }
        spin(rng.below(500));
    }
}

#[test]
#[ignore = "stress: run by scripts/test.sh in release"]
fn stress_chaos_rwlock() {
    let mut plan = Plan::new("rwlock", 50);
    let procs = plan.procs();
    let mut rng = plan.rng();
    let name = common::ShmName::new("chaos-rw");
    let loc = Location::parse(name.as_str()).unwrap();
    let region = Region::create(&loc, REGION_SIZE).unwrap();
    let mut init = RwRec::default();
    init.check = init.sum();
    let lock = region.get_or_init::<RwChaos>("rw", init).unwrap();
    let committed = region
        .get_or_init::<RobustMutex<ReadStats>>("committed", ReadStats::default())
        .unwrap();
    let stats = region
        .get_or_init::<RobustMutex<ReadStats>>("reads", ReadStats::default())
        .unwrap();
    let refused = region
        .get_or_init::<RobustMutex<u64>>("refused", 0)
        .unwrap();
    let ready = region.get_or_init::<RobustMutex<u64>>("ready", 0).unwrap();
    let read_stats = |m: &RobustMutex<ReadStats>| match m.lock_timeout(CHECK_BOUND) {
        Ok(g) => *g,
        Err(LockError::OwnerDied(g)) => *g.make_consistent(),
        Err(e) => plan_fail_static(&format!("stats lock: {e:?}")),
    };
    let (mut writer_kills, mut reader_kills) = (0u64, 0u64);
    // Readers that killed themselves holding a read lock, writers mid-write.
    let mut self_killed = [0u64; 2];
    let (mut parent_repairs, mut parent_reads, mut max_seen) = (0u64, 0u64, 0);

    while plan.next_round() {
        let _watchdog = plan.watchdog(&loc);
        let spawn = |role: &'static str, rng: &mut Rng| {
            start_worker(role, &[name.as_str(), &rng.next().to_string()], None)
        };
        let r0 = read_counter(&plan, &region, ready);
        let mut readers: Vec<Worker> = (0..procs).map(|_| spawn("rw_reader", &mut rng)).collect();
        let mut writers: Vec<Worker> = (0..procs).map(|_| spawn("rw_writer", &mut rng)).collect();
        plan.wait_for(Some(&region), CHECK_BOUND, "readers attached", || {
            read_counter(&plan, &region, ready) >= r0 + procs as u64
        });
        for _ in 0..2 + rng.below(4) {
            let until = Instant::now() + rng.micros(6000);
            while Instant::now() < until {
                // The checker reads too (and is refused while a dead writer's data waits
                // for its repair by the next writer).
                match lock.read_timeout(CHECK_BOUND) {
                    Ok(g) => {
                        if !g.valid() || g.busy != 0 || g.version < max_seen {
                            plan.fail(Some(&region), &format!("torn or stale read {:?}", *g));
                        }
                        max_seen = g.version;
                        parent_reads += 1;
                    }
                    Err(RwLockError::Inconsistent) => std::thread::sleep(rng.micros(200)),
                    Err(e) => plan.fail(Some(&region), &format!("read: {e}")),
                }
            }
            // Children that killed themselves (holding a read lock, or mid-write):
            // replace them.
            for (ws, role) in [(&mut readers, "rw_reader"), (&mut writers, "rw_writer")] {
                for w in ws.iter_mut() {
                    if w.child.try_wait().is_some() {
                        kill_worker(&plan, Some(&region), w, None);
                        self_killed[usize::from(role == "rw_writer")] += 1;
                        *w = spawn(role, &mut rng);
                    }
                }
            }
            if rng.below(2) == 0 {
                let i = rng.index(writers.len());
                kill_worker(&plan, Some(&region), &mut writers[i], None);
                writer_kills += 1;
                writers[i] = spawn("rw_writer", &mut rng);
            } else {
                let i = rng.index(readers.len());
                kill_worker(&plan, Some(&region), &mut readers[i], None);
                reader_kills += 1;
                readers[i] = spawn("rw_reader", &mut rng);
            }
        }
        std::thread::sleep(rng.micros(3000));
        for w in writers.iter_mut().chain(readers.iter_mut()) {
            let own = w.child.try_wait().is_some();
            kill_worker(&plan, Some(&region), w, None);
            match (own, w.role) {
                (true, role) => self_killed[usize::from(role == "rw_writer")] += 1,
                (false, "rw_writer") => writer_kills += 1,
                (false, _) => reader_kills += 1,
            }
        }
        // Every process is dead now: every registered reader is a dead one, and the
        // next writer reclaims every slot.
        let registered = lock.raw().readers();
        if let Some(r) = registered.iter().find(|r| r.liveness != Liveness::Dead) {
            plan.fail(
                Some(&region),
                &format!("a reader of a killed process is {r:?}"),
            );
        }
        match lock.write_timeout(CHECK_BOUND) {
            Ok(g) => {
                if !g.valid() || g.busy != 0 {
                    plan.fail(Some(&region), &format!("clean write lock on {:?}", *g));
                }
            }
            Err(WriteError::OwnerDied(mut g)) => {
                if !g.valid() {
                    g.version -= u64::from(g.busy != 0);
                }
                g.advance(0, None);
                drop(g.make_consistent());
                parent_repairs += 1;
            }
            Err(e) => plan.fail(Some(&region), &format!("checker write: {e}")),
        }
        if !lock.raw().readers().is_empty() {
            plan.fail(Some(&region), "dead readers' slots left after a write");
        }
        let c = read_stats(committed);
        let g = lock
            .read_timeout(CHECK_BOUND)
            .unwrap_or_else(|e| plan.fail(Some(&region), &format!("read after repair: {e}")));
        if !g.valid() || g.version < c.max_version {
            plan.fail(
                Some(&region),
                &format!(
                    "after the round {:?}, but version {} was committed",
                    *g, c.max_version
                ),
            );
        }
        max_seen = g.version;
    }
    let reads = read_stats(stats);
    let c = read_stats(committed);
    let refused = read_counter(&plan, &region, refused);
    // Each reader that killed itself left a held slot behind; every one was reclaimed
    // (the rounds end with no reader registered).
    if lock.raw().reclaimed() < self_killed[0] {
        plan.fail(
            Some(&region),
            &format!(
                "{} readers died holding a read lock, only {} slots were reclaimed",
                self_killed[0],
                lock.raw().reclaimed()
            ),
        );
    }
    eprintln!(
        "chaos rwlock RESULT: seed {:#x}, {} rounds in {:.1} s, {} writers and {} readers killed \
         at random, {} readers killed themselves holding a read lock and {} writers mid-write, \
         {} dead readers' slots reclaimed, {} versions, {} repairs by the next writer (+{} by the checker), {} \
         checksummed reads by reader processes (+{} by the checker), {} reads refused as \
         Inconsistent, 0 torn reads, 0 hangs",
        plan.seed,
        plan.round,
        plan.elapsed(),
        writer_kills,
        reader_kills,
        self_killed[0],
        self_killed[1],
        lock.raw().reclaimed(),
        max_seen,
        c.reads,
        parent_repairs,
        reads.reads,
        parent_reads,
        refused
    );
    drop(region);
    drop(name);
    assert_no_leftovers();
}
