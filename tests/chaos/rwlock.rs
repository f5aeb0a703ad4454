//! Scenario 5: reader-writer lock, readers and writers killed mid-operation.

use shmsync::Location;
use shmsync::{Liveness, LockError, Region, RobustMutex, RobustRwLock, RwLockError, WriteError};
use std::time::{Duration, Instant};

use crate::common::{self, Rng};
use crate::harness::*;

/// The rwlock's data: a version, 13 words derived from it, the pid of a writer inside
/// (0 when none), and a checksum over the version and the words.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub(crate) struct RwRec {
    pub(crate) version: u64,
    pub(crate) words: [u64; 13],
    pub(crate) busy: u64,
    pub(crate) check: u64,
}
shmsync::shared_type!(RwRec = "chaos.RwRec", fields: version, words, busy, check);

impl RwRec {
    pub(crate) fn sum(&self) -> u64 {
        let mut h = self.version ^ 0x0bad_5eed;
        for w in &self.words {
            h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    pub(crate) fn valid(&self) -> bool {
        self.check == self.sum()
    }

    /// Writes the next version one store at a time; `stop_after` stops (and returns
    /// false) after that many words, leaving the record torn.
    pub(crate) fn advance(&mut self, writer: u64, stop_after: Option<usize>) -> bool {
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

pub(crate) type RwChaos = RobustRwLock<RwRec>;

/// Child: writes forever. A clean acquisition must find a whole record and no writer
/// inside; after a dead writer (`OwnerDied`) it redoes the update and counts a repair.
/// Now and then stops halfway through a write and SIGKILLs itself.
pub(crate) fn rw_writer(args: &[String]) {
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
pub(crate) fn rw_reader(args: &[String]) {
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

pub(crate) fn stress_chaos_rwlock() {
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
