//! Reading and recovering a region from outside: the logic behind the `shmsync`
//! operator tool (`list`, `inspect`, `recover`, `remove`), in the library so that tests
//! (and the chaos harness's hang reports) print exactly what the tool prints.
//!
//! Inspection never takes a lock and never writes. Recovery only takes from processes
//! proven dead ([`Liveness::Dead`]); an owner whose liveness is unknown is left alone,
//! and every wait it makes is bounded by [`RecoverOptions::wait`]. Finding regions and
//! verifying a name before removing it is in [`probe`].

use core::fmt;
use std::time::Duration;

pub mod probe;
mod rwlock;
pub use rwlock::RWLOCK_SLOT_COUNTS;

pub use crate::header::{FORMAT, FORMAT_VERSION, MAGIC};
pub use crate::region::EntryInfo;
pub use crate::rwlock::{RawRobustRwLock, ReaderInfo};
pub use crate::seqlock::SeqLockView;

use crate::error::Result;
use crate::kind::Kind;
use crate::process::Liveness;
use crate::raw_mutex::{MutexState, RawRobustMutex};
use crate::region::Region;

/// One object's state as read without locking.
///
/// ```
/// use shmsync::{inspect, RawRobustMutex, Region, Segment};
///
/// let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
/// region.get_or_init::<RawRobustMutex>("lock", ())?;
/// let report = inspect::inspect(&region)?;
/// let lock = &report.reports[0];
/// assert_eq!(lock.entry.name, "lock");
/// assert!(!lock.needs_recovery);
/// println!("{}: {}", lock.entry.name, lock.state);
/// # Ok::<(), shmsync::Error>(())
/// ```
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
///
/// ```
/// use shmsync::{inspect, RawRobustMutex, Region, Segment};
///
/// let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
/// region.get_or_init::<RawRobustMutex>("lock", ())?;
/// let report = inspect::inspect(&region)?;
/// for (key, fact) in &report.reports[0].facts {
///     if let inspect::Fact::Text(text) = fact {
///         println!("{key} = {text}");
///     }
/// }
/// # Ok::<(), shmsync::Error>(())
/// ```
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
    /// One record (e.g. a leased semaphore's table lock).
    Record(Vec<(&'static str, Fact)>),
}

/// The whole region as read without locking.
///
/// ```
/// use shmsync::{inspect, RawRobustMutex, Region, Segment};
///
/// let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
/// region.get_or_init::<RawRobustMutex>("lock", ())?;
/// let report = inspect::inspect(&region)?;
/// assert_eq!(report.objects, 1);
/// assert!(!report.needs_recovery());
/// # Ok::<(), shmsync::Error>(())
/// ```
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

/// How one object (or the region's table claim) came out of [`recover`]. Ordered by
/// severity: a region's outcome is its worst object's.
///
/// ```
/// use shmsync::{inspect, RawRobustMutex, Region, Segment};
///
/// let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
/// region.get_or_init::<RawRobustMutex>("lock", ())?;
/// let recovery = inspect::recover(&region, inspect::RecoverOptions::default())?;
/// assert_eq!(recovery.outcome(), inspect::Outcome::Fine);
/// assert_eq!(inspect::Outcome::NeedsApplication.as_str(), "needs_application");
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Nothing needed recovery.
    Fine,
    /// Something a dead process left was recovered (in a dry run: would be).
    Recovered,
    /// Only the application can finish: an owner-died mutex whose data its next locker
    /// repairs, or a not-recoverable mutex to re-initialize.
    NeedsApplication,
    /// It could not be reached within the bound, or reading it failed: a live process
    /// holds what recovery needs (stopped, or stuck), or the object is corrupt.
    Unreachable,
}

impl Outcome {
    /// `"fine"`, `"recovered"`, `"needs_application"` or `"unreachable"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Fine => "fine",
            Outcome::Recovered => "recovered",
            Outcome::NeedsApplication => "needs_application",
            Outcome::Unreachable => "unreachable",
        }
    }
}

/// A recovery step `recover` took (or, in a dry run, would take), or why it could not.
///
/// ```
/// use shmsync::{inspect, RawRobustMutex, Region, Segment};
///
/// let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
/// region.get_or_init::<RawRobustMutex>("lock", ())?;
/// let recovery = inspect::recover(&region, inspect::RecoverOptions::default())?;
/// for action in recovery.actions() {
///     println!("{}: {} ({})", action.object, action.what, action.outcome.as_str());
/// }
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// The object (or `"<region>"` for the table claim).
    pub object: String,
    /// What was done, or what is left and why.
    pub what: String,
    /// What this step means for the object.
    pub outcome: Outcome,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", escape(&self.object), escape(&self.what))
    }
}

/// One object's result of [`recover`].
///
/// ```
/// use shmsync::{inspect, RawRobustMutex, Region, Segment};
///
/// let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
/// region.get_or_init::<RawRobustMutex>("lock", ())?;
/// let recovery = inspect::recover(&region, inspect::RecoverOptions::default())?;
/// assert_eq!(recovery.objects[0].object, "lock");
/// assert_eq!(recovery.objects[0].outcome, inspect::Outcome::Fine);
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRecovery {
    /// The object's name (`"<region>"` for the table claim).
    pub object: String,
    /// Its kind's name (`"region"` for the table claim).
    pub kind: &'static str,
    /// Its worst outcome.
    pub outcome: Outcome,
    /// The steps, in order.
    pub actions: Vec<Action>,
}

/// Everything [`recover`] did, object by object (every object of the table appears).
///
/// ```
/// use shmsync::{inspect, RawRobustMutex, Region, Segment};
///
/// let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
/// region.get_or_init::<RawRobustMutex>("lock", ())?;
/// let recovery = inspect::recover(&region, inspect::RecoverOptions::default())?;
/// assert_eq!(recovery.count(inspect::Outcome::Fine), 1);
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The table claim first (when anything was done about it), then every object.
    pub objects: Vec<ObjectRecovery>,
}

impl Recovery {
    /// The worst outcome of any object.
    pub fn outcome(&self) -> Outcome {
        self.objects
            .iter()
            .map(|o| o.outcome)
            .max()
            .unwrap_or(Outcome::Fine)
    }

    /// Every step, in order.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.objects.iter().flat_map(|o| &o.actions)
    }

    /// How many objects came out with `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.objects.iter().filter(|o| o.outcome == outcome).count()
    }
}

/// What `recover` may do beyond the always-safe steps, and how long it may wait.
///
/// ```
/// use shmsync::{inspect, RawRobustMutex, Region, Segment};
///
/// let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
/// region.get_or_init::<RawRobustMutex>("lock", ())?;
/// let opts = inspect::RecoverOptions {
///     dry_run: true,
///     ..inspect::RecoverOptions::default()
/// };
/// assert_eq!(opts.wait, inspect::DEFAULT_RECOVER_WAIT);
/// inspect::recover(&region, opts)?;
/// # Ok::<(), shmsync::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RecoverOptions {
    /// Mark owner-died mutexes consistent *without* repairing their data (the data is
    /// accepted as it is). Off by default: repair is the application's job.
    pub mark_consistent: bool,
    /// Only report what would be done.
    pub dry_run: bool,
    /// The longest `recover` waits for any one object (an internal lock held by a live
    /// process); past it the object is reported [`Outcome::Unreachable`].
    pub wait: Duration,
}

/// [`RecoverOptions::wait`] by default.
pub const DEFAULT_RECOVER_WAIT: Duration = Duration::from_secs(1);

impl Default for RecoverOptions {
    fn default() -> Self {
        RecoverOptions {
            mark_consistent: false,
            dry_run: false,
            wait: DEFAULT_RECOVER_WAIT,
        }
    }
}

/// `s` with everything that could act on a terminal escaped: control characters (C0,
/// DEL, C1 — ESC among them) as `\xNN` or `\u{N}`, invisible and bidirectional
/// formatting characters as `\u{N}`, and the backslash itself as `\\`, so an escaped
/// name can never be confused with a raw one. Every byte the tool read from a segment
/// or a directory goes through this before it is printed as text.
///
/// ```
/// assert_eq!(shmsync::inspect::escape("a\x1b[2Kb"), "a\\x1b[2Kb");
/// assert_eq!(shmsync::inspect::escape("ok-name é"), "ok-name é");
/// ```
pub fn escape(s: &str) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x100 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if acts_on_terminal(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether [`escape`] escapes `c`: a control character, or a zero-width,
/// bidirectional-override or similar format character, which changes how a line reads
/// without showing itself.
pub fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c as u32,
            0xad | 0x61c | 0x180e | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x206f
                | 0xfeff | 0xfff9..=0xfffb)
}

/// `"1 lease"`, `"2 leases"`.
pub(crate) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
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
/// `last_owner` is the thread that held an owner-died mutex, when it can be read.
pub fn describe_mutex(
    state: MutexState,
    last_owner: Option<u32>,
) -> (String, bool, Vec<(&'static str, Fact)>) {
    let mut facts = vec![("state", Fact::Text(mutex_state_word(state).into()))];
    let (text, needs) = match state {
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
            let stopped = owner == Liveness::Alive && is_stopped(owner_tid);
            facts.push(("owner_stopped", Fact::Bool(stopped)));
            facts.push(("waiters", Fact::Bool(waiters)));
            facts.push(("inconsistent", Fact::Bool(inconsistent)));
            let mut text = format!("locked by {}", holder(owner_tid, owner_pid, owner));
            if waiters {
                text.push_str(", with waiters");
            }
            if inconsistent {
                text.push_str(", being repaired after an owner died");
            }
            (text, owner == Liveness::Dead)
        }
        MutexState::OwnerDied => {
            if let Some(tid) = last_owner {
                facts.push(("dead_owner_tid", Fact::Int(tid.into())));
            }
            let who = last_owner.map_or(String::new(), |tid| format!(" (thread {tid}, dead)"));
            (format!("owner died{who}; its next locker repairs"), true)
        }
        MutexState::NotRecoverable => (
            "not recoverable: re-initialize it once no process uses it".into(),
            true,
        ),
        MutexState::Free => ("free".into(), false),
        MutexState::Unknown => ("unknown (unsupported libc layout)".into(), false),
    };
    (text, needs, facts)
}

/// `pid P, thread T (alive)`, with `, stopped` for a stopped live thread.
fn holder(tid: u32, pid: Option<u32>, liveness: Liveness) -> String {
    let stopped = if liveness == Liveness::Alive && is_stopped(tid) {
        ", stopped"
    } else {
        ""
    };
    match pid {
        Some(pid) => format!("pid {pid}, thread {tid} ({}{stopped})", liveness.as_str()),
        None => format!("thread {tid} ({}{stopped})", liveness.as_str()),
    }
}

/// Whether thread `tid` is stopped (SIGSTOP, or a debugger): `T` or `t` in the state
/// field of `/proc/<tid>/stat`, which follows the parenthesized command name.
fn is_stopped(tid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{tid}/stat"))
        .ok()
        .and_then(|t| {
            let rest = &t[t.rfind(')')? + 1..];
            Some(rest.trim_start().starts_with(['T', 't']))
        })
        .unwrap_or(false)
}

/// The thread an owner-died mutex last belonged to: glibc keeps it in `__owner` (the
/// int at offset 8 of `pthread_mutex_t`) until the next locker takes the mutex; the
/// kernel's owner-died marking clears only the lock word. `None` when the word holds
/// no thread id (glibc's inconsistent/not-recoverable markers are near `i32::MAX`).
#[cfg(target_env = "gnu")]
fn last_owner_tid(m: &RawRobustMutex) -> Option<u32> {
    // The pthread mutex is the last field of the 8-aligned RawRobustMutex, after its
    // 24-byte header, with no tail padding.
    const INNER: usize =
        core::mem::size_of::<RawRobustMutex>() - core::mem::size_of::<libc::pthread_mutex_t>();
    static_assertions::const_assert!(INNER >= 24 && INNER % 8 == 0);
    let base = (m as *const RawRobustMutex).cast::<u8>();
    // SAFETY: `INNER + 8 .. INNER + 12` lies inside the mutex (the pthread mutex is at
    // least 24 bytes on every glibc target), 4-aligned, in mapped memory `m` borrows.
    let tid = unsafe { crate::sync::peek_u32(base.add(INNER + 8).cast()) };
    (tid != 0 && tid < 0x3fff_ffff).then_some(tid)
}

#[cfg(not(target_env = "gnu"))]
fn last_owner_tid(_: &RawRobustMutex) -> Option<u32> {
    None
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

fn describe_mutex_at(m: &RawRobustMutex) -> (String, bool, Vec<(&'static str, Fact)>) {
    let state = m.state();
    let last = match state {
        MutexState::OwnerDied => last_owner_tid(m),
        _ => None,
    };
    describe_mutex(state, last)
}

fn inspect_object(region: &Region, e: EntryInfo) -> Result<ObjectReport> {
    let (state, needs_recovery, facts) = match e.kind {
        Kind::Mutex => describe_mutex_at(mutex_at(region, &e)?),
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
                format!(
                    "value {value}, {}",
                    plural(sleepers.into(), "sleeper", "sleepers")
                ),
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
                "value {} of {}, {} ({})",
                sem.value(),
                sem.capacity(),
                plural(leases.len() as u64, "lease", "leases"),
                plural(held, "permit", "permits")
            );
            for l in &leases {
                state.push_str(&format!(
                    "; pid {} holds {} ({})",
                    l.identity.pid,
                    l.permits,
                    l.liveness.as_str()
                ));
            }
            let lock = sem.table_lock();
            let (lock_text, lock_dead, lock_facts) = describe_mutex_at(lock);
            if !matches!(lock.state(), MutexState::Free) {
                state.push_str(&format!("; table lock {lock_text}"));
            }
            let mut facts = vec![
                ("value", Fact::Int(sem.value().into())),
                ("capacity", Fact::Int(sem.capacity().into())),
                ("waiters", Fact::Int(sem.waiters().into())),
                ("leases", Fact::List(list)),
            ];
            facts.push(("table_lock", Fact::Record(lock_facts)));
            (state, dead > 0 || lock_dead, facts)
        }),
        Kind::SeqLock => {
            let st = seqlock_at(region, &e)?.state();
            let (writer_text, _, writer_facts) = describe_mutex(st.writer, None);
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
                "torn (readers unaffected; the next writer repairs)"
            } else {
                "stable"
            };
            (
                format!("sequence {}, {word}; writer lock {writer_text}", st.version),
                torn,
                facts,
            )
        }
        Kind::RwLock => rwlock::inspect(region, &e)?,
        other => (format!("{other} (no inspector)"), false, Vec::new()),
    };
    Ok(ObjectReport {
        entry: e,
        state,
        needs_recovery,
        facts,
    })
}

impl ObjectRecovery {
    fn new(object: &str, kind: &'static str) -> ObjectRecovery {
        ObjectRecovery {
            object: object.to_owned(),
            kind,
            outcome: Outcome::Fine,
            actions: Vec::new(),
        }
    }

    /// Records a step; the object's outcome is its worst step's.
    fn step(&mut self, outcome: Outcome, what: String) {
        self.outcome = self.outcome.max(outcome);
        self.actions.push(Action {
            object: self.object.clone(),
            what,
            outcome,
        });
    }
}

/// Reclaims what dead processes left in `region`, object by object, and reports for
/// each what it did, what is left for the application and what it could not reach.
///
/// Always: a table claim held by a dead process is freed; a mutex whose dead owner the
/// kernel never marked is marked owner-died ([`RawRobustMutex::release_dead_owner`]);
/// the permits of dead lease holders are reclaimed; a seqlock whose writer died is
/// repaired; the reader slots of dead readers of a reader-writer lock are freed. With
/// [`RecoverOptions::mark_consistent`]: owner-died mutexes are locked (without
/// waiting) and marked consistent with their data as it is, and so is a reader-writer
/// lock's data that a dead writer left (its write lock is waited for up to the bound).
///
/// Never blocks past [`RecoverOptions::wait`] per object: an internal lock held by a
/// live process (stopped, or stuck) makes that object [`Outcome::Unreachable`], named
/// with the holder, and recovery goes on with the next. An object that cannot be read
/// (corrupt) is reported the same way. Fails if the table itself cannot be read, and
/// with [`crate::Error::ReadOnly`] unless it is a dry run or the region is writable.
///
/// ```
/// use shmsync::inspect::{self, Outcome, RecoverOptions};
/// use shmsync::{RawRobustMutex, Region, Segment};
/// let region = Region::from_segment(Segment::anonymous(1 << 16)?)?;
/// region.get_or_init::<RawRobustMutex>("lock", ())?;
/// let recovery = inspect::recover(&region, RecoverOptions::default())?;
/// assert_eq!(recovery.outcome(), Outcome::Fine);
/// assert_eq!(recovery.objects[0].object, "lock");
/// # Ok::<(), shmsync::Error>(())
/// ```
pub fn recover(region: &Region, opts: RecoverOptions) -> Result<Recovery> {
    if !opts.dry_run {
        region.check_writable("recover")?;
    }
    let mut out = Recovery::default();
    let (claim, liveness) = region.claim_holder();
    if claim != 0 && liveness == Liveness::Dead {
        let pid = claim as u32 & 0x3f_ffff;
        let mut o = ObjectRecovery::new("<region>", Kind::Region.name());
        if opts.dry_run {
            o.step(
                Outcome::Recovered,
                format!("would free the table claim of dead pid {pid}"),
            );
        } else if region.release_dead_claim()?.is_some() {
            o.step(
                Outcome::Recovered,
                format!("freed the table claim of dead pid {pid}"),
            );
        }
        out.objects.push(o);
    }
    for e in region.entries()? {
        let mut o = ObjectRecovery::new(&e.name, e.kind.name());
        if let Err(err) = recover_object(region, &e, opts, &mut o) {
            o.step(Outcome::Unreachable, format!("could not read it: {err}"));
        }
        out.objects.push(o);
    }
    Ok(out)
}

/// `1s`, `500ms`: how a bound is named in messages.
fn shown(d: Duration) -> String {
    format!("{d:?}")
}

fn recover_object(
    region: &Region,
    e: &EntryInfo,
    opts: RecoverOptions,
    o: &mut ObjectRecovery,
) -> Result<()> {
    match e.kind {
        Kind::Mutex => recover_mutex(mutex_at(region, e)?, opts, o),
        Kind::LeasedSemaphore => with_leased!(region, e, |sem| {
            let dead: Vec<_> = sem
                .leases()?
                .into_iter()
                .filter(|l| l.liveness == Liveness::Dead)
                .collect();
            // A table lock a dead process left (marked owner-died by the kernel, or not)
            // is repaired by the reclaim's locking.
            let lock_dead = sem.table_lock().state().owner_dead();
            if dead.is_empty() && !lock_dead {
                return Ok(());
            }
            if opts.dry_run {
                for l in &dead {
                    o.step(
                        Outcome::Recovered,
                        format!(
                            "would reclaim {} of dead pid {}",
                            plural(l.permits.into(), "permit", "permits"),
                            l.identity.pid
                        ),
                    );
                }
                if lock_dead {
                    o.step(
                        Outcome::Recovered,
                        "would repair the table lock its dead holder left".into(),
                    );
                }
                return Ok(());
            }
            match sem.reclaim_dead_timeout(opts.wait) {
                Ok(r) => {
                    for (who, n) in r.holders {
                        o.step(
                            Outcome::Recovered,
                            format!(
                                "reclaimed {} of dead pid {}",
                                plural(n.into(), "permit", "permits"),
                                who.pid
                            ),
                        );
                    }
                    if lock_dead {
                        o.step(
                            Outcome::Recovered,
                            "repaired the table lock its dead holder left".into(),
                        );
                    }
                }
                Err(crate::Error::TimedOut(_)) => {
                    let permits: u64 = dead.iter().map(|l| u64::from(l.permits)).sum();
                    o.step(
                        Outcome::Unreachable,
                        format!(
                            "could not reach the lease table within {}: its lock is {}; \
                             {} of dead holders not reclaimed",
                            shown(opts.wait),
                            describe_mutex_at(sem.table_lock()).0,
                            plural(permits, "permit", "permits")
                        ),
                    );
                }
                Err(err) => o.step(Outcome::Unreachable, format!("could not reclaim: {err}")),
            }
        }),
        Kind::SeqLock => {
            let view = seqlock_at(region, e)?;
            if !view.state().is_torn() {
                return Ok(());
            }
            if opts.dry_run {
                o.step(
                    Outcome::Recovered,
                    "would repair the writer left by a dead process".into(),
                );
                return Ok(());
            }
            match view.recover(std::time::Instant::now() + opts.wait) {
                Ok(true) => o.step(
                    Outcome::Recovered,
                    "repaired: dropped the dead writer's unpublished copy, writer lock consistent"
                        .into(),
                ),
                // Another process repaired it meanwhile.
                Ok(false) => {}
                Err(crate::SeqLockError::TimedOut) => o.step(
                    Outcome::Unreachable,
                    format!(
                        "could not take the writer lock within {}: it is {}",
                        shown(opts.wait),
                        describe_mutex(view.state().writer, None).0
                    ),
                ),
                Err(err) => o.step(Outcome::Unreachable, format!("could not repair: {err}")),
            }
        }
        Kind::RwLock => rwlock::recover(region, e, opts, o)?,
        _ => {}
    }
    Ok(())
}

fn recover_mutex(m: &RawRobustMutex, opts: RecoverOptions, o: &mut ObjectRecovery) {
    let mut state = m.state();
    let mut last_owner = last_owner_tid(m);
    if let MutexState::Locked {
        owner: Liveness::Dead,
        owner_tid,
        ..
    } = state
    {
        if opts.dry_run {
            o.step(
                Outcome::Recovered,
                format!("would mark owner-died (dead thread {owner_tid} never released it)"),
            );
            state = MutexState::OwnerDied;
            last_owner = Some(owner_tid);
        } else if let Some(tid) = m.release_dead_owner() {
            o.step(
                Outcome::Recovered,
                format!("marked owner-died: dead thread {tid} never released it"),
            );
            state = m.state();
            last_owner = Some(tid);
        }
    }
    let who = last_owner.map_or(String::new(), |tid| format!(" (thread {tid})"));
    match state {
        MutexState::OwnerDied if opts.mark_consistent && opts.dry_run => o.step(
            Outcome::Recovered,
            "would mark it consistent, accepting its data as it is".into(),
        ),
        MutexState::OwnerDied if opts.mark_consistent => match m.try_lock() {
            Ok(how) => {
                // SAFETY: this thread holds the lock (just acquired). `make_consistent`
                // fails only with EINVAL: the mutex is then already consistent.
                let consistent =
                    how == crate::Acquired::Clean || unsafe { m.make_consistent() }.is_ok();
                // SAFETY: this thread holds the lock.
                let r = unsafe { m.unlock() };
                if let Err(err) = r {
                    o.step(
                        Outcome::Unreachable,
                        format!("could not unlock it after marking it consistent: {err}"),
                    );
                } else if how == crate::Acquired::OwnerDied && consistent {
                    o.step(
                        Outcome::Recovered,
                        format!("marked consistent with its data as it was; owner{who} died"),
                    );
                }
            }
            // A live process locked it meanwhile: the application is repairing it.
            Err(crate::RawLockError::WouldBlock) => {}
            Err(err) => o.step(
                Outcome::Unreachable,
                format!("could not lock it to mark it consistent: {err}"),
            ),
        },
        MutexState::OwnerDied => o.step(
            Outcome::NeedsApplication,
            format!(
                "owner{who} died: its data is left for the application, whose next lock \
                 repairs it (--mark-consistent accepts the data as it is)"
            ),
        ),
        MutexState::NotRecoverable => o.step(
            Outcome::NeedsApplication,
            "not recoverable: re-initialize it once no process uses it \
             (RawRobustMutex::reinit)"
                .into(),
        ),
        _ => {}
    }
}
