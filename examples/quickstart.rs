//! shmsync in one program: four worker processes share one region holding
//!
//! - `record`: a `RobustMutex<Record>` — two balances moved between in two steps, whose
//!   sum must always be zero;
//! - `slots`: a `LeasedSemaphore` — at most two workers inside at once, with leases so
//!   permits held by a dead worker can be reclaimed;
//! - `feed`: a `SeqLock<Feed>` — the latest state, read lock-free by the parent.
//!
//! Worker 0 is SIGKILLed in the middle of a transfer, holding the lock and a permit. The
//! survivors get `OwnerDied`, repair the record and go on; the parent reclaims the
//! permit; the feed never shows a torn value. Then it prints a summary and removes the
//! region.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::process::{Child, Command, ExitCode};
use std::sync::atomic::{compiler_fence, Ordering};
use std::time::{Duration, Instant};

use shmsync::inspect;
use shmsync::Location;
use shmsync::{LeasedSemaphore, LockError, Region, Semaphore, SeqLock};

const WORKERS: usize = 4;
/// Worker 0 is killed after this many transfers of its own.
const VICTIM_AFTER: u64 = 200;
/// The run stops when the workers have done this many transfers in all.
const TOTAL_OPS: u64 = 20_000;

#[derive(Clone, Copy, Debug, Default, bytemuck::AnyBitPattern)]
#[repr(C)]
struct Record {
    a: i64,
    b: i64,
    /// 1 between the two steps of a transfer.
    in_transfer: u64,
    ops: u64,
    repairs: u64,
    stop: u64,
}
shmsync::shared_type!(Record = "quickstart.Record", fields: a, b, in_transfer, ops, repairs, stop);

#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Feed {
    ops: u64,
    a: i64,
    b: i64,
    check: u64,
}
shmsync::shared_type!(Feed = "quickstart.Feed", fields: ops, a, b, check);

impl Feed {
    fn of(r: &Record) -> Feed {
        Feed {
            ops: r.ops,
            a: r.a,
            b: r.b,
            check: r.ops.rotate_left(17) ^ r.a as u64 ^ (r.b as u64).rotate_left(31),
        }
    }

    fn is_consistent(&self) -> bool {
        self.a + self.b == 0
            && self.check
                == self.ops.rotate_left(17) ^ self.a as u64 ^ (self.b as u64).rotate_left(31)
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("worker") => worker(&args[2], args[3].parse().unwrap_or(usize::MAX)),
        _ => parent(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Removes the region's name on every exit path of the parent.
struct Remove(Location);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = self.0.remove();
    }
}

/// Kills and reaps the workers on every exit path of the parent.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_worker(name: &str, id: usize) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["worker", name, &id.to_string()]);
    // SAFETY: prctl is async-signal-safe; the worker dies if the parent does.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    Ok(cmd.spawn()?)
}

fn parent() -> Result<()> {
    let name = format!("/shmsync-quickstart-{}", std::process::id());
    let loc = Location::parse(&name)?;
    let region = Region::create(&loc, 1 << 16)?;
    let _remove = Remove(loc.clone());
    let record = region.get_or_init::<shmsync::RobustMutex<Record>>("record", Record::default())?;
    let slots = region.get_or_init::<LeasedSemaphore>("slots", 2)?;
    let feed = region.get_or_init::<SeqLock<Feed>>("feed", Feed::default())?;
    let victim_ready = region.get_or_init::<Semaphore>("victim-ready", 0)?;
    println!(
        "region {name}: a mutex-protected record, a 2-permit leased semaphore, a seqlock feed"
    );

    let start = Instant::now();
    let mut workers = Workers(Vec::new());
    for id in 0..WORKERS {
        workers.0.push(spawn_worker(&name, id)?);
    }
    println!("started {WORKERS} worker processes");

    // Read the feed lock-free the whole time; every value must be consistent.
    let (mut reads, mut torn) = (0u64, 0u64);
    let read_feed = |reads: &mut u64, torn: &mut u64| {
        for _ in 0..100 {
            *reads += 1;
            if !feed.read().is_consistent() {
                *torn += 1;
            }
        }
    };

    // Wait until worker 0 is mid-transfer holding the lock, then kill -9 it.
    while victim_ready.wait_timeout(Duration::from_millis(1)).is_err() {
        read_feed(&mut reads, &mut torn);
        if start.elapsed() > Duration::from_secs(30) {
            return Err("worker 0 never reached its transfer".into());
        }
    }
    let victim = workers.0[0].id();
    let report = inspect::inspect(&region)?;
    let line = |r: &inspect::RegionReport, n: &str| {
        r.reports
            .iter()
            .find(|o| o.entry.name == n)
            .map(|o| o.state.clone())
            .unwrap_or_default()
    };
    println!(
        "worker 0 (pid {victim}) is mid-transfer: record is {}",
        line(&report, "record")
    );
    println!("kill -9 {victim}");
    workers.0[0].kill()?;
    workers.0[0].wait()?;
    let report = inspect::inspect(&region)?;
    println!("  record: {}", line(&report, "record"));
    println!("  slots:  {}", line(&report, "slots"));

    // The survivors repair the record on their own; the parent returns the dead
    // worker's permit.
    for (who, permits) in slots.reclaim_dead()?.holders {
        println!("reclaimed {permits} permit(s) of dead pid {}", who.pid);
    }

    // Let the survivors finish the work.
    loop {
        read_feed(&mut reads, &mut torn);
        if feed.read().ops >= TOTAL_OPS {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err("the survivors made no progress".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    {
        let mut r = match record.lock() {
            Ok(g) => g,
            Err(LockError::OwnerDied(g)) => g.make_consistent(),
            Err(e) => return Err(e.to_string().into()),
        };
        r.stop = 1;
    }
    for c in workers.0.iter_mut().skip(1) {
        let status = c.wait()?;
        if !status.success() {
            return Err(format!("a worker failed: {status}").into());
        }
    }
    let elapsed = start.elapsed();
    let r = *record.lock().map_err(|e| e.to_string())?;
    if r.a + r.b != 0 || r.in_transfer != 0 {
        return Err(format!("invariant broken: {r:?}").into());
    }
    if torn != 0 {
        return Err(format!("{torn} torn feed reads").into());
    }
    if slots.value() != slots.capacity() {
        return Err(format!("permits lost: {} of {}", slots.value(), slots.capacity()).into());
    }
    println!(
        "done in {:.2?}: {} transfers, {} owner-died repair(s), {} feed reads (0 torn), \
         {}/{} permits free, a + b = {}",
        elapsed,
        r.ops,
        r.repairs,
        reads,
        slots.value(),
        slots.capacity(),
        r.a + r.b
    );
    drop(workers);
    drop(region);
    drop(_remove);
    let leftover = std::path::Path::new("/dev/shm").join(&name[1..]);
    println!(
        "removed {name}: {}",
        if leftover.exists() {
            "STILL THERE"
        } else {
            "nothing left in /dev/shm"
        }
    );
    Ok(())
}

fn worker(name: &str, id: usize) -> Result<()> {
    let region = Region::open(&Location::parse(name)?)?;
    let record = region.get::<shmsync::RobustMutex<Record>>("record")?;
    let slots = region.get::<LeasedSemaphore>("slots")?;
    let feed = region.get::<SeqLock<Feed>>("feed")?;
    let victim_ready = region.get::<Semaphore>("victim-ready")?;
    let mut mine = 0u64;
    loop {
        let permit = slots.acquire_timeout(Duration::from_secs(10))?;
        let mut r = match record.lock_timeout(Duration::from_secs(10)) {
            Ok(g) => g,
            Err(LockError::OwnerDied(mut g)) => {
                // The previous holder died mid-transfer, after any of its steps:
                // restore the invariant from what is there.
                if g.in_transfer == 1 {
                    g.a = -g.b;
                    g.in_transfer = 0;
                }
                g.repairs += 1;
                println!(
                    "worker {id} (pid {}): owner died; repaired the record",
                    std::process::id()
                );
                g.make_consistent()
            }
            Err(e) => return Err(e.to_string().into()),
        };
        if r.stop != 0 {
            return Ok(());
        }
        // Mark the transfer, then make the first step: the marker must be written
        // first for a successor's repair to be right, and the compiler may reorder
        // plain stores (see `RobustMutex`'s docs).
        r.in_transfer = 1;
        compiler_fence(Ordering::SeqCst);
        r.a -= 1;
        if id == 0 && mine == VICTIM_AFTER {
            // Tell the parent we are mid-transfer, holding the lock and a permit; wait
            // for kill -9.
            victim_ready.post()?;
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        r.b += 1;
        compiler_fence(Ordering::SeqCst);
        r.in_transfer = 0;
        r.ops += 1;
        mine += 1;
        feed.store(Feed::of(&r))?;
        drop(r);
        drop(permit);
    }
}
