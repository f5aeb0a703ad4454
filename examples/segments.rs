//! Every segment backing, shared with a real child process.
//!
//! For each backing — anonymous (`fork`), POSIX (`shm_open`), SysV (`shmget`), a memfd
//! sent over a Unix socket, and a file in the temp directory — the parent creates a
//! segment and starts a child (a `fork` for the anonymous mapping; this same program
//! re-executed with a role argument for the others). The child maps the segment, writes
//! a message into it and posts a `Semaphore` at the start of the segment; the parent
//! waits on that semaphore (with a timeout) and prints the message. Every name created is removed, on
//! error too.
//!
//! ```text
//! cargo run --example segments
//! ```
#![allow(clippy::disallowed_types)] // std atomics name the message length in this program

use std::error::Error;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shmsync::{Segment, Semaphore};

type Res<T> = Result<T, Box<dyn Error>>;

const LEN: usize = 4096;
/// Offset of the semaphore (all zero is a semaphore of value 0): the child posts it
/// once its message is written.
const READY: usize = 0;
/// Offset of the message length (u32) and of the message bytes.
const MSG_LEN: usize = 8;
const MSG: usize = 64;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "child" {
        return child(&args[2], &args[3]);
    }
    let pid = std::process::id();

    // Anonymous: only a fork child shares it.
    let seg = Segment::anonymous(LEN)?;
    // SAFETY: this program is single-threaded here, so the child may run anything; it
    // writes into the inherited mapping, wakes the parent and `_exit`s.
    let child_pid = unsafe { libc::fork() };
    if child_pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if child_pid == 0 {
        write_and_wake(&seg, "anonymous");
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let message = wait_for_message(&seg);
    reap(child_pid)?;
    report("anonymous", &format!("fork child {child_pid}"), message?);

    // POSIX shared memory.
    let name = format!("/shmsync-example-{pid}");
    let seg = Segment::posix_create(&name, LEN)?;
    let _unlink = OnDrop(|| drop(Segment::posix_unlink(&name)));
    let message = run_child(&seg, "posix", &name, None);
    report("posix", &name, message?);

    // SysV shared memory. A key is any number both sides agree on (or `ftok` of a path).
    let key = 0x5E00_0000 | (pid as i32 & 0x00ff_ffff);
    let seg = Segment::sysv_create(key, LEN)?;
    let _remove = OnDrop(|| drop(Segment::sysv_remove(key)));
    let message = run_child(&seg, "sysv", &key.to_string(), None);
    report("sysv", &format!("key {key:#x}"), message?);

    // memfd: nothing to name or remove; the descriptor travels over a socket.
    let seg = Segment::memfd_create("shmsync-example", LEN)?;
    let (ours, theirs) = UnixStream::pair()?;
    // SAFETY: F_SETFD 0 clears FD_CLOEXEC on a descriptor we own, so the child
    // inherits it; it is closed here once the child has started.
    if unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let message = run_child(
        &seg,
        "memfd",
        &theirs.as_raw_fd().to_string(),
        Some((&ours, theirs)),
    );
    report("memfd", "sent over a socketpair", message?);

    // A file.
    let path = std::env::temp_dir().join(format!("shmsync-example-{pid}"));
    let seg = Segment::file_create(&path, LEN)?;
    let _rm = OnDrop(|| drop(std::fs::remove_file(&path)));
    let path_str = path.to_str().ok_or("temp dir is not UTF-8")?;
    let message = run_child(&seg, "file", path_str, None);
    report("file", path_str, message?);
    Ok(())
}

/// Runs `f` when dropped: removes a name on every exit path, `?` included.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

fn report(backing: &str, place: &str, message: String) {
    println!("{backing:<10} {place:<36} {message}");
}

fn word(seg: &Segment, offset: usize) -> &AtomicU32 {
    assert!(offset + 4 <= seg.len() && offset % 4 == 0);
    // SAFETY: in bounds and 4-aligned (the mapping is page-aligned); the reference
    // borrows `seg`, so it cannot outlive the mapping.
    unsafe { &*seg.as_ptr().add(offset).cast::<AtomicU32>() }
}

fn ready(seg: &Segment) -> &Semaphore {
    // SAFETY: offset 0 of a page-aligned mapping of at least LEN bytes, so aligned and in
    // bounds; every bit pattern (all zero included) is a valid semaphore, and the
    // reference borrows `seg`, so it cannot outlive the mapping.
    unsafe { Semaphore::attach(seg.as_ptr().add(READY).cast()) }.expect("placement checked")
}

/// Starts this program as a child for `backing` with `arg`, sends it the memfd if
/// asked, and waits for its message.
fn run_child(
    seg: &Segment,
    backing: &str,
    arg: &str,
    memfd: Option<(&UnixStream, UnixStream)>,
) -> Res<String> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["child", backing, arg]);
    // SAFETY: the closure only calls prctl, which is async-signal-safe: the child dies
    // with us instead of outliving a failed parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    if let Some((ours, theirs)) = memfd {
        drop(theirs); // the child has its own copy now
        seg.send_fd(ours)?;
    }
    let message = wait_for_message(seg);
    if message.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let message = message?;
    if !status.success() {
        return Err(format!("{backing} child failed: {status}").into());
    }
    Ok(message)
}

/// Sleeps on the futex word until the child has written its message (at most 5 s).
fn wait_for_message(seg: &Segment) -> Res<String> {
    // The wait acquires what the child's post released: the message written before it.
    ready(seg).wait_timeout(Duration::from_secs(5))?;
    // Relaxed: ordered by the semaphore's wait above.
    let len = (word(seg, MSG_LEN).load(Ordering::Relaxed) as usize).min(LEN - MSG);
    // SAFETY: MSG..MSG+len is inside the segment; the child wrote it before posting and
    // writes nothing more.
    let bytes = unsafe { std::slice::from_raw_parts(seg.as_ptr().add(MSG), len) };
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// The child's work: write a message, publish it, wake the parent.
fn write_and_wake(seg: &Segment, backing: &str) {
    let mut buf = [0u8; 128];
    let mut w = &mut buf[..];
    let _ = std::io::Write::write_fmt(
        &mut w,
        format_args!("hello from pid {} via {backing}", std::process::id()),
    );
    let len = 128 - w.len();
    // SAFETY: MSG..MSG+len is inside the segment; the parent reads it only after the post.
    unsafe {
        seg.as_ptr()
            .add(MSG)
            .copy_from_nonoverlapping(buf.as_ptr(), len)
    };
    // Relaxed: published by the post below.
    word(seg, MSG_LEN).store(len as u32, Ordering::Relaxed);
    ready(seg)
        .post()
        .expect("one post on a zero semaphore cannot overflow");
}

fn child(backing: &str, arg: &str) -> Res<()> {
    let seg = match backing {
        "posix" => Segment::posix_open(arg)?,
        "sysv" => Segment::sysv_open(arg.parse()?)?,
        "file" => Segment::file_open(arg)?,
        "memfd" => {
            // SAFETY: the parent made this descriptor inheritable and passed its number;
            // this process owns it.
            let sock = UnixStream::from(unsafe { OwnedFd::from_raw_fd(arg.parse()?) });
            Segment::recv_memfd(&sock)?
        }
        other => return Err(format!("unknown backing {other}").into()),
    };
    seg.require_len(LEN)?;
    write_and_wake(&seg, backing);
    Ok(())
}

fn reap(pid: libc::pid_t) -> Res<()> {
    let mut status = 0;
    // SAFETY: waiting for our own child; `status` is writable.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(std::io::Error::last_os_error().into());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("fork child failed: status {status:#x}").into());
    }
    Ok(())
}
