//! A `RobustRwLock` shared by processes that die: a routing table read by three reader
//! processes and updated by the parent.
//!
//! 1. Three readers read the table in a loop and check its checksum.
//! 2. Reader 0 is SIGKILLed while it holds a read lock. The parent's next update waits
//!    for readers, finds the dead one, reclaims its slot, and goes on (glibc's pshared
//!    `pthread_rwlock_t` would block that writer forever).
//! 3. A writer process is SIGKILLed halfway through an update. Readers get
//!    `Inconsistent` instead of the torn table; the parent's next write gets
//!    `OwnerDied`, repairs the table and makes it consistent; readers go on.
//!
//! ```text
//! cargo run --release --example rwlock
//! ```

use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use shmsync::Location;
use shmsync::{inspect, Region, RobustRwLock, RwLockError, WriteError};

const READERS: usize = 3;

/// A routing table: eight routes and a checksum over them.
#[derive(Clone, Copy, Debug, Default, bytemuck::AnyBitPattern)]
#[repr(C)]
struct Routes {
    version: u64,
    next_hop: [u64; 8],
    checksum: u64,
}
shmsync::shared_type!(Routes = "rwlock-example.Routes", fields: version, next_hop, checksum);

impl Routes {
    fn sum(&self) -> u64 {
        self.next_hop
            .iter()
            .fold(self.version, |a, &h| a.rotate_left(7) ^ h)
    }

    fn is_consistent(&self) -> bool {
        self.checksum == self.sum()
    }

    /// Writes version `v`; `half` stops after the first half of the routes.
    fn update(&mut self, v: u64, half: bool) {
        self.version = v;
        for (i, hop) in self.next_hop.iter_mut().enumerate() {
            if half && i == 4 {
                return;
            }
            *hop = v * 100 + i as u64;
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        }
        self.checksum = self.sum();
    }
}

/// Shared counters the readers report into.
#[derive(Clone, Copy, Debug, Default, bytemuck::AnyBitPattern)]
#[repr(C)]
struct Stats {
    reads: u64,
    torn: u64,
    inconsistent: u64,
    holding: u64,
    stop: u64,
}
shmsync::shared_type!(Stats = "rwlock-example.Stats", fields: reads, torn, inconsistent, holding, stop);

type Lock = RobustRwLock<Routes>;
/// `WriteError` borrows the lock (its `OwnerDied` guard holds it), so it reaches a
/// `Box<dyn Error>` through `shmsync::Error` (`map_err(shmsync::Error::from)`), which
/// releases an `OwnerDied` guard with the repair left to the next writer.
type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("reader") => reader(&args[2], &args[3]),
        Some("half-writer") => half_writer(&args[2]),
        _ => parent(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rwlock example: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the region (leaked: it lives as long as this short-lived process).
fn open(name: &str) -> Result<(&'static Lock, &'static RobustRwLock<Stats>)> {
    let region: &'static Region = Box::leak(Box::new(Region::open(&Location::parse(name)?)?));
    Ok((region.get::<Lock>("routes")?, region.get("stats")?))
}

/// Reads until told to stop. Reader 0 ("victim") parks holding a read lock once it
/// has read a little.
fn reader(name: &str, id: &str) -> Result<()> {
    let (routes, stats) = open(name)?;
    let mut n = 0u64;
    loop {
        let outcome = match routes.read_timeout(Duration::from_secs(5)) {
            Ok(r) => {
                let ok = r.is_consistent();
                if id == "0" && n == 1000 {
                    stats.write().map_err(shmsync::Error::from)?.holding = 1;
                    std::mem::forget(r); // hold it until SIGKILL
                    loop {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                Some(ok)
            }
            Err(RwLockError::Inconsistent) => None,
            Err(e) => return Err(e.into()),
        };
        n += 1;
        let mut s = stats.write().map_err(shmsync::Error::from)?;
        match outcome {
            Some(true) => s.reads += 1,
            Some(false) => s.torn += 1,
            None => s.inconsistent += 1,
        }
        if s.stop != 0 {
            return Ok(());
        }
        drop(s);
        if outcome.is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Takes the write lock, writes half an update, and parks until SIGKILL.
fn half_writer(name: &str) -> Result<()> {
    let (routes, stats) = open(name)?;
    let mut w = routes.write().map_err(shmsync::Error::from)?;
    let v = w.version + 1;
    w.update(v, true);
    std::mem::forget(w);
    stats.write().map_err(shmsync::Error::from)?.holding = 2;
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Kills and reaps the children on every exit path.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Removes the region's name on every exit path.
struct Remove(Location);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = self.0.remove();
    }
}

fn spawn(args: &[&str]) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(args);
    // SAFETY: prctl is async-signal-safe; the child dies if the parent does.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    Ok(cmd.spawn()?)
}

fn wait_for(what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while !cond()? {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn state_of(region: &Region) -> Result<String> {
    Ok(inspect::inspect(region)?
        .reports
        .into_iter()
        .find(|o| o.entry.name == "routes")
        .map(|o| o.state)
        .unwrap_or_default())
}

fn parent() -> Result<()> {
    let name = format!("/shmsync-rwlock-example-{}", std::process::id());
    let loc = Location::parse(&name)?;
    let region = Region::create(&loc, 1 << 16)?;
    let _remove = Remove(loc);
    let mut initial = Routes::default();
    initial.update(1, false);
    let routes = region.get_or_init::<Lock>("routes", initial)?;
    let stats = region.get_or_init::<RobustRwLock<Stats>>("stats", Stats::default())?;
    println!("region {name}: a RobustRwLock<Routes> read by {READERS} processes");

    let mut children = Children(Vec::new());
    for id in 0..READERS {
        children.0.push(spawn(&["reader", &name, &id.to_string()])?);
    }
    wait_for("reader 0 to hold a read lock", || {
        Ok(stats.read()?.holding == 1)
    })?;
    println!("reader 0 holds a read lock: {}", state_of(&region)?);
    children.0[0].kill()?;
    children.0[0].wait()?;
    println!("kill -9 reader 0: {}", state_of(&region)?);

    let t = Instant::now();
    {
        let mut w = routes
            .write_timeout(Duration::from_secs(10))
            .map_err(shmsync::Error::from)?;
        let v = w.version + 1;
        w.update(v, false);
    }
    println!(
        "the parent's update waited {:?} for the dead reader (bound: {:?}), reclaimed its slot",
        t.elapsed(),
        shmsync::READER_CHECK
    );

    children.0.push(spawn(&["half-writer", &name])?);
    wait_for("the writer to be mid-update", || {
        Ok(stats.read()?.holding == 2)
    })?;
    let writer = children.0.len() - 1;
    children.0[writer].kill()?;
    children.0[writer].wait()?;
    println!(
        "kill -9 a writer halfway through an update: {}",
        state_of(&region)?
    );
    match routes.read() {
        Err(RwLockError::Inconsistent) => println!("a read now: Inconsistent (nothing torn)"),
        other => return Err(format!("expected Inconsistent, got {other:?}").into()),
    }
    // Let the readers see it too before the repair.
    std::thread::sleep(Duration::from_millis(50));
    match routes.write() {
        Err(WriteError::OwnerDied(mut w)) => {
            let v = w.version;
            w.update(v, false); // redo the half-done update
            drop(w.make_consistent());
            println!("the next writer got OwnerDied, redid version {v}, made it consistent");
        }
        Ok(_) => return Err("expected OwnerDied".into()),
        Err(e) => return Err(shmsync::Error::from(e).into()),
    }
    std::thread::sleep(Duration::from_millis(200));
    stats.write().map_err(shmsync::Error::from)?.stop = 1;
    for c in &mut children.0[1..READERS] {
        let status = c.wait()?;
        if !status.success() {
            return Err(format!("a reader failed: {status}").into());
        }
    }
    let s = *stats.read()?;
    println!(
        "readers: {} consistent reads, {} torn, {} refused while inconsistent",
        s.reads, s.torn, s.inconsistent
    );
    println!("final: {}", state_of(&region)?);
    if s.torn != 0 {
        return Err("a reader saw a torn table".into());
    }
    Ok(())
}
