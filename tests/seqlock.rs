//! `SeqLock<T>` across real processes: readers against a busy writer (no torn read in
//! 10^6), writers killed mid-write (deterministically and at random), payload sizes
//! and alignments, bad memory, and several writer processes.
//!
//! Every value written carries its own check: word `i` is `n·K + i` and the last word
//! is a checksum of the others, so a reader that returned a mix of two writes fails.
#![cfg(not(shmsync_loom))]
#![allow(clippy::disallowed_types)]
mod common;

use std::mem::size_of;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use shmsync::{Error, Kind, MutexState, RawRobustMutex, Segment, SeqLock, SeqLockError};

// ---------------------------------------------------------------------------------
// Self-checking payloads

const K: u64 = 1 << 16;

/// The 72-byte payload of the reader/writer tests: eight pattern words and a checksum.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Small {
    words: [u64; 8],
    check: u64,
}

/// A 4 KiB payload (511 pattern words and a checksum): a write takes long enough for
/// kills to land in the middle of it.
type Big = [u64; 512];

fn checksum(body: &[u64]) -> u64 {
    body.iter().fold(0xcbf2_9ce4_8422_2325, |h, &w| {
        (h ^ w).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Fills `words` with value `n`: pattern words, then their checksum.
fn fill(words: &mut [u64], n: u64) {
    let (last, body) = words.split_last_mut().unwrap();
    for (i, w) in body.iter_mut().enumerate() {
        *w = n.wrapping_mul(K).wrapping_add(i as u64);
    }
    *last = checksum(body);
}

/// The `n` a payload holds; panics on a torn value.
fn verify(words: &[u64]) -> u64 {
    let (last, body) = words.split_last().unwrap();
    let n = body[0] / K;
    let ok = *last == checksum(body)
        && body
            .iter()
            .enumerate()
            .all(|(i, &w)| w == n.wrapping_mul(K).wrapping_add(i as u64));
    assert!(
        ok,
        "torn read: first words {:x?}",
        &words[..words.len().min(4)]
    );
    n
}

fn small(n: u64) -> Small {
    let mut v = Small::zeroed();
    fill(bytemuck::cast_slice_mut(core::slice::from_mut(&mut v)), n);
    v
}

fn small_n(v: &Small) -> u64 {
    verify(bytemuck::cast_slice(core::slice::from_ref(v)))
}

fn big(n: u64) -> Big {
    let mut v = [0u64; 512];
    fill(&mut v, n);
    v
}

// ---------------------------------------------------------------------------------
// Segment layout: a control block for the test at offset 0, the seqlock at 4096.

#[repr(C)]
struct Control {
    stop: AtomicU32,
    ready: AtomicU32,
    /// Reads completed by reader processes.
    reads: AtomicU64,
    /// Version changes reader processes observed.
    changes: AtomicU64,
    /// Writes completed by writer processes.
    writes: AtomicU64,
    /// The last `n` a writer process saw its write of return (committed).
    last: AtomicU64,
}

const LOCK_AT: usize = 4096;

fn seg_len<T>() -> usize {
    (LOCK_AT + size_of::<SeqLock<T>>()).next_multiple_of(4096)
}

fn control(seg: &Segment) -> &Control {
    // SAFETY: offset 0 of a zero-filled shared mapping at least a page long, which
    // outlives the reference; the fields are atomics.
    unsafe { &*common::at::<Control>(seg, 0) }
}

fn create<T: Pod>(name: &common::ShmName, value: T) -> (Segment, &'static SeqLock<T>) {
    let seg = Segment::posix_create(name.as_str(), seg_len::<T>()).unwrap();
    // SAFETY: a fresh, exclusive mapping; the reference is only used while `seg` lives
    // (the tests keep both in the same scope; 'static only spares lifetime plumbing).
    let lock = unsafe { SeqLock::init_at(common::at(&seg, LOCK_AT), value) }.unwrap();
    (seg, lock)
}

/// Opens the segment `name` in a child and attaches the seqlock of `T` in it. The
/// segment is leaked: a child exits (or is killed) with it mapped.
fn open<T: Pod>(name: &str) -> (&'static Control, &'static SeqLock<T>) {
    let seg: &'static Segment = Box::leak(Box::new(Segment::posix_open(name).unwrap()));
    // SAFETY: the parent initialized a seqlock of `T` there before spawning us; the
    // mapping is leaked, so it outlives the references.
    let lock = unsafe { SeqLock::attach(common::at(seg, LOCK_AT)) }.unwrap();
    (control(seg), lock)
}

// ---------------------------------------------------------------------------------
// Child roles

#[test]
fn child_role() {
    common::dispatch(&[
        ("stream_writer", stream_writer),
        ("stream_reader", stream_reader),
        ("partial_writer", partial_writer),
        ("loop_writer", loop_writer),
        ("big_reader", big_reader),
        ("read_once", read_once),
        ("counter_writer", counter_writer),
        ("size_check", size_check),
    ]);
}

/// Publishes n = 1, 2, 3, ... until told to stop.
fn stream_writer(args: &[String]) {
    let (ctl, lock) = open::<Small>(&args[0]);
    let mut n = 0;
    while ctl.stop.load(Ordering::Relaxed) == 0 {
        n += 1;
        lock.store(small(n)).unwrap();
        ctl.writes.store(n, Ordering::Relaxed);
    }
}

/// Reads `args[1]` times, verifying each value and that values never go backwards.
fn stream_reader(args: &[String]) {
    let (ctl, lock) = open::<Small>(&args[0]);
    let quota: u64 = args[1].parse().unwrap();
    common::wait_until(common::WATCHDOG, "the writer's first write", || {
        lock.sequence() > 0
    });
    let (mut prev, mut changes) = (0, 0);
    for _ in 0..quota {
        let (v, version) = lock.read_versioned();
        let n = small_n(&v);
        assert_eq!(
            n, version,
            "a value is published as the version of its write"
        );
        assert!(n >= prev, "went backwards: {prev} then {n}");
        changes += u64::from(n != prev);
        prev = n;
    }
    ctl.reads.fetch_add(quota, Ordering::Relaxed);
    ctl.changes.fetch_add(changes, Ordering::Relaxed);
}

/// Starts writing `big(args[1])`, stores half of its words, reports, and waits to be
/// killed.
fn partial_writer(args: &[String]) {
    let (ctl, lock) = open::<Big>(&args[0]);
    let n: u64 = args[1].parse().unwrap();
    lock.__test_write_partial(big(n), 256).unwrap();
    ctl.ready.store(1, Ordering::Release);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Increments n (read-modify-write) forever, recording each committed n.
fn loop_writer(args: &[String]) {
    let (ctl, lock) = open::<Big>(&args[0]);
    loop {
        let mut n = 0;
        lock.write(|v| {
            n = verify(v) + 1;
            fill(v, n);
        })
        .unwrap();
        ctl.last.store(n, Ordering::Relaxed);
        ctl.writes.fetch_add(1, Ordering::Release);
    }
}

/// Reads until told to stop; each read must finish within 5 s (readers never block on
/// a writer, dead or alive) and be whole and non-decreasing.
fn big_reader(args: &[String]) {
    let (ctl, lock) = open::<Big>(&args[0]);
    let mut prev = 0;
    let mut reads = 0;
    while ctl.stop.load(Ordering::Relaxed) == 0 {
        let v = lock
            .read_timeout(Duration::from_secs(5))
            .expect("a reader was blocked for 5 s");
        let n = verify(&v);
        assert!(n >= prev, "went backwards: {prev} then {n}");
        prev = n;
        reads += 1;
    }
    ctl.reads.fetch_add(reads, Ordering::Relaxed);
}

/// One read attempt must succeed at once and hold n = `args[1]`.
fn read_once(args: &[String]) {
    let (_, lock) = open::<Big>(&args[0]);
    let v = lock
        .try_read()
        .expect("no writer is running: one attempt suffices");
    assert_eq!(verify(&v), args[1].parse::<u64>().unwrap());
}

/// `args[1]` read-modify-write increments.
fn counter_writer(args: &[String]) {
    let (_, lock) = open::<Small>(&args[0]);
    let iters: u64 = args[1].parse().unwrap();
    for _ in 0..iters {
        let outcome = lock
            .write(|v| {
                let n = small_n(v);
                *v = small(n + 1);
            })
            .unwrap();
        assert!(!outcome.repaired);
    }
}

// ---------------------------------------------------------------------------------
// Readers against a busy writer

/// Three reader processes read 10^6 values in total while a writer process publishes
/// as fast as it can: every value passes its checksum, is the one published as the
/// version read with it, and versions never go backwards. (Debug builds take a few
/// seconds; CI also runs this file with `--release`.)
#[test]
fn readers_never_see_a_torn_value() {
    const READERS: u64 = 3;
    const TOTAL: u64 = 1_000_000;
    let name = common::ShmName::new("sl-rw");
    let (seg, lock) = create(&name, small(0));
    let ctl = control(&seg);
    let mut writer = common::spawn("stream_writer", &[name.as_str()]);
    let quota = TOTAL.div_ceil(READERS).to_string();
    let mut readers: Vec<_> = (0..READERS)
        .map(|_| common::spawn("stream_reader", &[name.as_str(), quota.as_str()]))
        .collect();
    for r in &mut readers {
        r.expect_success(Duration::from_secs(120));
    }
    ctl.stop.store(1, Ordering::Relaxed);
    writer.expect_success(common::WATCHDOG);
    let reads = ctl.reads.load(Ordering::Relaxed);
    let changes = ctl.changes.load(Ordering::Relaxed);
    let writes = ctl.writes.load(Ordering::Relaxed);
    eprintln!("{reads} reads saw {changes} version changes; {writes} writes");
    assert!(reads >= TOTAL);
    assert!(
        changes > READERS,
        "readers must have run concurrently with the writer"
    );
    assert_eq!(small_n(&lock.read()), lock.sequence());
    assert_eq!(lock.sequence(), writes);
}

// ---------------------------------------------------------------------------------
// Writers killed mid-write

/// Starts a writer that stops halfway through writing n = 2 over a committed n = 1.
fn half_written(name: &common::ShmName) -> (Segment, &'static SeqLock<Big>) {
    let (seg, lock) = create(name, big(1));
    let mut child = common::spawn("partial_writer", &[name.as_str(), "2"]);
    common::wait_until(common::WATCHDOG, "the partial write", || {
        control(&seg).ready.load(Ordering::Acquire) == 1
    });
    let st = lock.state();
    assert!(st.writing, "{st}");
    assert!(
        matches!(
            st.writer,
            MutexState::Locked {
                owner: shmsync::Liveness::Alive,
                ..
            }
        ),
        "{st}"
    );
    assert!(!st.is_torn(), "a live writer mid-write is not torn: {st}");
    // A reader is not blocked by the write in progress and sees the committed value.
    assert_eq!(verify(&lock.try_read().unwrap()), 1);
    // Writers give up on the live holder's lock without calling their closure.
    let _w = common::Watchdog::new(common::WATCHDOG, "bounded writes against a live writer");
    let short = Duration::from_millis(50);
    let called = std::cell::Cell::new(false);
    assert_eq!(
        lock.try_write(|_| called.set(true)),
        Err(SeqLockError::WouldBlock)
    );
    assert_eq!(
        lock.write_timeout(short, |_| called.set(true)),
        Err(SeqLockError::TimedOut)
    );
    assert_eq!(
        lock.write_deadline(std::time::Instant::now() + short, |_| called.set(true)),
        Err(SeqLockError::TimedOut)
    );
    assert!(!called.get(), "a refused write ran its closure");
    assert_eq!(verify(&lock.read_timeout(short).unwrap()), 1);
    child.kill();
    (seg, lock)
}

/// A writer SIGKILLed halfway through a 4 KiB write (deterministic fail point): readers
/// in this and another process read the last committed value at the first attempt; the
/// next writer is told it repaired, starts from the committed value, and publishes.
#[test]
fn writer_killed_mid_write_next_writer_repairs() {
    let name = common::ShmName::new("sl-kill");
    let (_seg, lock) = half_written(&name);
    let st = lock.state();
    assert_eq!(st.writer, MutexState::OwnerDied, "{st}");
    assert!(st.writing && st.is_torn() && lock.is_torn(), "{st}");
    assert_eq!(st.version, 0);
    assert_eq!(
        verify(
            &lock
                .try_read()
                .expect("readers never wait for a dead writer")
        ),
        1
    );
    common::spawn("read_once", &[name.as_str(), "1"]).expect_success(common::WATCHDOG);

    let _w = common::Watchdog::new(common::WATCHDOG, "write after the writer's death");
    let outcome = lock
        .write(|v| {
            assert_eq!(verify(v), 1, "the writer starts from the committed value");
            fill(v, 3);
        })
        .unwrap();
    assert!(outcome.repaired);
    assert_eq!(outcome.version, 1);
    assert_eq!(verify(&lock.read()), 3);
    let st = lock.state();
    assert!(
        !st.writing && !st.is_torn() && st.writer == MutexState::Free,
        "{st}"
    );
    assert!(!lock.store(big(4)).unwrap().repaired);
    common::spawn("read_once", &[name.as_str(), "4"]).expect_success(common::WATCHDOG);
}

/// The operator's repair after the same death keeps the committed value.
#[test]
fn repair_after_writer_death_keeps_the_committed_value() {
    let name = common::ShmName::new("sl-repair");
    let (_seg, lock) = half_written(&name);
    let deadline = || std::time::Instant::now() + common::WATCHDOG;
    assert_eq!(lock.repair(deadline()), Ok(true));
    assert_eq!(verify(&lock.read()), 1);
    assert_eq!(lock.sequence(), 1, "the committed value was re-published");
    assert!(!lock.is_torn());
    assert_eq!(lock.repair(deadline()), Ok(false), "nothing left to repair");
    assert!(!lock.write(|v| fill(v, 2)).unwrap().repaired);
    assert_eq!(verify(&lock.read()), 2);
}

/// A read-modify-write writer of a 4 KiB value is SIGKILLed at random points, 20
/// times, while three reader processes read: no reader ever waits 5 s or sees a torn
/// or older value; after each kill the last committed value (or the one write that
/// was publishing at the kill) is readable, and the next writer reports a repair
/// exactly when the dead writer held the lock.
#[test]
fn writer_killed_at_random_points() {
    const ROUNDS: u32 = 20;
    let name = common::ShmName::new("sl-rand");
    let (seg, lock) = create(&name, big(0));
    let ctl = control(&seg);
    let mut readers: Vec<_> = (0..3)
        .map(|_| common::spawn("big_reader", &[name.as_str()]))
        .collect();
    let mut rng = common::Rng(u64::from(std::process::id()));
    let (mut torn_rounds, mut held_rounds) = (0, 0);
    for _ in 0..ROUNDS {
        let before = ctl.writes.load(Ordering::Acquire);
        let mut writer = common::spawn("loop_writer", &[name.as_str()]);
        common::wait_until(common::WATCHDOG, "the writer's first write", || {
            ctl.writes.load(Ordering::Acquire) > before
        });
        std::thread::sleep(rng.micros(2999));
        writer.kill();

        let st = lock.state();
        let committed = ctl.last.load(Ordering::Relaxed);
        let n = verify(&lock.read_timeout(common::WATCHDOG).unwrap());
        assert!(
            n == committed || n == committed + 1,
            "committed {committed}, read {n}: a committed value was lost"
        );
        assert_eq!(n, lock.sequence());
        let died_holding = st.writer == MutexState::OwnerDied;
        assert!(died_holding || st.writer == MutexState::Free, "{st}");
        torn_rounds += u32::from(st.is_torn() && st.writing);
        held_rounds += u32::from(died_holding);
        let _w = common::Watchdog::new(common::WATCHDOG, "write after a kill");
        let outcome = lock
            .write(|v| {
                assert_eq!(verify(v), n);
                fill(v, n + 1);
            })
            .unwrap();
        assert_eq!(outcome.repaired, died_holding, "{st}");
        assert!(!lock.is_torn());
        ctl.last.store(n + 1, Ordering::Relaxed);
    }
    ctl.stop.store(1, Ordering::Relaxed);
    for r in &mut readers {
        r.expect_success(common::WATCHDOG);
    }
    eprintln!(
        "{ROUNDS} kills: {held_rounds} while holding the writer lock, {torn_rounds} mid-write; \
         readers made {} reads",
        ctl.reads.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------------
// Several writer processes

/// Three writer processes each increment the value 5000 times with `write` while this
/// process reads: writers serialize (the final count is exact) and every read is whole.
#[test]
fn writer_processes_serialize() {
    const WRITERS: u64 = 3;
    const ITERS: u64 = 5000;
    let name = common::ShmName::new("sl-count");
    let (_seg, lock) = create(&name, small(0));
    let iters = ITERS.to_string();
    let mut writers: Vec<_> = (0..WRITERS)
        .map(|_| common::spawn("counter_writer", &[name.as_str(), iters.as_str()]))
        .collect();
    let mut prev = 0;
    common::wait_until(Duration::from_secs(120), "the writers", || {
        let n = small_n(&lock.read());
        assert!(n >= prev);
        prev = n;
        n == WRITERS * ITERS
    });
    for w in &mut writers {
        w.expect_success(common::WATCHDOG);
    }
    assert_eq!(small_n(&lock.read()), WRITERS * ITERS);
    assert_eq!(lock.sequence(), WRITERS * ITERS);
}

// ---------------------------------------------------------------------------------
// Payload sizes and alignments

/// 32 bytes, 16-aligned.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C, align(16))]
struct Align16 {
    a: [u32; 5],
    b: [u8; 12],
}

/// A `T` with every byte `b`.
fn all_bytes<T: Pod>(b: u8) -> T {
    let mut v = T::zeroed();
    bytemuck::bytes_of_mut(&mut v).fill(b);
    v
}

/// The byte every byte of `v` holds; panics on a torn value.
fn the_byte<T: Pod>(v: &T) -> u8 {
    let bytes = bytemuck::bytes_of(v);
    assert!(bytes.iter().all(|&b| b == bytes[0]), "torn read: {bytes:?}");
    bytes[0]
}

/// In one process: a writer thread and a reader thread race over a `SeqLock<T>`.
fn race_threads<T: Pod + Send>() {
    let seg = Segment::anonymous(size_of::<SeqLock<T>>().next_multiple_of(4096)).unwrap();
    // SAFETY: a fresh, exclusive mapping outliving `lock`.
    let lock = unsafe { SeqLock::init_at(seg.as_ptr().cast(), all_bytes::<T>(0)) }.unwrap();
    assert_eq!(the_byte(&lock.read()), 0);
    const WRITES: u32 = 1000;
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=WRITES {
                lock.store(all_bytes::<T>(i as u8)).unwrap();
            }
        });
        for _ in 0..WRITES {
            the_byte(&lock.read());
        }
    });
    assert_eq!(the_byte(&lock.read()), WRITES as u8);
    assert_eq!(lock.sequence(), u64::from(WRITES));
}

/// In a child: attach a `SeqLock<T>`, expect every byte 7, store every byte 8.
fn size_check_as<T: Pod>(name: &str) {
    let (_, lock) = open::<T>(name);
    assert_eq!(the_byte(&lock.read()), 7);
    lock.store(all_bytes::<T>(8)).unwrap();
}

fn size_check(args: &[String]) {
    let name = args[0].as_str();
    match args[1].as_str() {
        "u8" => size_check_as::<u8>(name),
        "u64" => size_check_as::<u64>(name),
        "64B" => size_check_as::<[u64; 8]>(name),
        "4KiB" => size_check_as::<[u64; 512]>(name),
        "13B" => size_check_as::<[u8; 13]>(name),
        "align16" => size_check_as::<Align16>(name),
        other => panic!("unknown payload {other}"),
    }
}

/// Across processes: this process creates, a child reads and writes, this reads back.
fn across_processes<T: Pod + core::fmt::Debug + PartialEq>(tag: &str) {
    let name = common::ShmName::new("sl-size");
    let (_seg, lock) = create(&name, all_bytes::<T>(7));
    common::spawn("size_check", &[name.as_str(), tag]).expect_success(common::WATCHDOG);
    assert_eq!(lock.read(), all_bytes::<T>(8));
    assert_eq!(lock.sequence(), 1);
}

fn payload<T: Pod + Send + core::fmt::Debug + PartialEq>(tag: &str) {
    race_threads::<T>();
    across_processes::<T>(tag);
}

#[test]
fn payload_of_1_byte() {
    payload::<u8>("u8");
}

#[test]
fn payload_of_8_bytes() {
    payload::<u64>("u64");
}

#[test]
fn payload_of_64_bytes() {
    payload::<[u64; 8]>("64B");
}

#[test]
fn payload_of_4_kib() {
    payload::<[u64; 512]>("4KiB");
}

/// 13 bytes: the copies are padded to two words; the padding never reaches the value.
#[test]
fn payload_of_13_bytes() {
    payload::<[u8; 13]>("13B");
}

/// 16-aligned: the copies are only 8-aligned; readers return a properly aligned value.
#[test]
fn payload_aligned_to_16() {
    assert_eq!(
        (size_of::<Align16>(), core::mem::align_of::<Align16>()),
        (32, 16)
    );
    payload::<Align16>("align16");
}

// ---------------------------------------------------------------------------------
// Bad memory

fn scratch() -> Segment {
    Segment::anonymous(4096).unwrap()
}

/// Attaches a `SeqLock<T>` at offset `off` of `seg`.
fn attach_at<T: Pod>(seg: &Segment, off: usize) -> shmsync::Result<&SeqLock<T>> {
    // SAFETY: inside a live 4096-byte mapping that outlives the reference; attach only
    // reads atomically and reports what it finds.
    unsafe { SeqLock::<T>::attach(seg.as_ptr().add(off).cast()) }
}

#[test]
fn attach_rejects_zeroed_memory() {
    let seg = scratch();
    assert!(matches!(
        attach_at::<u64>(&seg, 0),
        Err(Error::Uninitialized {
            expected: Kind::SeqLock
        })
    ));
}

#[test]
fn attach_rejects_bad_magic_and_format() {
    let seg = scratch();
    // SAFETY: fresh, exclusive mapping.
    unsafe { SeqLock::init_at(seg.as_ptr().cast(), 5u64) }.unwrap();
    assert_eq!(attach_at::<u64>(&seg, 0).unwrap().read(), 5);
    // SAFETY: in bounds; no reference to the seqlock is used across these writes.
    unsafe { *seg.as_ptr().add(9) ^= 0xff }; // format word, byte 1 (target arch)
    assert!(matches!(
        attach_at::<u64>(&seg, 0),
        Err(Error::FormatMismatch {
            field: "target arch",
            ..
        })
    ));
    // SAFETY: as above.
    unsafe { *seg.as_ptr() ^= 0xff }; // magic
    assert!(matches!(
        attach_at::<u64>(&seg, 0),
        Err(Error::BadMagic { .. })
    ));
}

#[test]
fn attach_rejects_another_kind_of_object() {
    let seg = scratch();
    // SAFETY: fresh, exclusive mapping.
    unsafe { RawRobustMutex::init_at(seg.as_ptr().cast()) }.unwrap();
    assert!(matches!(
        attach_at::<u64>(&seg, 0),
        Err(Error::WrongKind {
            expected: Kind::SeqLock,
            found: 1
        })
    ));
}

#[test]
fn attach_rejects_another_payload_size() {
    let seg = scratch();
    // SAFETY: fresh, exclusive mapping.
    unsafe { SeqLock::init_at(seg.as_ptr().cast(), 5u64) }.unwrap();
    match attach_at::<[u8; 13]>(&seg, 0) {
        Err(Error::FormatMismatch {
            field,
            expected,
            found,
        }) => {
            assert_eq!((field, expected, found), ("seqlock payload size", 13, 8));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn attach_rejects_a_corrupt_writer_lock() {
    let seg = scratch();
    // SAFETY: fresh, exclusive mapping.
    unsafe { SeqLock::init_at(seg.as_ptr().cast(), 5u64) }.unwrap();
    // SAFETY: in bounds: the writer lock's magic at offset 24.
    unsafe { *seg.as_ptr().add(24) ^= 0xff };
    assert!(matches!(
        attach_at::<u64>(&seg, 0),
        Err(Error::BadMagic { .. })
    ));
}

#[test]
fn attach_and_init_reject_misaligned_pointers() {
    let seg = scratch();
    assert!(matches!(
        attach_at::<u64>(&seg, 4),
        Err(Error::Misaligned { align: 8, .. })
    ));
    // SAFETY: in bounds; refused before anything is written.
    let r = unsafe { SeqLock::init_at(seg.as_ptr().add(4).cast(), 0u64) };
    assert!(matches!(r, Err(Error::Misaligned { .. })));
}

#[test]
fn nested_write_is_an_error_not_a_hang() {
    let seg = scratch();
    // SAFETY: fresh, exclusive mapping outliving `lock`.
    let lock = unsafe { SeqLock::init_at(seg.as_ptr().cast(), 0u64) }.unwrap();
    let _w = common::Watchdog::new(common::WATCHDOG, "nested write");
    let mut inner = None;
    lock.write(|v| {
        inner = Some(lock.write(|w| *w += 1));
        *v += 10;
    })
    .unwrap();
    assert_eq!(
        inner,
        Some(Err(shmsync::SeqLockError::Lock(
            shmsync::RawLockError::Deadlock
        )))
    );
    assert_eq!(lock.read(), 10);
    assert_eq!(lock.sequence(), 1);
}

#[test]
fn panicking_closure_publishes_nothing_and_releases_the_lock() {
    let seg = scratch();
    // SAFETY: fresh, exclusive mapping outliving `lock`.
    let lock = unsafe { SeqLock::init_at(seg.as_ptr().cast(), 1u64) }.unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = lock.write(|v| {
            *v = 99;
            panic!("closure fails");
        });
    }));
    assert!(r.is_err());
    assert_eq!(lock.read(), 1);
    assert_eq!(lock.sequence(), 0);
    assert_eq!(lock.state().writer, MutexState::Free);
    assert!(!lock.store(2).unwrap().repaired);
    assert_eq!(lock.read(), 2);
}

#[test]
fn read_deadline_in_the_past_still_reads_once() {
    let seg = scratch();
    // SAFETY: fresh, exclusive mapping outliving `lock`.
    let lock = unsafe { SeqLock::init_at(seg.as_ptr().cast(), 42u64) }.unwrap();
    assert_eq!(lock.read_deadline(std::time::Instant::now()), Ok(42));
    assert_eq!(lock.try_read(), Ok(42));
}

// ---------------------------------------------------------------------------------
// Measurement (not a benchmark; run with
// `cargo test --release --test seqlock -- --ignored --nocapture measure`)

#[test]
#[ignore = "prints a measurement; run explicitly in release mode"]
fn measure_read_64_bytes_against_pthread_rwlock() {
    use std::hint::black_box;
    use std::time::Instant;
    const N: u32 = 5_000_000;
    let seg = Segment::anonymous(8192).unwrap();
    // SAFETY: fresh, exclusive mapping outliving `lock`.
    let lock = unsafe { SeqLock::init_at(seg.as_ptr().cast(), [7u64; 8]) }.unwrap();
    let rw = common::at::<libc::pthread_rwlock_t>(&seg, 4096);
    let data = common::at::<[u64; 8]>(&seg, 4096 + 64);
    // SAFETY: `rw` is valid, exclusive storage; the attribute object lives for the
    // calls; every return value is checked.
    unsafe {
        let mut attr = core::mem::MaybeUninit::<libc::pthread_rwlockattr_t>::uninit();
        assert_eq!(libc::pthread_rwlockattr_init(attr.as_mut_ptr()), 0);
        assert_eq!(
            libc::pthread_rwlockattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED),
            0
        );
        assert_eq!(libc::pthread_rwlock_init(rw, attr.as_ptr()), 0);
        assert_eq!(libc::pthread_rwlockattr_destroy(attr.as_mut_ptr()), 0);
        data.write([7u64; 8]);
    }
    for round in 0..3 {
        let t = Instant::now();
        for _ in 0..N {
            black_box(black_box(lock).read());
        }
        let seq = t.elapsed().as_nanos() as f64 / f64::from(N);
        let t = Instant::now();
        for _ in 0..N {
            // SAFETY: an initialized pshared rwlock; `data` is only read under it.
            unsafe {
                assert_eq!(libc::pthread_rwlock_rdlock(black_box(rw)), 0);
                black_box(data.read());
                assert_eq!(libc::pthread_rwlock_unlock(rw), 0);
            }
        }
        let rwl = t.elapsed().as_nanos() as f64 / f64::from(N);
        println!(
            "round {round}: SeqLock<[u64; 8]>::read {seq:.1} ns; pthread_rwlock (pshared) \
             rdlock+copy+unlock {rwl:.1} ns; ratio {:.2}",
            rwl / seq
        );
    }
    // SAFETY: initialized above, unlocked, no longer used.
    assert_eq!(unsafe { libc::pthread_rwlock_destroy(rw) }, 0);
}
