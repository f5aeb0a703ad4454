//! The reader-writer lock's entry in [`inspect`](super::inspect) and
//! [`recover`](super::recover): the writer and every registered reader with pid, thread
//! and liveness; recovery reclaims dead readers' slots and reports a dead writer's
//! half-written data for the application (or, with `mark_consistent`, accepts it as
//! it is), and releases a writer mutex whose holder died outside a write.

use super::{describe_mutex_at, plural, Fact, ObjectRecovery, Outcome, RecoverOptions};
use crate::error::{Error, Result};
use crate::futex::Deadline;
use crate::header::ObjectHeader;
use crate::kind::Kind;
use crate::process::Liveness;
use crate::raw_mutex::{MutexState, RawRobustMutex};
use crate::region::{EntryInfo, Region};
use crate::rwlock::{RawRobustRwLock, ReaderInfo, RwLockError};

/// The reader-slot counts the tool reads (a lock with another count is reported as
/// unreadable).
pub const RWLOCK_SLOT_COUNTS: [usize; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// What the tool needs of a lock, whatever its slot count.
trait View {
    fn readers(&self) -> Vec<ReaderInfo>;
    fn writer(&self) -> &RawRobustMutex;
    fn needs_repair(&self) -> bool;
    fn is_not_recoverable(&self) -> bool;
    fn reclaim_dead(&self) -> usize;
    fn reclaimed(&self) -> u64;
    fn accept_as_is(&self, deadline: Deadline) -> core::result::Result<bool, RwLockError>;
    fn pass_through_writer_mutex(
        &self,
        deadline: Deadline,
    ) -> core::result::Result<(), RwLockError>;
}

impl<const N: usize> View for RawRobustRwLock<N> {
    fn readers(&self) -> Vec<ReaderInfo> {
        RawRobustRwLock::readers(self)
    }
    fn writer(&self) -> &RawRobustMutex {
        self.writer_mutex()
    }
    fn needs_repair(&self) -> bool {
        RawRobustRwLock::needs_repair(self)
    }
    fn is_not_recoverable(&self) -> bool {
        RawRobustRwLock::is_not_recoverable(self)
    }
    fn reclaim_dead(&self) -> usize {
        RawRobustRwLock::reclaim_dead(self)
    }
    fn reclaimed(&self) -> u64 {
        RawRobustRwLock::reclaimed(self)
    }
    fn accept_as_is(&self, deadline: Deadline) -> core::result::Result<bool, RwLockError> {
        RawRobustRwLock::accept_as_is(self, deadline)
    }
    fn pass_through_writer_mutex(
        &self,
        deadline: Deadline,
    ) -> core::result::Result<(), RwLockError> {
        RawRobustRwLock::pass_through_writer_mutex(self, Some(deadline))
    }
}

fn attach_as<'r, const N: usize>(ptr: *const u8, e: &EntryInfo) -> Result<&'r dyn View> {
    super::check_fits::<RawRobustRwLock<N>>(e)?;
    // SAFETY: the entry is validated (in bounds, aligned, published READY) and at least
    // a `RawRobustRwLock<N>` long; every rwlock starts with one, whose header (slot
    // count included) `attach` validates. The reference borrows the region.
    Ok(unsafe { RawRobustRwLock::<N>::attach(ptr.cast()) }?)
}

fn view<'r>(region: &'r Region, e: &EntryInfo) -> Result<&'r dyn View> {
    super::check_fits::<ObjectHeader>(e)?;
    let ptr = region.object_ptr(e)?;
    // SAFETY: the entry is validated, published and at least a header long; the header
    // is all atomics.
    let header = unsafe { &*ptr.cast::<ObjectHeader>() };
    header.validate(Kind::RwLock)?;
    match header.aux() {
        1 => attach_as::<1>(ptr, e),
        2 => attach_as::<2>(ptr, e),
        4 => attach_as::<4>(ptr, e),
        8 => attach_as::<8>(ptr, e),
        16 => attach_as::<16>(ptr, e),
        32 => attach_as::<32>(ptr, e),
        64 => attach_as::<64>(ptr, e),
        128 => attach_as::<128>(ptr, e),
        256 => attach_as::<256>(ptr, e),
        512 => attach_as::<512>(ptr, e),
        1024 => attach_as::<1024>(ptr, e),
        other => Err(Error::Corrupt(format!(
            "rwlock {:?} has {other} reader slots; the tool reads {RWLOCK_SLOT_COUNTS:?}",
            e.name
        ))),
    }
}

fn who(r: &ReaderInfo) -> String {
    match r.pid {
        Some(pid) if pid == r.tid => format!("pid {pid}"),
        Some(pid) => format!("pid {pid} (thread {})", r.tid),
        None => format!("thread {}", r.tid),
    }
}

/// State line, needs-recovery flag and facts of an object.
type Described = (String, bool, Vec<(&'static str, Fact)>);

/// State line, needs-recovery flag and facts of the rwlock `e`.
pub(super) fn inspect(region: &Region, e: &EntryInfo) -> Result<Described> {
    let lock = view(region, e)?;
    let readers = lock.readers();
    let (writer_text, writer_dead_now, writer_facts) = describe_mutex_at(lock.writer());
    let needs_repair = lock.needs_repair();
    let not_recoverable = lock.is_not_recoverable();
    let dead = readers
        .iter()
        .filter(|r| r.liveness == Liveness::Dead)
        .count();
    let mut state = format!(
        "writer {writer_text}; {}",
        plural(readers.len() as u64, "reader", "readers")
    );
    for r in &readers {
        state.push_str(&format!("; {} reading ({})", who(r), r.liveness.as_str()));
    }
    if not_recoverable {
        state.push_str("; not recoverable (a repair was abandoned: re-initialize)");
    } else if needs_repair {
        state.push_str("; a writer died mid-write: the next writer repairs the data");
    } else if writer_dead_now {
        state.push_str(
            "; the writer lock's holder died outside a write: the data is whole, the next \
             locker releases it",
        );
    }
    let list = readers
        .iter()
        .map(|r| {
            vec![
                ("slot", Fact::Int(r.slot as i64)),
                (
                    "pid",
                    r.pid
                        .map_or(Fact::Text("unknown".into()), |p| Fact::Int(p.into())),
                ),
                ("thread", Fact::Int(r.tid.into())),
                ("liveness", Fact::Text(r.liveness.as_str().into())),
            ]
        })
        .collect();
    let facts = vec![
        ("writer", Fact::Record(writer_facts)),
        ("readers", Fact::List(list)),
        ("needs_repair", Fact::Bool(needs_repair)),
        ("not_recoverable", Fact::Bool(not_recoverable)),
        ("reclaimed", Fact::Int(lock.reclaimed() as i64)),
    ];
    let needs = dead > 0 || writer_dead_now || needs_repair || not_recoverable;
    Ok((state, needs, facts))
}

/// Reclaims dead readers' slots, marks a dead writer the kernel never marked, and
/// releases a writer lock whose holder died outside a write; reports a repair or a
/// re-initialization as the application's.
pub(super) fn recover(
    region: &Region,
    e: &EntryInfo,
    opts: RecoverOptions,
    o: &mut ObjectRecovery,
) -> Result<()> {
    let lock = view(region, e)?;
    let dead: Vec<_> = lock
        .readers()
        .into_iter()
        .filter(|r| r.liveness == Liveness::Dead)
        .collect();
    if opts.dry_run {
        for r in &dead {
            o.step(
                Outcome::Recovered,
                format!("would reclaim the reader slot of dead {}", who(r)),
            );
        }
    } else if !dead.is_empty() {
        let n = lock.reclaim_dead();
        if n > 0 {
            o.step(
                Outcome::Recovered,
                format!(
                    "reclaimed {} of dead readers",
                    plural(n as u64, "reader slot", "reader slots")
                ),
            );
        }
    }
    let writer = lock.writer();
    if let MutexState::Locked {
        owner: Liveness::Dead,
        owner_tid,
        ..
    } = writer.state()
    {
        // The kernel never marked it (e.g. the owner's robust list was lost): do what
        // it would have done, so the next writer gets OwnerDied instead of hanging.
        // Never `make_consistent` here: the lock's own repair flag must be set by the
        // writer that sees OwnerDied.
        if opts.dry_run {
            o.step(
                Outcome::Recovered,
                format!("would mark the writer mutex owner-died (dead thread {owner_tid})"),
            );
        } else if writer.release_dead_owner().is_some() {
            o.step(
                Outcome::Recovered,
                format!("marked the writer mutex owner-died (dead thread {owner_tid})"),
            );
        }
    }
    if lock.is_not_recoverable() {
        o.step(
            Outcome::NeedsApplication,
            "not recoverable: a writer abandoned its repair; re-initialize it \
             (RobustRwLock::reinit) when nobody uses it"
                .into(),
        );
    } else if lock.needs_repair() && opts.mark_consistent {
        if opts.dry_run {
            o.step(
                Outcome::Recovered,
                "would take the write lock and mark the data a dead writer left consistent \
                 as it is (no repair)"
                    .into(),
            );
            return Ok(());
        }
        match lock.accept_as_is(Deadline::after(opts.wait)) {
            Ok(true) => o.step(
                Outcome::Recovered,
                "marked the data a dead writer left consistent as it is (no repair)".into(),
            ),
            // A writer repaired it meanwhile.
            Ok(false) => {}
            Err(RwLockError::TimedOut) => unreachable_within(o, opts, "the write lock"),
            Err(e) => o.step(Outcome::NeedsApplication, format!("could not mark it: {e}")),
        }
    } else if writer.state().owner_dead() && !lock.needs_repair() {
        // Its holder died before it started writing or after it finished (or was a
        // reader waiting through the mutex): passing through the mutex settles it, with
        // no write lock (readers are not shut out) and nothing to repair.
        if opts.dry_run {
            o.step(
                Outcome::Recovered,
                "would take and release the writer mutex its holder died with outside a \
                 write (the data is whole)"
                    .into(),
            );
            return Ok(());
        }
        match lock.pass_through_writer_mutex(Deadline::after(opts.wait)) {
            // A writer took the mutex first and died mid-write: now it is the
            // application's (below).
            Ok(_) if lock.needs_repair() => {}
            Ok(_) => o.step(
                Outcome::Recovered,
                "released the writer mutex its holder died with outside a write (the data \
                 is whole)"
                    .into(),
            ),
            Err(RwLockError::TimedOut) => unreachable_within(o, opts, "the writer mutex"),
            Err(e) => o.step(
                Outcome::NeedsApplication,
                format!("could not take the writer mutex: {e}"),
            ),
        }
    }
    if lock.needs_repair() && !opts.mark_consistent && !lock.is_not_recoverable() {
        o.step(
            Outcome::NeedsApplication,
            "a writer died mid-write: the data may be half written; the next writer gets \
             OwnerDied, repairs it and makes it consistent (readers get Inconsistent \
             until then)"
                .into(),
        );
    }
    Ok(())
}

/// A lock the tool waited `opts.wait` for in vain: live holders keep it.
fn unreachable_within(o: &mut ObjectRecovery, opts: RecoverOptions, what: &str) {
    o.step(
        Outcome::Unreachable,
        format!(
            "could not take {what} within {:?}: live readers or a live writer hold it",
            opts.wait
        ),
    );
}
