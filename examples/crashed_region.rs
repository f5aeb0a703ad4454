//! Leaves a region the way a crashed service would, for trying the `shmsync` tool on:
//! a worker process is SIGKILLed holding the `orders` mutex, two permits of the
//! `workers` leased semaphore and a read lock of the `routes` rwlock, in the middle of
//! a `feed` seqlock write.
//!
//! ```text
//! cargo run --example crashed_region -- /orders
//! cargo run -p shmsync-cli -- list
//! cargo run -p shmsync-cli -- inspect /orders
//! cargo run -p shmsync-cli -- recover /orders
//! cargo run -p shmsync-cli -- remove /orders
//! ```
//!
//! The region stays until `shmsync remove` (or a reboot) removes it.

use std::error::Error;

use shmsync::{
    Condvar, LeasedSemaphore, Location, Region, RobustMutex, RobustRwLock, Semaphore, SeqLock,
};

fn main() -> Result<(), Box<dyn Error>> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/shmsync-crashed".to_owned());
    let location = Location::parse(&name)?;
    let region = Region::create(&location, 1 << 16)?;
    let orders = region.get_or_init::<RobustMutex<u64>>("orders", 0)?;
    let workers = region.get_or_init::<LeasedSemaphore>("workers", 4)?;
    let feed = region.get_or_init::<SeqLock<[u64; 4]>>("feed", [0; 4])?;
    region.get_or_init::<Condvar>("orders-changed", ())?;
    region.get_or_init::<Semaphore>("jobs", 3)?;
    let routes = region.get_or_init::<RobustRwLock<[u64; 8]>>("routes", [0; 8])?;

    // SAFETY: the child only takes locks in shared memory and then kills itself; it
    // never returns into the parent's state.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        let code = (|| -> shmsync::Result<()> {
            std::mem::forget(orders.lock().map_err(|e| e.abandon())?);
            workers.acquire()?.forget();
            workers.acquire()?.forget();
            std::mem::forget(routes.read()?);
            feed.write(|v| {
                v[0] += 1;
                // SAFETY: kill(getpid()) is always safe: die in the middle of the write.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            })?;
            Ok(())
        })();
        eprintln!("the worker could not take its locks: {code:?}");
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(1) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid
        || !libc::WIFSIGNALED(status)
        || libc::WTERMSIG(status) != libc::SIGKILL
    {
        Region::remove(&location)?;
        return Err(
            format!("the worker (pid {pid}) did not die by SIGKILL: status {status:#x}").into(),
        );
    }
    println!("{name}: worker pid {pid} was killed holding orders, 2 workers permits, a routes read lock, mid-write of feed");
    println!("try: shmsync inspect {name}; shmsync recover {name}; shmsync remove {name}");
    Ok(())
}
