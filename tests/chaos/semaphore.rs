//! Scenario 3: leased semaphore permits, holders killed, reclaim_dead.

use shmsync::Location;
use shmsync::{LeasedSemaphore, Liveness, Region, RobustMutex};

use crate::common::{self, Rng};
use crate::harness::*;

pub(crate) const PERMITS: u32 = 4;

/// Child: two threads acquire permits (timed or try), hold them a moment, and release
/// them — or, now and then, `forget` them (leaked until this process dies and the
/// permit is reclaimed).
pub(crate) fn permit_worker(args: &[String]) {
    child_setup();
    let region = open_region(&args[0]);
    let seed: u64 = args[1].parse().unwrap();
    join_storm(&args[2]);
    let sem = region.get::<LeasedSemaphore>("permits").expect("permits");
    bump(region.get::<RobustMutex<u64>>("ready").unwrap());
    std::thread::scope(|s| {
        for t in 0..2u64 {
            s.spawn(move || {
                let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x9e37_79b9));
                loop {
                    let permit = if rng.below(4) == 0 {
                        match sem.try_acquire() {
                            Ok(p) => Some(p),
                            Err(shmsync::Error::WouldBlock(_)) => None,
                            Err(e) => panic!("try_acquire: {e}"),
                        }
                    } else {
                        match sem.acquire_timeout(rng.micros(3000)) {
                            Ok(p) => Some(p),
                            Err(shmsync::Error::TimedOut(_)) => None,
                            Err(e) => panic!("acquire_timeout: {e}"),
                        }
                    };
                    if let Some(p) = permit {
                        spin(rng.below(3000));
                        if rng.below(64) == 0 {
                            p.forget();
                        } else {
                            release_patiently(p);
                        }
                    }
                    spin(rng.below(500));
                }
            });
        }
    });
}

pub(crate) struct PermitFigures {
    pub(crate) kills: u64,
    pub(crate) reclaimed: u64,
    pub(crate) dead_holders: u64,
    pub(crate) checks: u64,
}

/// Workers killed at random; after each kill `reclaim_dead`. Every round the live
/// workers are frozen (SIGSTOP, none inside the table lock), dead holders reclaimed, and
/// then exactly: value + permits leased to live workers == capacity, and every lease
/// belongs to a live worker. At the end of a round everyone is killed and the value must
/// be back to the capacity.
pub(crate) fn permit_scenario(plan: &mut Plan, storm: Option<&Storm>) -> PermitFigures {
    let procs = plan.procs() + 1;
    let mut rng = plan.rng();
    let name = common::ShmName::new("chaos-sem");
    let loc = Location::parse(name.as_str()).unwrap();
    let region = Region::create(&loc, REGION_SIZE).unwrap();
    let sem = region
        .get_or_init::<LeasedSemaphore>("permits", PERMITS)
        .unwrap();
    let ready = region.get_or_init::<RobustMutex<u64>>("ready", 0).unwrap();
    let mut fig = PermitFigures {
        kills: 0,
        reclaimed: 0,
        dead_holders: 0,
        checks: 0,
    };
    let reclaim = |plan: &Plan, fig: &mut PermitFigures| {
        let r = sem
            .reclaim_dead()
            .unwrap_or_else(|e| plan.fail(Some(&region), &format!("reclaim_dead: {e}")));
        fig.reclaimed += r.permits();
        fig.dead_holders += r.holders.len() as u64;
    };

    while plan.next_round() {
        let _watchdog = plan.watchdog(&loc);
        let spawn = |rng: &mut Rng| {
            start_worker(
                "permit_worker",
                &[name.as_str(), &rng.next().to_string()],
                storm,
            )
        };
        let r0 = read_counter(plan, &region, ready);
        let mut kids: Vec<Worker> = (0..procs).map(|_| spawn(&mut rng)).collect();
        plan.wait_for(Some(&region), CHECK_BOUND, "workers attached", || {
            read_counter(plan, &region, ready) >= r0 + procs as u64
        });
        for _ in 0..1 + rng.below(3) {
            std::thread::sleep(rng.micros(8000));
            let i = rng.index(kids.len());
            kill_worker(plan, Some(&region), &mut kids[i], storm);
            fig.kills += 1;
            reclaim(plan, &mut fig);
            kids[i] = spawn(&mut rng);
        }
        std::thread::sleep(rng.micros(5000));
        // Kill one more and freeze the rest, outside the table lock.
        let i = rng.index(kids.len());
        kill_worker(plan, Some(&region), &mut kids[i], storm);
        fig.kills += 1;
        let live: Vec<i32> = kids
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, k)| k.child.pid())
            .collect();
        let mut frozen = false;
        for _ in 0..1000 {
            for &pid in &live {
                // SAFETY: our own unreaped children.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
            }
            plan.wait_for(Some(&region), CHECK_BOUND, "workers to stop", || {
                // Stopped ('T'), or dead on its own ('Z': reported when it is killed).
                live.iter()
                    .all(|&p| matches!(common::proc_state(p), Some('T' | 'Z') | None))
            });
            if !matches!(
                sem.table_lock().state(),
                shmsync::MutexState::Locked {
                    owner: Liveness::Alive,
                    ..
                }
            ) {
                frozen = true;
                break;
            }
            for &pid in &live {
                // SAFETY: our own unreaped children.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
            std::thread::sleep(rng.micros(200));
        }
        if !frozen {
            plan.fail(
                Some(&region),
                "could not freeze the workers outside the table lock",
            );
        }
        reclaim(plan, &mut fig);
        let leases = sem
            .leases()
            .unwrap_or_else(|e| plan.fail(Some(&region), &format!("leases: {e}")));
        let leased: u64 = leases.iter().map(|l| u64::from(l.permits)).sum();
        let value = u64::from(sem.value());
        let stray: Vec<_> = leases
            .iter()
            .filter(|l| !live.contains(&(l.identity.pid as i32)) || l.liveness != Liveness::Alive)
            .collect();
        if value + leased != u64::from(PERMITS) || !stray.is_empty() {
            plan.fail(
                Some(&region),
                &format!(
                    "value {value} + leased to live workers {leased} != {PERMITS}, or leases of \
                     processes that are not live workers: {stray:?} (all: {leases:?})"
                ),
            );
        }
        fig.checks += 1;
        for &pid in &live {
            // SAFETY: our own unreaped children.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        std::thread::sleep(rng.micros(3000));
        for k in &mut kids {
            if k.child.try_wait().is_none() {
                kill_worker(plan, Some(&region), k, storm);
                fig.kills += 1;
            }
        }
        reclaim(plan, &mut fig);
        let (value, leases) = (sem.value(), sem.leases().unwrap_or_default());
        if value != PERMITS || !leases.is_empty() {
            plan.fail(
                Some(&region),
                &format!("everyone dead and reclaimed, yet value {value} of {PERMITS}, leases {leases:?}"),
            );
        }
    }
    drop(region);
    drop(name);
    assert_no_leftovers();
    fig
}

pub(crate) fn stress_chaos_semaphore() {
    let mut plan = Plan::new("semaphore", 60);
    let f = permit_scenario(&mut plan, None);
    eprintln!(
        "chaos semaphore RESULT: seed {:#x}, {} rounds in {:.1} s, {} kills, {} permits reclaimed from {} dead \
         holders, {} frozen checks value + live leases == {PERMITS} (exact), 0 hangs",
        plan.seed,
        plan.round,
        plan.elapsed(),
        f.kills,
        f.reclaimed,
        f.dead_holders,
        f.checks
    );
}
