//! Scenario 1: 100 robust mutexes (glibc's tst-robust8).

use shmsync::{Location, RegionOptions};
use shmsync::{LockError, MutexGuard, Region, RobustMutex};

use crate::common::{self, Rng};
use crate::harness::*;

pub(crate) const MUTEXES: usize = 100;

/// Guarded by each mutex: `a` and `b` move together in two steps (`a += 1`, spin,
/// `b += 1`), so a healthy lock always shows `a == b` and one whose owner died shows
/// `a == b` or `a == b + 1`. The counters record every recovery (by anyone).
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub(crate) struct Pair {
    pub(crate) a: u64,
    pub(crate) b: u64,
    pub(crate) owner_died: u64,
    pub(crate) repairs: u64,
}
shmsync::shared_type!(Pair = "chaos.Pair", fields: a, b, owner_died, repairs);

impl Pair {
    /// The repair after OwnerDied; `Err` if the dead owner left an impossible state.
    pub(crate) fn recover(&mut self) -> Result<(), String> {
        if self.a != self.b && self.a != self.b + 1 {
            return Err(format!("owner died leaving {self:?}"));
        }
        self.owner_died += 1;
        if self.a != self.b {
            self.b = self.a;
            self.repairs += 1;
        }
        Ok(())
    }
}

pub(crate) fn mutex_names() -> impl Iterator<Item = String> {
    (0..MUTEXES).map(|i| format!("m{i}"))
}

/// Child: `threads` threads lock 1–3 random mutexes each (ascending order, randomly by
/// lock / try_lock / lock_timeout), check `a == b`, update the pair in two steps, unlock;
/// forever, until killed.
pub(crate) fn mutex_worker(args: &[String]) {
    child_setup();
    let region = open_region(&args[0]);
    let seed: u64 = args[1].parse().unwrap();
    let threads: u64 = args[2].parse().unwrap();
    let ms: Vec<&RobustMutex<Pair>> = mutex_names()
        .map(|n| region.get::<RobustMutex<Pair>>(&n).expect("mutex"))
        .collect();
    bump(region.get::<RobustMutex<u64>>("ready").unwrap());
    std::thread::scope(|s| {
        for t in 0..threads {
            let ms = &ms;
            s.spawn(move || {
                let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x9e37_79b9));
                loop {
                    let mut picks: Vec<usize> =
                        (0..1 + rng.below(3)).map(|_| rng.index(MUTEXES)).collect();
                    picks.sort_unstable();
                    picks.dedup();
                    let mut held: Vec<MutexGuard<'_, Pair>> = Vec::new();
                    for i in picks {
                        let got = match rng.below(3) {
                            0 => ms[i].lock(),
                            1 => ms[i].try_lock(),
                            _ => ms[i].lock_timeout(rng.micros(2000)),
                        };
                        match got {
                            Ok(g) => {
                                assert_eq!(g.a, g.b, "healthy mutex m{i} shows a != b: {:?}", *g);
                                held.push(g);
                            }
                            Err(LockError::OwnerDied(mut g)) => {
                                g.recover().unwrap_or_else(|e| panic!("m{i}: {e}"));
                                held.push(g.make_consistent());
                            }
                            Err(LockError::WouldBlock | LockError::TimedOut) => {}
                            Err(e) => panic!("m{i}: unexpected {e:?}"),
                        }
                    }
                    for g in &mut held {
                        let (a, b) = (g.a, g.b);
                        put(&mut g.a, a + 1);
                        spin(rng.below(300));
                        put(&mut g.b, b + 1);
                    }
                    drop(held);
                    spin(rng.below(100));
                }
            });
        }
    });
}

pub(crate) fn stress_chaos_mutexes() {
    let mut plan = Plan::new("mutexes", 100);
    let procs = plan.procs();
    let threads = env_u64("SHMSYNC_CHAOS_THREADS").unwrap_or(4).max(1);
    let mut rng = plan.rng();
    let name = common::ShmName::new("chaos-mx");
    let loc = Location::parse(name.as_str()).unwrap();
    let opts = RegionOptions {
        capacity: 128,
        ..RegionOptions::default()
    };
    let region = Region::create_with(&loc, REGION_SIZE, opts).unwrap();
    let ms: Vec<&RobustMutex<Pair>> = mutex_names()
        .map(|n| region.get_or_init(&n, Pair::default()).unwrap())
        .collect();
    let ready = region.get_or_init::<RobustMutex<u64>>("ready", 0).unwrap();
    let (mut kills, mut parent_recoveries) = (0u64, 0u64);

    while plan.next_round() {
        let _watchdog = plan.watchdog(&loc);
        let threads_arg = threads.to_string();
        let spawn = |rng: &mut Rng| {
            let seed = rng.next().to_string();
            start_worker("mutex_worker", &[name.as_str(), &seed, &threads_arg], None)
        };
        let r0 = read_counter(&plan, &region, ready);
        let mut kids: Vec<Worker> = (0..procs).map(|_| spawn(&mut rng)).collect();
        plan.wait_for(Some(&region), CHECK_BOUND, "workers attached", || {
            read_counter(&plan, &region, ready) >= r0 + procs as u64
        });
        // Random kills while the others run (a replacement starts at once), then kill
        // everyone left.
        for _ in 0..1 + rng.below(3) {
            std::thread::sleep(rng.micros(5000));
            let i = rng.index(kids.len());
            kill_worker(&plan, Some(&region), &mut kids[i], None);
            kills += 1;
            kids[i] = spawn(&mut rng);
        }
        std::thread::sleep(rng.micros(5000));
        for k in &mut kids {
            kill_worker(&plan, Some(&region), k, None);
            kills += 1;
        }
        // Every mutex is acquirable: Ok with a == b, or OwnerDied (repaired here).
        for (i, m) in ms.iter().enumerate() {
            match m.lock_timeout(CHECK_BOUND) {
                Ok(g) if g.a == g.b => {}
                Ok(g) => plan.fail(
                    Some(&region),
                    &format!("healthy mutex m{i} shows a != b: {:?}", *g),
                ),
                Err(LockError::OwnerDied(mut g)) => {
                    if let Err(e) = g.recover() {
                        plan.fail(Some(&region), &format!("m{i}: {e}"));
                    }
                    parent_recoveries += 1;
                    drop(g.make_consistent());
                }
                Err(LockError::TimedOut) => plan.fail(
                    Some(&region),
                    &format!("hang: m{i} not acquirable within {CHECK_BOUND:?} after the kills"),
                ),
                Err(e) => plan.fail(Some(&region), &format!("m{i}: {e:?}")),
            }
        }
    }

    let mut total = Pair::default();
    for m in &ms {
        let g = m.lock_timeout(CHECK_BOUND).expect("final lock");
        total.a += g.a;
        total.owner_died += g.owner_died;
        total.repairs += g.repairs;
    }
    eprintln!(
        "chaos mutexes RESULT: seed {:#x}, {} rounds in {:.1} s, {} processes x {} threads, {} kills, \
         {} critical sections, {} OwnerDied recoveries ({} by the checker), {} repairs (a != b), \
         0 healthy locks with a != b, 0 hangs",
        plan.seed,
        plan.round,
        plan.elapsed(),
        procs,
        threads,
        kills,
        total.a,
        total.owner_died,
        parent_recoveries,
        total.repairs
    );
    drop(ms);
    drop(region);
    drop(name);
    assert_no_leftovers();
}
