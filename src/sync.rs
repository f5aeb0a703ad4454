//! The one shim: atomics, `UnsafeCell`, spin hints and the futex, from `std` or from
//! `loom` (under `--cfg shmsync_loom`).
//!
//! Every other module imports these from here; `clippy.toml` (`disallowed-types`) keeps
//! `core::sync::atomic::*` and `core::cell::UnsafeCell` out of them, so a loom build
//! really checks every atomic access the crate makes.
//!
//! Under loom, objects cannot be placed in raw shared memory (loom's atomics are bigger
//! and carry bookkeeping), so the loom models build them with their `new` constructors
//! and exercise the same protocol code.
#![allow(clippy::disallowed_types)]

#[cfg(not(shmsync_loom))]
#[allow(unused_imports)]
pub(crate) use core::sync::atomic::{fence, Ordering};

/// Newtypes over std's atomics (same layout: `repr(transparent)`), dereferencing to
/// them. They exist so that `clippy::disallowed_types` can keep the std types out of
/// every module but this one; under loom the same names are loom's atomics.
#[cfg(not(shmsync_loom))]
macro_rules! std_atomic {
    ($(#[$doc:meta] $name:ident($prim:ty);)*) => {$(
        #[$doc]
        #[derive(Debug, Default)]
        #[repr(transparent)]
        pub(crate) struct $name(core::sync::atomic::$name);

        impl $name {
            /// A new atomic holding `v`.
            #[inline]
            #[allow(dead_code)]
            pub(crate) const fn new(v: $prim) -> Self {
                Self(core::sync::atomic::$name::new(v))
            }
        }

        impl core::ops::Deref for $name {
            type Target = core::sync::atomic::$name;
            #[inline]
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }
    )*};
}

#[cfg(not(shmsync_loom))]
std_atomic! {
    /// `AtomicU32` (std).
    AtomicU32(u32);
    /// `AtomicU64` (std).
    AtomicU64(u64);
    /// `AtomicU8` (std).
    AtomicU8(u8);
}
#[cfg(shmsync_loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// A spin-wait hint (`pause` on x86). Under loom it yields, so a spin loop lets the
/// model schedule the thread it is waiting for.
#[cfg(not(shmsync_loom))]
#[inline]
#[allow(dead_code)]
pub(crate) fn spin_hint() {
    core::hint::spin_loop();
}

/// A spin-wait hint: under loom, a model yield.
#[cfg(shmsync_loom)]
#[inline]
#[allow(dead_code)]
pub(crate) fn spin_hint() {
    loom::thread::yield_now();
}

/// Orders a preceding SeqCst read-modify-write before a following SeqCst load — the
/// store→load half of a Dekker pairing (semaphore and condvar sleeper counts). Real
/// builds get that order from the SeqCst accesses themselves, so this is nothing there.
/// Loom models SeqCst loads and RMWs only as Acquire/Release (a documented loom
/// limitation that would report false lost wakeups) but models SeqCst fences exactly,
/// so under loom this is a SeqCst fence.
#[cfg(not(shmsync_loom))]
#[inline(always)]
pub(crate) fn loom_seqcst_fence() {}

/// The store→load order under loom: a SeqCst fence.
#[cfg(shmsync_loom)]
#[inline(always)]
pub(crate) fn loom_seqcst_fence() {
    fence(Ordering::SeqCst);
}

/// Gives the CPU away (`sched_yield`); under loom, a model yield.
#[cfg(not(shmsync_loom))]
#[inline]
#[allow(dead_code)]
pub(crate) fn yield_now() {
    std::thread::yield_now();
}

/// Gives the CPU away: under loom, a model yield.
#[cfg(shmsync_loom)]
#[inline]
#[allow(dead_code)]
pub(crate) fn yield_now() {
    loom::thread::yield_now();
}

/// `UnsafeCell` with loom's closure API (`with`/`with_mut`), so loom can check that no
/// two accesses to the cell race.
#[cfg(not(shmsync_loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T: ?Sized>(core::cell::UnsafeCell<T>);

#[cfg(not(shmsync_loom))]
impl<T> UnsafeCell<T> {
    /// Wraps `value`.
    #[inline]
    #[allow(dead_code)]
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }
}

#[cfg(not(shmsync_loom))]
impl<T: ?Sized> UnsafeCell<T> {
    /// Calls `f` with a shared raw pointer to the contents.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a mutable raw pointer to the contents.
    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(shmsync_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// The futex, as the rest of the crate sees it: the real shared futex, or the loom
/// model with a per-address wait queue.
#[cfg(not(shmsync_loom))]
#[allow(unused_imports)]
pub(crate) use crate::futex as futex_impl;
#[cfg(shmsync_loom)]
pub(crate) use loom_futex as futex_impl;

/// A faithful model of the futex for loom.
///
/// The kernel checks the futex word and enqueues the waiter atomically with respect to
/// wakers (under the hash-bucket lock); this model does the same under one loom mutex.
/// A waiter stays queued until a `wake` removes it: a waiter that nobody wakes blocks
/// forever, so loom reports the deadlock of a lost wakeup instead of hiding it (a model
/// that merely yielded would hide it). A timed wait may also time out, which the model
/// explores by yielding once and then giving up if still queued.
#[cfg(shmsync_loom)]
pub mod loom_futex {
    use super::{AtomicU32, Ordering};
    use crate::futex::{Deadline, WaitOutcome};
    use loom::sync::{Condvar, Mutex};

    struct Queue {
        /// (address of the futex word, waiter id), in arrival order.
        waiters: Vec<(usize, u64)>,
        next_id: u64,
    }

    loom::lazy_static! {
        static ref QUEUE: Mutex<Queue> = Mutex::new(Queue { waiters: Vec::new(), next_id: 0 });
        static ref WOKEN: Condvar = Condvar::new();
    }

    /// Model of the real futex wait.
    pub fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitOutcome {
        let addr = word as *const AtomicU32 as usize;
        let mut q = QUEUE.lock().unwrap();
        // SeqCst: the kernel's futex_wait reads the word after a full barrier.
        if word.load(Ordering::SeqCst) != expected {
            return WaitOutcome::ValueChanged;
        }
        let id = q.next_id;
        q.next_id += 1;
        q.waiters.push((addr, id));
        if deadline.is_some() {
            drop(q);
            loom::thread::yield_now();
            let mut q = QUEUE.lock().unwrap();
            if let Some(pos) = q.waiters.iter().position(|&(_, w)| w == id) {
                q.waiters.remove(pos);
                return WaitOutcome::TimedOut;
            }
            return WaitOutcome::Woken;
        }
        loop {
            q = WOKEN.wait(q).unwrap();
            if !q.waiters.iter().any(|&(_, w)| w == id) {
                return WaitOutcome::Woken;
            }
        }
    }

    /// Model of the real futex wake.
    pub fn wake(word: &AtomicU32, n: u32) -> u32 {
        let addr = word as *const AtomicU32 as usize;
        let mut q = QUEUE.lock().unwrap();
        let mut woken = 0;
        while woken < n {
            match q.waiters.iter().position(|&(a, _)| a == addr) {
                Some(pos) => {
                    q.waiters.remove(pos);
                    woken += 1;
                }
                None => break,
            }
        }
        if woken > 0 {
            WOKEN.notify_all();
        }
        woken
    }
}

/// A process-private atomic cell for caches that no cross-process protocol depends on
/// (e.g. the current process's identity). Always `std`'s atomic, never loom's: it must
/// be usable in a `static`, and it is not part of any protocol a model checks.
#[derive(Debug)]
pub(crate) struct ProcessLocalU64(core::sync::atomic::AtomicU64);

impl ProcessLocalU64 {
    /// A cell holding `v`.
    pub(crate) const fn new(v: u64) -> Self {
        Self(core::sync::atomic::AtomicU64::new(v))
    }

    /// Reads the cell.
    #[inline]
    pub(crate) fn get(&self) -> u64 {
        // Acquire: pairs with the Release in `set`, so a reader that sees a key value
        // also sees the values set before it.
        self.0.load(core::sync::atomic::Ordering::Acquire)
    }

    /// Writes the cell.
    #[inline]
    pub(crate) fn set(&self, v: u64) {
        // Release: pairs with the Acquire in `get`.
        self.0.store(v, core::sync::atomic::Ordering::Release)
    }
}

/// Reads a 32-bit word that foreign (C) code updates, such as a field of glibc's
/// `pthread_mutex_t`, with a relaxed atomic load: a torn or racy plain read is avoided,
/// and the value is used for diagnostics only.
///
/// # Safety
///
/// Behavior is undefined if:
/// - `ptr` is not valid for reads of 4 bytes or not 4-byte aligned for the duration of
///   the call.
#[cfg(not(shmsync_loom))]
#[inline]
pub(crate) unsafe fn peek_u32(ptr: *const u32) -> u32 {
    // SAFETY: the caller guarantees `ptr` is valid and aligned for the call. The C code
    // may write the word with plain stores (glibc's `__owner`), so this load can race
    // with them in the language model; an aligned 4-byte load cannot tear on the
    // supported targets, and the value is only displayed, never relied on.
    unsafe { core::sync::atomic::AtomicU32::from_ptr(ptr as *mut u32) }
        .load(core::sync::atomic::Ordering::Relaxed)
}

/// The 32-bit word at `ptr`, which foreign (C) code updates with atomic instructions
/// (such as glibc's mutex lock word), as a std atomic: for the rare repair that must
/// write such a word the way the C code itself would.
///
/// # Safety
///
/// Behavior is undefined if:
/// - `ptr` is not valid for reads and writes of 4 bytes, or not 4-byte aligned, for all
///   of `'a`;
/// - any access to the word during `'a` is not atomic.
#[cfg(not(shmsync_loom))]
#[inline]
pub(crate) unsafe fn foreign_atomic_u32<'a>(ptr: *mut u32) -> &'a core::sync::atomic::AtomicU32 {
    // SAFETY: valid, aligned, and only accessed atomically for 'a (the caller's promise).
    unsafe { core::sync::atomic::AtomicU32::from_ptr(ptr) }
}

/// Copies `words` 64-bit words from `src` — shared memory that other threads or
/// processes may be writing at the same time — into the private buffer `dst`, with one
/// relaxed atomic load per word (a chunked atomic copy, as in portable-atomic's
/// fallback and atomic-memcpy). A concurrent writer can leave the copy a mix of old and
/// new words, but never a torn word and never a data race: the caller validates the
/// copy afterwards (the seqlock's `fence(Acquire)` and sequence re-check) before it
/// interprets the bytes.
///
/// # Safety
///
/// Behavior is undefined if:
/// - `src` is not valid for reads of `words * 8` bytes or is not 8-byte aligned;
/// - `dst` is not valid for writes of `words * 8` bytes, is not 8-byte aligned, or
///   overlaps `src`;
/// - any access to the source words made during the call is not atomic (every writer
///   must use [`atomic_store_words`] or another atomic store).
#[cfg(not(shmsync_loom))]
#[inline]
pub(crate) unsafe fn atomic_load_words(src: *const u64, dst: *mut u64, words: usize) {
    for i in 0..words {
        // SAFETY: `src + i` is in bounds and 8-aligned, and every concurrent access to
        // it is atomic (caller's promise), which is what `from_ptr` requires.
        let word = unsafe { core::sync::atomic::AtomicU64::from_ptr(src.add(i).cast_mut()) };
        // Relaxed: only single-copy atomicity of each word is needed here; the caller
        // orders the whole copy with its own fence (seqlock: `fence(Acquire)` after the
        // copy, pairing with the writer's `fence(Release)` before its stores).
        let w = word.load(core::sync::atomic::Ordering::Relaxed);
        // SAFETY: `dst + i` is in bounds, aligned and private to the caller.
        unsafe { dst.add(i).write(w) };
    }
}

/// Copies `words` 64-bit words from the private buffer `src` into `dst` — shared memory
/// that other threads or processes may be reading at the same time — with one relaxed
/// atomic store per word. The counterpart of [`atomic_load_words`].
///
/// # Safety
///
/// Behavior is undefined if:
/// - `dst` is not valid for writes of `words * 8` bytes or is not 8-byte aligned;
/// - `src` is not valid for reads of `words * 8` initialized bytes, is not 8-byte
///   aligned, or overlaps `dst`;
/// - any access to the destination words made during the call is not atomic (readers
///   must use [`atomic_load_words`] or another atomic load).
#[cfg(not(shmsync_loom))]
#[inline]
pub(crate) unsafe fn atomic_store_words(dst: *mut u64, src: *const u64, words: usize) {
    for i in 0..words {
        // SAFETY: `src + i` is in bounds, aligned, initialized and private.
        let w = unsafe { src.add(i).read() };
        // SAFETY: `dst + i` is in bounds and 8-aligned, and every concurrent access to
        // it is atomic (caller's promise).
        let word = unsafe { core::sync::atomic::AtomicU64::from_ptr(dst.add(i)) };
        // Relaxed: single-copy atomicity per word is all that is needed; the caller
        // orders the stores with its own fences (seqlock: `fence(Release)` before them,
        // a Release store of the sequence after them).
        word.store(w, core::sync::atomic::Ordering::Relaxed);
    }
}

/// The loom counterpart of [`atomic_load_words`] (loom atomics cannot be placed in raw
/// memory, so loom models keep shared words in a slice of them): copies `src.len()`
/// words into `dst`.
///
/// # Safety
///
/// Behavior is undefined if:
/// - `dst` is not valid for writes of `src.len() * 8` bytes or is not 8-byte aligned.
#[cfg(shmsync_loom)]
pub(crate) unsafe fn atomic_load_words(src: &[AtomicU64], dst: *mut u64) {
    for (i, word) in src.iter().enumerate() {
        // Relaxed: as in the std version, the caller's fences order the copy.
        let w = word.load(Ordering::Relaxed);
        // SAFETY: `dst + i` is in bounds, aligned and private (caller's promise).
        unsafe { dst.add(i).write(w) };
    }
}

/// The loom counterpart of [`atomic_store_words`]: stores `words` words from `src` into
/// the first `words` atomics of `dst`.
///
/// # Safety
///
/// Behavior is undefined if:
/// - `src` is not valid for reads of `words * 8` initialized bytes or is not 8-byte
///   aligned.
#[cfg(shmsync_loom)]
pub(crate) unsafe fn atomic_store_words(dst: &[AtomicU64], src: *const u64, words: usize) {
    for (i, word) in dst.iter().take(words).enumerate() {
        // SAFETY: `src + i` is in bounds, aligned and initialized (caller's promise).
        let w = unsafe { src.add(i).read() };
        // Relaxed: as in the std version, the caller's fences order the stores.
        word.store(w, Ordering::Relaxed);
    }
}
