//! Processes, shared memory and statistics for the harness.

use std::time::Instant;

/// A fresh zeroed shared mapping of at least `len` bytes (one page or more), inherited
/// by fork children. Leaked: the harness is a short-lived process. Made with `mmap`
/// directly, so that the harness depends on nothing of shmsync but the primitives.
pub fn shared_bytes(len: usize) -> *mut u8 {
    // SAFETY: a new anonymous mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len.max(4096),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(
        p != libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}

/// A zeroed, page-aligned `T` in its own shared mapping.
pub fn shared<T>() -> *mut T {
    shared_bytes(std::mem::size_of::<T>()).cast()
}

/// Moves `value` into its own shared mapping and returns it for the rest of the run.
pub fn place_value<T: Sync>(value: T) -> &'static T {
    let p = shared::<T>();
    // SAFETY: `p` is a fresh, page-aligned (so aligned for `T`), writable mapping of at
    // least `size_of::<T>()` bytes that nothing else references; it is leaked, so the
    // reference stays valid for the rest of the process.
    unsafe {
        p.write(value);
        &*p
    }
}

/// Forks a child that runs `f` and exits: 0 on return, 1 on panic. The harness is
/// single-threaded, so the child may do anything the parent could.
pub fn fork(f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the harness is single-threaded, so the child may do anything the parent
    // could; it leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: prctl and alarm have no memory preconditions. The alarm is the
        // child's watchdog: a peer that deadlocks ends the child instead of the run.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::alarm(300);
        }
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok();
        // SAFETY: always safe; skips the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    pid
}

/// Waits for a child; an error says how it ended if not with status 0.
pub fn reap(pid: libc::pid_t) -> Result<(), String> {
    let mut status = 0;
    // SAFETY: our own child; `status` is a valid out-pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(format!("waitpid({pid}) failed"));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else if libc::WIFSIGNALED(status) {
        Err(format!("child killed by signal {}", libc::WTERMSIG(status)))
    } else {
        Err(format!(
            "child exited with status {}",
            libc::WEXITSTATUS(status)
        ))
    }
}

/// Reaps every child, returning the first failure.
pub fn reap_all(pids: Vec<libc::pid_t>) -> Result<(), String> {
    let mut first = Ok(());
    for pid in pids {
        let r = reap(pid);
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// Median, and the lowest and highest value.
pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Mean time of one call of `f` over `n` calls, in ns.
pub fn time_loop(n: u64, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// Pins the calling process to the `i`-th of the CPUs it may run on (counting from 0,
/// wrapping around), so that processes started with different `i` run side by side.
/// Returns whether it could.
pub fn pin_to_cpu(i: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most
    // its size into it, CPU_ISSET and CPU_SET stay inside it (the indices are below
    // CPU_SETSIZE), and sched_setaffinity only reads it.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, size, &mut allowed) != 0 {
            return false;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &allowed))
            .collect();
        if cpus.is_empty() {
            return false;
        }
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus[i % cpus.len()], &mut one);
        libc::sched_setaffinity(0, size, &one) == 0
    }
}
