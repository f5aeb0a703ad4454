//! Liveness across real processes, as every recovery path uses it (lease reclaim, region
//! claim takeover, releasing a dead mutex owner, seqlock recovery):
//! - a process whose main thread has exited while a worker thread runs is alive: the
//!   worker's lease, region claim and mutex stay its own; once the process is killed
//!   all of them are recovered;
//! - inside a pid namespace that kept its parent's `/proc` (`unshare --pid --fork`
//!   without `--mount-proc`), nothing is judged dead: every answer is `Unknown`, so a
//!   live holder keeps what it holds;
//! - a `/proc` that hides other users' processes (`hidepid=invisible`) does not make
//!   them dead: a live holder another user cannot see in `/proc` is `Unknown`.
#![allow(clippy::disallowed_types)]
mod common;

use std::path::Path;
use std::time::Duration;

use shmsync::inspect::SeqLockView;
use shmsync::test_hooks::{self as process, packed_liveness, thread_liveness};
use shmsync::{
    Error, LeasedSemaphore, Liveness, Location, LockError, MutexState, ProcessIdentity, Region,
    RobustMutex, Semaphore, SeqLock, SeqLockError,
};

#[test]
fn child_role() {
    common::dispatch(&[
        ("hold_then_main_exits", hold_then_main_exits),
        ("ns_checker", ns_checker),
        ("ns_holder", ns_holder),
        ("decoy", decoy),
        ("hidden_checker", hidden_checker),
    ]);
}

const REGION_SIZE: usize = 1 << 16;
/// How long a claim attempt waits before the test concludes it was not taken over.
const CLAIM_PATIENCE: Duration = Duration::from_millis(300);
/// The pid bits of a packed identity (see `ProcessIdentity::packed`).
const PACKED_PID_MASK: u32 = (1 << 22) - 1;

/// The objects every scenario shares: a one-permit leased semaphore, a mutex and a
/// seqlock.
struct Objects<'r> {
    sem: &'r LeasedSemaphore,
    mutex: &'r RobustMutex<u64>,
    seq: &'r SeqLock<[u64; 2]>,
}

fn objects(region: &Region) -> Objects<'_> {
    Objects {
        sem: region.get_or_init::<LeasedSemaphore>("lease", 1).unwrap(),
        mutex: region.get_or_init::<RobustMutex<u64>>("mutex", 0).unwrap(),
        seq: region
            .get_or_init::<SeqLock<[u64; 2]>>("seq", [1, 1])
            .unwrap(),
    }
}

/// The seqlock as the operator tool sees it (without its type).
fn seqlock_view(region: &Region) -> &SeqLockView {
    let e = region
        .entries()
        .unwrap()
        .into_iter()
        .find(|e| e.name == "seq")
        .unwrap();
    let ptr = region.object_ptr(&e).unwrap();
    // SAFETY: the entry is a published SeqLock, whose prefix is a SeqLockView, inside
    // the region's mapping, which outlives the reference.
    unsafe { SeqLockView::attach(ptr.cast()) }.unwrap()
}

fn location(name: &str) -> Location {
    Location::parse(name).unwrap()
}

/// The environment that stops a holder inside `get_or_init`'s table append, holding
/// the region's claim, and writes `marker` when it gets there.
fn claim_failpoint(marker: &str) -> [(&'static str, &str); 2] {
    common::failpoint_env("object-init", marker)
}

/// Takes the lease's only permit for this process and keeps it.
fn take_the_permit(o: &Objects) {
    o.sem.try_acquire().expect("the permit").forget();
}

/// Locks the mutex in the calling thread and keeps it locked.
fn lock_for_good(o: &Objects) {
    std::mem::forget(o.mutex.try_lock().unwrap());
}

/// Appends an object to the region and stops forever at the `object-init` failpoint
/// (set by the spawner), holding the region's claim.
fn hold_the_claim(region: &Region) -> ! {
    let r = region.get_or_init::<Semaphore>("late", 0).map(|_| ());
    panic!("get_or_init returned instead of stopping at the failpoint: {r:?}");
}

/// The highest pid below `pid_max` that the mounted `/proc` does not show.
fn absent_pid() -> u32 {
    highest_pid_where(|p| !Path::new(&format!("/proc/{p}")).exists())
}

/// The highest pid from 300 up to `pid_max` for which `free` holds.
fn highest_pid_where(free: impl Fn(u32) -> bool) -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (300..max).rev().find(|&p| free(p)).expect("a free pid")
}

/// The owner of a locked mutex (TID and its liveness); fails the test if it is not
/// locked.
fn owner(mutex: &RobustMutex<u64>) -> (u32, Liveness) {
    match mutex.state() {
        MutexState::Locked {
            owner_tid, owner, ..
        } => (owner_tid, owner),
        other => panic!("mutex not locked: {other}"),
    }
}

/// What [`assert_nothing_taken`] found held.
struct Held {
    /// The lease holder.
    holder: ProcessIdentity,
    /// The region's claim word.
    claim: u64,
    /// The mutex owner's thread id.
    owner_tid: u32,
}

/// Checks that the live process `pid` holds the lease's only permit, the region's
/// claim and the mutex, that their liveness reads `expected` (never dead), and that no
/// recovery path takes any of them: nothing reclaimed, no second permit, the claim
/// neither released nor taken over, the mutex neither released nor lockable.
fn assert_nothing_taken(region: &Region, o: &Objects, pid: u32, expected: Liveness) -> Held {
    let leases = o.sem.leases().unwrap();
    assert_eq!(leases.len(), 1);
    let holder = leases[0].identity;
    assert_eq!(holder.pid, pid);
    assert_eq!(holder.liveness(), expected, "the live lease holder judged");
    assert_eq!(
        o.sem.reclaim_dead().unwrap().permits(),
        0,
        "a live holder's permit reclaimed"
    );
    assert!(
        matches!(o.sem.try_acquire(), Err(Error::WouldBlock(_))),
        "a second permit of capacity 1"
    );

    let (claim, claim_liveness) = region.claim_holder();
    assert_eq!(claim as u32 & PACKED_PID_MASK, pid, "{pid} holds the claim");
    assert_eq!(claim_liveness, expected, "the live claimant judged");
    assert_eq!(packed_liveness(claim), expected);
    assert_eq!(
        region.release_dead_claim().unwrap(),
        None,
        "a live claim released"
    );
    assert!(
        matches!(
            region.get_or_init_with::<Semaphore>("other", 0, CLAIM_PATIENCE),
            Err(Error::TimedOut(_))
        ),
        "a live claim taken over"
    );

    let (owner_tid, owner_liveness) = owner(o.mutex);
    assert_eq!(owner_liveness, expected, "the live owner thread judged");
    assert_eq!(
        o.mutex.raw().release_dead_owner(),
        None,
        "a live owner's mutex released"
    );
    assert!(matches!(o.mutex.try_lock(), Err(LockError::WouldBlock)));
    Held {
        holder,
        claim,
        owner_tid,
    }
}

// ---- a process whose main thread has exited ----

extern "C" fn exit_this_thread(_: libc::c_int) {
    // SAFETY: the exit system call (not exit_group) ends only the calling thread; it is
    // async-signal-safe and never returns.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
}

/// Child: its test thread (not the main thread: the harness runs tests on their own
/// threads) takes the lease, the mutex (hidden from the kernel's exit-time walk, so that
/// only a liveness check can release it) and the region claim, after making the main
/// thread exit. The main thread ends with the `exit` system call from a signal handler
/// — what `pthread_exit` in `main` does once other threads run — leaving the
/// thread-group leader a zombie while this thread goes on.
fn hold_then_main_exits(args: &[String]) {
    // This thread outlives the main thread, whose parent-death signal ends with it.
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let region = Region::open(&location(&args[0])).unwrap();
    let o = objects(&region);
    take_the_permit(&o);
    lock_for_good(&o);
    common::unregister_robust_list();
    // SAFETY: an all-zero sigaction is valid; the handler only makes a system call.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = exit_this_thread as extern "C" fn(libc::c_int) as usize;
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    let pid = process::current_pid() as libc::pid_t;
    // SAFETY: tgkill signals our own main thread (tid == pid).
    let r = unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGUSR1) };
    assert_eq!(r, 0, "tgkill: {}", std::io::Error::last_os_error());
    hold_the_claim(&region)
}

#[test]
fn main_thread_exit_is_not_process_death() {
    let name = common::ShmName::new("mainexit");
    let region = Region::create(&location(name.as_str()), REGION_SIZE).unwrap();
    let o = objects(&region);
    let marker = common::TempPath::new("mainexit");
    let mut child = common::spawn_with_env(
        "hold_then_main_exits",
        &[name.as_str()],
        &claim_failpoint(marker.as_str()),
    );
    let pid = child.pid() as u32;
    common::wait_until(
        common::WATCHDOG,
        "the child to hold everything with its main thread exited",
        || marker.path().exists() && common::proc_state(pid as i32) == Some('Z'),
    );

    // The process runs (its worker thread does); only its main thread is dead.
    assert_eq!(
        thread_liveness(pid),
        Liveness::Dead,
        "the main thread has exited"
    );
    let held = assert_nothing_taken(&region, &o, pid, Liveness::Alive);
    let (holder, word, worker) = (held.holder, held.claim, held.owner_tid);
    assert_ne!(worker, pid, "the mutex is held by the worker thread");
    assert_eq!(process::thread_group_of(worker), Some(pid));

    // Killed, still unreaped (a zombie with no thread left): dead, and everything
    // comes back.
    child.signal(libc::SIGKILL);
    child.wait_exited_unreaped(common::WATCHDOG);
    assert_eq!(holder.liveness(), Liveness::Dead);
    assert_eq!(packed_liveness(word), Liveness::Dead);
    assert_eq!(thread_liveness(worker), Liveness::Dead);
    assert_eq!(o.sem.reclaim_dead().unwrap().permits(), 1);
    let permit = o.sem.try_acquire().expect("the reclaimed permit");
    drop(permit);
    region
        .get_or_init_with::<Semaphore>("other", 0, common::WATCHDOG)
        .expect("the dead claim taken over");
    assert_eq!(o.mutex.raw().release_dead_owner(), Some(worker));
    match o.mutex.try_lock() {
        Err(LockError::OwnerDied(g)) => drop(g.make_consistent()),
        other => panic!("expected OwnerDied, got {:?}", other.map(|_| ())),
    }
    child.wait(common::WATCHDOG);
    assert_eq!(holder.liveness(), Liveness::Dead, "reaped");
}

// ---- a pid namespace that kept its parent's /proc ----

/// Child (in the parent namespace): a process whose pid the holder inside the new
/// namespace is given, so that the parent's `/proc/<pid>` the holder is looked up in
/// is this unrelated process; exits when `args[0]` exists.
fn decoy(args: &[String]) {
    common::wait_until(common::WATCHDOG, "the decoy's exit flag", || {
        Path::new(&args[0]).exists()
    });
}

/// Child (inside the new namespace): holds the permit and the claim, and locks the
/// mutex and the seqlock's writer lock (mid-write) in a thread whose id the parent's
/// `/proc` does not have (so that `/proc/<tid>` there says "no such thread" while the
/// thread runs).
fn ns_holder(args: &[String]) {
    let region = Region::open(&location(&args[0])).unwrap();
    let o = objects(&region);
    take_the_permit(&o);
    let tid = absent_pid();
    if let Err(e) = std::fs::write("/proc/sys/kernel/ns_last_pid", (tid - 1).to_string()) {
        eprintln!("note: cannot write ns_last_pid ({e}); the mutex owner's tid is not {tid}");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            lock_for_good(&o);
            o.seq.__test_write_partial([2, 2], 1).unwrap();
            tx.send(process::current_tid()).unwrap();
            loop {
                std::thread::park();
            }
        });
        let owner = rx.recv().unwrap();
        if owner != tid {
            eprintln!("note: the mutex owner has tid {owner}, not {tid}");
        }
        hold_the_claim(&region)
    })
}

/// The start time (field 22) of `/proc/self/stat`.
fn own_start_time() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    stat[stat.rfind(')').unwrap() + 1..]
        .split_ascii_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

/// Child: pid 1 of a new pid namespace whose `/proc` is still the parent's. Args: the
/// region name, the holder's marker path, the decoy's pid and its exit-flag path.
fn ns_checker(args: &[String]) {
    let (name, marker, decoy_pid, decoy_flag) = (
        args[0].as_str(),
        args[1].as_str(),
        args[2].parse::<u32>().unwrap(),
        args[3].as_str(),
    );
    assert_eq!(process::current_pid(), 1, "not in a new pid namespace");
    let proc_self: u32 = std::fs::read_link("/proc/self")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(
        proc_self, 1,
        "/proc is this namespace's; the test needs the parent's"
    );

    let region = Region::create(&location(name), REGION_SIZE).unwrap();
    let o = objects(&region);
    // Give the holder the decoy's pid number here: while the decoy runs, the parent's
    // /proc/<that pid> is a live process, which the holder would be mistaken for, and
    // which then exits.
    let pinned = std::fs::write("/proc/sys/kernel/ns_last_pid", (decoy_pid - 1).to_string());
    let mut holder = common::spawn_with_env("ns_holder", &[name], &claim_failpoint(marker));
    let hpid = holder.pid() as u32;
    match pinned {
        Ok(()) => assert_eq!(hpid, decoy_pid, "the holder did not get the decoy's pid"),
        Err(e) => eprintln!(
            "note: cannot write ns_last_pid ({e}); the holder has pid {hpid}, not the \
             decoy's {decoy_pid}, so the parent's /proc/{hpid} is whatever it is"
        ),
    }
    common::wait_until(common::WATCHDOG, "the holder to hold everything", || {
        Path::new(marker).exists()
    });
    std::fs::write(decoy_flag, b"exit").unwrap();
    common::wait_until(
        common::WATCHDOG,
        "the decoy to exit",
        || !matches!(common::proc_state(decoy_pid as i32), Some(s) if s != 'Z'),
    );

    // The holder runs, but this /proc cannot say so: unknown, and nothing is taken.
    let held = assert_nothing_taken(&region, &o, hpid, Liveness::Unknown);
    let tid = held.owner_tid;
    // The seqlock's writer is mid-write: recovery must wait for it, not repair.
    let view = seqlock_view(&region);
    assert!(
        !view.state().is_torn(),
        "a live writer's write reported torn"
    );
    assert!(
        matches!(
            view.recover(std::time::Instant::now() + CLAIM_PATIENCE),
            Err(SeqLockError::TimedOut)
        ),
        "a live writer's seqlock recovered"
    );
    assert_eq!(o.seq.read(), [1, 1], "readers see the published value");

    // A recorded pid that this /proc does not have reads unknown too (it would read
    // dead if this /proc were ours).
    let me = ProcessIdentity::current().unwrap();
    let absent = absent_pid();
    let ghost = ProcessIdentity {
        pid: absent,
        start_time: 1,
        ..me
    };
    assert_eq!(ghost.liveness(), Liveness::Unknown);
    assert_eq!(packed_liveness(ghost.packed()), Liveness::Unknown);
    assert_eq!(thread_liveness(absent), Liveness::Unknown);
    assert_eq!(me.liveness(), Liveness::Unknown);
    assert!(ProcessIdentity::of_pid(hpid).is_err());
    assert_eq!(process::thread_group_of(tid), None);
    // Our own identity carries our own start time (/proc/self names us even in the
    // parent's /proc), not that of the parent namespace's pid 1.
    assert_eq!(me.pid, 1);
    assert_eq!(me.start_time, own_start_time());

    holder.kill();
}

#[test]
fn pid_namespace_sharing_the_parents_proc_judges_nobody_dead() {
    if let Some(why) = common::pid_namespace_refused() {
        eprintln!("SKIPPED pid_namespace_sharing_the_parents_proc_judges_nobody_dead: {why}");
        return;
    }
    let name = common::ShmName::new("pidns");
    let marker = common::TempPath::new("pidns-holder");
    let flag = common::TempPath::new("pidns-decoy");
    let decoy = common::spawn("decoy", &[flag.as_str()]);
    let decoy_pid = decoy.pid().to_string();
    let mut checker = common::spawn_via(
        &["unshare", "--pid", "--fork", "--kill-child"],
        "ns_checker",
        &[name.as_str(), marker.as_str(), &decoy_pid, flag.as_str()],
        &[],
    );
    checker.expect_success(common::WATCHDOG * 2);
    drop(decoy);
}

/// Exit code of [`hidden_checker`] when the `/proc` it got does not hide the holder (a
/// kernel without per-mount `hidepid`): the test cannot show anything there.
const HIDEPID_INEFFECTIVE: i32 = 77;

/// Runs as the second user under a `/proc` mounted `hidepid=invisible`: the holder (a
/// live root process, args: pid, start time, tid) is hidden from it, yet must not read
/// as dead; a pid that no process has still reads as dead.
fn hidden_checker(args: &[String]) {
    let pid: u32 = args[0].parse().unwrap();
    let holder = ProcessIdentity {
        pid,
        start_time: args[1].parse().unwrap(),
        ..ProcessIdentity::current().unwrap()
    };
    let tid: u32 = args[2].parse().unwrap();
    if Path::new(&format!("/proc/{pid}")).exists() {
        std::process::exit(HIDEPID_INEFFECTIVE);
    }
    assert_eq!(
        holder.liveness(),
        Liveness::Unknown,
        "a hidden live process"
    );
    assert_eq!(packed_liveness(holder.packed()), Liveness::Unknown);
    assert_eq!(
        thread_liveness(tid),
        Liveness::Unknown,
        "a hidden live thread"
    );
    let ghost = ProcessIdentity {
        pid: absent_pid_by_kill(),
        ..holder
    };
    assert_eq!(ghost.liveness(), Liveness::Dead, "a pid no process has");
}

/// The highest pid below `pid_max` that no process has (`kill(pid, 0)` says `ESRCH`),
/// whatever `/proc` shows.
fn absent_pid_by_kill() -> u32 {
    highest_pid_where(|p| {
        // SAFETY: signal 0 sends nothing.
        let r = unsafe { libc::kill(p as libc::pid_t, 0) };
        r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    })
}

#[test]
fn processes_hidden_by_hidepid_are_not_dead() {
    const WHAT: &str = "processes_hidden_by_hidepid_are_not_dead";
    let Some(user) = common::second_user(WHAT) else {
        return;
    };
    let me = ProcessIdentity::current().unwrap();
    let tid = process::current_tid().to_string();
    // A private mount namespace with its own /proc instance, hiding other users'
    // processes; then the test binary runs as the second user.
    let script = format!(
        "mount -t proc -o hidepid=invisible proc /proc && \
         exec setpriv --reuid={} --regid={} --clear-groups -- \"$0\" \"$@\"",
        user.uid, user.gid
    );
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        &script,
    ];
    let args = [me.pid.to_string(), me.start_time.to_string(), tid];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut checker = common::spawn_via(&wrapper, "hidden_checker", &args, &[]);
    let status = checker.wait(common::WATCHDOG);
    if status.code() == Some(HIDEPID_INEFFECTIVE) {
        eprintln!("SKIPPED {WHAT}: a hidepid=invisible /proc still shows root's processes here");
        return;
    }
    assert!(status.success(), "the checker failed: {status:?}");
}
