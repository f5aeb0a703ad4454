//! Cross-process benchmark harness: shmsync against glibc and its peers
//! (Boost.Interprocess, raw_sync, rustix-futex-sync, iceoryx2-bb-posix), in the same
//! run, on the same machine, over memory in a shared mapping.
//!
//! ```text
//! cargo run --release -p shmsync-bench -- all      # the full tables
//! cargo run --release -p shmsync-bench -- quick    # tiny counts: checks that it all works
//! cargo run --release -p shmsync-bench --features peers -- all   # with every peer
//! cargo run --release -p shmsync-bench -- all --only pingpong --reps 15   # one section
//! cargo run --release -p shmsync-bench -- list-ops # what `op` can run
//! cargo run --release -p shmsync-bench -- op mutex:shmsync 100000   # one operation, N times
//! scripts/callgrind.sh [--features peers]   # instructions per uncontended operation
//! ```
//!
//! The peers need `g++` and `libboost-dev` (Boost.Interprocess, built from
//! `peers/boost.cpp` by the build script) and `libclang-dev` (iceoryx2-bb-posix's
//! bindings); each has its own feature (`peer-boost`, `peer-raw-sync`, `peer-rustix`,
//! `peer-iceoryx2`) and the output lists which were built, which were not and why.
//!
//! Each measurement runs every implementation once per repetition, in an order that
//! rotates between repetitions (so drift in frequency or vCPU placement favours no
//! one), and reports the median and range. The physical floor of a cross-process
//! hand-off (one cache line bounced between two spinning processes) is measured in the
//! same run as the ping-pong it bounds. Ratios are the implementation's figure divided
//! by the reference's: for times lower is better, for rates higher is better. The
//! contended counter also reports how often the lock changed process per increment,
//! which explains its times. The process is single-threaded, so `fork` is safe here.
#![allow(clippy::disallowed_types)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmsync::{Condvar, RobustMutex};

use shmsync_bench::harness::{
    self, fork, pin_to_cpu, place_value, reap, reap_all, stats, time_loop,
};
use shmsync_bench::impls::{self, Contender, Lock, Rw, Sem, Visit};
use shmsync_bench::peers;

struct Cfg {
    reps: usize,
    n_fast: u64,
    pingpong_time: Duration,
    contended_total: u64,
    contended_procs: &'static [usize],
    n_condvar: u64,
    rw_time: Duration,
    n_oversub: u64,
}

// ---------------------------------------------------------------------------------
// sections: one measurement, every implementation, interleaved per repetition

type Run = Box<dyn FnMut() -> Result<Vec<f64>, String>>;

struct Entry {
    id: &'static str,
    name: &'static str,
    run: Run,
    /// One vector per metric, one value per repetition.
    samples: Vec<Vec<f64>>,
    error: Option<String>,
}

/// What a metric's figures are, which way is better, and how they are printed.
#[derive(Clone, Copy, PartialEq)]
enum Unit {
    /// Nanoseconds per operation: lower is better.
    Ns,
    /// Operations per second: higher is better.
    Rate,
    /// A factor, such as two readers' rate over one reader's: higher is better.
    Factor,
    /// Events per operation that explain the other figures rather than score them.
    PerOp,
}

struct Metric {
    label: &'static str,
    unit: Unit,
    /// Ids of the entries every figure is compared with, in column order.
    refs: &'static [&'static str],
}

struct Section {
    key: String,
    title: String,
    metrics: Vec<Metric>,
    entries: Vec<Entry>,
    /// Implementations left out of this measurement, and why.
    notes: Vec<String>,
}

impl Section {
    fn new(key: impl Into<String>, title: impl Into<String>, metrics: Vec<Metric>) -> Section {
        Section {
            key: key.into(),
            title: title.into(),
            metrics,
            entries: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn add(&mut self, id: &'static str, name: &'static str, run: Run) {
        self.entries.push(Entry {
            id,
            name,
            run,
            samples: vec![Vec::new(); self.metrics.len()],
            error: None,
        });
    }

    /// Runs every entry `reps` times, interleaved: repetition r starts at entry r.
    fn run(&mut self, reps: usize) {
        eprintln!("running: {}", self.title);
        let n = self.entries.len();
        for r in 0..reps {
            for k in 0..n {
                let e = &mut self.entries[(k + r) % n];
                if e.error.is_some() {
                    continue;
                }
                match (e.run)() {
                    Ok(v) => {
                        for (s, x) in e.samples.iter_mut().zip(v) {
                            s.push(x);
                        }
                    }
                    Err(why) => e.error = Some(why),
                }
            }
        }
    }

    fn median(&self, id: &str, metric: usize) -> Option<f64> {
        let e = self.entries.iter().find(|e| e.id == id)?;
        let s = &e.samples[metric];
        (e.error.is_none() && !s.is_empty()).then(|| stats(s).0)
    }

    fn print(&self) {
        for (m, metric) in self.metrics.iter().enumerate() {
            println!();
            println!(
                "### {}: {} ({})",
                self.title,
                metric.label,
                match metric.unit {
                    Unit::Ns => "lower is better",
                    Unit::Rate | Unit::Factor => "higher is better",
                    Unit::PerOp => "neither better nor worse: it explains the times",
                }
            );
            let mut head = String::from("| implementation | median | range |");
            let mut rule = String::from("|---|---:|---:|");
            for r in metric.refs {
                match self.entries.iter().find(|e| e.id == *r) {
                    Some(e) => head.push_str(&format!(" × {} |", e.name)),
                    None => head.push_str(&format!(" × {r} (not built) |")),
                }
                rule.push_str("---:|");
            }
            println!("{head}");
            println!("{rule}");
            for e in &self.entries {
                if let Some(why) = &e.error {
                    println!(
                        "| {} | failed: {why} | | {}",
                        e.name,
                        "|".repeat(metric.refs.len())
                    );
                    continue;
                }
                let (med, lo, hi) = stats(&e.samples[m]);
                let mut row = format!(
                    "| {} | {} | {}–{} |",
                    e.name,
                    fmt_value(metric, med),
                    fmt_value(metric, lo),
                    fmt_value(metric, hi)
                );
                for r in metric.refs {
                    match self.median(r, m) {
                        Some(x) => row.push_str(&format!(" {:.2}× |", med / x)),
                        None => row.push_str(" n/a |"),
                    }
                }
                println!("{row}");
            }
        }
        for n in &self.notes {
            println!("- not measured here: {n}");
        }
    }
}

fn fmt_value(metric: &Metric, v: f64) -> String {
    match metric.unit {
        Unit::Rate => format!("{:.2} M/s", v / 1e6),
        Unit::Ns if v >= 1000.0 => format!("{v:.0} ns"),
        Unit::Ns => format!("{v:.1} ns"),
        Unit::Factor => format!("{v:.2}×"),
        Unit::PerOp => format!("{v:.4}"),
    }
}

fn ns(label: &'static str, refs: &'static [&'static str]) -> Metric {
    Metric {
        label,
        unit: Unit::Ns,
        refs,
    }
}

fn rate(label: &'static str, refs: &'static [&'static str]) -> Metric {
    Metric {
        label,
        unit: Unit::Rate,
        refs,
    }
}

fn factor(label: &'static str) -> Metric {
    Metric {
        label,
        unit: Unit::Factor,
        refs: &[],
    }
}

fn per_op(label: &'static str) -> Metric {
    Metric {
        label,
        unit: Unit::PerOp,
        refs: &[],
    }
}

// ---------------------------------------------------------------------------------
// uncontended, in one process

const LOCK_REFS: &[&str] = &["glibc-robust", "glibc"];

struct UncontendedLocks<'a>(&'a mut Section, u64);

impl Visit for UncontendedLocks<'_> {
    fn lock<L: Lock>(&mut self, c: Contender<L>) {
        let (make, n) = (c.make, self.1);
        self.0.add(
            c.id,
            c.name,
            Box::new(move || {
                let l = make()?;
                l.bump();
                Ok(vec![time_loop(n, || {
                    l.bump();
                })])
            }),
        );
    }
}

struct UncontendedSems<'a>(&'a mut Section, u64);

impl Visit for UncontendedSems<'_> {
    fn sem<S: Sem>(&mut self, c: Contender<S>, _gives_way: bool) {
        let (make, n) = (c.make, self.1);
        self.0.add(
            c.id,
            c.name,
            Box::new(move || {
                let s = make()?;
                s.post();
                s.wait();
                Ok(vec![time_loop(n, || {
                    s.post();
                    s.wait();
                })])
            }),
        );
    }
}

/// Two uncontended locked read-modify-writes on one word: what a semaphore's post and
/// wait must each do at least once.
fn two_rmw_floor(n: u64) -> f64 {
    let w = place_value(AtomicU64::new(0));
    time_loop(n, || {
        // The orderings a semaphore's post (release) and wait (acquire) use; the plain
        // load is Relaxed because only this process touches the word.
        w.fetch_add(1, Ordering::SeqCst);
        let v = w.load(Ordering::Relaxed);
        let _ = w.compare_exchange(v, v - 1, Ordering::Acquire, Ordering::Relaxed);
    })
}

/// ns per `read` and per `write(i)` (`i` counting up), each timed over `n` calls,
/// after one of each outside the timing (faulting the pages in, taking the first-use
/// paths). `read` returns a word of what it read, kept so that the read is not elided.
fn read_write_ns(n: u64, mut read: impl FnMut() -> u64, mut write: impl FnMut(u64)) -> Vec<f64> {
    write(0);
    black_box(read());
    let mut sink = 0u64;
    let read = time_loop(n, || sink = sink.wrapping_add(black_box(read())));
    let mut i = 0u64;
    let write = time_loop(n, || {
        i += 1;
        write(black_box(i));
    });
    black_box(sink);
    vec![read, write]
}

struct UncontendedRw<'a>(&'a mut Section, u64);

impl Visit for UncontendedRw<'_> {
    fn rw<R: Rw>(&mut self, c: Contender<R>) {
        let (make, n) = (c.make, self.1);
        self.0.add(
            c.id,
            c.name,
            Box::new(move || {
                let r = make()?;
                Ok(read_write_ns(n, || r.read()[3], |i| r.write(&[i; 8])))
            }),
        );
    }
}

/// A lock's read lock+unlock (`total`) and write lock+unlock (`bump`) on a counter: the
/// lock's own cost, with no payload to copy.
fn lock_unlock_ns<L: Lock>(l: &L, n: u64) -> Vec<f64> {
    read_write_ns(
        n,
        || l.total(),
        |_| {
            l.bump();
        },
    )
}

struct UncontendedRwLocks<'a>(&'a mut Section, u64);

impl Visit for UncontendedRwLocks<'_> {
    fn rwlock<L: Lock>(&mut self, c: Contender<L>) {
        let (make, n) = (c.make, self.1);
        self.0.add(
            c.id,
            c.name,
            Box::new(move || Ok(lock_unlock_ns(make()?, n))),
        );
    }
}

// ---------------------------------------------------------------------------------
// cross-process

/// Rounds between two checks of the clock in the timed loops.
const BATCH: u64 = 64;

/// Round trip (ns) between this process and a child through two semaphores, for about
/// `time`. The last round carries the stop flag, so both sides end on a round trip.
fn pingpong<S: Sem>(a: &'static S, b: &'static S, time: Duration) -> Result<Vec<f64>, String> {
    let stop = place_value(AtomicU32::new(0));
    let child = fork(move || loop {
        a.wait();
        // SeqCst, with the parent's SeqCst store: most implementations' post/wait
        // pair would order the flag already, but raw_sync's BusyEvent uses Relaxed
        // atomics, so the flag carries its own ordering.
        let last = stop.load(Ordering::SeqCst) != 0;
        b.post();
        if last {
            break;
        }
    });
    let t = Instant::now();
    let mut rounds = 0u64;
    loop {
        // SeqCst: see the child's load. Only this process writes the flag, so its own
        // load below needs nothing stronger than Relaxed.
        if t.elapsed() >= time {
            stop.store(1, Ordering::SeqCst);
        }
        let last = stop.load(Ordering::Relaxed) != 0;
        for _ in 0..if last { 1 } else { BATCH } {
            a.post();
            b.wait();
            rounds += 1;
        }
        if last {
            break;
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / rounds as f64;
    reap(child)?;
    Ok(vec![ns])
}

/// The physical floor of a hand-off: two processes spinning on one cache line, each
/// writing the next number when it sees its turn; ns per round trip, for about `time`.
fn spin_floor(time: Duration) -> Result<Vec<f64>, String> {
    const STOP: u64 = u64::MAX;
    let x = place_value(AtomicU64::new(0));
    let child = fork(move || {
        for i in 0.. {
            loop {
                // Acquire: pairs with the parent's Release stores.
                match x.load(Ordering::Acquire) {
                    v if v == 2 * i + 1 => break,
                    STOP => return,
                    _ => std::hint::spin_loop(),
                }
            }
            // Release: pairs with the parent's Acquire load.
            x.store(2 * i + 2, Ordering::Release);
        }
    });
    let t = Instant::now();
    let mut i = 0u64;
    while t.elapsed() < time {
        for _ in 0..BATCH {
            x.store(2 * i + 1, Ordering::Release);
            while x.load(Ordering::Acquire) != 2 * i + 2 {
                std::hint::spin_loop();
            }
            i += 1;
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / i as f64;
    x.store(STOP, Ordering::Release);
    reap(child)?;
    Ok(vec![ns])
}

struct PingPong<'a>(&'a mut Section, Duration);

impl Visit for PingPong<'_> {
    fn sem<S: Sem>(&mut self, c: Contender<S>, _gives_way: bool) {
        let (make, time) = (c.make, self.1);
        self.0.add(
            c.id,
            c.name,
            Box::new(move || pingpong(make()?, make()?, time)),
        );
    }
}

/// Forks `procs` children that wait at a common start line and then each run
/// `work(i)`, `i` in `0..procs`. Returns once all of them are at the line and released,
/// with the instant of the release and the children to reap.
fn fork_from_start_line(
    procs: usize,
    work: impl FnOnce(usize) + Copy,
) -> (Instant, Vec<libc::pid_t>) {
    let ready = place_value(AtomicU32::new(0));
    let go = place_value(AtomicU32::new(0));
    let kids: Vec<_> = (0..procs)
        .map(|i| {
            fork(move || {
                // Relaxed: only counts arrivals, see the parent's load.
                ready.fetch_add(1, Ordering::Relaxed);
                // Acquire: pairs with the parent's Release store.
                while go.load(Ordering::Acquire) == 0 {
                    std::thread::yield_now();
                }
                work(i);
            })
        })
        .collect();
    // Relaxed: only a count of arrivals; nothing is read on its strength.
    while ready.load(Ordering::Relaxed) < procs as u32 {
        std::thread::yield_now();
    }
    let t = Instant::now();
    // Release: pairs with the children's Acquire loads.
    go.store(1, Ordering::Release);
    (t, kids)
}

/// `procs` processes each incrementing one counter `per` times under the lock: ns per
/// increment, timed from a common start to the last exit, and how often the lock
/// changed process, per increment. Checks the total.
///
/// The hand-offs are counted from the values each process's increments produced, so
/// nothing is added inside the critical section: a process's increments fall into runs
/// of consecutive values, each run one stay of the lock in that process, and every
/// run but the very first began with the lock coming from another process.
fn contended<L: Lock>(l: &'static L, procs: usize, per: u64) -> Result<Vec<f64>, String> {
    let runs = place_value(AtomicU64::new(0));
    let (t, kids) = fork_from_start_line(procs, move |_| {
        // The value of this process's previous increment; the first increment (values
        // start at 1) always begins a run.
        let mut last = u64::MAX;
        let mut mine = 0u64;
        for _ in 0..per {
            let v = l.bump();
            if v != last.wrapping_add(1) {
                mine += 1;
            }
            last = v;
        }
        // Relaxed: the parent reads the sum after reaping every child, and waitpid
        // orders the child's writes before its return.
        runs.fetch_add(mine, Ordering::Relaxed);
    });
    reap_all(kids)?;
    let all = procs as u64 * per;
    let ns = t.elapsed().as_nanos() as f64 / all as f64;
    let total = l.total();
    if total != all {
        return Err(format!("lost increments: {total} of {all}"));
    }
    // Relaxed: see the children's fetch_add.
    let changes = runs.load(Ordering::Relaxed).saturating_sub(1);
    Ok(vec![ns, changes as f64 / all as f64])
}

struct Contended<'a>(&'a mut Section, usize, u64);

impl Visit for Contended<'_> {
    fn lock<L: Lock>(&mut self, c: Contender<L>) {
        let (make, procs, per) = (c.make, self.1, self.2);
        self.0.add(
            c.id,
            c.name,
            Box::new(move || contended(make()?, procs, per)),
        );
    }
}

/// A writer (this process) and a reader (a child) on one cell for about `time`: the
/// writer's rate and the reader's, each over its own running time. The reader checks
/// every value it reads for tearing.
fn reader_writer<R: Rw>(r: &'static R, time: Duration) -> Result<Vec<f64>, String> {
    let go = place_value(AtomicU32::new(0));
    let stop = place_value(AtomicU32::new(0));
    let reads = place_value(AtomicU64::new(0));
    let read_ns = place_value(AtomicU64::new(0));
    let child = fork(move || {
        // Acquire: pairs with the parent's Release store of `go`.
        while go.load(Ordering::Acquire) == 0 {
            std::hint::spin_loop();
        }
        let t = Instant::now();
        let mut n = 0u64;
        // Relaxed: a stop request needs no ordering with the data.
        while stop.load(Ordering::Relaxed) == 0 {
            for _ in 0..BATCH {
                let v = r.read();
                assert!(v.iter().all(|&w| w == v[0]), "torn read: {v:?}");
            }
            n += BATCH;
        }
        // Relaxed: published by the Release store below.
        read_ns.store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        // Release: pairs with the parent's Acquire load after reaping (belt and braces:
        // waitpid orders them already).
        reads.store(n, Ordering::Release);
    });
    // Release: pairs with the child's Acquire load.
    go.store(1, Ordering::Release);
    let t = Instant::now();
    let mut i = 0u64;
    while t.elapsed() < time {
        for _ in 0..16 {
            i += 1;
            r.write(&[i; 8]);
        }
    }
    let write_s = t.elapsed().as_secs_f64();
    // Relaxed: a stop request needs no ordering with the data.
    stop.store(1, Ordering::Relaxed);
    reap(child)?;
    // Acquire: pairs with the child's Release store; `read_ns` was stored before it.
    let n = reads.load(Ordering::Acquire);
    let read_s = read_ns.load(Ordering::Relaxed) as f64 / 1e9;
    Ok(vec![i as f64 / write_s, n as f64 / read_s])
}

struct ReaderWriter<'a>(&'a mut Section, Duration);

impl Visit for ReaderWriter<'_> {
    fn rw<R: Rw>(&mut self, c: Contender<R>) {
        let (make, time) = (c.make, self.1);
        self.0
            .add(c.id, c.name, Box::new(move || reader_writer(make()?, time)));
    }
}

/// `procs` reader processes, each pinned to its own CPU, reading the cell with no
/// writer for about `time`: their reads per second, summed, each over its own running
/// time.
fn readers<R: Rw>(r: &'static R, procs: usize, time: Duration) -> Result<f64, String> {
    const MAX: usize = 8;
    assert!(procs <= MAX, "at most {MAX} reader processes");
    let stop = place_value(AtomicU32::new(0));
    // Each reader's rate, as f64 bits.
    let rates: &'static [AtomicU64; MAX] = place_value(std::array::from_fn(|_| AtomicU64::new(0)));
    let (_, kids) = fork_from_start_line(procs, move |i| {
        assert!(pin_to_cpu(i), "cannot pin reader {i} to a CPU");
        let t = Instant::now();
        let mut n = 0u64;
        let mut sink = 0u64;
        // Relaxed: a stop request needs no ordering with the data.
        while stop.load(Ordering::Relaxed) == 0 {
            for _ in 0..BATCH {
                sink = sink.wrapping_add(black_box(r.read())[3]);
            }
            n += BATCH;
        }
        black_box(sink);
        let rate = n as f64 / t.elapsed().as_secs_f64();
        // Relaxed: the parent reads it after reaping, and waitpid orders the child's
        // writes before its return.
        rates[i].store(rate.to_bits(), Ordering::Relaxed);
    });
    std::thread::sleep(time);
    // Relaxed: a stop request needs no ordering with the data.
    stop.store(1, Ordering::Relaxed);
    reap_all(kids)?;
    // Relaxed: see the children's stores.
    Ok(rates[..procs]
        .iter()
        .map(|x| f64::from_bits(x.load(Ordering::Relaxed)))
        .sum())
}

struct ReadScaling<'a>(&'a mut Section, Duration);

impl Visit for ReadScaling<'_> {
    fn rw<R: Rw>(&mut self, c: Contender<R>) {
        let (make, time) = (c.make, self.1);
        self.0.add(
            c.id,
            c.name,
            Box::new(move || {
                let r = make()?;
                let one = readers(r, 1, time)?;
                let two = readers(r, 2, time)?;
                Ok(vec![one, two, two / one])
            }),
        );
    }
}

/// 4 pairs (8 processes) ping-ponging at once; ns per round trip, per pair.
fn oversubscribed<S: Sem>(make: impls::Make<S>, n: u64) -> Result<Vec<f64>, String> {
    const PAIRS: usize = 4;
    let mut objs = Vec::new();
    for _ in 0..PAIRS {
        objs.push((make()?, make()?));
    }
    let t = Instant::now();
    let mut kids = Vec::new();
    for (a, b) in objs {
        kids.push(fork(move || {
            for _ in 0..n {
                a.wait();
                b.post();
            }
        }));
        kids.push(fork(move || {
            for _ in 0..n {
                a.post();
                b.wait();
            }
        }));
    }
    reap_all(kids)?;
    Ok(vec![t.elapsed().as_nanos() as f64 / n as f64])
}

struct Oversubscribed<'a>(&'a mut Section, u64);

impl Visit for Oversubscribed<'_> {
    fn sem<S: Sem>(&mut self, c: Contender<S>, gives_way: bool) {
        if !gives_way {
            self.0.notes.push(format!(
                "{}: a pure busy-wait (never yields), so 8 of them on fewer CPUs only \
                 progress at scheduler ticks",
                c.name
            ));
            return;
        }
        let (make, n) = (c.make, self.1);
        self.0
            .add(c.id, c.name, Box::new(move || oversubscribed(make, n)));
    }
}

/// Condvar ping-pong: a turn word under the mutex; round trip in ns. shmsync and glibc.
fn condvar_pingpong_ours(n: u64) -> Result<Vec<f64>, String> {
    // SAFETY: fresh shared mappings, exclusive during init, leaked.
    let m = unsafe { RobustMutex::init_at(harness::shared(), 0u64) }.map_err(|e| e.to_string())?;
    // SAFETY: as above.
    let cv = unsafe { Condvar::init_at(harness::shared()) }.map_err(|e| e.to_string())?;
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
    reap(child)?;
    Ok(vec![t.elapsed().as_nanos() as f64 / n as f64])
}

fn condvar_pingpong_glibc(n: u64) -> Result<Vec<f64>, String> {
    let gm = harness::shared::<libc::pthread_mutex_t>();
    let gc = harness::shared::<libc::pthread_cond_t>();
    // SAFETY: standard attribute initialization on valid storage; fresh mappings.
    unsafe {
        let mut a = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        libc::pthread_mutexattr_init(a.as_mut_ptr());
        libc::pthread_mutexattr_setpshared(a.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        assert_eq!(libc::pthread_mutex_init(gm, a.as_ptr()), 0);
        let mut c = std::mem::MaybeUninit::<libc::pthread_condattr_t>::uninit();
        libc::pthread_condattr_init(c.as_mut_ptr());
        libc::pthread_condattr_setpshared(c.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        libc::pthread_condattr_setclock(c.as_mut_ptr(), libc::CLOCK_MONOTONIC);
        assert_eq!(libc::pthread_cond_init(gc, c.as_ptr()), 0);
    }
    let (gm, gc) = (gm as usize, gc as usize);
    // An atomic only so the compiler re-reads it after each wait; it is touched under
    // the mutex, so Relaxed is enough.
    let turn = place_value(AtomicU64::new(0));
    let play = move |first: bool| {
        let (gm, gc) = (
            gm as *mut libc::pthread_mutex_t,
            gc as *mut libc::pthread_cond_t,
        );
        // SAFETY: initialized pshared mutex and condvar; `turn` is touched only under
        // the mutex.
        unsafe {
            libc::pthread_mutex_lock(gm);
            for i in 0..n {
                let my_turn = if first { 2 * i } else { 2 * i + 1 };
                while turn.load(Ordering::Relaxed) != my_turn {
                    libc::pthread_cond_wait(gc, gm);
                }
                turn.fetch_add(1, Ordering::Relaxed);
                libc::pthread_cond_signal(gc);
            }
            libc::pthread_mutex_unlock(gm);
        }
    };
    let t = Instant::now();
    let child = fork(move || play(false));
    play(true);
    reap(child)?;
    Ok(vec![t.elapsed().as_nanos() as f64 / n as f64])
}

// ---------------------------------------------------------------------------------
// one operation N times, for instruction counts (scripts/callgrind.sh)

/// Lists (`run` = None) or runs the `kind:id` operation `n` times.
struct Op<'a> {
    want: Option<(&'a str, u64)>,
    found: bool,
}

impl Op<'_> {
    fn matches(&mut self, kind: &str, id: &str) -> Option<u64> {
        match self.want {
            None => {
                println!("{kind}:{id}");
                None
            }
            Some((w, n)) if w == format!("{kind}:{id}") => {
                self.found = true;
                Some(n)
            }
            Some(_) => None,
        }
    }
}

impl Visit for Op<'_> {
    fn lock<L: Lock>(&mut self, c: Contender<L>) {
        if let Some(n) = self.matches("mutex", c.id) {
            let l = (c.make)().expect("make");
            for _ in 0..n {
                l.bump();
            }
        }
    }
    fn sem<S: Sem>(&mut self, c: Contender<S>, _gives_way: bool) {
        if let Some(n) = self.matches("sem", c.id) {
            let s = (c.make)().expect("make");
            for _ in 0..n {
                s.post();
                s.wait();
            }
        }
    }
    fn rw<R: Rw>(&mut self, c: Contender<R>) {
        if let Some(n) = self.matches("read", c.id) {
            let r = (c.make)().expect("make");
            let mut sink = 0u64;
            for _ in 0..n {
                sink = sink.wrapping_add(black_box(r.read())[3]);
            }
            black_box(sink);
        }
        if let Some(n) = self.matches("write", c.id) {
            let r = (c.make)().expect("make");
            for i in 0..n {
                r.write(black_box(&[i; 8]));
            }
        }
    }
    fn rwlock<L: Lock>(&mut self, c: Contender<L>) {
        if let Some(n) = self.matches("rdlock", c.id) {
            let l = (c.make)().expect("make");
            let mut sink = 0u64;
            for _ in 0..n {
                sink = sink.wrapping_add(black_box(l.total()));
            }
            black_box(sink);
        }
        if let Some(n) = self.matches("wrlock", c.id) {
            let l = (c.make)().expect("make");
            for _ in 0..n {
                l.bump();
            }
        }
    }
}

// ---------------------------------------------------------------------------------

const USAGE: &str = "usage: shmsync-bench [all|quick] [--reps N] [--only SECTION,...] \
                     | list-ops | op KIND:ID N";

struct Target {
    what: String,
    value: Option<f64>,
    /// `<= bound` for times, `>= bound` for rates.
    bound: f64,
    at_most: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map_or("all", String::as_str);
    match mode {
        "list-ops" => {
            impls::visit_all(&mut Op {
                want: None,
                found: false,
            });
            return;
        }
        "op" => {
            let (Some(which), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok()))
            else {
                eprintln!("{USAGE}");
                std::process::exit(2);
            };
            let mut op = Op {
                want: Some((which, n)),
                found: false,
            };
            impls::visit_all(&mut op);
            if !op.found {
                eprintln!("no operation {which:?} in this build (see list-ops)");
                std::process::exit(2);
            }
            return;
        }
        _ => {}
    }
    let mut cfg = match mode {
        "all" => Cfg {
            reps: 5,
            n_fast: 2_000_000,
            pingpong_time: Duration::from_millis(300),
            contended_total: 1_000_000,
            contended_procs: &[2, 4, 8],
            n_condvar: 50_000,
            rw_time: Duration::from_millis(300),
            n_oversub: 10_000,
        },
        "quick" => Cfg {
            reps: 1,
            n_fast: 10_000,
            pingpong_time: Duration::from_millis(10),
            contended_total: 10_000,
            contended_procs: &[2, 4, 8],
            n_condvar: 1_000,
            rw_time: Duration::from_millis(10),
            n_oversub: 300,
        },
        other => {
            eprintln!("{USAGE} (got {other:?})");
            std::process::exit(2);
        }
    };
    // Options after the mode: `--reps N`, `--only KEY,KEY` (the section keys printed
    // named in the error for an unknown one), to repeat one measurement many times.
    let mut only: Option<Vec<String>> = None;
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        match (a.as_str(), rest.next()) {
            ("--reps", Some(n)) if n.parse::<usize>().is_ok_and(|n| n > 0) => {
                cfg.reps = n.parse().unwrap_or(1);
            }
            ("--only", Some(keys)) => only = Some(keys.split(',').map(String::from).collect()),
            _ => {
                eprintln!("{USAGE} (bad option {a:?})");
                std::process::exit(2);
            }
        }
    }
    // The whole run's watchdog: a peer that deadlocks must not hang CI.
    // SAFETY: alarm has no memory preconditions.
    unsafe { libc::alarm(if mode == "quick" { 300 } else { 1200 }) };

    let mut sections = Vec::new();

    let mut s = Section::new(
        "mutex",
        "Mutex lock+unlock, uncontended, one process",
        vec![ns("ns per lock+unlock", LOCK_REFS)],
    );
    impls::visit_all(&mut UncontendedLocks(&mut s, cfg.n_fast));
    sections.push(s);

    let mut s = Section::new(
        "sem",
        "Semaphore post+wait, uncontended, one process",
        vec![ns("ns per post+wait", &["glibc", "rmw-floor"])],
    );
    let n = cfg.n_fast;
    s.add(
        "rmw-floor",
        "floor: two bare locked RMWs on one word",
        Box::new(move || Ok(vec![two_rmw_floor(n)])),
    );
    impls::visit_all(&mut UncontendedSems(&mut s, cfg.n_fast));
    sections.push(s);

    let mut s = Section::new(
        "rw",
        "Reader-writer cell of 64 B, uncontended, one process",
        vec![
            ns("ns per read", &["glibc", "rustix", "boost"]),
            ns("ns per write", &["glibc", "rustix", "boost"]),
        ],
    );
    impls::visit_all(&mut UncontendedRw(&mut s, cfg.n_fast));
    sections.push(s);

    let mut s = Section::new(
        "rwlock",
        "Reader-writer lock guarding a u64, uncontended, one process \
         (RobustMutex: its one lock in both tables)",
        vec![
            ns("ns per read lock+unlock", &["glibc", "shmsync"]),
            ns("ns per write lock+unlock", &["shmsync", "glibc"]),
        ],
    );
    impls::visit_all(&mut UncontendedRwLocks(&mut s, cfg.n_fast));
    let n = cfg.n_fast;
    s.add(
        "shmsync",
        "shmsync RobustMutex",
        Box::new(move || Ok(lock_unlock_ns(impls::ShmsyncMutex::make()?, n))),
    );
    s.add(
        "floor",
        "floor: RobustMutex + one SeqCst RMW announcing the writer",
        Box::new(move || Ok(lock_unlock_ns(impls::MutexAnnounceFloor::make()?, n))),
    );
    sections.push(s);

    let mut s = Section::new(
        "pingpong",
        "Semaphore ping-pong round trip, 2 processes",
        vec![ns("ns per round trip", &["floor", "boost-spin", "glibc"])],
    );
    let t = cfg.pingpong_time;
    s.add(
        "floor",
        "floor: one cache line, two spinning processes",
        Box::new(move || spin_floor(t)),
    );
    impls::visit_all(&mut PingPong(&mut s, cfg.pingpong_time));
    s.add(
        "model",
        "floor of a counting semaphore: atomic add, watch + CAS, never sleeps",
        Box::new(move || {
            pingpong(
                impls::SpinSemModel::make()?,
                impls::SpinSemModel::make()?,
                t,
            )
        }),
    );
    sections.push(s);

    for &procs in cfg.contended_procs {
        let mut s = Section::new(
            format!("contended{procs}"),
            format!("Counter under the lock, {procs} processes"),
            vec![
                ns("ns per increment", LOCK_REFS),
                per_op("owner changes (hand-offs) per increment"),
            ],
        );
        let per = cfg.contended_total / procs as u64;
        impls::visit_all(&mut Contended(&mut s, procs, per));
        sections.push(s);
    }

    let mut s = Section::new(
        "condvar",
        "Condvar ping-pong round trip (turn word under the mutex), 2 processes",
        vec![ns("ns per round trip", &["glibc"])],
    );
    let n = cfg.n_condvar;
    s.add(
        "shmsync",
        "shmsync Condvar + RobustMutex",
        Box::new(move || condvar_pingpong_ours(n)),
    );
    s.add(
        "glibc",
        "glibc pthread_cond_t + pthread_mutex_t",
        Box::new(move || condvar_pingpong_glibc(n)),
    );
    sections.push(s);

    let mut s = Section::new(
        "rw2",
        "One writer process and one reader process on a 64 B cell",
        vec![
            rate("writes/s", &["rustix", "boost", "glibc"]),
            rate("reads/s", &["rustix", "boost", "glibc"]),
        ],
    );
    impls::visit_all(&mut ReaderWriter(&mut s, cfg.rw_time));
    let t = cfg.rw_time;
    s.add(
        "model",
        "floor of a robust SeqLock: its protocol under glibc's robust mutex, no checks",
        Box::new(move || reader_writer(impls::RobustSeqLockModel::make()?, t)),
    );
    sections.push(s);

    let mut s = Section::new(
        "readers",
        "Read scaling: one reader process, then two on two CPUs, 64 B cell, no writer",
        vec![
            rate("reads/s, one reader", &["glibc"]),
            rate("reads/s, two readers together", &["glibc"]),
            factor("two readers ÷ one, same repetition"),
        ],
    );
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        impls::visit_all(&mut ReadScaling(&mut s, cfg.rw_time));
    } else {
        s.notes
            .push("every implementation: two readers need two CPUs, this machine has one".into());
    }
    sections.push(s);

    let mut s = Section::new(
        "oversub",
        "Oversubscribed: 4 ping-pong pairs (8 processes) at once",
        vec![ns("ns per round trip, per pair", &["glibc"])],
    );
    impls::visit_all(&mut Oversubscribed(&mut s, cfg.n_oversub));
    sections.push(s);

    if let Some(keys) = &only {
        let known: Vec<&str> = sections.iter().map(|s| s.key.as_str()).collect();
        if let Some(bad) = keys.iter().find(|k| !known.contains(&k.as_str())) {
            eprintln!("no section {bad:?}; sections: {}", known.join(","));
            std::process::exit(2);
        }
        sections.retain(|s| keys.contains(&s.key));
    }
    let peers = peers::report();
    for s in &mut sections {
        s.run(cfg.reps);
    }

    let mut load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.truncate(load.trim_end().len());
    println!(
        "shmsync-bench {mode}: {} CPUs, load average {load}, median of {} interleaved runs",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cfg.reps
    );
    println!();
    println!("Peers:");
    for p in &peers {
        println!("- {p}");
    }
    for s in &sections {
        s.print();
    }

    let get = |key: &str, id: &str, metric: usize| {
        sections
            .iter()
            .find(|s| s.key == key)
            .and_then(|s| s.median(id, metric))
    };
    let ratio = |key: &str, a: &str, b: &str, metric: usize| {
        Some(get(key, a, metric)? / get(key, b, metric)?)
    };
    let at_most = |what: String, value, bound| Target {
        what,
        value,
        bound,
        at_most: true,
    };
    let at_least = |what: String, value, bound| Target {
        what,
        value,
        bound,
        at_most: false,
    };
    let mut targets = vec![
        at_most(
            "Semaphore ping-pong ÷ spinning floor".into(),
            ratio("pingpong", "shmsync", "floor", 0),
            1.3,
        ),
        at_most(
            "— the floor of a counting semaphore ÷ spinning floor".into(),
            ratio("pingpong", "model", "floor", 0),
            1.3,
        ),
        at_most(
            "Semaphore ping-pong ÷ Boost spin_semaphore".into(),
            ratio("pingpong", "shmsync", "boost-spin", 0),
            1.0,
        ),
        at_most(
            "Oversubscribed ping-pong ÷ glibc sem_t".into(),
            ratio("oversub", "shmsync", "glibc", 0),
            1.0,
        ),
    ];
    for &procs in cfg.contended_procs {
        let key = format!("contended{procs}");
        targets.push(at_most(
            format!("Contended counter, {procs} processes ÷ glibc robust"),
            ratio(&key, "shmsync", "glibc-robust", 0),
            0.9,
        ));
        targets.push(at_most(
            format!("Contended counter, {procs} processes ÷ glibc plain (stretch)"),
            ratio(&key, "shmsync", "glibc", 0),
            1.3,
        ));
    }
    targets.extend([
        at_most(
            "Uncontended lock+unlock ÷ glibc robust".into(),
            ratio("mutex", "shmsync", "glibc-robust", 0),
            1.0,
        ),
        at_least(
            "SeqLock writes/s under one reader ÷ rustix-futex-sync RwLock writer".into(),
            ratio("rw2", "shmsync", "rustix", 0),
            1.0,
        ),
        at_least(
            "— the floor of a robust SeqLock ÷ rustix-futex-sync RwLock writer".into(),
            ratio("rw2", "model", "rustix", 0),
            1.0,
        ),
        at_least(
            "SeqLock reads/s under one writer ÷ rustix-futex-sync RwLock reader".into(),
            ratio("rw2", "shmsync", "rustix", 1),
            3.0,
        ),
        at_most(
            "Condvar ping-pong ÷ glibc".into(),
            ratio("condvar", "shmsync", "glibc", 0),
            1.0,
        ),
        at_most(
            "RobustRwLock write lock+unlock ÷ RobustMutex lock+unlock".into(),
            ratio("rwlock", "shmsync-rwlock", "shmsync", 1),
            1.2,
        ),
        at_most(
            "— the floor (RobustMutex + one SeqCst RMW) ÷ RobustMutex".into(),
            ratio("rwlock", "floor", "shmsync", 1),
            1.2,
        ),
        at_most(
            "RobustRwLock read lock+unlock ÷ glibc pshared rwlock rdlock+unlock".into(),
            ratio("rwlock", "shmsync-rwlock", "glibc", 0),
            1.0,
        ),
        at_least(
            "RobustRwLock reads/s, two reader processes ÷ one".into(),
            get("readers", "shmsync-rwlock", 2),
            1.8,
        ),
    ]);
    println!();
    println!("### Targets (same run)");
    println!("| target | ratio | bound | met |");
    println!("|---|---:|---:|---|");
    // With --only, the targets of the sections left out are left out too.
    for t in targets
        .iter()
        .filter(|t| only.is_none() || t.value.is_some())
    {
        let (value, met) = match t.value {
            Some(v) => (
                format!("{v:.2}×"),
                if (t.at_most && v <= t.bound) || (!t.at_most && v >= t.bound) {
                    "yes"
                } else {
                    "no"
                },
            ),
            None => ("n/a".into(), "n/a (reference not measured)"),
        };
        let bound = format!("{} {:.1}×", if t.at_most { "≤" } else { "≥" }, t.bound);
        println!("| {} | {value} | {bound} | {met} |", t.what);
    }

    // A failure of shmsync, glibc or a floor (a lost increment, a torn read, a child
    // that died) fails the run, so that CI's quick run catches it; a peer's failure is
    // only reported in its table.
    let own = [
        "shmsync",
        "shmsync-rwlock",
        "glibc",
        "glibc-robust",
        "floor",
        "rmw-floor",
    ];
    let mut failed = false;
    for s in &sections {
        for e in s.entries.iter().filter(|e| own.contains(&e.id)) {
            if let Some(why) = &e.error {
                eprintln!("FAILED: {}: {}: {why}", s.title, e.name);
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
