//! Process identity and liveness: the one place that answers "is the process that
//! recorded this still alive?".
//!
//! A pid alone is not an identity: pids are reused. A [`ProcessIdentity`] is pid +
//! start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot) + pid-namespace
//! inode. A process that has the recorded pid but another start time is a *different*
//! process, so the recorded one is dead. Identities recorded in another pid namespace
//! cannot be checked from here (their pids mean something else) and read as
//! [`Liveness::Unknown`], which every recovery path treats as alive: recovery never takes
//! from a process it cannot prove dead.
//!
//! # Which `/proc` answers
//!
//! Pids are looked up in the `/proc` mounted here, which belongs to the pid namespace
//! that mounted it — not necessarily ours. A process started with `unshare --pid --fork`
//! without `--mount-proc` (or any container that keeps its parent's `/proc`) sees the
//! parent namespace's processes under its own pid numbers: pid 7 there is some unrelated
//! process, so no answer about our pid 7 can be read from it. Such a `/proc` is detected
//! (the pid `/proc/self` names differs from `getpid()`, or `/proc/self/status` lists the
//! process in more than one namespace level) and then every liveness answer is
//! [`Liveness::Unknown`] — never [`Liveness::Dead`] — so nothing is reclaimed, released
//! or taken over: a lease stays held, a dead mutex owner the kernel never marked stays
//! in place, a claim is waited for until its deadline. The check runs on every liveness
//! question (one `readlink`), so a `/proc` replaced later is caught too; the
//! namespace-level confirmation is cached per process and forgotten in fork children.
//!
//! [`ProcessIdentity::current`] reads our start time from `/proc/self/stat`, which
//! resolves to the calling process in whichever namespace the `/proc` belongs to (the
//! start time does not depend on the namespace), so the identity it records is right
//! even there and can be checked by peers that have a `/proc` of this namespace. A
//! `/proc` of a namespace that does not contain us at all has no `/proc/self`: then
//! `current` fails rather than record a start time it cannot know.
//!
//! # When a process is dead
//!
//! A process is dead when no thread of it remains. Its main thread may exit first
//! (`pthread_exit` in the thread-group leader while other threads go on): its
//! `/proc/<pid>/stat` then says zombie although the process runs, so a zombie leader
//! only means dead once every task in `/proc/<pid>/task` has exited too. A listing that
//! races with exiting threads may be cut short by the kernel; a listed thread that is
//! gone when examined therefore makes the listing be read again (and, if threads keep
//! exiting, the answer is [`Liveness::Unknown`]).
//!
//! A missing `/proc/<pid>` is confirmed with `kill(pid, 0)` before it counts as dead: a
//! `/proc` mounted with `hidepid=invisible` hides other users' processes, and only
//! `ESRCH` from the kernel proves that no such process or thread exists.
//!
//! A robust mutex is owned by a *thread*, not a process, and the kernel hands a thread's
//! robust mutexes on when that thread exits, whether or not its process lives on. So
//! [`thread_liveness`] judges the owner TID itself: a TID that is gone or a zombie is
//! dead (even a thread-group leader whose other threads still run), any other is alive.
//!
//! # Pid reuse
//!
//! A different process is taken for the recorded one exactly when it has the same pid
//! in the same pid namespace *and* the same start time in clock ticks (`USER_HZ`, 100
//! per second). Start times are creation times, so this needs the recorded process to
//! have exited and been reaped within the clock tick it was created in, and the new one
//! to get the same pid within that same tick. Sequential pid allocation cannot do that
//! short of `pid_max` creations in 10 ms; a privileged process can (`CAP_SYS_ADMIN` or
//! `CAP_CHECKPOINT_RESTORE` over the pid namespace, choosing the pid through
//! `/proc/sys/kernel/ns_last_pid` or `clone3`'s `set_tid`). The packed claim word
//! ([`ProcessIdentity::packed`]) keeps only the low 26 bits of the start time and a
//! 16-bit namespace tag: a process with the claimant's pid whose start time differs by
//! a multiple of 2²⁶ ticks (about 7.8 days) is taken for the claimant as well.
//!
//! Start times are read through the reader's time namespace (shifted by its boot-time
//! offset): processes sharing a segment must also share a time namespace, or a live
//! process reads as another process — dead — to a peer whose offset differs.

use std::fs;
use std::io;

use crate::sync::ProcessLocalU64;

/// Who a process is, in a form that can be stored in shared memory (`#[repr(C)]`,
/// 24 bytes, any bit pattern valid).
///
/// ```
/// use shmsync::{Liveness, ProcessIdentity};
///
/// let me = ProcessIdentity::current()?;
/// assert_eq!(me.pid, std::process::id());
/// assert_eq!(me.liveness(), Liveness::Alive);
/// # Ok::<(), std::io::Error>(())
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ProcessIdentity {
    /// The pid, as seen in the recorder's pid namespace.
    pub pid: u32,
    /// Explicit padding (the type is `Pod`); zero in every identity the crate makes.
    pub _pad: u32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    /// Inode of the recorder's `/proc/self/ns/pid`.
    pub pid_ns: u64,
}

static_assertions::assert_eq_size!(ProcessIdentity, [u8; 24]);

/// Whether a recorded process still runs.
///
/// ```
/// use shmsync::{Liveness, ProcessIdentity};
///
/// let me = ProcessIdentity::current()?;
/// match me.liveness() {
///     Liveness::Alive => {}
///     Liveness::Dead => unreachable!("we are running"),
///     Liveness::Unknown => {} // e.g. /proc of another pid namespace: reclaim nothing
/// }
/// assert!(!Liveness::Unknown.is_dead());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// It runs (same pid and start time).
    Alive,
    /// It has exited (no thread of it remains), or its pid now belongs to another
    /// process.
    Dead,
    /// It cannot be checked from here (recorded in another pid namespace, `/proc`
    /// unreadable, or `/proc` belonging to another pid namespace than ours).
    Unknown,
}

impl Liveness {
    /// `"alive"`, `"dead"` or `"unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Dead => "dead",
            Liveness::Unknown => "unknown",
        }
    }

    /// Whether recovery may take what this process holds: only when proven dead.
    pub fn is_dead(self) -> bool {
        self == Liveness::Dead
    }
}

/// Forgets the cached identity in a fork child. Without this, a child could inherit an
/// ancestor's identity under the ancestor's pid — if that pid is later reused for a
/// descendant — and record a start time that makes it look dead to its peers.
extern "C" fn forget_identity_after_fork() {
    // Atomic stores: async-signal-safe, as a fork child handler must be.
    CACHED_PID.set(0);
    // The child may be in another pid namespace (after `unshare(CLONE_NEWPID)`).
    PROC_CONFIRMED_FOR.set(0);
}

fn register_fork_handler() {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: the handler only performs an atomic store; pthread_atfork has no
        // other preconditions. A failure (ENOMEM) leaves the pid-keyed cache, which is
        // right except in the pid-reuse corner case described above.
        unsafe { libc::pthread_atfork(None, None, Some(forget_identity_after_fork)) };
    });
}

/// Cache of the current process's identity, keyed by pid (and cleared in fork
/// children) so a child recomputes it.
static CACHED_PID: ProcessLocalU64 = ProcessLocalU64::new(0);
static CACHED_START: ProcessLocalU64 = ProcessLocalU64::new(0);
static CACHED_NS: ProcessLocalU64 = ProcessLocalU64::new(0);
/// The pid for which `/proc/self/status` confirmed that `/proc` is our namespace's (0:
/// not confirmed). Cleared in fork children.
static PROC_CONFIRMED_FOR: ProcessLocalU64 = ProcessLocalU64::new(0);

impl ProcessIdentity {
    /// An identity from its parts (for instance one read back from a record of your
    /// own).
    ///
    /// ```
    /// use shmsync::ProcessIdentity;
    /// let id = ProcessIdentity::new(42, 1_000, 4_026_531_836);
    /// assert_eq!((id.pid, id.start_time, id.pid_ns), (42, 1_000, 4_026_531_836));
    /// ```
    pub const fn new(pid: u32, start_time: u64, pid_ns: u64) -> ProcessIdentity {
        ProcessIdentity {
            pid,
            _pad: 0,
            start_time,
            pid_ns,
        }
    }

    /// The calling process. Cached per process (a fork child sees a new pid and reads
    /// its own).
    ///
    /// The start time comes from `/proc/self/stat`, which names the caller even in a
    /// `/proc` of an ancestor pid namespace (see [`Liveness`]). Fails if
    /// `/proc/self` cannot be read.
    pub fn current() -> io::Result<ProcessIdentity> {
        register_fork_handler();
        let pid = current_pid();
        if CACHED_PID.get() == u64::from(pid) {
            return Ok(ProcessIdentity {
                pid,
                _pad: 0,
                start_time: CACHED_START.get(),
                pid_ns: CACHED_NS.get(),
            });
        }
        let id = ProcessIdentity {
            pid,
            _pad: 0,
            start_time: read_stat_file("/proc/self/stat")?.start_time,
            pid_ns: current_pid_namespace()?,
        };
        CACHED_START.set(id.start_time);
        CACHED_NS.set(id.pid_ns);
        // Set last: a reader that sees this pid also sees the two values above (the
        // cache publishes with Release and reads with Acquire).
        CACHED_PID.set(u64::from(pid));
        Ok(id)
    }

    /// The process `pid` in our pid namespace, as it is now. Fails if `/proc` is not
    /// our namespace's (it would describe another process).
    pub fn of_pid(pid: u32) -> io::Result<ProcessIdentity> {
        if !proc_is_ours() {
            return Err(io::Error::other(format!(
                "/proc belongs to another pid namespace: pid {pid} cannot be looked up"
            )));
        }
        Ok(ProcessIdentity {
            pid,
            _pad: 0,
            start_time: read_stat(pid)?.start_time,
            pid_ns: current_pid_namespace()?,
        })
    }

    /// Whether the recorded process still runs. A reused pid (same pid, other start
    /// time) is [`Liveness::Dead`], and so is a process none of whose threads remains
    /// (a zombie holds nothing any more); a process whose main thread exited while
    /// other threads run is alive. [`Liveness::Unknown`] when recorded in another pid
    /// namespace or when `/proc` is not our namespace's. A zero pid records no process
    /// and is dead.
    pub fn liveness(&self) -> Liveness {
        if self.pid == 0 {
            return Liveness::Dead;
        }
        match current_pid_namespace() {
            Ok(ns) if ns == self.pid_ns => {}
            _ => return Liveness::Unknown,
        }
        process_liveness(self.pid, |start| start == self.start_time)
    }

    /// `liveness() != Dead`: conservative, as recovery needs.
    pub fn is_alive(&self) -> bool {
        !self.liveness().is_dead()
    }

    /// This identity packed into one non-zero word, so that claiming something (a
    /// region's init/table claim) is a single compare-and-swap: the pid in the low 22
    /// bits (Linux pids are below 2²²), the low 26 bits of the start time above it, and
    /// a 16-bit tag of the pid namespace on top. Checked with `packed_liveness`.
    pub fn packed(&self) -> u64 {
        u64::from(self.pid & PID_MASK)
            | (self.start_time & START_MASK) << 22
            | u64::from(ns_tag(self.pid_ns)) << 48
    }
}

const PID_MASK: u32 = (1 << 22) - 1;
const START_MASK: u64 = (1 << 26) - 1;

/// A 16-bit tag of a pid-namespace inode (for [`ProcessIdentity::packed`]).
fn ns_tag(ino: u64) -> u16 {
    (ino ^ ino >> 16 ^ ino >> 32 ^ ino >> 48) as u16
}

/// Liveness of a process recorded with [`ProcessIdentity::packed`], judged as
/// [`ProcessIdentity::liveness`] judges. A word recorded in another pid namespace (its
/// tag differs from ours) is [`Liveness::Unknown`]: its pid means another process here,
/// so it can never be judged dead from here; so is every word while `/proc` is not our
/// namespace's. A zero word (or pid) records no process and is dead.
pub fn packed_liveness(word: u64) -> Liveness {
    let pid = (word as u32) & PID_MASK;
    if word == 0 || pid == 0 {
        return Liveness::Dead;
    }
    match current_pid_namespace() {
        Ok(ns) if ns_tag(ns) == (word >> 48) as u16 => {}
        _ => return Liveness::Unknown,
    }
    process_liveness(pid, |start| start & START_MASK == (word >> 22) & START_MASK)
}

/// Liveness of the process `pid` whose start time satisfies `same_start`, from our
/// `/proc`: gone is dead; present with another start time (a reused pid) is dead;
/// present with its main thread running is alive; present with its main thread exited
/// is what [`remaining_threads`] says; unreadable for another reason, or `/proc` not
/// our namespace's, is unknown.
fn process_liveness(pid: u32, same_start: impl FnOnce(u64) -> bool) -> Liveness {
    if !proc_is_ours() {
        return Liveness::Unknown;
    }
    match read_stat(pid) {
        Ok(stat) if !same_start(stat.start_time) => Liveness::Dead,
        Ok(stat) if stat.exited => remaining_threads(pid),
        Ok(_) => Liveness::Alive,
        Err(e) if is_gone(&e) => confirm_gone(pid),
        Err(_) => Liveness::Unknown,
    }
}

/// A `/proc/<pid>` entry that is missing is not proof of death: a `/proc` mounted with
/// `hidepid=invisible` hides other users' processes. `kill(pid, 0)` asks the kernel
/// itself: `ESRCH` means no such process or thread (dead); success or `EPERM` means it
/// exists but `/proc` does not show it (unknown).
fn confirm_gone(pid: u32) -> Liveness {
    let Ok(pid @ 1..) = libc::pid_t::try_from(pid) else {
        return Liveness::Dead; // 0 or above pid_t: names no process
    };
    // SAFETY: signal 0 sends nothing; kill only checks existence and permission.
    if unsafe { libc::kill(pid, 0) } != 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    {
        Liveness::Dead
    } else {
        Liveness::Unknown
    }
}

/// Liveness of a process whose main thread has exited: alive while any task in
/// `/proc/<pid>/task` has not exited, dead once none has (or the process is gone).
///
/// The kernel ends a `/proc/<pid>/task` listing early when a thread it is passing
/// exits at that moment, so threads after it can be missed. Every such thread was
/// listed and is gone when examined (released threads never come back); a listing in
/// which every task is still there, exited, is complete. Otherwise the listing is read
/// again, a bounded number of times.
fn remaining_threads(pid: u32) -> Liveness {
    const LISTINGS: usize = 3;
    let dir = format!("/proc/{pid}/task");
    for _ in 0..LISTINGS {
        let tids = match list_tasks(&dir) {
            Ok(tids) => tids,
            Err(e) if is_gone(&e) => return Liveness::Dead,
            Err(_) => return Liveness::Unknown,
        };
        let mut complete = true;
        for tid in tids {
            match read_stat_file(&format!("{dir}/{tid}/stat")) {
                Ok(stat) if !stat.exited => return Liveness::Alive,
                Ok(_) => {}
                Err(e) if is_gone(&e) => complete = false,
                Err(_) => return Liveness::Unknown,
            }
        }
        if complete {
            return Liveness::Dead;
        }
    }
    // Threads kept exiting while we looked: the process is busy, not provably dead.
    Liveness::Unknown
}

/// The thread ids listed in a `/proc/<pid>/task` directory, read in full before any is
/// examined.
fn list_tasks(dir: &str) -> io::Result<Vec<u32>> {
    let mut tids = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

/// Whether a `/proc` read failed because the process or thread no longer exists.
fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Whether the `/proc` mounted here belongs to our pid namespace, so that
/// `/proc/<pid>` describes *our* pid `pid`. A `/proc` of an ancestor namespace (e.g.
/// after `unshare --pid --fork` without `--mount-proc`) shows us under another pid,
/// which `/proc/self` reveals; one of a namespace that does not contain us has no
/// `/proc/self`. The pids can coincide by chance, so the first "ours" in a process is
/// confirmed by `NStgid` in `/proc/self/status`, which lists one pid per namespace
/// level from the `/proc`'s namespace down to ours: exactly one means the same
/// namespace. Kernels before 4.1 have no `NStgid`; there the `/proc/self` check stands
/// alone. Anything unreadable is "not ours", which makes liveness unknown.
fn proc_is_ours() -> bool {
    let pid = current_pid();
    // Every call: catches a /proc replaced after the confirmation below.
    let seen = fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<u32>().ok()));
    if seen != Some(pid) {
        return false;
    }
    if PROC_CONFIRMED_FOR.get() == u64::from(pid) {
        return true;
    }
    let ours = match fs::read_to_string("/proc/self/status") {
        Ok(status) => namespace_levels(&status).map_or(true, |levels| levels == 1),
        Err(_) => false,
    };
    if ours {
        PROC_CONFIRMED_FOR.set(u64::from(pid));
    }
    ours
}

/// How many pid-namespace levels the `NStgid` line of a `/proc/<pid>/status` lists
/// (`None` without such a line).
fn namespace_levels(status: &str) -> Option<usize> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NStgid:"))
        .map(|v| v.split_ascii_whitespace().count())
}

/// The calling process's identity as a crate [`Result`](crate::Result) (for paths
/// that record who they are in shared memory).
pub(crate) fn current_identity() -> crate::Result<ProcessIdentity> {
    ProcessIdentity::current().map_err(|source| crate::Error::Os {
        op: "read process identity (/proc/self/stat)",
        target: String::new(),
        source,
    })
}

/// Liveness of a thread id (the owner TID a robust mutex records) in our namespace:
/// the thread itself, not its process. Gone or exited (a zombie, including a
/// thread-group leader whose other threads still run) is [`Liveness::Dead`]; the kernel
/// has then already handed on the robust mutexes it listed. Any other thread is alive,
/// also one that is not its process's main thread. [`Liveness::Unknown`] when `/proc`
/// is unreadable or not our namespace's. A zero TID names no thread and is dead.
///
/// A TID is not unique over time: a dead owner's TID reused by a new thread reads as
/// alive, which errs on the safe side.
pub fn thread_liveness(tid: u32) -> Liveness {
    if tid == 0 {
        return Liveness::Dead;
    }
    if !proc_is_ours() {
        return Liveness::Unknown;
    }
    match read_stat(tid) {
        Ok(stat) if stat.exited => Liveness::Dead,
        Ok(_) => Liveness::Alive,
        Err(e) if is_gone(&e) => confirm_gone(tid),
        Err(_) => Liveness::Unknown,
    }
}

/// The process (thread group) a thread id belongs to, from `/proc/<tid>/status`
/// (`None` if unreadable or `/proc` is not our namespace's).
pub fn thread_group_of(tid: u32) -> Option<u32> {
    if !proc_is_ours() {
        return None;
    }
    let status = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The calling process's pid.
pub fn current_pid() -> u32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// The calling thread's id (what a robust mutex records as its owner).
pub fn current_tid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// The inode of `/proc/self/ns/pid`, which names our pid namespace.
pub fn current_pid_namespace() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs::metadata("/proc/self/ns/pid")?.ino())
}

struct Stat {
    start_time: u64,
    /// State `Z` (zombie) or `X` (dead): the task has exited.
    exited: bool,
}

fn read_stat(pid: u32) -> io::Result<Stat> {
    read_stat_file(&format!("/proc/{pid}/stat"))
}

fn read_stat_file(path: &str) -> io::Result<Stat> {
    let text = fs::read_to_string(path)?;
    parse_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unparsable {path}")))
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted from the *last* `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?; // field 3
    let start_time = fields.nth(18)?.parse().ok()?; // field 22
    Some(Stat {
        start_time,
        exited: state == "Z" || state == "X",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_handles_odd_comm() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.start_time, 987654);
        assert!(!s.exited);
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) Z 1").is_none());
    }

    #[test]
    fn current_is_alive_and_a_reused_pid_is_not() {
        let me = ProcessIdentity::current().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.liveness(), Liveness::Alive);
        let impostor = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert_eq!(impostor.liveness(), Liveness::Dead);
        let other_ns = ProcessIdentity {
            pid_ns: me.pid_ns ^ 1,
            ..me
        };
        assert_eq!(other_ns.liveness(), Liveness::Unknown);
        assert_eq!(thread_liveness(current_tid()), Liveness::Alive);
        assert_eq!(packed_liveness(me.packed()), Liveness::Alive);
        assert_eq!(packed_liveness(impostor.packed()), Liveness::Dead);
        assert_eq!(packed_liveness(0), Liveness::Dead);
        assert_eq!(thread_group_of(current_tid()), Some(me.pid));
    }

    #[test]
    fn namespace_levels_counts_nstgid() {
        assert_eq!(
            namespace_levels("Name:\tx\nNStgid:\t7\nNSpid:\t7\n"),
            Some(1)
        );
        assert_eq!(
            namespace_levels("NStgid:\t12804\t3\nNSpid:\t12804\t3\n"),
            Some(2)
        );
        assert_eq!(namespace_levels("Name:\tx\nTgid:\t7\n"), None);
    }

    #[test]
    fn our_proc_is_ours_and_the_identity_matches_it() {
        // The test environment mounts a /proc of its own pid namespace.
        assert!(proc_is_ours());
        let me = ProcessIdentity::current().unwrap();
        assert_eq!(ProcessIdentity::of_pid(me.pid).unwrap(), me);
    }
}
