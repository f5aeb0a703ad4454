//! Scenario 2 (and 6): a bounded queue with a mutex and two condvars.

use shmsync::Location;
use shmsync::{Condvar, LockError, MutexGuard, OwnerDiedGuard, Region, RobustMutex};
use std::time::Duration;

use crate::common::{self, Rng};
use crate::harness::*;
use crate::semaphore::permit_scenario;

pub(crate) const QCAP: u64 = 8;

/// A bounded FIFO of item ids. Producers push `produced + 1`; consumers pop and record it
/// under the same lock. Each update is undo-logged: the old indices are saved and
/// `j_valid` set before touching them, cleared after; whoever gets OwnerDied rolls an
/// unfinished update back, so a process killed mid-update neither loses nor duplicates
/// an item. Hence, exactly and always: `head == consumed`, `tail == produced`, the queue
/// holds `consumed + 1 ..= produced` in order, and every consumer pops `consumed + 1`.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub(crate) struct Queue {
    pub(crate) head: u64,
    pub(crate) tail: u64,
    pub(crate) produced: u64,
    pub(crate) consumed: u64,
    pub(crate) buf: [u64; QCAP as usize],
    pub(crate) j_valid: u64,
    pub(crate) j_head: u64,
    pub(crate) j_tail: u64,
    pub(crate) j_produced: u64,
    pub(crate) j_consumed: u64,
    pub(crate) owner_died: u64,
    pub(crate) rollbacks: u64,
}
shmsync::shared_type!(Queue = "chaos.Queue");

impl Queue {
    pub(crate) fn len(&self) -> u64 {
        self.tail.wrapping_sub(self.head)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        let ok = self.head == self.consumed
            && self.tail == self.produced
            && self.tail >= self.head
            && self.len() <= QCAP
            && (self.head..self.tail).all(|k| self.buf[(k % QCAP) as usize] == k + 1);
        if ok {
            Ok(())
        } else {
            Err(format!("queue invariant broken: {self:?}"))
        }
    }

    pub(crate) fn begin(&mut self) {
        let (h, t, p, c) = (self.head, self.tail, self.produced, self.consumed);
        put(&mut self.j_head, h);
        put(&mut self.j_tail, t);
        put(&mut self.j_produced, p);
        put(&mut self.j_consumed, c);
        put(&mut self.j_valid, 1);
    }

    pub(crate) fn commit(&mut self) {
        put(&mut self.j_valid, 0);
    }

    /// After OwnerDied: undo an unfinished update. Idempotent, so a recoverer killed
    /// midway is simply redone by the next.
    pub(crate) fn recover(&mut self) {
        self.owner_died += 1;
        if self.j_valid != 0 {
            let (h, t, p, c) = (self.j_head, self.j_tail, self.j_produced, self.j_consumed);
            put(&mut self.head, h);
            put(&mut self.tail, t);
            put(&mut self.produced, p);
            put(&mut self.consumed, c);
            self.rollbacks += 1;
            put(&mut self.j_valid, 0);
        }
    }
}

pub(crate) struct QueueRefs<'r> {
    pub(crate) m: &'r RobustMutex<Queue>,
    pub(crate) not_empty: &'r Condvar,
    pub(crate) not_full: &'r Condvar,
}

impl<'r> QueueRefs<'r> {
    pub(crate) fn get(region: &'r Region) -> QueueRefs<'r> {
        QueueRefs {
            m: region.get_or_init("queue", Queue::default()).unwrap(),
            not_empty: region.get_or_init("not_empty", ()).unwrap(),
            not_full: region.get_or_init("not_full", ()).unwrap(),
        }
    }

    /// OwnerDied (from a lock or a wait's relock): roll back, check, wake everyone (the
    /// dead owner may have changed the queue without notifying).
    pub(crate) fn recovered(
        &self,
        mut g: OwnerDiedGuard<'r, Queue>,
    ) -> Result<MutexGuard<'r, Queue>, String> {
        g.recover();
        g.check()?;
        let g = g.make_consistent();
        self.not_empty.notify_all();
        self.not_full.notify_all();
        Ok(g)
    }

    pub(crate) fn lock(&self, bound: Duration) -> Result<MutexGuard<'r, Queue>, String> {
        match self.m.lock_timeout(bound) {
            Ok(g) => Ok(g),
            Err(LockError::OwnerDied(g)) => self.recovered(g),
            Err(LockError::TimedOut) => {
                Err(format!("hang: queue lock not acquired within {bound:?}"))
            }
            Err(e) => Err(format!("queue lock: {e:?}")),
        }
    }

    /// Waits on `cv` while `blocked`; `Err` on anything but a clean or OwnerDied relock.
    pub(crate) fn wait_while(
        &self,
        cv: &Condvar,
        mut g: MutexGuard<'r, Queue>,
        blocked: impl Fn(&Queue) -> bool,
    ) -> Result<MutexGuard<'r, Queue>, String> {
        while blocked(&g) {
            g = match cv.wait_timeout(g, CHILD_BOUND) {
                Ok((g, _)) => g,
                Err(LockError::OwnerDied(g)) => self.recovered(g)?,
                Err(e) => return Err(format!("condvar wait: {e:?}")),
            };
        }
        Ok(g)
    }
}

pub(crate) fn producer(args: &[String]) {
    child_setup();
    let region = open_region(&args[0]);
    let mut rng = Rng(args[1].parse().unwrap());
    join_storm(&args[2]);
    let q = QueueRefs::get(&region);
    loop {
        let g = q.lock(CHILD_BOUND).unwrap();
        let mut g = q.wait_while(q.not_full, g, |q| q.len() >= QCAP).unwrap();
        g.check().unwrap();
        let id = g.produced + 1;
        let slot = (g.tail % QCAP) as usize;
        put(&mut g.buf[slot], id);
        g.begin();
        let (t, p) = (g.tail, g.produced);
        put(&mut g.tail, t + 1);
        spin(rng.below(200));
        put(&mut g.produced, p + 1);
        g.commit();
        // Notify before unlocking: a producer killed after unlocking cannot leave an
        // item nobody was told about; one killed before is recovered (with a notify).
        q.not_empty.notify_all();
        drop(g);
        spin(rng.below(2000));
    }
}

pub(crate) fn consumer(args: &[String]) {
    child_setup();
    let region = open_region(&args[0]);
    let mut rng = Rng(args[1].parse().unwrap());
    join_storm(&args[2]);
    let q = QueueRefs::get(&region);
    loop {
        let g = q.lock(CHILD_BOUND).unwrap();
        let mut g = q.wait_while(q.not_empty, g, |q| q.len() == 0).unwrap();
        g.check().unwrap();
        let item = g.buf[(g.head % QCAP) as usize];
        assert_eq!(item, g.consumed + 1, "popped the wrong item: {:?}", *g);
        g.begin();
        let (h, c) = (g.head, g.consumed);
        put(&mut g.head, h + 1);
        spin(rng.below(200));
        put(&mut g.consumed, c + 1);
        g.commit();
        q.not_full.notify_all();
        drop(g);
        spin(rng.below(2000));
    }
}

pub(crate) struct QueueFigures {
    pub(crate) kills: u64,
    pub(crate) produced: u64,
    pub(crate) consumed: u64,
    pub(crate) queued: u64,
    pub(crate) owner_died: u64,
    pub(crate) rollbacks: u64,
    pub(crate) drains: u64,
}

/// Producers and consumers killed at random. Each round: chaos, then every producer is
/// killed and the surviving consumers must drain the queue within `CHECK_BOUND` (their
/// own waits are longer, `CHILD_BOUND`, so only a real wakeup drains it in time), then
/// everyone is killed and the accounting must be exact.
pub(crate) fn queue_scenario(plan: &mut Plan, storm: Option<&Storm>) -> QueueFigures {
    let procs = plan.procs();
    let mut rng = plan.rng();
    let name = common::ShmName::new("chaos-q");
    let loc = Location::parse(name.as_str()).unwrap();
    let region = Region::create(&loc, REGION_SIZE).unwrap();
    let q = QueueRefs::get(&region);
    let mut fig = QueueFigures {
        kills: 0,
        produced: 0,
        consumed: 0,
        queued: 0,
        owner_died: 0,
        rollbacks: 0,
        drains: 0,
    };
    let lock = |plan: &Plan| {
        q.lock(CHECK_BOUND)
            .unwrap_or_else(|e| plan.fail(Some(&region), &e))
    };

    while plan.next_round() {
        let _watchdog = plan.watchdog(&loc);
        let spawn = |role: &'static str, rng: &mut Rng| {
            start_worker(role, &[name.as_str(), &rng.next().to_string()], storm)
        };
        let mut kids: Vec<Worker> = Vec::new();
        for role in ["producer", "consumer"] {
            for _ in 0..procs {
                kids.push(spawn(role, &mut rng));
            }
        }
        let before = lock(plan).consumed;
        std::thread::sleep(Duration::from_millis(5));
        for _ in 0..1 + rng.below(4) {
            std::thread::sleep(rng.micros(10_000));
            let i = rng.index(kids.len());
            kill_worker(plan, Some(&region), &mut kids[i], storm);
            fig.kills += 1;
            kids[i] = spawn(kids[i].role, &mut rng);
        }
        // Drain: no producer left; the consumers must empty the queue.
        for k in kids.iter_mut().filter(|k| k.role == "producer") {
            kill_worker(plan, Some(&region), k, storm);
            fig.kills += 1;
        }
        drop(lock(plan));
        plan.wait_for(
            Some(&region),
            CHECK_BOUND,
            "surviving consumers to drain the queue (a consumer sleeps while items wait)",
            || lock(plan).len() == 0,
        );
        fig.drains += 1;
        for k in kids.iter_mut().filter(|k| k.role == "consumer") {
            kill_worker(plan, Some(&region), k, storm);
            fig.kills += 1;
        }
        let g = lock(plan);
        if let Err(e) = g.check() {
            drop(g);
            plan.fail(Some(&region), &e);
        }
        if g.consumed == before && g.produced == before {
            // Nothing moved this round, which only a dead protocol explains when
            // producers and consumers ran for milliseconds.
            eprintln!(
                "chaos {}: round {} moved no item (slow start?)",
                plan.scenario, plan.round
            );
        }
    }
    let g = lock(plan);
    fig.produced = g.produced;
    fig.consumed = g.consumed;
    fig.queued = g.len();
    fig.owner_died = g.owner_died;
    fig.rollbacks = g.rollbacks;
    assert_eq!(fig.produced, fig.consumed + fig.queued, "accounting");
    drop(g);
    drop(region);
    drop(name);
    assert_no_leftovers();
    fig
}

pub(crate) fn stress_chaos_condvar() {
    let mut plan = Plan::new("condvar", 80);
    let f = queue_scenario(&mut plan, None);
    eprintln!(
        "chaos condvar RESULT: seed {:#x}, {} rounds in {:.1} s, {} kills, produced {} = consumed {} + queued {} \
         (exact), {} OwnerDied recoveries, {} rolled-back updates, {} drains, 0 lost wakeups, 0 hangs",
        plan.seed,
        plan.round,
        plan.elapsed(),
        f.kills,
        f.produced,
        f.consumed,
        f.queued,
        f.owner_died,
        f.rollbacks,
        f.drains
    );
}

pub(crate) fn stress_chaos_signals() {
    let mut plan = Plan::new("signals", 40);
    let storm = Storm::start();
    let f = queue_scenario(&mut plan, Some(&storm));
    let queue_rounds = plan.round;
    let mut plan2 = Plan::with_seed("signals-semaphore", 25, Some(plan.seed));
    let p = permit_scenario(&mut plan2, Some(&storm));
    let sent = storm.sent();
    drop(storm);
    assert!(sent > 0, "the storm sent no signal");
    eprintln!(
        "chaos signals RESULT (SIGUSR1 storm every ~100 us, no SA_RESTART): seed {:#x}, {} s, {} SIGUSR1 sent; \
         queue: {} rounds, {} kills, produced {} = consumed {} + queued {} (exact), {} OwnerDied recoveries, \
         {} rolled-back updates; leased semaphore: {} rounds, {} kills, {} permits reclaimed, {} exact checks; \
         0 errors surfaced, 0 hangs",
        plan.seed,
        plan.elapsed() as u64,
        sent,
        queue_rounds,
        f.kills,
        f.produced,
        f.consumed,
        f.queued,
        f.owner_died,
        f.rollbacks,
        plan2.round,
        p.kills,
        p.reclaimed,
        p.checks
    );
}
