//! A bounded queue of `u64`s shared by processes, written as another crate would write
//! it: its own `#[repr(C)]` struct with shmsync primitives inside, in a file mapping it
//! made itself with `memmap2`. A process killed in the middle of a push or a pop leaves
//! the queue as it was before that operation: the next locker gets `OwnerDied` and
//! rolls it back.
//!
//! The initialization protocol: the creator makes the file exclusively (`O_EXCL`), so
//! exactly one process initializes; the file starts zero-filled, so `ready` reads 0
//! until the creator has written everything else and stores [`READY`] with Release;
//! openers wait (bounded) for that value with Acquire, then `attach` the mutex to
//! validate it before using `&Queue`.
// A user crate uses std's atomics; the lint guards the library's loom shim.
#![allow(clippy::disallowed_types)]

use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::{addr_of, addr_of_mut};
use std::sync::atomic::{compiler_fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Zeroable;
use memmap2::MmapMut;
use shmsync::{Condvar, LockError, MutexGuard, RobustMutex};

/// Errors of this queue: shmsync's, I/O, or a plain message.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Items the ring holds.
pub const CAPACITY: u64 = 8;
/// `Queue::ready` once the creator has initialized everything else.
const READY: u64 = u64::from_le_bytes(*b"OWNQUEU1");
/// How long a call waits for the queue's creator, the lock, room or an item.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The ring's position and totals: what an operation changes, and what a rollback
/// restores.
#[derive(Clone, Copy, Debug, bytemuck::AnyBitPattern)]
#[repr(C)]
pub struct Cursor {
    /// Index of the oldest item.
    pub head: u64,
    /// Items in the ring.
    pub len: u64,
    /// Items ever pushed.
    pub pushed: u64,
    /// Items ever popped.
    pub popped: u64,
    /// Sum of the items ever popped (to check that none was lost or doubled).
    pub popped_sum: u64,
}

/// The data behind the lock.
#[derive(Clone, Copy, bytemuck::AnyBitPattern)]
#[repr(C)]
pub struct Ring {
    /// The current cursor.
    pub now: Cursor,
    /// The cursor before the operation in progress, while `dirty` is 1.
    undo: Cursor,
    /// 1 from an operation's first store to its last.
    dirty: u64,
    /// Lock holders that died holding the lock.
    pub owner_deaths: u64,
    /// Of those, the ones that died in the middle of an operation (rolled back).
    pub rollbacks: u64,
    slots: [u64; CAPACITY as usize],
}

impl Ring {
    /// Starts an operation: saves the cursor, then marks the ring dirty. The fences keep
    /// the compiler from moving the stores of the operation before the mark (the
    /// hardware order needs nothing: a successor takes the lock through the kernel).
    fn begin(&mut self) {
        self.undo = self.now;
        compiler_fence(Ordering::SeqCst);
        self.dirty = 1;
        compiler_fence(Ordering::SeqCst);
    }

    /// Ends an operation: every store of it is done.
    fn commit(&mut self) {
        compiler_fence(Ordering::SeqCst);
        self.dirty = 0;
    }

    /// Undoes what a dead holder left half done.
    fn repair(&mut self) {
        self.owner_deaths += 1;
        if self.dirty != 0 {
            self.now = self.undo;
            self.dirty = 0;
            self.rollbacks += 1;
        }
    }

    fn check(&self) -> Result<()> {
        if self.now.len > CAPACITY {
            return Err(format!(
                "corrupt queue: {} items in a ring of {CAPACITY}",
                self.now.len
            )
            .into());
        }
        Ok(())
    }
}

/// The shared struct: shmsync primitives embedded in the caller's own layout.
#[repr(C)]
pub struct Queue {
    /// 0 until the creator has initialized the rest, then [`READY`].
    ready: AtomicU64,
    lock: RobustMutex<Ring>,
    not_empty: Condvar,
    not_full: Condvar,
}

/// A [`Queue`] in a file mapping this process holds.
pub struct SharedQueue {
    map: MmapMut,
}

impl SharedQueue {
    /// Creates the file at `path` (it must not exist) and initializes the queue in it.
    pub fn create(path: &Path) -> Result<SharedQueue> {
        // Exclusive creation elects the one initializer.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.set_len(std::mem::size_of::<Queue>() as u64)?; // zero-filled: `ready` is 0
                                                            // SAFETY: nobody truncates the file while it is mapped (only this program uses
                                                            // it, and it never shrinks it).
        let mut map = unsafe { MmapMut::map_mut(&file)? }; // MAP_SHARED
        let q = map.as_mut_ptr().cast::<Queue>();
        // SAFETY: the mapping is page-aligned and as long as a Queue; no other process
        // reads anything but `ready` until it holds READY, and `ready` is not written
        // here; the primitives were never used, so moving them in is sound.
        unsafe {
            addr_of_mut!((*q).lock).write(RobustMutex::new(Ring::zeroed())?);
            addr_of_mut!((*q).not_empty).write(Condvar::new());
            addr_of_mut!((*q).not_full).write(Condvar::new());
        }
        let shared = SharedQueue { map };
        // Release: publishes the writes above; pairs with the Acquire load in `open`.
        shared.ready().store(READY, Ordering::Release);
        Ok(shared)
    }

    /// Opens the queue another process created at `path`, waiting up to [`PATIENCE`]
    /// for its creator to finish initializing it.
    pub fn open(path: &Path) -> Result<SharedQueue> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        // Judge the opened file (fstat), not the path: a regular file of ours, private.
        let meta = file.metadata()?;
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if !meta.is_file() || meta.uid() != euid || meta.mode() & 0o077 != 0 {
            return Err(format!("{}: not a private regular file of ours", path.display()).into());
        }
        if meta.len() != std::mem::size_of::<Queue>() as u64 {
            return Err(format!("{}: {} bytes is not a queue", path.display(), meta.len()).into());
        }
        // SAFETY: as in `create`.
        let map = unsafe { MmapMut::map_mut(&file)? };
        let shared = SharedQueue { map };
        let deadline = Instant::now() + PATIENCE;
        loop {
            // Acquire: pairs with the creator's Release store; after it, the creator's
            // initialization is visible here.
            match shared.ready().load(Ordering::Acquire) {
                READY => break,
                0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                0 => return Err("the queue's creator never finished initializing it".into()),
                other => return Err(format!("not a queue (ready word {other:#x})").into()),
            }
        }
        // Validate what another process wrote before trusting it: header, format word,
        // pid namespace, glibc's kind word.
        // SAFETY: in bounds and aligned; initialized and published (READY above); the
        // mapping outlives the call.
        unsafe { RobustMutex::<Ring>::attach(addr_of!((*shared.ptr()).lock))? };
        Ok(shared)
    }

    fn ptr(&self) -> *const Queue {
        self.map.as_ptr().cast()
    }

    fn ready(&self) -> &AtomicU64 {
        // SAFETY: in bounds and aligned; zero (the file's initial bytes) is a valid
        // AtomicU64, and it is only ever accessed atomically.
        unsafe { &*addr_of!((*self.ptr()).ready) }
    }

    /// The queue. `&Queue` may be shared freely: all its state is atomics or behind the
    /// lock.
    pub fn queue(&self) -> &Queue {
        // SAFETY: initialized and published (`create` wrote it; `open` saw READY with
        // Acquire and validated the mutex); the reference borrows the mapping.
        unsafe { &*self.ptr() }
    }
}

impl Queue {
    /// Locks the ring, first rolling back whatever a holder that died left half done.
    pub fn lock(&self) -> Result<MutexGuard<'_, Ring>> {
        recovered(self.lock.lock_timeout(PATIENCE))
    }

    /// Appends `item`, waiting for room.
    pub fn push(&self, item: u64) -> Result<()> {
        let deadline = Instant::now() + PATIENCE;
        let mut ring = self.lock()?;
        ring.check()?;
        while ring.now.len == CAPACITY {
            ring = wait(&self.not_full, ring, deadline)?;
            ring.check()?;
        }
        ring.begin();
        let tail = ring.now.head.wrapping_add(ring.now.len) % CAPACITY;
        ring.slots[tail as usize] = item;
        ring.now.len += 1;
        ring.now.pushed += 1;
        ring.commit();
        drop(ring);
        self.not_empty.notify_one();
        Ok(())
    }

    /// Removes the oldest item, waiting for one.
    pub fn pop(&self) -> Result<u64> {
        let deadline = Instant::now() + PATIENCE;
        let mut ring = self.lock()?;
        ring.check()?;
        while ring.now.len == 0 {
            ring = wait(&self.not_empty, ring, deadline)?;
            ring.check()?;
        }
        ring.begin();
        let head = ring.now.head % CAPACITY;
        let item = ring.slots[head as usize];
        ring.now.head = (head + 1) % CAPACITY;
        ring.now.len -= 1;
        ring.now.popped += 1;
        ring.now.popped_sum = ring.now.popped_sum.wrapping_add(item);
        ring.commit();
        drop(ring);
        self.not_full.notify_one();
        Ok(item)
    }

    /// Starts pushing `item`, calls `stalled` halfway through (holding the lock), and
    /// never finishes: the demonstration's victim, which is killed there.
    pub fn push_and_stall(&self, item: u64, stalled: impl FnOnce()) -> Result<()> {
        let mut ring = self.lock()?;
        ring.begin();
        let tail = ring.now.head.wrapping_add(ring.now.len) % CAPACITY;
        ring.slots[tail as usize] = item;
        ring.now.len += 1;
        stalled();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Waits on `cv` until `deadline`, repairing after a holder's death like `lock`.
fn wait<'a>(
    cv: &Condvar,
    ring: MutexGuard<'a, Ring>,
    deadline: Instant,
) -> Result<MutexGuard<'a, Ring>> {
    if Instant::now() >= deadline {
        return Err("timed out waiting on the queue".into());
    }
    recovered(cv.wait_deadline(ring, deadline).map(|(ring, _)| ring))
}

/// The guard of a lock attempt; `OwnerDied` is repaired and made consistent here.
fn recovered<'a>(
    r: std::result::Result<MutexGuard<'a, Ring>, LockError<'a, Ring>>,
) -> Result<MutexGuard<'a, Ring>> {
    match r {
        Ok(ring) => Ok(ring),
        Err(LockError::OwnerDied(mut ring)) => {
            ring.repair();
            Ok(ring.make_consistent())
        }
        Err(e) => Err(e.to_string().into()),
    }
}
