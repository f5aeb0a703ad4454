//! Cross-process test support, shared by every integration test: child processes
//! (re-executed test binary with a role, or `fork` for async-signal-safe bodies),
//! watchdogs that turn a hang into a failure, and unique segment names that are removed
//! on every exit path.
//!
//! How to use the re-exec children in a test file:
//! ```text
//! mod common;
//! #[test]
//! fn child_role() { common::dispatch(&[("holder", holder)]); }
//! fn holder(args: &[String]) { /* runs in the child; returning exits 0 */ }
//! // in a test:
//! let mut c = common::spawn("holder", &[name.as_str()]);
//! c.expect_success(common::WATCHDOG);
//! ```
#![allow(dead_code, clippy::disallowed_types)]

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Default bound on any single blocking step in a test.
pub const WATCHDOG: Duration = Duration::from_secs(30);

const ROLE_ENV: &str = "SHMSYNC_TEST_ROLE";
const ARGS_ENV: &str = "SHMSYNC_TEST_ARGS";
const ARG_SEP: char = '\u{1f}';

/// A name unique to this process and call: `/shmsync-t<pid>-<n>-<tag>`.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "/shmsync-t{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        tag
    )
}

/// A POSIX shared-memory name that is `shm_unlink`ed when dropped (pass or fail).
pub struct ShmName(pub String);

impl ShmName {
    /// A fresh unique name.
    pub fn new(tag: &str) -> ShmName {
        ShmName(unique_name(tag))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Drop for ShmName {
    fn drop(&mut self) {
        if let Ok(c) = std::ffi::CString::new(self.0.as_str()) {
            // SAFETY: a valid C string; unlinking a missing name is harmless.
            unsafe { libc::shm_unlink(c.as_ptr()) };
        }
    }
}

/// Call from a `#[test] fn child_role()` in each test file: when this process was
/// started by [`spawn`], runs the named role and exits 0 (a panic exits non-zero);
/// otherwise returns at once.
/// A child role: runs in the child with the arguments given to [`spawn`].
pub type Role = fn(&[String]);

pub fn dispatch(roles: &[(&str, Role)]) {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let args: Vec<String> = std::env::var(ARGS_ENV)
        .unwrap_or_default()
        .split(ARG_SEP)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    match roles.iter().find(|(name, _)| *name == role) {
        Some((_, f)) => {
            f(&args);
            std::process::exit(0);
        }
        None => {
            eprintln!("unknown child role {role:?}");
            std::process::exit(101);
        }
    }
}

fn set_pdeathsig() -> std::io::Result<()> {
    // SAFETY: prctl is async-signal-safe; PR_SET_PDEATHSIG takes a signal number.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Starts this test binary again as a child running `role` with `args`. The child gets
/// `PR_SET_PDEATHSIG(SIGKILL)`: it never outlives the test.
pub fn spawn(role: &str, args: &[&str]) -> Child {
    spawn_with_env(role, args, &[])
}

/// [`spawn`] with extra environment variables (e.g. a test failpoint).
pub fn spawn_with_env(role: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
    start_child(child_command(&[], role, args, env))
}

/// [`spawn_with_env`] run through `wrapper`: a program and its arguments that execute
/// the command following them (e.g. `["unshare", "--pid", "--fork", "--kill-child"]`);
/// the [`Child`] is the wrapper. An empty `wrapper` runs the test binary directly.
pub fn spawn_via(wrapper: &[&str], role: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
    start_child(child_command(wrapper, role, args, env))
}

/// [`spawn`] running as `user` (see [`second_user`]): the child's uid, gid and groups are
/// the user's, set before it executes (the test binary must be readable by that user,
/// as `target/` is).
pub fn spawn_as(user: TestUser, role: &str, args: &[&str]) -> Child {
    let mut cmd = child_command(&[], role, args, &[]);
    // std drops the supplementary groups too when the parent is root.
    cmd.uid(user.uid).gid(user.gid);
    start_child(cmd)
}

fn child_command(wrapper: &[&str], role: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut cmd = Command::new(program);
            cmd.args(wrapper_args).arg(exe);
            cmd
        }
        None => Command::new(exe),
    };
    cmd.args(["child_role", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(ARGS_ENV, args.join(&ARG_SEP.to_string()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .envs(env.iter().copied());
    // SAFETY: the closure only calls prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(set_pdeathsig);
    }
    cmd
}

fn start_child(mut cmd: Command) -> Child {
    // Reaped by `Child` with waitpid (so it can be waited on with a timeout), not by
    // std's handle.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("spawn child");
    Child {
        pid: child.id() as i32,
        reaped: None,
    }
}

/// Forks a child that runs `body` and `_exit`s with its return value. The body must be
/// async-signal-safe (no allocation, no locks other than the ones under test): the test
/// harness is multi-threaded and another thread may hold the malloc lock at the fork.
pub fn fork_child(body: impl FnOnce() -> i32) -> Child {
    // SAFETY: the child only runs `body`, which the caller promises is
    // async-signal-safe, then `_exit`s without running destructors or atexit handlers.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let _ = set_pdeathsig();
        let code = body();
        // SAFETY: _exit is always safe to call.
        unsafe { libc::_exit(code) };
    }
    Child { pid, reaped: None }
}

/// A child process; killed and reaped on drop.
pub struct Child {
    pid: i32,
    reaped: Option<ExitStatus>,
}

impl Child {
    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: i32) {
        if self.reaped.is_none() {
            // SAFETY: signalling our own unreaped child (the pid cannot be reused).
            unsafe { libc::kill(self.pid, sig) };
        }
    }

    /// SIGKILLs and reaps it; returns its status.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        self.wait(WATCHDOG)
    }

    /// Its status if it has exited, without blocking.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if let Some(s) = self.reaped {
            return Some(s);
        }
        let mut status = 0;
        // SAFETY: waiting for our own child; `status` is writable.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if r == self.pid {
            self.reaped = Some(ExitStatus::from_raw(status));
        }
        self.reaped
    }

    /// Waits for it to exit; after `timeout` kills it and fails the test.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_wait() {
                return s;
            }
            if start.elapsed() > timeout {
                // SAFETY: signalling our own unreaped child.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                let mut status = 0;
                // SAFETY: reaping our own child.
                unsafe { libc::waitpid(self.pid, &mut status, 0) };
                self.reaped = Some(ExitStatus::from_raw(status));
                panic!(
                    "watchdog: child {} still running after {timeout:?}",
                    self.pid
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until it has exited *without reaping it* (it stays a zombie, its pid
    /// unused); after `timeout` fails the test.
    pub fn wait_exited_unreaped(&mut self, timeout: Duration) {
        wait_until(timeout, "the child to exit", || {
            if self.reaped.is_some() {
                return true;
            }
            // SAFETY: an all-zero siginfo_t is valid; waitid writes into it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waiting (WNOWAIT: without reaping) for our own child; `info` is
            // writable.
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
                )
            };
            // SAFETY: after a successful waitid the pid field is initialized (0 if the
            // child has not exited yet).
            r == 0 && unsafe { info.si_pid() } == self.pid
        });
    }

    /// Waits for it and fails the test unless it exited 0.
    pub fn expect_success(&mut self, timeout: Duration) {
        let s = self.wait(timeout);
        assert!(s.success(), "child {} failed: {s:?}", self.pid);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            self.signal(libc::SIGKILL);
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
        }
    }
}

/// Another program (not this test binary), started with its stdout and stderr captured
/// and `PR_SET_PDEATHSIG(SIGKILL)`: it never outlives the test.
pub struct Program {
    pid: i32,
    what: String,
    output: mpsc::Receiver<std::io::Result<std::process::Output>>,
}

impl Program {
    /// Starts `cmd`; `what` names it in failures.
    pub fn start(mut cmd: Command, what: &str) -> Program {
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(set_pdeathsig);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
        let pid = child.id() as i32;
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        Program {
            pid,
            what: what.to_owned(),
            output,
        }
    }

    /// Its exit status and output; after `timeout` kills it and fails the test.
    pub fn finish(self, timeout: Duration) -> std::process::Output {
        match self.output.recv_timeout(timeout) {
            Ok(out) => out.unwrap_or_else(|e| panic!("wait for {}: {e}", self.what)),
            Err(_) => {
                // SAFETY: signalling the program we started; it is not reaped until the
                // thread above returns, which it has not (nothing was received).
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                panic!("watchdog: {} still running after {timeout:?}", self.what);
            }
        }
    }
}

/// Polls `cond` every millisecond; fails the test with `what` if it is not true within
/// `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "watchdog: timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A child running `role` that stops forever at the library's failpoint `failpoint`
/// (the `test-hooks` feature), and the marker file it writes when it gets there.
pub fn spawn_to_failpoint(role: &str, args: &[&str], failpoint: &str) -> (Child, TempPath) {
    let marker = TempPath::new("failpoint");
    let child = spawn_with_env(role, args, &failpoint_env(failpoint, marker.as_str()));
    (child, marker)
}

/// The environment that stops a child at the library's failpoint `failpoint` and makes
/// it write the file `marker` when it gets there.
pub fn failpoint_env<'a>(failpoint: &'a str, marker: &'a str) -> [(&'static str, &'a str); 2] {
    [
        (shmsync::test_hooks::FAILPOINT_ENV, failpoint),
        (shmsync::test_hooks::FAILPOINT_MARKER_ENV, marker),
    ]
}

/// Waits until the child of [`spawn_to_failpoint`] that writes `marker` is at its
/// failpoint, then SIGKILLs it there.
pub fn kill_at_marker(child: &mut Child, marker: &TempPath) {
    wait_until(WATCHDOG, "the child to reach the failpoint", || {
        marker.path().exists()
    });
    child.kill();
}

/// Runs a child that stops at `failpoint`, waits until it is there, and SIGKILLs it.
pub fn kill_at_failpoint(role: &str, args: &[&str], failpoint: &str) {
    let (mut child, marker) = spawn_to_failpoint(role, args, failpoint);
    kill_at_marker(&mut child, &marker);
}

/// Aborts the whole test process (children die with it via PDEATHSIG) if not dropped
/// within `timeout`: for steps that block in a lock or wait and cannot poll.
pub struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    /// Arms a watchdog for `what`.
    pub fn new(timeout: Duration, what: &'static str) -> Watchdog {
        Watchdog::with_report(timeout, move || {
            eprintln!("watchdog: {what} still blocked after {timeout:?}; aborting");
        })
    }

    /// Arms a watchdog that, on timeout, runs `report` (print what is stuck, clean up)
    /// and then aborts.
    pub fn with_report(timeout: Duration, report: impl FnOnce() + Send + 'static) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
                report();
                std::process::abort();
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.0.take());
    }
}

/// Places a `T` at the start of `seg` (for tests that lay out their own segments).
pub fn at<T>(seg: &shmsync::Segment, offset: usize) -> *mut T {
    assert!(offset + std::mem::size_of::<T>() <= seg.len());
    // SAFETY: in bounds (asserted).
    unsafe { seg.as_ptr().add(offset).cast() }
}

/// A SysV key unique to this process and call (`0x5A000000 | pid bits | counter`),
/// removed (`IPC_RMID`) on drop if a segment created by this process still holds it.
pub struct SysvKey(pub libc::key_t);

impl SysvKey {
    /// A fresh key.
    pub fn new() -> SysvKey {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed) & 0xff;
        let pid = std::process::id();
        SysvKey((0x5A00_0000 | ((pid << 8) & 0x00ff_ff00) | n) as libc::key_t)
    }

    /// The key.
    pub fn key(&self) -> libc::key_t {
        self.0
    }
}

impl Drop for SysvKey {
    fn drop(&mut self) {
        // SAFETY: shmget/shmctl only read scalars and write the stat buffer we own.
        unsafe {
            let id = libc::shmget(self.0, 0, 0);
            if id < 0 {
                return;
            }
            let mut ds: libc::shmid_ds = std::mem::zeroed();
            // Only remove what this process created: another process whose pid shares
            // our low 16 bits may own the key.
            if libc::shmctl(id, libc::IPC_STAT, &mut ds) == 0 && ds.shm_cpid == libc::getpid() {
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            }
        }
    }
}

/// A unique path in `std::env::temp_dir()`, removed on drop (pass or fail).
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    /// A fresh unique path (nothing is created).
    pub fn new(tag: &str) -> TempPath {
        let name = unique_name(tag);
        TempPath(std::env::temp_dir().join(&name[1..]))
    }

    /// The path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// The path as a `&str` (temp paths made here are UTF-8), for child arguments.
    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sleeps until the wall-clock nanosecond timestamp in `at` (as made by
/// [`start_time_in`]), so racing processes start together.
pub fn start_at(at: &str) {
    let at: u128 = at.parse().expect("a start time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    if at > now {
        std::thread::sleep(Duration::from_nanos((at - now) as u64));
    }
}

/// A wall-clock nanosecond timestamp `delay` from now, for [`start_at`] in children.
pub fn start_time_in(delay: Duration) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        + delay;
    t.as_nanos().to_string()
}

/// The kernel's `struct robust_list_head`.
#[repr(C)]
struct RobustListHead {
    next: *const RobustListHead,
    futex_offset: libc::c_long,
    pending: *const u8,
}

/// Replaces the calling thread's robust list with an empty one and `_exit`s, so the
/// kernel never marks the robust mutexes this thread holds as owner-died — as when an
/// owner held more than 2048 robust locks or its list was corrupt.
pub fn exit_without_robust_list() -> ! {
    unregister_robust_list();
    // SAFETY: _exit skips atexit handlers; glibc's own list is no longer registered.
    unsafe { libc::_exit(0) }
}

/// Replaces the calling thread's robust list with an empty one, so that when this
/// thread dies the kernel does not mark the robust mutexes it holds as owner-died
/// (locking and unlocking still work: glibc keeps its list in the thread's memory; only
/// the kernel no longer walks it).
pub fn unregister_robust_list() {
    let head = Box::leak(Box::new(RobustListHead {
        next: std::ptr::null(),
        futex_offset: 0,
        pending: std::ptr::null(),
    }));
    head.next = head as *const RobustListHead;
    // SAFETY: `head` is a valid, leaked (never freed, so valid for the rest of the
    // thread's life) empty robust list head of the size the kernel expects.
    let r = unsafe {
        libc::syscall(
            libc::SYS_set_robust_list,
            head as *const RobustListHead,
            std::mem::size_of::<RobustListHead>(),
        )
    };
    assert_eq!(r, 0, "set_robust_list: {}", std::io::Error::last_os_error());
}

/// Why this machine refuses a new pid namespace (`unshare --pid --fork`), or `None`
/// when it allows one.
pub fn pid_namespace_refused() -> Option<String> {
    match Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .stdout(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`unshare --pid --fork true` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run unshare: {e}")),
    }
}

/// A second, unprivileged user for tests of what another user can do.
#[derive(Clone, Copy, Debug)]
pub struct TestUser {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// The login of [`second_user`].
pub const SECOND_USER: &str = "shmsync-test";

/// The unprivileged user [`SECOND_USER`], created with `useradd` if missing. Needs
/// root: otherwise (or if `useradd` fails) prints why the test `what` is SKIPPED and
/// returns `None`; the caller then returns.
pub fn second_user(what: &str) -> Option<TestUser> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {what}: needs root to create and become a second user");
        return None;
    }
    if let Some(user) = lookup_user(SECOND_USER) {
        return Some(user);
    }
    let made = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .arg(SECOND_USER)
        .output();
    // Another test process may have created it meanwhile: look again either way.
    match lookup_user(SECOND_USER) {
        Some(user) => Some(user),
        None => {
            eprintln!("SKIPPED {what}: could not create user {SECOND_USER}: {made:?}");
            None
        }
    }
}

fn lookup_user(name: &str) -> Option<TestUser> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: passwd is plain old data; getpwnam_r fills it.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` is as long as we say.
    let r = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    (r == 0 && !out.is_null()).then_some(TestUser {
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    })
}

/// Becomes `user` in a forked child (async-signal-safe: three system calls). Returns
/// false if any failed.
pub fn become_user(user: TestUser) -> bool {
    // SAFETY: setgroups/setgid/setuid only change this process's credentials.
    unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(user.gid) == 0
            && libc::setuid(user.uid) == 0
    }
}

/// glibc's `__kind` for the mutexes shmsync makes (error-checking | robust | shared).
pub const GLIBC_ROBUST_KIND: u32 = 2 | 16 | 128;

/// glibc's `__kind` word of `m`'s `pthread_mutex_t` (64-bit glibc: 16 bytes into it,
/// which starts after the 24-byte object header), for tests that corrupt it. Fails the
/// test unless it holds [`GLIBC_ROBUST_KIND`] when first looked at.
pub fn glibc_kind_word(m: &shmsync::RawRobustMutex) -> &AtomicU32 {
    // SAFETY: offset 40 lies inside the 64-byte, 8-aligned mutex, which outlives the
    // borrow; glibc reads and writes the word atomically.
    let word = unsafe {
        &*(m as *const shmsync::RawRobustMutex)
            .cast::<u8>()
            .add(40)
            .cast::<AtomicU32>()
    };
    assert_eq!(
        word.load(Ordering::SeqCst),
        GLIBC_ROBUST_KIND,
        "glibc kind word"
    );
    word
}

/// glibc's `__lock` word of a mutex (offset 24: the first word of the `pthread_mutex_t`
/// after the 24-byte object header), the futex its sleepers wait on.
pub fn glibc_lock_word(m: &shmsync::RawRobustMutex) -> &AtomicU32 {
    // SAFETY: offset 24 lies inside the 64-byte, 8-aligned mutex, which outlives the
    // borrow; glibc and the kernel access the word only atomically.
    unsafe {
        &*(m as *const shmsync::RawRobustMutex)
            .cast::<u8>()
            .add(24)
            .cast::<AtomicU32>()
    }
}

/// The state letter of a process (`R`, `S`, `T`, `Z`, …) from `/proc/<pid>/stat`.
pub fn proc_state(pid: i32) -> Option<char> {
    state_letter(&format!("/proc/{pid}/stat"))
}

/// Whether every thread of `pid` is stopped (`SIGSTOP` stops the threads one by one,
/// and a lock may be held by any of them).
pub fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        let stat = t.path().join("stat");
        state_letter(&stat.to_string_lossy()) == Some('T')
    })
}

fn state_letter(stat_path: &str) -> Option<char> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// splitmix64: a small deterministic generator for seeded tests (print the seed so a
/// failure can be replayed).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// An index into a slice of `len` elements.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// A duration of `0..=max` microseconds.
    pub fn micros(&mut self, max: u64) -> Duration {
        Duration::from_micros(self.below(max + 1))
    }
}
