//! Scenario 5: racing region creation with a process killed during initialization.

use shmsync::{Condvar, LockError, Region, RobustMutex};
use shmsync::{Location, RegionOptions};
use std::time::{Duration, Instant};

use crate::common::{self, Rng};
use crate::harness::*;
use crate::mutexes::Pair;

/// The objects every racer creates or attaches, in a per-racer random order.
pub(crate) const RACE_OBJECTS: [&str; 3] = ["pair", "cv", "count"];

/// Child: open_or_create the region, get_or_init every object, then one two-step update
/// of the pair under its mutex and one increment of the count.
pub(crate) fn racer(args: &[String]) {
    child_setup();
    let loc = Location::parse(&args[0]).unwrap();
    let mut rng = Rng(args[1].parse().unwrap());
    common::start_at(&args[2]);
    let opts = RegionOptions {
        wait: CHILD_BOUND,
        ..RegionOptions::default()
    };
    let region = Region::open_or_create_with(&loc, REGION_SIZE, opts).expect("open_or_create");
    let mut order = RACE_OBJECTS.to_vec();
    if rng.below(2) == 0 {
        order.reverse();
    }
    for name in order {
        let got = match name {
            "pair" => region
                .get_or_init_with::<RobustMutex<Pair>>(name, Pair::default(), CHILD_BOUND)
                .map(|_| ()),
            "cv" => region
                .get_or_init_with::<Condvar>(name, (), CHILD_BOUND)
                .map(|_| ()),
            _ => region
                .get_or_init_with::<RobustMutex<u64>>(name, 0, CHILD_BOUND)
                .map(|_| ()),
        };
        got.unwrap_or_else(|e| panic!("get_or_init {name}: {e}"));
    }
    let pair = region.get::<RobustMutex<Pair>>("pair").unwrap();
    let mut g = match pair.lock_timeout(CHILD_BOUND) {
        Ok(g) => g,
        Err(LockError::OwnerDied(mut g)) => {
            g.recover().unwrap();
            g.make_consistent()
        }
        Err(e) => panic!("pair: {e}"),
    };
    assert_eq!(g.a, g.b);
    let (a, b) = (g.a, g.b);
    put(&mut g.a, a + 1);
    spin(rng.below(5000));
    put(&mut g.b, b + 1);
    drop(g);
    bump(region.get::<RobustMutex<u64>>("count").unwrap());
}

pub(crate) fn stress_chaos_region() {
    let mut plan = Plan::new("region", 60);
    let racers = plan.procs() * 2;
    let mut rng = plan.rng();
    let (mut failpoint_kills, mut random_kills, mut late_kills, mut finished) = (0u64, 0, 0, 0);
    while plan.next_round() {
        let name = common::ShmName::new("chaos-rg");
        let loc = Location::parse(name.as_str()).unwrap();
        let _watchdog = plan.watchdog(&loc);
        let at = common::start_time_in(Duration::from_millis(30));
        // One racer (most rounds) stops at a failpoint if it gets there; one other is
        // killed at a random moment around the start.
        let fp_racer = (rng.below(4) != 0).then(|| rng.index(racers));
        let fp = ["region-init", "object-init"][rng.index(2)];
        let victim = (rng.index(racers - 1) + 1 + fp_racer.unwrap_or(0)) % racers;
        let marker = common::TempPath::new("fp");
        let mut kids: Vec<common::Child> = (0..racers)
            .map(|i| {
                let seed = rng.next().to_string();
                let args = [name.as_str(), seed.as_str(), at.as_str()];
                if Some(i) == fp_racer {
                    common::spawn_with_env(
                        "racer",
                        &args,
                        &[
                            ("SHMSYNC_TEST_FAILPOINT", fp),
                            ("SHMSYNC_TEST_FAILPOINT_MARKER", marker.as_str()),
                        ],
                    )
                } else {
                    common::spawn("racer", &args)
                }
            })
            .collect();
        let mut killed = vec![false; racers];
        common::start_at(&at);
        std::thread::sleep(rng.micros(2000));
        if kids[victim].try_wait().is_none() {
            kids[victim].kill();
            random_kills += 1;
            killed[victim] = true;
        } else {
            late_kills += 1;
        }
        if let Some(i) = fp_racer {
            // It either reaches the failpoint (it was the initializer) or finishes.
            plan.wait_for(
                None,
                CHECK_BOUND,
                "the failpoint racer to stop or finish",
                || marker.path().exists() || kids[i].try_wait().is_some(),
            );
            if marker.path().exists() {
                kids[i].kill();
                failpoint_kills += 1;
                killed[i] = true;
            }
        }
        let (mut ok, mut unfinished) = (0u64, 0u64);
        for (i, k) in kids.iter_mut().enumerate() {
            // Longer than the racers' own bounds, so a stuck racer reports its error.
            let bound = CHILD_BOUND + CHECK_BOUND;
            let start = Instant::now();
            let status = loop {
                if let Some(st) = k.try_wait() {
                    break st;
                }
                if start.elapsed() > bound {
                    let wchan = std::fs::read_to_string(format!("/proc/{}/wchan", k.pid()))
                        .unwrap_or_default();
                    let region = Region::open_with(
                        &loc,
                        RegionOptions {
                            initialize: false,
                            wait: Duration::from_millis(100),
                            ..RegionOptions::default()
                        },
                    );
                    plan.fail(
                        region.as_ref().ok(),
                        &format!("hang: racer {i} (pid {}, wchan {wchan:?}) still running after {bound:?}", k.pid()),
                    );
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            if killed[i] {
                // Killed (or it finished just before the signal landed).
                if status.success() {
                    ok += 1;
                } else {
                    unfinished += 1;
                }
                continue;
            }
            if !status.success() {
                let region = Region::open_with(
                    &loc,
                    RegionOptions {
                        initialize: false,
                        wait: Duration::from_millis(100),
                        ..RegionOptions::default()
                    },
                );
                plan.fail(
                    region.as_ref().ok(),
                    &format!("surviving racer {i} failed: {status:?}"),
                );
            }
            ok += 1;
        }
        finished += ok;
        // One READY region with each object exactly once, and consistent objects.
        let region = Region::open(&loc).unwrap_or_else(|e| plan.fail(None, &format!("open: {e}")));
        if !region.is_ready() {
            plan.fail(Some(&region), "region not READY");
        }
        let mut names: Vec<String> = region
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort();
        let mut expected: Vec<String> = RACE_OBJECTS.iter().map(|s| s.to_string()).collect();
        expected.sort();
        if names != expected {
            plan.fail(
                Some(&region),
                &format!("objects {names:?}, expected {expected:?}"),
            );
        }
        let (claim, liveness) = region.claim_holder();
        if claim != 0 && liveness != shmsync::Liveness::Dead {
            plan.fail(
                Some(&region),
                "table claim held by a live process after the race",
            );
        }
        region.get::<Condvar>("cv").unwrap();
        let count = match region
            .get::<RobustMutex<u64>>("count")
            .unwrap()
            .lock_timeout(CHECK_BOUND)
        {
            Ok(g) => *g,
            Err(LockError::OwnerDied(g)) => *g.make_consistent(),
            Err(e) => plan.fail(Some(&region), &format!("count lock: {e:?}")),
        };
        let pair = region.get::<RobustMutex<Pair>>("pair").unwrap();
        let a = match pair.lock_timeout(CHECK_BOUND) {
            Ok(g) if g.a == g.b => g.a,
            Err(LockError::OwnerDied(mut g)) => {
                g.recover().unwrap_or_else(|e| plan.fail(None, &e));
                g.make_consistent().a
            }
            other => plan.fail(Some(&region), &format!("pair: {:?}", other.map(|g| *g))),
        };
        // Racers that finished updated both; a killed one may have done either, both or
        // neither.
        let killed_n = unfinished;
        if a < ok || a > ok + killed_n || count < ok || count > ok + killed_n {
            plan.fail(
                Some(&region),
                &format!(
                    "{ok} racers finished, {killed_n} killed, but pair.a = {a}, count = {count}"
                ),
            );
        }
        drop(region);
    }
    eprintln!(
        "chaos region RESULT: seed {:#x}, {} rounds in {:.1} s, {} racers per round, {} killed at a failpoint \
         (region-init/object-init), {} killed at random, {} random kills too late, {} racers finished, \
         always one READY region with each object once, 0 hangs",
        plan.seed,
        plan.round,
        plan.elapsed(),
        racers,
        failpoint_kills,
        random_kills,
        late_kills,
        finished
    );
    assert_no_leftovers();
}
