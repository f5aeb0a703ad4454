//! shmsync in memory you mapped yourself: a bounded queue (`queue.rs`) whose
//! `#[repr(C)]` struct embeds a `RobustMutex` and two `Condvar`s, in a file mapped with
//! `memmap2` — no `Segment`, no `Region`.
//!
//! A victim process locks the queue and is SIGKILLed in the middle of a push. Two
//! producer processes and this one (the consumer) carry on: whichever locks first gets
//! `OwnerDied` and rolls the half-done push back. Every item the producers pushed
//! arrives exactly once; the victim's never does. Then the file is removed.
//!
//! ```text
//! cargo run --release --example own_memory
//! ```

mod queue;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::time::Instant;

use queue::{Result, SharedQueue, PATIENCE};

const PRODUCERS: u64 = 2;
const ITEMS_PER_PRODUCER: u64 = 5_000;
/// The victim's item: it must never arrive.
const VICTIM_ITEM: u64 = u64::MAX / 2;

/// Producer `p`'s `i`-th item.
fn item(p: u64, i: u64) -> u64 {
    p * 1_000_000 + i
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("victim"), Some(path)) => victim(Path::new(path)),
        (Some("producer"), Some(path)) => match args.get(3).and_then(|p| p.parse().ok()) {
            Some(p) => producer(Path::new(path), p),
            None => Err("usage: own_memory producer PATH N".into()),
        },
        _ => parent(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("own_memory: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where the victim says it holds the lock mid-push.
fn marker(path: &Path) -> PathBuf {
    path.with_extension("holding")
}

fn victim(path: &Path) -> Result<()> {
    let shared = SharedQueue::open(path)?;
    shared.queue().push_and_stall(VICTIM_ITEM, || {
        let _ = std::fs::write(marker(path), b"");
    })
}

fn producer(path: &Path, p: u64) -> Result<()> {
    let shared = SharedQueue::open(path)?;
    for i in 0..ITEMS_PER_PRODUCER {
        shared.queue().push(item(p, i))?;
    }
    Ok(())
}

/// Removes the directory, kills and reaps the children on every exit path.
struct Cleanup {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
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

fn parent() -> Result<()> {
    let start = Instant::now();
    let dir = std::env::temp_dir().join(format!("shmsync-own-memory-{}", std::process::id()));
    std::fs::create_dir(&dir)?;
    let mut cleanup = Cleanup {
        dir: dir.clone(),
        children: Vec::new(),
    };
    let path = dir.join("queue");
    let path_str = path.to_str().ok_or("temporary path is not UTF-8")?;
    let shared = SharedQueue::create(&path)?;
    println!(
        "queue in {} ({} bytes, mapped with memmap2)",
        path.display(),
        std::mem::size_of::<queue::Queue>()
    );

    let mut victim = spawn(&["victim", path_str])?;
    while !marker(&path).exists() {
        if let Some(status) = victim.try_wait()? {
            return Err(format!("the victim exited early: {status}").into());
        }
        if start.elapsed() > PATIENCE {
            return Err("the victim never took the lock".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for p in 0..PRODUCERS {
        cleanup
            .children
            .push(spawn(&["producer", path_str, &p.to_string()])?);
    }
    victim.kill()?;
    victim.wait()?;
    println!(
        "victim {} SIGKILLed holding the lock, halfway through a push",
        victim.id()
    );

    let expected: u64 = (0..PRODUCERS)
        .flat_map(|p| (0..ITEMS_PER_PRODUCER).map(move |i| item(p, i)))
        .sum();
    let mut sum = 0u64;
    for _ in 0..PRODUCERS * ITEMS_PER_PRODUCER {
        let got = shared.queue().pop()?;
        if got == VICTIM_ITEM {
            return Err("the killed victim's half-pushed item arrived".into());
        }
        sum += got;
    }
    for c in &mut cleanup.children {
        let status = c.wait()?;
        if !status.success() {
            return Err(format!("a producer failed: {status}").into());
        }
    }
    cleanup.children.clear();

    let ring = shared.queue().lock()?;
    println!(
        "{} items from {PRODUCERS} producers consumed here, sum {sum} (expected {expected}); \
         {} owner death repaired, {} half-done push rolled back; {:.2?}",
        ring.now.popped,
        ring.owner_deaths,
        ring.rollbacks,
        start.elapsed()
    );
    if sum != expected
        || ring.now.popped != ring.now.pushed
        || ring.now.len != 0
        || ring.owner_deaths != 1
        || ring.rollbacks != 1
    {
        return Err("the queue lost, doubled or kept an item, or missed the repair".into());
    }
    drop(ring);
    drop(shared);
    drop(cleanup);
    println!("removed {}", dir.display());
    Ok(())
}
