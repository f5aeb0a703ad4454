//! shmsync in memory the caller mapped itself (memmap2 file mappings, shared by real
//! processes): the example's bounded queue surviving a SIGKILLed lock holder, a Region
//! over a caller-provided mapping (racing initializers, inspect, recovery, not
//! unmapped on drop), and the by-value constructors moved into a mapping.
#![allow(clippy::disallowed_types)]
mod common;
#[path = "../examples/own_memory/queue.rs"]
mod queue;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use memmap2::{Mmap, MmapMut};
use shmsync::{
    Condvar, Error, LeasedSemaphore, LockError, RawLockError, RawRobustMutex, Region, RobustMutex,
    Semaphore, SeqLock,
};
use shmsync::{Location, RegionOptions};

use common::TempPath;
use queue::SharedQueue;

const REGION_SIZE: usize = 1 << 16;
const QUEUE_ITEMS: u64 = 2_000;
const VICTIM_ITEM: u64 = u64::MAX / 3;

#[test]
fn child_role() {
    common::dispatch(&[
        ("queue_victim", queue_victim),
        ("queue_producer", queue_producer),
        ("region_user", region_user),
        ("region_holder", region_holder),
        ("embedded_user", embedded_user),
    ]);
}

/// A marker file next to `path` that a child creates when it has reached the point the
/// parent waits for.
fn marker(path: &str) -> String {
    format!("{path}.reached")
}

fn wait_for_marker(path: &str, child: &mut common::Child) {
    common::wait_until(common::WATCHDOG, "the child to reach its point", || {
        assert!(child.try_wait().is_none(), "the child exited early");
        Path::new(&marker(path)).exists()
    });
    let _ = std::fs::remove_file(marker(path));
}

fn reached(path: &str) {
    std::fs::write(marker(path), b"").unwrap();
}

fn stall_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Opens `path` read-write and maps it shared with memmap2.
fn map_shared(path: &str) -> (File, MmapMut) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: nobody truncates these test files while they are mapped.
    let map = unsafe { MmapMut::map_mut(&file) }.unwrap();
    (file, map)
}

/// Creates `path` zero-filled with `len` bytes and maps it shared.
fn create_mapped(path: &TempPath, len: usize) -> (File, MmapMut) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path.path())
        .unwrap();
    file.set_len(len as u64).unwrap();
    // SAFETY: as in `map_shared`.
    let map = unsafe { MmapMut::map_mut(&file) }.unwrap();
    (file, map)
}

/// A region over the whole of `map`.
fn region_over(map: &mut MmapMut) -> shmsync::Result<Region> {
    // SAFETY: a page-aligned MAP_SHARED file mapping that outlives the region (callers
    // drop the region first), used only as this region.
    unsafe { Region::from_raw_parts(map.as_mut_ptr(), map.len(), RegionOptions::new()) }
}

// ---------------------------------------------------------------- the example's queue

fn queue_victim(args: &[String]) {
    let shared = SharedQueue::open(Path::new(&args[0])).unwrap();
    shared
        .queue()
        .push_and_stall(VICTIM_ITEM, || reached(&args[0]))
        .unwrap();
}

fn queue_producer(args: &[String]) {
    let shared = SharedQueue::open(Path::new(&args[0])).unwrap();
    let base: u64 = args[1].parse().unwrap();
    for i in 0..QUEUE_ITEMS {
        shared.queue().push(base + i).unwrap();
    }
}

#[test]
fn queue_in_a_memmap2_file_survives_a_killed_lock_holder() {
    let path = TempPath::new("own-queue");
    let shared = SharedQueue::create(path.path()).unwrap();
    let mut victim = common::spawn("queue_victim", &[path.as_str()]);
    wait_for_marker(path.as_str(), &mut victim);
    // The victim holds the lock halfway through a push; the producers queue up on it.
    let mut producers: Vec<_> = ["1000000", "2000000"]
        .iter()
        .map(|base| common::spawn("queue_producer", &[path.as_str(), base]))
        .collect();
    assert_eq!(victim.kill().signal(), Some(libc::SIGKILL));

    let mut sum = 0u64;
    for _ in 0..2 * QUEUE_ITEMS {
        let item = shared.queue().pop().unwrap();
        assert_ne!(item, VICTIM_ITEM, "the killed push was delivered");
        sum += item;
    }
    for p in &mut producers {
        p.expect_success(common::WATCHDOG);
    }
    let expected: u64 = (0..QUEUE_ITEMS).map(|i| 3_000_000 + 2 * i).sum();
    assert_eq!(sum, expected, "an item was lost or delivered twice");
    let ring = shared.queue().lock().unwrap();
    assert_eq!(ring.owner_deaths, 1, "exactly one death was repaired");
    assert_eq!(ring.rollbacks, 1, "the half-done push was rolled back");
    assert_eq!(ring.now.len, 0);
    assert_eq!(ring.now.pushed, 2 * QUEUE_ITEMS);
    assert_eq!(ring.now.popped, 2 * QUEUE_ITEMS);
}

#[test]
fn queue_open_refuses_a_file_that_is_not_a_queue() {
    let path = TempPath::new("own-notqueue");
    let (_file, mut map) = create_mapped(&path, std::mem::size_of::<queue::Queue>());
    map.fill(0xa5);
    let err = SharedQueue::open(path.path()).err().expect("refused");
    assert!(err.to_string().contains("not a queue"), "{err}");
    // Another size, or a file others may write, is refused before it is mapped.
    std::fs::write(path.path(), [0u8; 100]).unwrap();
    let err = SharedQueue::open(path.path()).err().expect("refused");
    assert!(err.to_string().contains("100 bytes"), "{err}");
    std::fs::set_permissions(
        path.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let err = SharedQueue::open(path.path()).err().expect("refused");
    assert!(
        err.to_string().contains("not a private regular file"),
        "{err}"
    );
}

// ------------------------------------------------------- a Region over your mapping

fn region_user(args: &[String]) {
    let (_file, mut map) = map_shared(&args[0]);
    common::start_at(&args[1]);
    let region = region_over(&mut map).unwrap();
    let hits = region.get_or_init::<RobustMutex<u64>>("hits", 0).unwrap();
    let sem = region.get_or_init::<Semaphore>("sem", 0).unwrap();
    *hits.lock().unwrap() += 1;
    sem.post().unwrap();
}

fn region_holder(args: &[String]) {
    let (_file, mut map) = map_shared(&args[0]);
    let region = region_over(&mut map).unwrap();
    let hits = region.get::<RobustMutex<u64>>("hits").unwrap();
    let mut guard = hits.lock().unwrap();
    *guard += 100;
    reached(&args[0]);
    stall_forever();
}

#[test]
fn region_over_a_memmap2_mapping_is_shared_inspected_recovered_and_left_mapped() {
    let path = TempPath::new("own-region");
    let (_file, mut map) = create_mapped(&path, REGION_SIZE);
    // Three processes race to initialize the region and its objects in the zero-filled
    // file; the claim word elects one initializer for each.
    let at = common::start_time_in(Duration::from_millis(300));
    let mut users: Vec<_> = (0..3)
        .map(|_| common::spawn("region_user", &[path.as_str(), &at]))
        .collect();
    for u in &mut users {
        u.expect_success(common::WATCHDOG);
    }
    let region = region_over(&mut map).unwrap();
    let entries = region.entries().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!((&*entries[0].name, &*entries[1].name), ("hits", "sem"));
    let hits = region.get_or_init::<RobustMutex<u64>>("hits", 0).unwrap();
    assert_eq!(*hits.lock().unwrap(), 3);
    assert_eq!(region.get::<Semaphore>("sem").unwrap().value(), 3);
    assert!(matches!(
        region.get::<Semaphore>("hits"),
        Err(Error::TypeMismatch { .. })
    ));

    // A process dies holding the lock: the tool's inspection sees it, the next locker
    // repairs it.
    let mut holder = common::spawn("region_holder", &[path.as_str()]);
    wait_for_marker(path.as_str(), &mut holder);
    holder.kill();
    let report = shmsync::inspect::inspect(&region).unwrap();
    assert_eq!(report.objects, 2);
    assert_eq!(report.size, REGION_SIZE as u64);
    assert!(report.location.is_none());
    assert!(report.needs_recovery(), "{:?}", report.reports);
    // The file behind the mapping is a region file: `shmsync inspect PATH` opens it
    // by path, read-only, and sees the same.
    let by_path = Region::open_with(
        &Location::File(path.path().to_owned()),
        RegionOptions::new().read_only(true),
    )
    .unwrap();
    let tool_report = shmsync::inspect::inspect(&by_path).unwrap();
    assert_eq!(tool_report.objects, 2);
    assert!(tool_report.needs_recovery(), "{:?}", tool_report.reports);
    drop(by_path);
    let dry = shmsync::inspect::recover(
        &region,
        shmsync::inspect::RecoverOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(dry.actions().next().is_some(), "recover has nothing to say");
    match hits.lock() {
        Err(LockError::OwnerDied(mut repair)) => {
            assert_eq!(*repair, 103);
            *repair = 3;
            drop(repair.make_consistent());
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(!shmsync::inspect::inspect(&region).unwrap().needs_recovery());

    // Dropping the region leaves the caller's mapping mapped: reading it after the drop
    // would fault if the region had unmapped it.
    drop(region);
    assert_ne!(map[..8], [0u8; 8], "the region header is still there");
    map[REGION_SIZE - 1] = 1;
}

#[test]
fn region_over_a_read_only_mapping_reads_and_refuses_writes() {
    let path = TempPath::new("own-region-ro");
    let (_file, mut map) = create_mapped(&path, REGION_SIZE);
    {
        let region = region_over(&mut map).unwrap();
        region.get_or_init::<Semaphore>("sem", 2).unwrap();
    }
    let file = File::open(path.path()).unwrap();
    // SAFETY: as in `map_shared`.
    let ro = unsafe { Mmap::map(&file) }.unwrap();
    let opts = RegionOptions::new().read_only(true);
    // SAFETY: a page-aligned shared read-only mapping that outlives the region; read
    // only, as `opts` says, so PROT_READ suffices.
    let region = unsafe { Region::from_raw_parts(ro.as_ptr().cast_mut(), ro.len(), opts) }.unwrap();
    assert!(region.is_read_only());
    assert_eq!(region.entries().unwrap().len(), 1);
    assert_eq!(shmsync::inspect::inspect(&region).unwrap().objects, 1);
    match region.get::<Semaphore>("sem") {
        Err(Error::ReadOnly { target, .. }) => assert_eq!(target, "(caller-provided mapping)"),
        other => panic!("expected ReadOnly, got {other:?}"),
    }
}

#[test]
fn region_from_raw_parts_refuses_bad_placement_and_length() {
    let path = TempPath::new("own-region-bad");
    let (_file, mut map) = create_mapped(&path, REGION_SIZE);
    let base = map.as_mut_ptr();
    let opts = RegionOptions::new();
    // SAFETY: refused (misaligned) before anything is read or written.
    let misaligned = unsafe { Region::from_raw_parts(base.wrapping_add(64), 4096, opts) };
    assert!(
        matches!(misaligned, Err(Error::Misaligned { align: 4096, .. })),
        "{misaligned:?}"
    );
    // SAFETY: refused (misaligned) before anything is read or written.
    let seg = unsafe { shmsync::Segment::from_raw_parts(base.wrapping_add(8), 4096) };
    assert!(matches!(seg, Err(Error::Misaligned { .. })), "{seg:?}");
    // SAFETY: refused (null) before anything is read or written.
    let null = unsafe { Region::from_raw_parts(std::ptr::null_mut(), 4096, opts) };
    assert!(matches!(null, Err(Error::InvalidArgument(_))), "{null:?}");
    // SAFETY: refused (empty) before anything is read or written.
    let empty = unsafe { Region::from_raw_parts(base, 0, opts) };
    assert!(matches!(empty, Err(Error::InvalidArgument(_))), "{empty:?}");

    drop(region_over(&mut map).unwrap());
    // Every process must pass the length the region was made with.
    // SAFETY: the first half of the same mapping, which outlives the region.
    let shorter = unsafe { Region::from_raw_parts(base, REGION_SIZE / 2, opts) };
    assert!(matches!(shorter, Err(Error::Corrupt(_))), "{shorter:?}");
}

// ------------------------------------------------------------ by-value constructors

/// Every primitive, built by value and embedded in one `#[repr(C)]` struct.
#[repr(C)]
struct Embedded {
    ready: std::sync::atomic::AtomicU64,
    data: RobustMutex<u64>,
    raw: RawRobustMutex,
    changed: Condvar,
    sem: Semaphore,
    leases: LeasedSemaphore<4>,
    feed: SeqLock<[u64; 2]>,
}

const EMBEDDED_READY: u64 = 0x4f57_4e4d_454d_3031;

fn embedded(map: &MmapMut) -> &Embedded {
    let p = map.as_ptr().cast::<Embedded>();
    // SAFETY: the mapping is page-aligned and long enough (checked by the callers'
    // create/assert); `ready` is an atomic that zero-filled memory makes valid.
    let ready = unsafe { &*std::ptr::addr_of!((*p).ready) };
    // Acquire: pairs with the Release store in the test after the struct was written.
    assert_eq!(
        ready.load(std::sync::atomic::Ordering::Acquire),
        EMBEDDED_READY
    );
    // SAFETY: published (above); each field with a header is validated before use.
    unsafe {
        RobustMutex::attach(std::ptr::addr_of!((*p).data)).unwrap();
        RawRobustMutex::attach(std::ptr::addr_of!((*p).raw)).unwrap();
        LeasedSemaphore::attach(std::ptr::addr_of!((*p).leases)).unwrap();
        SeqLock::attach(std::ptr::addr_of!((*p).feed)).unwrap();
        &*p
    }
}

fn embedded_user(args: &[String]) {
    let (_file, map) = map_shared(&args[0]);
    let e = embedded(&map);
    let mut data = e.data.lock().unwrap();
    *data = 42;
    assert!(e.raw.lock().is_ok());
    e.sem.post().unwrap();
    e.leases.acquire().unwrap().forget();
    e.feed
        .write(|v| {
            v[0] = 7;
            reached(&args[0]);
            stall_forever();
        })
        .unwrap();
}

#[test]
fn by_value_primitives_moved_into_a_mapping_work_across_processes() {
    let value = Embedded {
        ready: std::sync::atomic::AtomicU64::new(0),
        data: RobustMutex::new(1).unwrap(),
        raw: RawRobustMutex::new().unwrap(),
        changed: Condvar::new(),
        sem: Semaphore::new(0),
        leases: LeasedSemaphore::new(2).unwrap(),
        feed: SeqLock::new([1, 1]).unwrap(),
    };
    // Moved twice before its first use: onto the heap, then into the mapping.
    let boxed = Box::new(value);
    let path = TempPath::new("own-embedded");
    let (_file, mut map) = create_mapped(&path, 4096);
    assert!(std::mem::size_of::<Embedded>() <= map.len());
    let p = map.as_mut_ptr().cast::<Embedded>();
    // SAFETY: page-aligned, long enough, not yet used by any process; the primitives
    // were never used, so they may move.
    unsafe { p.write(*boxed) };
    // SAFETY: just written; `ready` is an atomic.
    unsafe { &*std::ptr::addr_of!((*p).ready) }
        .store(EMBEDDED_READY, std::sync::atomic::Ordering::Release);
    let e = embedded(&map);

    let mut user = common::spawn("embedded_user", &[path.as_str()]);
    wait_for_marker(path.as_str(), &mut user);
    user.kill();

    match e.data.lock() {
        Err(LockError::OwnerDied(d)) => {
            assert_eq!(*d, 42);
            drop(d.make_consistent());
        }
        other => panic!("expected OwnerDied on the moved mutex, got {other:?}"),
    }
    assert!(matches!(e.raw.try_lock(), Ok(shmsync::Acquired::OwnerDied)));
    // SAFETY: held by this thread (acquired just above).
    unsafe {
        e.raw.make_consistent().unwrap();
        assert_eq!(e.raw.unlock(), Ok(()));
    }
    assert!(!matches!(
        e.raw.try_lock(),
        Err(RawLockError::NotRecoverable)
    ));
    assert_eq!(e.sem.value(), 1);
    assert_eq!(e.leases.value(), 1);
    assert_eq!(e.leases.reclaim_dead().unwrap().permits(), 1);
    assert_eq!(e.leases.value(), 2);
    assert_eq!(
        e.feed.read(),
        [1, 1],
        "the killed writer's value was published"
    );
    let outcome = e.feed.write(|v| v[1] = 2).unwrap();
    assert!(outcome.repaired, "{outcome:?}");
    assert_eq!(e.feed.read(), [1, 2]);
    // A condvar moved in by value wakes a waiter of another thread.
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            *e.data.lock().unwrap() = 0;
            e.changed.notify_all();
        });
        let guard = e.data.lock().unwrap();
        let (guard, timeout) = e
            .changed
            .wait_timeout_while(guard, common::WATCHDOG, |v| *v != 0)
            .unwrap();
        assert!(!timeout.timed_out());
        assert_eq!(*guard, 0);
    });
}
