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
//! Start times have a resolution of one clock tick (10 ms): a pid reused within the same
//! tick after a full pid wrap-around would be mistaken for the original. The kernel
//! hands out pids sequentially, so this needs `pid_max` process creations within 10 ms.

use std::fs;
use std::io;

use crate::sync::ProcessLocalU64;

/// Who a process is, in a form that can be stored in shared memory (`#[repr(C)]`,
/// 24 bytes, any bit pattern valid).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ProcessIdentity {
    /// The pid, as seen in the recorder's pid namespace.
    pub pid: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    /// Inode of the recorder's `/proc/self/ns/pid`.
    pub pid_ns: u64,
}

static_assertions::assert_eq_size!(ProcessIdentity, [u8; 24]);

/// Whether a recorded process still runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// It runs (same pid and start time).
    Alive,
    /// It has exited, is a zombie, or its pid now belongs to another process.
    Dead,
    /// It cannot be checked from here (another pid namespace, or /proc unreadable).
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
    // An atomic store: async-signal-safe, as a fork child handler must be.
    CACHED_PID.set(0);
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

impl ProcessIdentity {
    /// The calling process. Cached per process (a fork child sees a new pid and reads
    /// its own).
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
            start_time: read_stat(pid)?.start_time,
            pid_ns: current_pid_namespace()?,
        };
        CACHED_START.set(id.start_time);
        CACHED_NS.set(id.pid_ns);
        // Set last: a reader that sees this pid also sees the two values above (the
        // cache publishes with Release and reads with Acquire).
        CACHED_PID.set(u64::from(pid));
        Ok(id)
    }

    /// The process `pid` in our pid namespace, as it is now.
    pub fn of_pid(pid: u32) -> io::Result<ProcessIdentity> {
        Ok(ProcessIdentity {
            pid,
            _pad: 0,
            start_time: read_stat(pid)?.start_time,
            pid_ns: current_pid_namespace()?,
        })
    }

    /// Whether the recorded process still runs. A reused pid (same pid, other start
    /// time) is [`Liveness::Dead`]; a zombie is dead too (it holds nothing any more).
    pub fn liveness(&self) -> Liveness {
        if self.pid == 0 {
            return Liveness::Dead;
        }
        match current_pid_namespace() {
            Ok(ns) if ns == self.pid_ns => {}
            _ => return Liveness::Unknown,
        }
        stat_liveness(self.pid, |stat| stat.start_time == self.start_time)
    }

    /// `liveness() != Dead`: conservative, as recovery needs.
    pub fn is_alive(&self) -> bool {
        !self.liveness().is_dead()
    }

    /// This identity packed into one non-zero word, so that claiming something (a
    /// region's init/table claim) is a single compare-and-swap: the pid in the low 22
    /// bits (Linux pids are below 2²²), the low 26 bits of the start time above it, and
    /// a 16-bit tag of the pid namespace on top. Checked with [`packed_liveness`].
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

/// Liveness of a process recorded with [`ProcessIdentity::packed`]. A word recorded in
/// another pid namespace (its tag differs from ours) is [`Liveness::Unknown`]: its pid
/// means another process here, so it can never be judged dead from here.
pub fn packed_liveness(word: u64) -> Liveness {
    let pid = (word as u32) & PID_MASK;
    if word == 0 || pid == 0 {
        return Liveness::Dead;
    }
    match current_pid_namespace() {
        Ok(ns) if ns_tag(ns) == (word >> 48) as u16 => {}
        _ => return Liveness::Unknown,
    }
    stat_liveness(pid, |stat| {
        stat.start_time & START_MASK == (word >> 22) & START_MASK
    })
}

/// Liveness of `pid` from its `/proc/<pid>/stat`: gone (or a zombie) is dead; present
/// and `same(stat)` is alive; present but not the same process (a reused pid) is dead;
/// unreadable for another reason is unknown.
fn stat_liveness(pid: u32, same: impl FnOnce(&Stat) -> bool) -> Liveness {
    match read_stat(pid) {
        Ok(stat) if stat.zombie || !same(&stat) => Liveness::Dead,
        Ok(_) => Liveness::Alive,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Liveness::Dead
        }
        Err(_) => Liveness::Unknown,
    }
}

/// The calling process's identity as a crate [`Result`](crate::Result) (for paths
/// that record who they are in shared memory).
pub fn current_identity() -> crate::Result<ProcessIdentity> {
    ProcessIdentity::current().map_err(|source| crate::Error::Os {
        op: "read process identity (/proc/self/stat)",
        target: String::new(),
        source,
    })
}

/// Liveness of a thread id (the owner TID a robust mutex records) in our namespace.
pub fn thread_liveness(tid: u32) -> Liveness {
    if tid == 0 {
        return Liveness::Dead;
    }
    stat_liveness(tid, |_| true)
}

/// The process (thread group) a thread id belongs to, from `/proc/<tid>/status`.
pub fn thread_group_of(tid: u32) -> Option<u32> {
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
    zombie: bool,
}

fn read_stat(pid: u32) -> io::Result<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unparsable /proc/{pid}/stat"),
        )
    })
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
        zombie: state == "Z" || state == "X",
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
        assert!(!s.zombie);
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
}
