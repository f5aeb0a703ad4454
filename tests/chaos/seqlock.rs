//! Scenario 4: seqlock writers killed mid-write, readers checksum every read.

use shmsync::Location;
use shmsync::{LockError, Region, RobustMutex, SeqLock};
use std::time::Instant;

use crate::common::{self, Rng};
use crate::harness::*;

/// The seqlock's value: a version, 13 words derived from it, and a checksum over all.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub(crate) struct Rec {
    pub(crate) version: u64,
    pub(crate) words: [u64; 13],
    pub(crate) writer: u64,
    pub(crate) check: u64,
}
shmsync::shared_type!(Rec = "chaos.Rec", fields: version, words, writer, check);

impl Rec {
    pub(crate) fn sum(&self) -> u64 {
        let mut h = self.version ^ 0x5eed;
        for w in self.words.iter().chain([&self.writer]) {
            h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    pub(crate) fn next(&mut self, writer: u64) {
        self.version += 1;
        for (i, w) in self.words.iter_mut().enumerate() {
            *w = self.version.wrapping_mul(i as u64 + 3) ^ writer;
        }
        self.writer = writer;
        self.check = self.sum();
    }

    pub(crate) fn valid(&self) -> bool {
        self.check == self.sum()
    }
}

shmsync::shared_type!(ReadStats = "chaos.ReadStats", fields: reads, max_version);

/// Child: writes forever (read-modify-write of the record); now and then stops halfway
/// through a write (`__test_write_partial`) and SIGKILLs itself.
pub(crate) fn seq_writer(args: &[String]) {
    child_setup();
    let region = open_region(&args[0]);
    let mut rng = Rng(args[1].parse().unwrap());
    let seq = region.get::<SeqLock<Rec>>("rec").expect("rec");
    let committed = region.get::<RobustMutex<ReadStats>>("committed").unwrap();
    let me = u64::from(std::process::id());
    loop {
        if rng.below(400) == 0 {
            let mut torn = seq.read();
            torn.next(me);
            torn.check ^= 1;
            let words = rng.index(core::mem::size_of::<Rec>() / 8);
            seq.__test_write_partial(torn, words)
                .expect("partial write");
            // SAFETY: kill(getpid()) is always safe; we die holding the writer lock.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        let mut version = 0;
        let outcome = seq
            .write_timeout(CHILD_BOUND, |r| {
                r.next(me);
                version = r.version;
            })
            .expect("write");
        if outcome.repaired {
            add_stats(committed, 1, version);
        } else {
            add_stats(committed, 0, version);
        }
        spin(rng.below(3000));
    }
}

/// Child: reads forever; every read must pass its checksum and versions never go back.
pub(crate) fn seq_reader(args: &[String]) {
    child_setup();
    let region = open_region(&args[0]);
    let seq = region.get::<SeqLock<Rec>>("rec").expect("rec");
    let stats = region.get::<RobustMutex<ReadStats>>("reads").unwrap();
    bump(region.get::<RobustMutex<u64>>("ready").unwrap());
    let (mut last, mut reads) = (0u64, 0u64);
    loop {
        let r = seq.read_timeout(CHILD_BOUND).expect("read_deadline");
        assert!(r.valid(), "torn read: {r:?}");
        assert!(r.version >= last, "version went back from {last}: {r:?}");
        last = r.version;
        reads += 1;
        if reads % 1024 == 0 {
            add_stats(stats, 1024, last);
        }
    }
}

pub(crate) fn stress_chaos_seqlock() {
    let mut plan = Plan::new("seqlock", 50);
    let procs = plan.procs();
    let mut rng = plan.rng();
    let name = common::ShmName::new("chaos-seq");
    let loc = Location::parse(name.as_str()).unwrap();
    let region = Region::create(&loc, REGION_SIZE).unwrap();
    let mut init = Rec::default();
    init.check = init.sum();
    let seq = region.get_or_init::<SeqLock<Rec>>("rec", init).unwrap();
    // `committed`: writers record each version they published (max) and, in `reads`,
    // how many of their writes repaired a dead writer's leftovers.
    let committed = region
        .get_or_init::<RobustMutex<ReadStats>>("committed", ReadStats::default())
        .unwrap();
    let stats = region
        .get_or_init::<RobustMutex<ReadStats>>("reads", ReadStats::default())
        .unwrap();
    let ready = region.get_or_init::<RobustMutex<u64>>("ready", 0).unwrap();
    let (mut kills, mut self_kills, mut repairs, mut parent_reads) = (0u64, 0u64, 0u64, 0u64);
    let read_stats = |m: &RobustMutex<ReadStats>| match m.lock_timeout(CHECK_BOUND) {
        Ok(g) => *g,
        Err(LockError::OwnerDied(g)) => *g.make_consistent(),
        Err(e) => plan_fail_static(&format!("stats lock: {e:?}")),
    };
    let mut max_seen = 0u64;

    while plan.next_round() {
        let _watchdog = plan.watchdog(&loc);
        let spawn = |role: &'static str, rng: &mut Rng| {
            start_worker(role, &[name.as_str(), &rng.next().to_string()], None)
        };
        let r0 = read_counter(&plan, &region, ready);
        let mut readers: Vec<Worker> = (0..procs).map(|_| spawn("seq_reader", &mut rng)).collect();
        let mut writers: Vec<Worker> = (0..procs).map(|_| spawn("seq_writer", &mut rng)).collect();
        plan.wait_for(Some(&region), CHECK_BOUND, "readers attached", || {
            read_counter(&plan, &region, ready) >= r0 + procs as u64
        });
        let mut check_read = |plan: &Plan, max_seen: &mut u64| {
            let r = seq
                .read_timeout(CHECK_BOUND)
                .unwrap_or_else(|e| plan.fail(Some(&region), &format!("read: {e}")));
            if !r.valid() || r.version < *max_seen {
                plan.fail(
                    Some(&region),
                    &format!("torn or stale read {r:?} (seen {max_seen})"),
                );
            }
            *max_seen = r.version;
            parent_reads += 1;
        };
        for _ in 0..2 + rng.below(4) {
            let until = Instant::now() + rng.micros(6000);
            while Instant::now() < until {
                check_read(&plan, &mut max_seen);
            }
            // Writers that stopped mid-write and killed themselves: replace them.
            for w in &mut writers {
                if w.child.try_wait().is_some() {
                    kill_worker(&plan, Some(&region), w, None);
                    self_kills += 1;
                    *w = spawn("seq_writer", &mut rng);
                }
            }
            let i = rng.index(writers.len());
            kill_worker(&plan, Some(&region), &mut writers[i], None);
            kills += 1;
            writers[i] = spawn("seq_writer", &mut rng);
        }
        std::thread::sleep(rng.micros(3000));
        for w in &mut writers {
            let self_killed = w.child.try_wait().is_some();
            kill_worker(&plan, Some(&region), w, None);
            if self_killed {
                self_kills += 1;
            } else {
                kills += 1;
            }
        }
        // Readers never stalled: they keep reading through the repair.
        match seq.repair(std::time::Instant::now() + CHECK_BOUND) {
            Ok(true) => repairs += 1,
            Ok(false) => {}
            Err(e) => plan.fail(Some(&region), &format!("repair: {e}")),
        }
        if seq.is_torn() {
            plan.fail(Some(&region), "still torn after repair");
        }
        check_read(&plan, &mut max_seen);
        let c = read_stats(committed);
        if max_seen < c.max_version {
            plan.fail(
                Some(&region),
                &format!(
                    "after repair the value is version {max_seen}, but version {} was committed",
                    c.max_version
                ),
            );
        }
        for r in &mut readers {
            kill_worker(&plan, Some(&region), r, None);
        }
    }
    let reads = read_stats(stats);
    let c = read_stats(committed);
    eprintln!(
        "chaos seqlock RESULT: seed {:#x}, {} rounds in {:.1} s, {} writers killed at random, {} killed \
         themselves mid-write (__test_write_partial), {} versions published, {} repairs by the next writer, \
         {} by repair(), {} checksummed reads by reader processes (+{} by the checker), 0 torn reads, 0 hangs",
        plan.seed,
        plan.round,
        plan.elapsed(),
        kills,
        self_kills,
        max_seen,
        c.reads,
        repairs,
        reads.reads,
        parent_reads
    );
    drop(region);
    drop(name);
    assert_no_leftovers();
}
