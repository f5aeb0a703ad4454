//! Reading and recovering a region from outside: the logic behind `shmsync inspect` and
//! `shmsync recover`, in the library so that tests (and the chaos harness's hang
//! reports) print exactly what the tool prints.
//!
//! Inspection never takes a lock and never writes. Recovery only takes from processes
//! proven dead ([`Liveness::Dead`]); an owner whose liveness is unknown is left alone.

use core::fmt;

use crate::error::Result;
use crate::header::Kind;
use crate::process::Liveness;
use crate::raw_mutex::{MutexState, RawRobustMutex};
use crate::region::{EntryInfo, Region};

/// One object's state as read without locking.
#[derive(Clone, Debug)]
pub struct ObjectReport {
    /// The table entry.
    pub entry: EntryInfo,
    /// A one-line human description of its state.
    pub state: String,
    /// Whether something here needs recovery (a dead holder, owner died, …).
    pub needs_recovery: bool,
    /// Kind-specific facts as key/value pairs (for `--json`).
    pub facts: Vec<(&'static str, Fact)>,
}

/// A value in [`ObjectReport::facts`].
#[derive(Clone, Debug, PartialEq)]
pub enum Fact {
    /// A number.
    Int(i64),
    /// A flag.
    Bool(bool),
    /// Text.
    Text(String),
    /// A list of records (e.g. leases).
    List(Vec<Vec<(&'static str, Fact)>>),
}

/// The whole region as read without locking.
#[derive(Clone, Debug)]
pub struct RegionReport {
    /// Where it is, if named.
    pub location: Option<String>,
    /// Mapped size.
    pub size: u64,
    /// Published objects / table capacity.
    pub objects: u32,
    /// Table capacity.
    pub capacity: u32,
    /// First free data byte.
    pub used: u64,
    /// Creator's pid and liveness.
    pub creator_pid: u32,
    /// Creator liveness.
    pub creator: Liveness,
    /// A process holding the table claim (pid), and its liveness.
    pub claim: Option<(u32, Liveness)>,
    /// Every object.
    pub reports: Vec<ObjectReport>,
}

impl RegionReport {
    /// Whether anything in the region needs recovery.
    pub fn needs_recovery(&self) -> bool {
        self.claim.is_some_and(|(_, l)| l == Liveness::Dead)
            || self.reports.iter().any(|r| r.needs_recovery)
    }
}

/// A recovery step `recover` took (or, in a dry run, would take).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// The object (or `"<region>"`).
    pub object: String,
    /// What was done.
    pub what: String,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.what)
    }
}

/// What `recover` may do beyond the always-safe steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecoverOptions {
    /// Mark owner-died mutexes consistent *without* repairing their data (the data is
    /// accepted as it is). Off by default: repair is the application's job.
    pub mark_consistent: bool,
    /// Only report what would be done.
    pub dry_run: bool,
}

/// Reads every object of `region` without locking anything.
pub fn inspect(region: &Region) -> Result<RegionReport> {
    let (objects, capacity, used, size) = region.usage();
    let creator = region.creator();
    let (claim_word, claim_liveness) = region.claim_holder();
    // One unreadable object is reported as such; it does not hide the others.
    let reports = region
        .entries()?
        .into_iter()
        .map(|e| {
            inspect_object(region, e.clone()).unwrap_or_else(|err| ObjectReport {
                entry: e,
                state: format!("unreadable: {err}"),
                needs_recovery: true,
                facts: vec![("error", Fact::Text(err.to_string()))],
            })
        })
        .collect();
    Ok(RegionReport {
        location: region.location().map(|l| l.to_string()),
        size,
        objects,
        capacity,
        used,
        creator_pid: creator.pid,
        creator: creator.liveness(),
        claim: (claim_word != 0).then_some((claim_word as u32, claim_liveness)),
        reports,
    })
}

fn mutex_at<'r>(region: &'r Region, e: &EntryInfo) -> Result<&'r RawRobustMutex> {
    check_fits::<RawRobustMutex>(e)?;
    let ptr = region.object_ptr(e)?;
    // SAFETY: the entry was validated by `Region::entries` (in bounds, aligned, no
    // overlap, published READY); every mutex-kind object starts with a RawRobustMutex,
    // whose header `attach` validates. The reference borrows the region.
    unsafe { RawRobustMutex::attach(ptr.cast()) }
}

fn check_fits<T>(e: &EntryInfo) -> Result<()> {
    if e.size < core::mem::size_of::<T>() as u64 || (e.align as usize) < core::mem::align_of::<T>()
    {
        return Err(crate::Error::Corrupt(format!(
            "{} {:?} is too small or under-aligned for its kind",
            e.kind, e.name
        )));
    }
    Ok(())
}

/// Describes a mutex state; `needs_recovery` when a dead process is involved.
pub fn describe_mutex(state: MutexState) -> (String, bool, Vec<(&'static str, Fact)>) {
    let mut facts = vec![("state", Fact::Text(mutex_state_word(state).into()))];
    let needs = match state {
        MutexState::Locked {
            owner_tid,
            owner_pid,
            owner,
            waiters,
            inconsistent,
        } => {
            facts.push(("owner_tid", Fact::Int(owner_tid.into())));
            if let Some(pid) = owner_pid {
                facts.push(("owner_pid", Fact::Int(pid.into())));
            }
            facts.push(("owner", Fact::Text(owner.as_str().into())));
            facts.push(("waiters", Fact::Bool(waiters)));
            facts.push(("inconsistent", Fact::Bool(inconsistent)));
            owner == Liveness::Dead
        }
        MutexState::OwnerDied | MutexState::NotRecoverable => true,
        MutexState::Free | MutexState::Unknown => false,
    };
    (state.to_string(), needs, facts)
}

fn mutex_state_word(state: MutexState) -> &'static str {
    match state {
        MutexState::Free => "free",
        MutexState::Locked { .. } => "locked",
        MutexState::OwnerDied => "owner_died",
        MutexState::NotRecoverable => "not_recoverable",
        MutexState::Unknown => "unknown",
    }
}

/// Slot counts of `LeasedSemaphore<SLOTS>` the tool can read (the count is a type
/// parameter; the header records it, and these are the ones dispatched on).
pub const LEASE_TABLE_SIZES: [usize; 9] = [4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// Runs `$body` with `$sem` bound to the leased semaphore at entry `$e`, whatever its
/// slot count (one of [`LEASE_TABLE_SIZES`]).
macro_rules! with_leased {
    ($region:expr, $e:expr, |$sem:ident| $body:expr) => {{
        let slots = leased_slots($region, $e)?;
        match slots {
            4 => {
                let $sem = $region.attach_entry::<crate::LeasedSemaphore<4>>($e)?;
                $body
            }
            8 => {
                let $sem = $region.attach_entry::<crate::LeasedSemaphore<8>>($e)?;
                $body
            }
            16 => {
                let $sem = $region.attach_entry::<crate::LeasedSemaphore<16>>($e)?;
                $body
            }
            32 => {
                let $sem = $region.attach_entry::<crate::LeasedSemaphore<32>>($e)?;
                $body
            }
            64 => {
                let $sem = $region.attach_entry::<crate::LeasedSemaphore<64>>($e)?;
                $body
            }
            128 => {
                let $sem = $region.attach_entry::<crate::LeasedSemaphore<128>>($e)?;
                $body
            }
            256 => {
                let $sem = $region.attach_entry::<crate::LeasedSemaphore<256>>($e)?;
                $body
            }
            512 => {
                let $sem = $region.attach_entry::<crate::LeasedSemaphore<512>>($e)?;
                $body
            }
            1024 => {
                let $sem = $region.attach_entry::<crate::LeasedSemaphore<1024>>($e)?;
                $body
            }
            other => {
                return Err(crate::Error::Corrupt(format!(
                    "leased semaphore {:?} has {other} lease slots; the tool reads {:?}",
                    $e.name, LEASE_TABLE_SIZES
                )))
            }
        }
    }};
}

/// The slot count recorded in a leased semaphore's header.
fn leased_slots(region: &Region, e: &EntryInfo) -> Result<usize> {
    check_fits::<crate::header::ObjectHeader>(e)?;
    let ptr = region.object_ptr(e)?;
    // SAFETY: the entry is validated, published and at least a header long; the header
    // is all atomics.
    let header = unsafe { &*ptr.cast::<crate::header::ObjectHeader>() };
    header.validate(Kind::LeasedSemaphore)?;
    Ok(header.aux() as usize)
}

fn seqlock_at<'r>(region: &'r Region, e: &EntryInfo) -> Result<&'r crate::seqlock::SeqLockView> {
    check_fits::<crate::seqlock::SeqLockView>(e)?;
    let ptr = region.object_ptr(e)?;
    // SAFETY: the entry is validated (in bounds, aligned, published); every seqlock
    // starts with the T-independent prefix `SeqLockView` describes, which `attach`
    // validates. The reference borrows the region.
    unsafe { crate::seqlock::SeqLockView::attach(ptr.cast()) }
}

fn inspect_object(region: &Region, e: EntryInfo) -> Result<ObjectReport> {
    let (state, needs_recovery, facts) = match e.kind {
        Kind::Mutex => describe_mutex(mutex_at(region, &e)?.state()),
        Kind::Condvar => {
            let cv = region.attach_entry::<crate::Condvar>(&e)?;
            let seq = cv.sequence();
            (
                format!("notification sequence {seq}"),
                false,
                vec![("sequence", Fact::Int(seq.into()))],
            )
        }
        Kind::Semaphore => {
            let sem = region.attach_entry::<crate::Semaphore>(&e)?;
            let (value, sleepers) = (sem.value(), sem.sleepers());
            (
                format!("value {value}, {sleepers} sleeping"),
                false,
                vec![
                    ("value", Fact::Int(value.into())),
                    ("sleepers", Fact::Int(sleepers.into())),
                ],
            )
        }
        Kind::LeasedSemaphore => with_leased!(region, &e, |sem| {
            let leases = sem.leases()?;
            let dead = leases
                .iter()
                .filter(|l| l.liveness == Liveness::Dead)
                .count();
            let held: u64 = leases.iter().map(|l| u64::from(l.permits)).sum();
            let list = leases
                .iter()
                .map(|l| {
                    vec![
                        ("pid", Fact::Int(l.identity.pid.into())),
                        ("permits", Fact::Int(l.permits.into())),
                        ("liveness", Fact::Text(l.liveness.as_str().into())),
                    ]
                })
                .collect();
            let mut state = format!(
                "value {} of {}, {} leases ({} permits)",
                sem.value(),
                sem.capacity(),
                leases.len(),
                held
            );
            for l in &leases {
                state.push_str(&format!(
                    "; pid {} holds {} — {}",
                    l.identity.pid,
                    l.permits,
                    l.liveness.as_str()
                ));
            }
            (
                state,
                dead > 0,
                vec![
                    ("value", Fact::Int(sem.value().into())),
                    ("capacity", Fact::Int(sem.capacity().into())),
                    ("waiters", Fact::Int(sem.waiters().into())),
                    ("leases", Fact::List(list)),
                ],
            )
        }),
        Kind::SeqLock => {
            let st = seqlock_at(region, &e)?.state();
            let (_, _, writer_facts) = describe_mutex(st.writer);
            let torn = st.is_torn();
            let mut facts = vec![
                ("sequence", Fact::Int(st.version as i64)),
                ("torn", Fact::Bool(torn)),
                ("writing", Fact::Bool(st.writing)),
            ];
            facts.extend(writer_facts.into_iter().map(|(k, v)| match k {
                "state" => ("writer", v),
                other => (other, v),
            }));
            let word = if torn {
                "torn (readers unaffected; next writer repairs)"
            } else {
                "stable"
            };
            (
                format!("sequence {}, {word}; writer lock {}", st.version, st.writer),
                torn,
                facts,
            )
        }
        other => (format!("{other} (no inspector)"), false, Vec::new()),
    };
    Ok(ObjectReport {
        entry: e,
        state,
        needs_recovery,
        facts,
    })
}

/// Reclaims what dead processes left in `region`, returning each step taken.
///
/// Always: a table claim held by a dead process is freed; a mutex whose dead owner the
/// kernel never marked is marked owner-died ([`RawRobustMutex::release_dead_owner`]).
/// With [`RecoverOptions::mark_consistent`]: owner-died mutexes are locked and marked
/// consistent with their data as it is.
pub fn recover(region: &Region, opts: RecoverOptions) -> Result<Vec<Action>> {
    if !opts.dry_run {
        region.check_writable("recover")?;
    }
    let mut actions = Vec::new();
    let (claim, liveness) = region.claim_holder();
    if claim != 0 && liveness == Liveness::Dead {
        let pid = claim as u32;
        if opts.dry_run {
            act(
                &mut actions,
                "<region>",
                format!("would free the table claim of dead pid {pid}"),
            );
        } else if region.release_dead_claim()?.is_some() {
            act(
                &mut actions,
                "<region>",
                format!("freed the table claim of dead pid {pid}"),
            );
        }
    }
    for e in region.entries()? {
        if let Err(err) = recover_object(region, &e, opts, &mut actions) {
            act(&mut actions, &e.name, format!("could not recover: {err}"));
        }
    }
    Ok(actions)
}

fn recover_object(
    region: &Region,
    e: &EntryInfo,
    opts: RecoverOptions,
    actions: &mut Vec<Action>,
) -> Result<()> {
    match e.kind {
        Kind::Mutex => recover_mutex(mutex_at(region, e)?, &e.name, opts, actions),
        Kind::LeasedSemaphore => with_leased!(region, e, |sem| {
            if opts.dry_run {
                for l in sem
                    .leases()?
                    .iter()
                    .filter(|l| l.liveness == Liveness::Dead)
                {
                    act(
                        actions,
                        &e.name,
                        format!(
                            "would reclaim {} permits of dead pid {}",
                            l.permits, l.identity.pid
                        ),
                    );
                }
            } else {
                for (who, permits) in sem.reclaim_dead()?.holders {
                    act(
                        actions,
                        &e.name,
                        format!("reclaimed {permits} permits of dead pid {}", who.pid),
                    );
                }
            }
        }),
        Kind::SeqLock => {
            let view = seqlock_at(region, e)?;
            if view.state().is_torn() {
                if opts.dry_run {
                    act(
                        actions,
                        &e.name,
                        "would repair the writer left by a dead process".into(),
                    );
                } else {
                    match view.recover(crate::futex::Deadline::after(std::time::Duration::from_secs(1))) {
                            Ok(true) => act(
                                actions,
                                &e.name,
                                "repaired: dropped the dead writer's unpublished copy, writer lock consistent".into(),
                            ),
                            Ok(false) => {}
                            Err(err) => act(actions, &e.name, format!("could not repair: {err}")),
                        }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn act(actions: &mut Vec<Action>, object: &str, what: String) {
    actions.push(Action {
        object: object.to_owned(),
        what,
    });
}

fn recover_mutex(m: &RawRobustMutex, name: &str, opts: RecoverOptions, actions: &mut Vec<Action>) {
    let mut state = m.state();
    if let MutexState::Locked {
        owner: Liveness::Dead,
        owner_tid,
        ..
    } = state
    {
        if opts.dry_run {
            act(
                actions,
                name,
                format!("would mark owner-died (dead tid {owner_tid} never released it)"),
            );
        } else if let Some(tid) = m.release_dead_owner() {
            act(
                actions,
                name,
                format!("marked owner-died: dead tid {tid} never released it"),
            );
            state = m.state();
        }
    }
    match state {
        MutexState::OwnerDied if opts.mark_consistent && !opts.dry_run => {
            let acquired = m.try_lock();
            if let Ok(how) = acquired {
                // SAFETY: this thread holds the lock (just acquired). `make_consistent`
                // fails only with EINVAL: the mutex is then already consistent.
                let consistent =
                    how == crate::Acquired::Clean || unsafe { m.make_consistent() }.is_ok();
                // SAFETY: this thread holds the lock.
                let r = unsafe { m.unlock() };
                if r != 0 {
                    let err = std::io::Error::from_raw_os_error(r);
                    act(
                        actions,
                        name,
                        format!("could not unlock after repair: {err}"),
                    );
                } else if how == crate::Acquired::OwnerDied && consistent {
                    act(
                        actions,
                        name,
                        "marked consistent with its data as it was".into(),
                    );
                }
            }
        }
        MutexState::OwnerDied => act(
            actions,
            name,
            if opts.dry_run && opts.mark_consistent {
                "would mark consistent with its data as it is".into()
            } else {
                "owner died: left for the application to repair on its next lock \
                 (--mark-consistent accepts the data as it is)"
                    .into()
            },
        ),
        MutexState::NotRecoverable => act(
            actions,
            name,
            "not recoverable: re-initialize it once no process uses it \
             (RawRobustMutex::reinit)"
                .into(),
        ),
        _ => {}
    }
}
