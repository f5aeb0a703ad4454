//! The `shmsync` operator tool, run as a subprocess against real regions where
//! processes died or stopped holding things, as root and as a second, unprivileged user.
#![allow(clippy::disallowed_types)]
#[path = "../../tests/common/mod.rs"]
mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use shmsync::{Acquired, LeasedSemaphore, RawRobustMutex, Region, Segment, SeqLock};
use shmsync::{Location, RegionOptions};

const SIZE: usize = 1 << 16;

#[test]
fn child_role() {
    common::dispatch(&[
        ("hold_lock", hold_lock),
        ("hold_everything", hold_everything),
        ("hold_permit", hold_permit),
        ("hold_table_lock", hold_table_lock),
        ("make_regions", make_regions),
        ("make_region", make_region),
    ]);
}

type Feed = [u64; 4];

/// Waits to be killed.
fn park() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn open(name: &str) -> Region {
    Region::open(&Location::parse(name).unwrap()).unwrap()
}

/// Takes two leased permits and half-writes a seqlock update, writes the marker file
/// `args[1]`, then waits to be killed.
fn hold_everything(args: &[String]) {
    let region = open(&args[0]);
    let sem = region.get::<LeasedSemaphore>("pool").unwrap();
    let feed = region.get::<SeqLock<Feed>>("feed").unwrap();
    let _held = [sem.acquire().unwrap(), sem.acquire().unwrap()];
    feed.__test_write_partial([9; 4], 2).unwrap();
    std::fs::write(&args[1], "held").unwrap();
    park();
}

/// Locks mutex `args[1]` in region `args[0]`, writes its thread id to the marker file
/// `args[2]`, then waits to be killed.
fn hold_lock(args: &[String]) {
    let region = open(&args[0]);
    let m = region.get::<RawRobustMutex>(&args[1]).unwrap();
    let _ = m.lock().unwrap();
    std::fs::write(&args[2], shmsync::test_hooks::current_tid().to_string()).unwrap();
    park();
}

/// Takes one permit of "pool", writes the marker `args[1]`, waits to be killed.
fn hold_permit(args: &[String]) {
    let region = open(&args[0]);
    let sem = region.get::<LeasedSemaphore>("pool").unwrap();
    let _p = sem.acquire().unwrap();
    std::fs::write(&args[1], "held").unwrap();
    park();
}

/// Locks the lease table of "pool" (an internal lock), writes the marker `args[1]`,
/// and waits (the test stops it with SIGSTOP, then kills it).
fn hold_table_lock(args: &[String]) {
    let region = open(&args[0]);
    let sem = region.get::<LeasedSemaphore>("pool").unwrap();
    let _ = sem.table_lock().lock().unwrap();
    std::fs::write(&args[1], "locked").unwrap();
    park();
}

/// Creates regions at `args[0..3]` (POSIX, SysV, file), one mutex in each, writes
/// the marker `args[3]`, and waits to be killed, keeping them mapped.
fn make_regions(args: &[String]) {
    let regions: Vec<Region> = args[..3]
        .iter()
        .map(|n| Region::create(&Location::parse(n).unwrap(), SIZE).unwrap())
        .collect();
    for r in &regions {
        r.get_or_init::<RawRobustMutex>("m", ()).unwrap();
    }
    std::fs::write(&args[3], "made").unwrap();
    park();
}

/// Creates the region `args[0]` with one mutex and exits (run as another user).
fn make_region(args: &[String]) {
    let r = Region::create(&Location::parse(&args[0]).unwrap(), SIZE).unwrap();
    r.get_or_init::<RawRobustMutex>("m", ()).unwrap();
}

/// The tool's exit code, stdout and stderr.
struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}\nstderr: {}", self.out, self.err))
    }
}

/// Runs the tool (as `user`, if given), failing the test if it runs past the watchdog.
fn tool_as(user: Option<common::TestUser>, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shmsync"));
    cmd.args(args);
    if let Some(u) = user {
        cmd.uid(u.uid).gid(u.gid);
    }
    let out = common::Program::start(cmd, &format!("shmsync {args:?}")).finish(common::WATCHDOG);
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn tool(args: &[&str]) -> Run {
    tool_as(None, args)
}

fn entry<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no entry {name} in {report}"))
}

fn object<'a>(recovery: &'a Value, name: &str) -> &'a Value {
    recovery["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no object {name} in {recovery}"))
}

fn marker_text(marker: &common::TempPath, what: &str) -> String {
    common::wait_until(common::WATCHDOG, what, || {
        std::fs::read_to_string(marker.path()).is_ok_and(|s| !s.is_empty())
    });
    std::fs::read_to_string(marker.path()).unwrap()
}

#[test]
fn inspect_and_recover_a_mutex_whose_holder_was_killed() {
    let name = common::ShmName::new("tool");
    let loc = Location::parse(name.as_str()).unwrap();
    let region = Region::create(&loc, SIZE).unwrap();
    let m = region.get_or_init::<RawRobustMutex>("lock", ()).unwrap();
    region.get_or_init::<RawRobustMutex>("idle", ()).unwrap();

    let marker = common::TempPath::new("locked");
    let mut holder = common::spawn("hold_lock", &[name.as_str(), "lock", marker.as_str()]);
    let tid: i64 = marker_text(&marker, "the holder to lock").parse().unwrap();

    // Held by a live process: reported with its pid, thread and liveness; nothing to
    // recover. The region is mapped read-only.
    let run = tool(&["inspect", name.as_str(), "--json"]);
    assert_eq!(run.code, 0, "{}", run.out);
    let report = run.json();
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["command"], "inspect");
    assert_eq!(report["read_only"], true);
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(report["owner_uid"], euid);
    assert_eq!(report["mode"], "0600");
    let lock = entry(&report, "lock");
    assert_eq!(lock["state"], "locked");
    assert_eq!(lock["owner_pid"], holder.pid());
    assert_eq!(lock["owner_tid"], tid);
    assert_eq!(lock["owner"], "alive");
    assert_eq!(entry(&report, "idle")["state"], "free");
    let text = tool(&["inspect", name.as_str()]).out;
    for want in ["NAME", "KIND", "STATE", "owner     uid", "mode 0600"] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert!(
        text.contains(&format!(
            "locked by pid {}, thread {tid} (alive)",
            holder.pid()
        )),
        "{text}"
    );

    holder.kill();
    let run = tool(&["inspect", name.as_str(), "--json"]);
    assert_eq!(run.code, 3, "owner died must be flagged: {}", run.out);
    let report = run.json();
    assert_eq!(entry(&report, "lock")["state"], "owner_died");
    assert_eq!(entry(&report, "lock")["needs_recovery"], true);
    assert_eq!(entry(&report, "lock")["dead_owner_tid"], tid);
    let text = tool(&["inspect", name.as_str()]).out;
    assert!(
        text.contains(&format!("owner died (thread {tid}, dead)")),
        "the dead thread must be named:\n{text}"
    );

    // Only the application can repair the data: a distinct exit code, not "recovered".
    let run = tool(&["recover", name.as_str(), "--json"]);
    assert_eq!(run.code, 5, "{}", run.out);
    let out = run.json();
    assert_eq!(out["schema_version"], 1);
    assert_eq!(out["outcome"], "needs_application");
    assert_eq!(object(&out, "lock")["outcome"], "needs_application");
    assert_eq!(object(&out, "idle")["outcome"], "fine");
    assert!(out["actions"][0]["action"]
        .as_str()
        .unwrap()
        .contains("left for the application"));

    // A dry run maps read-only and changes nothing.
    let run = tool(&[
        "recover",
        name.as_str(),
        "--json",
        "--dry-run",
        "--mark-consistent",
    ]);
    assert_eq!(run.code, 4, "{}", run.out);
    assert_eq!(run.json()["after"]["read_only"], true);
    assert_eq!(m.state(), shmsync::MutexState::OwnerDied);

    let run = tool(&["recover", name.as_str(), "--json", "--mark-consistent"]);
    assert_eq!(run.code, 4, "{}", run.out);
    let out = run.json();
    assert_eq!(out["outcome"], "recovered");
    assert!(out["actions"][0]["action"]
        .as_str()
        .unwrap()
        .contains("marked consistent"));
    assert_eq!(entry(&out["after"], "lock")["state"], "free");
    assert_eq!(m.lock(), Ok(Acquired::Clean));
    // SAFETY: held by this thread.
    unsafe { m.unlock() }.unwrap();

    // Nothing left: exit 0, and the text says so per object.
    let run = tool(&["recover", name.as_str()]);
    assert_eq!(run.code, 0, "{}", run.out);
    assert!(run.out.contains("OBJECT"), "{}", run.out);
    assert!(run.out.contains("2 objects: 0 recovered"), "{}", run.out);
}

#[test]
fn recover_reclaims_dead_permits_and_repairs_a_torn_seqlock() {
    let name = common::ShmName::new("toolall");
    let loc = Location::parse(name.as_str()).unwrap();
    let region = Region::create(&loc, SIZE).unwrap();
    let sem = region.get_or_init::<LeasedSemaphore>("pool", 5).unwrap();
    let feed = region.get_or_init::<SeqLock<Feed>>("feed", [1; 4]).unwrap();
    let mine = sem.acquire().unwrap();

    let marker = common::TempPath::new("held");
    let mut holder = common::spawn("hold_everything", &[name.as_str(), marker.as_str()]);
    marker_text(&marker, "the holder to take everything");
    let pid = holder.pid();
    holder.kill();

    let run = tool(&["inspect", name.as_str(), "--json"]);
    assert_eq!(run.code, 3, "{}", run.out);
    let report = run.json();
    let pool = entry(&report, "pool");
    assert_eq!(pool["value"], 2, "{pool}");
    assert_eq!(pool["needs_recovery"], true);
    let leases = pool["leases"].as_array().unwrap();
    let dead = leases
        .iter()
        .find(|l| l["pid"] == pid)
        .expect("the dead holder's lease");
    assert_eq!(dead["permits"], 2);
    assert_eq!(dead["liveness"], "dead");
    let me = leases
        .iter()
        .find(|l| l["pid"] == std::process::id())
        .expect("our lease");
    assert_eq!(me["liveness"], "alive");
    let f = entry(&report, "feed");
    assert_eq!(f["torn"], true, "{f}");
    assert_eq!(f["writer"], "owner_died");
    // Readers are unaffected by the torn copy.
    assert_eq!(feed.read(), [1; 4]);
    let text = tool(&["inspect", name.as_str()]).out;
    assert!(text.contains("2 leases (3 permits)"), "{text}");

    let run = tool(&["recover", name.as_str(), "--json"]);
    assert_eq!(run.code, 4, "{}", run.out);
    let out = run.json();
    let actions: Vec<String> = out["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        actions.contains(&format!("reclaimed 2 permits of dead pid {pid}")),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a.starts_with("repaired")),
        "{actions:?}"
    );
    assert_eq!(object(&out, "pool")["outcome"], "recovered");
    assert_eq!(object(&out, "feed")["outcome"], "recovered");
    assert_eq!(entry(&out["after"], "pool")["value"], 4);
    assert_eq!(entry(&out["after"], "feed")["torn"], false);
    let text = tool(&["inspect", name.as_str()]).out;
    assert!(text.contains("1 lease (1 permit)"), "{text}");

    // Everything works afterwards: value + live holdings == capacity, writes are clean.
    assert_eq!(sem.value(), 4);
    drop(mine);
    assert_eq!(sem.value(), 5);
    assert!(!feed.store([2; 4]).unwrap().repaired);
    assert_eq!(feed.read(), [2; 4]);
    assert_eq!(tool(&["inspect", name.as_str(), "--json"]).code, 0);
}

#[test]
fn recover_against_a_stopped_holder_of_an_internal_lock_returns_and_names_the_object() {
    let name = common::ShmName::new("toolstop");
    let loc = Location::parse(name.as_str()).unwrap();
    let region = Region::create(&loc, SIZE).unwrap();
    let sem = region.get_or_init::<LeasedSemaphore>("pool", 3).unwrap();
    region.get_or_init::<RawRobustMutex>("lock", ()).unwrap();

    // A dead lease to reclaim, a dead mutex owner, and a live, stopped process holding
    // the lease table's lock.
    let permit_marker = common::TempPath::new("permit");
    let mut dead = common::spawn("hold_permit", &[name.as_str(), permit_marker.as_str()]);
    marker_text(&permit_marker, "a permit to be held");
    let lock_marker = common::TempPath::new("lock");
    let mut owner = common::spawn("hold_lock", &[name.as_str(), "lock", lock_marker.as_str()]);
    marker_text(&lock_marker, "the mutex to be held");
    let dead_pid = dead.pid();
    dead.kill();
    owner.kill();
    let table_marker = common::TempPath::new("table");
    let stopped = common::spawn("hold_table_lock", &[name.as_str(), table_marker.as_str()]);
    marker_text(&table_marker, "the table lock to be held");
    stopped.signal(libc::SIGSTOP);
    // The signal is asynchronous: wait until /proc shows every thread stopped (the lock
    // holder is not the main thread).
    common::wait_until(common::WATCHDOG, "the holder to stop", || {
        common::all_threads_stopped(stopped.pid())
    });

    // Inspect takes no lock: it reports the stopped holder and returns.
    let run = tool(&["inspect", name.as_str()]);
    assert_eq!(run.code, 3, "{}", run.out);
    assert!(
        run.out
            .contains(&format!("table lock locked by pid {}", stopped.pid())),
        "{}",
        run.out
    );
    assert!(run.out.contains("(alive, stopped)"), "{}", run.out);

    // Recover waits at most --wait for the table, says which object it could not reach
    // and why, and still handles the others.
    let run = tool(&["recover", name.as_str(), "--json", "--wait", "1"]);
    assert_eq!(run.code, 6, "{}", run.out);
    let out = run.json();
    assert_eq!(out["outcome"], "unreachable");
    assert_eq!(out["wait_ms"], 1000);
    let pool = object(&out, "pool");
    assert_eq!(pool["outcome"], "unreachable", "{pool}");
    let why = pool["actions"][0].as_str().unwrap();
    assert!(
        why.contains("could not reach the lease table within 1s")
            && why.contains(&format!("pid {}", stopped.pid()))
            && why.contains("stopped"),
        "{why}"
    );
    assert_eq!(object(&out, "lock")["outcome"], "needs_application");
    let text = tool(&["recover", name.as_str(), "--wait", "200ms"]);
    assert_eq!(text.code, 6);
    assert!(
        text.out.contains("pool") && text.out.contains("unreachable"),
        "{}",
        text.out
    );

    // Once the holder is gone the same command reclaims the dead permit.
    stopped.signal(libc::SIGCONT);
    drop(stopped);
    let run = tool(&["recover", name.as_str(), "--json"]);
    assert_eq!(run.code, 5, "{}", run.out);
    let out = run.json();
    assert_eq!(object(&out, "pool")["outcome"], "recovered");
    assert_eq!(
        object(&out, "pool")["actions"][0],
        format!("reclaimed 1 permit of dead pid {dead_pid}")
    );
    assert_eq!(sem.value(), 3);
}

/// What `list` exits with: 3 if any region on the machine (other tests' included)
/// needs recovery, else 0.
fn list_exit_code(out: &Value) -> i32 {
    let any = out["regions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["needs_recovery"] == true);
    if any {
        3
    } else {
        0
    }
}

/// Removes a SysV segment another process created, pass or fail.
struct RemoveOnDrop(libc::key_t);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = Segment::sysv_remove(self.0);
    }
}

#[test]
fn list_finds_regions_another_process_made_and_never_follows_or_blocks() {
    let posix = common::ShmName::new("toollist");
    let key = common::SysvKey::new();
    let sysv = format!("sysv:{:#x}", key.key() as u32);
    let dir = common::TempPath::new("listdir");
    std::fs::create_dir(dir.path()).unwrap();
    let file = dir.path().join("region");
    let file = file.to_str().unwrap();
    // Decoys: a FIFO (opening it would block), a symlink to the region file, a file
    // that is not a region, and a /dev/shm object that is not one.
    let fifo = dir.path().join("fifo");
    let cfifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(cfifo.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink(file, dir.path().join("link")).unwrap();
    std::fs::write(dir.path().join("plain"), vec![7u8; 4096]).unwrap();
    let other = common::ShmName::new("toolnotregion");
    drop(Segment::posix_create(other.as_str(), 4096).unwrap());

    let marker = common::TempPath::new("made");
    let maker = common::spawn(
        "make_regions",
        &[posix.as_str(), &sysv, file, marker.as_str()],
    );
    marker_text(&marker, "the regions to be made");
    // The child made the SysV segment, so `SysvKey` would not remove it.
    let _remove = RemoveOnDrop(key.key());

    let run = tool(&["list", dir.as_str(), "--json"]);
    let out = run.json();
    assert_eq!(run.code, list_exit_code(&out), "{}\n{}", run.out, run.err);
    assert_eq!(out["schema_version"], 1);
    assert_eq!(out["command"], "list");
    let regions = out["regions"].as_array().unwrap();
    let find = |n: &str| regions.iter().find(|r| r["region"] == n);
    for (n, backing) in [(posix.as_str(), "posix"), (&sysv, "sysv"), (file, "file")] {
        let r = find(n).unwrap_or_else(|| panic!("{n} not listed: {out}"));
        assert_eq!(r["backing"], backing, "{r}");
        assert_eq!(r["status"], "ready", "{r}");
        assert_eq!(r["objects"], 1, "{r}");
        assert_eq!(r["needs_recovery"], false, "{r}");
        assert_eq!(r["mode"], "0600", "{r}");
        assert_eq!(r["creator"]["pid"], maker.pid(), "{r}");
        assert!(r["attached"].as_u64().unwrap() >= 1, "{r}");
        if backing != "sysv" {
            assert!(
                r["attached_pids"]
                    .as_array()
                    .unwrap()
                    .contains(&maker.pid().into()),
                "{r}"
            );
        }
    }
    for decoy in ["fifo", "link", "plain"] {
        let p = dir.path().join(decoy);
        assert!(find(p.to_str().unwrap()).is_none(), "{decoy} listed: {out}");
    }
    assert!(find(other.as_str()).is_none(), "a non-region listed: {out}");

    let text = tool(&["list", dir.as_str()]).out;
    assert!(
        text.starts_with("REGION") && text.contains("ATTACHED") && text.contains(&sysv),
        "{text}"
    );
}

#[test]
fn remove_refuses_what_is_not_a_region_and_leaves_it_intact() {
    let dir = common::TempPath::new("rmdir");
    std::fs::create_dir(dir.path()).unwrap();
    let plain = dir.path().join("data.db");
    std::fs::write(&plain, vec![1u8; 8192]).unwrap();
    let plain = plain.to_str().unwrap();

    let run = tool(&["remove", plain]);
    assert_eq!(run.code, 1, "{}", run.err);
    assert!(run.err.contains("not a shmsync region"), "{}", run.err);
    assert!(Path::new(plain).exists(), "a plain file was removed");

    // Another program's POSIX object and SysV segment (no region header).
    let posix = common::ShmName::new("toolforeign");
    {
        let seg = Segment::posix_create(posix.as_str(), SIZE).unwrap();
        // SAFETY: a fresh mapping of SIZE bytes, used by nobody else.
        unsafe { std::ptr::write_bytes(seg.as_ptr(), 0x5A, 4096) };
    }
    let run = tool(&["remove", posix.as_str(), "--json"]);
    assert_eq!(run.code, 1);
    let out = run.json();
    assert_eq!(out["schema_version"], 1);
    assert!(
        out["error"].as_str().unwrap().contains("no shmsync magic"),
        "{out}"
    );
    assert!(Path::new(&format!("/dev/shm{}", posix.as_str())).exists());

    let key = common::SysvKey::new();
    let sysv = format!("sysv:{:#x}", key.key() as u32);
    drop(Segment::sysv_create(key.key(), SIZE).unwrap());
    let run = tool(&["remove", &sysv]);
    assert_eq!(run.code, 1, "{}", run.err);
    assert!(run.err.contains("all zero"), "{}", run.err);
    assert!(
        Segment::sysv_open(key.key()).is_ok(),
        "the SysV segment was removed"
    );

    // A symlink is never followed, never removed, even with --force.
    let target = common::TempPath::new("rmtarget");
    drop(Region::create(&Location::File(target.path().into()), SIZE).unwrap());
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(target.path(), &link).unwrap();
    let run = tool(&["remove", link.to_str().unwrap(), "--force"]);
    assert_eq!(run.code, 1, "{}", run.err);
    assert!(run.err.contains("a symlink"), "{}", run.err);
    assert!(link.symlink_metadata().is_ok() && target.path().exists());

    // --force removes what is not a region.
    assert_eq!(tool(&["remove", plain, "--force"]).code, 0);
    assert!(!Path::new(plain).exists());
    assert_eq!(tool(&["remove", &sysv, "--force"]).code, 0);
    assert!(Segment::sysv_open(key.key()).is_err());

    // Real regions of every backing are removed.
    let region = common::ShmName::new("toolrm");
    drop(Region::create(&Location::parse(region.as_str()).unwrap(), SIZE).unwrap());
    let run = tool(&["remove", region.as_str()]);
    assert_eq!(run.code, 0, "{}", run.err);
    assert!(run.out.contains("removed"));
    assert!(!Path::new(&format!("/dev/shm{}", region.as_str())).exists());
    let key2 = common::SysvKey::new();
    drop(Region::create(&Location::SysV(key2.key()), SIZE).unwrap());
    let run = tool(&["remove", &format!("sysv:{}", key2.key()), "--json"]);
    assert_eq!(run.code, 0, "{}", run.out);
    assert_eq!(run.json()["removed"], true);
    assert!(Segment::sysv_open(key2.key()).is_err());
    let run = tool(&["remove", target.as_str()]);
    assert_eq!(run.code, 0, "{}", run.err);
    assert!(!target.path().exists());
}

#[test]
fn another_users_regions_need_any_owner_and_read_permission_is_enough_to_inspect() {
    let Some(user) = common::second_user("the tool as a second user") else {
        return;
    };
    // A root region the other user may read (0644), and one it may not (0600).
    let shared = common::ShmName::new("toolshared");
    let loc = Location::parse(shared.as_str()).unwrap();
    let opts = RegionOptions::new().mode(0o644);
    let region = Region::create_with(&loc, SIZE, opts).unwrap();
    region.get_or_init::<RawRobustMutex>("m", ()).unwrap();
    let private = common::ShmName::new("toolprivate");
    drop(Region::create(&Location::parse(private.as_str()).unwrap(), SIZE).unwrap());

    // Refused without the flag, and the error names it: to the other user, and to the
    // owner too, since the mode lets others in.
    let run = tool(&["inspect", shared.as_str()]);
    assert_eq!(run.code, 1, "{}", run.out);
    assert!(run.err.contains("--any-owner"), "{}", run.err);
    let run = tool_as(Some(user), &["inspect", shared.as_str()]);
    assert_eq!(run.code, 1, "{}", run.out);
    assert!(run.err.contains("--any-owner"), "{}", run.err);
    let run = tool_as(Some(user), &["inspect", shared.as_str(), "--json"]);
    assert_eq!(run.code, 1);
    assert!(run.json()["error"]
        .as_str()
        .unwrap()
        .contains("--any-owner"));

    // Read permission is enough with it: the mapping is read-only.
    let run = tool_as(
        Some(user),
        &["inspect", shared.as_str(), "--any-owner", "--json"],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.out, run.err);
    let report = run.json();
    assert_eq!(report["read_only"], true);
    assert_eq!(report["owner_uid"], 0);
    assert_eq!(report["mode"], "0644");
    assert_eq!(entry(&report, "m")["state"], "free");
    // Recovering writes, which the other user may not.
    let run = tool_as(Some(user), &["recover", shared.as_str(), "--any-owner"]);
    assert_eq!(run.code, 1, "{}", run.out);
    assert!(run.err.contains("Permission denied"), "{}", run.err);

    // Listing as the other user shows the unreadable region as such.
    let run = tool_as(Some(user), &["list", "--json"]);
    let out = run.json();
    assert_eq!(run.code, list_exit_code(&out), "{}", run.err);
    let regions = out["regions"].as_array().unwrap();
    let row = |n: &str| regions.iter().find(|r| r["region"] == n).cloned();
    let p = row(private.as_str()).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(p["status"], "unreadable", "{p}");
    assert!(
        p["error"].as_str().unwrap().contains("Permission denied"),
        "{p}"
    );
    assert_eq!(row(shared.as_str()).unwrap()["needs_recovery"], false);

    // Root removing the other user's region: refused without --any-owner.
    let theirs = common::ShmName::new("tooltheirs");
    common::spawn_as(user, "make_region", &[theirs.as_str()]).expect_success(common::WATCHDOG);
    let dev = format!("/dev/shm{}", theirs.as_str());
    let run = tool(&["inspect", theirs.as_str()]);
    assert_eq!(run.code, 1);
    assert!(run.err.contains("--any-owner"), "{}", run.err);
    assert_eq!(tool(&["inspect", theirs.as_str(), "--any-owner"]).code, 0);
    let run = tool(&["remove", theirs.as_str()]);
    assert_eq!(run.code, 1);
    assert!(run.err.contains("--any-owner"), "{}", run.err);
    assert!(Path::new(&dev).exists());
    assert_eq!(tool(&["remove", theirs.as_str(), "--any-owner"]).code, 0);
    assert!(!Path::new(&dev).exists());
}

#[test]
fn names_with_control_characters_are_printed_escaped() {
    let name = common::ShmName::new("toolesc");
    let loc = Location::parse(name.as_str()).unwrap();
    let region = Region::create(&loc, SIZE).unwrap();
    region
        .get_or_init::<RawRobustMutex>("evilXname", ())
        .unwrap();
    // Write an ESC into the stored name, as a hostile peer could.
    let seg = region.segment();
    // SAFETY: the mapping is `seg.len()` bytes; the table is not being written.
    let bytes = unsafe { std::slice::from_raw_parts_mut(seg.as_ptr(), seg.len()) };
    let at = bytes
        .windows(9)
        .position(|w| w == b"evilXname")
        .expect("the stored name");
    bytes[at + 4] = 0x1b;

    for args in [
        &["inspect", name.as_str()][..],
        &["recover", name.as_str(), "--dry-run"][..],
    ] {
        let run = tool(args);
        let all = format!("{}{}", run.out, run.err);
        assert!(
            !all.contains('\x1b'),
            "a raw ESC reached the terminal: {all:?}"
        );
        assert!(
            all.contains("evil\\x1bname") || all.contains("evil\\u{1b}name"),
            "{args:?}: {all}"
        );
    }
    let run = tool(&["inspect", name.as_str(), "--json"]);
    assert!(!run.out.contains('\x1b'), "{:?}", run.out);
    if run.code != 1 {
        assert_eq!(entry(&run.json(), "evil\x1bname")["kind"], "mutex");
    }

    // A /dev/shm name with an escape sequence, as `list` finds it.
    let evil = common::ShmName(format!(
        "{}-\x1b]0;owned\x07",
        common::unique_name("toolescname")
    ));
    drop(Region::create(&Location::parse(evil.as_str()).unwrap(), SIZE).unwrap());
    let run = tool(&["list"]);
    assert!(
        !run.out.contains('\x1b') && !run.out.contains('\x07'),
        "{:?}",
        run.out
    );
    assert!(run.out.contains("-\\x1b]0;owned\\x07"), "{}", run.out);
    let run = tool(&["list", "--json"]);
    assert!(!run.out.contains('\x1b'), "{:?}", run.out);
    assert!(run.json()["regions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["region"] == evil.as_str()));
}

#[test]
fn usage_errors_exit_2_and_errors_are_json_with_json() {
    for args in [
        &["inspect", "bogus"][..],
        &["frobnicate"][..],
        &["recover", "/x", "--wait", "soon"][..],
        &["inspect"][..],
        &["remove", "sysv:0"][..],
    ] {
        let run = tool(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.err);
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let run = tool(&with_json);
        assert_eq!(run.code, 2, "{with_json:?}");
        let v = run.json();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["exit_code"], 2);
        assert!(v["error"].is_string(), "{v}");
    }
    assert_eq!(tool(&["--help"]).code, 0);

    // Errors (exit 1) name what failed; with --json they are JSON on stdout.
    let missing = common::unique_name("toolmissing");
    let run = tool(&["inspect", &missing]);
    assert_eq!(run.code, 1);
    assert!(
        run.err.contains("No such file") && run.err.contains(&missing),
        "{}",
        run.err
    );
    let run = tool(&["recover", &missing, "--json"]);
    assert_eq!(run.code, 1);
    assert!(run.err.is_empty(), "{}", run.err);
    let v = run.json();
    assert_eq!(
        (v["schema_version"].clone(), v["command"].clone()),
        (1.into(), "recover".into())
    );
    assert!(v["error"].as_str().unwrap().contains("No such file"));

    // A zeroed segment is reported, never initialized by the tool.
    let zero = common::ShmName::new("toolzero");
    drop(Segment::posix_create(zero.as_str(), SIZE).unwrap());
    let run = tool(&["inspect", zero.as_str()]);
    assert_eq!(run.code, 1);
    assert!(run.err.contains("no initialized region"), "{}", run.err);
    let run = tool(&["recover", zero.as_str()]);
    assert_eq!(run.code, 1);
    let seg = Segment::posix_open(zero.as_str()).unwrap();
    // SAFETY: the mapping is SIZE bytes.
    let bytes = unsafe { std::slice::from_raw_parts(seg.as_ptr(), 4096) };
    assert!(
        bytes.iter().all(|&b| b == 0),
        "the tool wrote to a zeroed segment"
    );
}

#[test]
fn a_corrupt_object_is_reported_per_object_and_the_rest_still_handled() {
    let name = common::ShmName::new("toolcorrupt");
    let loc = Location::parse(name.as_str()).unwrap();
    let region = Region::create(&loc, SIZE).unwrap();
    region.get_or_init::<RawRobustMutex>("good", ()).unwrap();
    region.get_or_init::<RawRobustMutex>("bad", ()).unwrap();
    let sem = region.get_or_init::<LeasedSemaphore>("pool", 2).unwrap();
    let report = tool(&["inspect", name.as_str(), "--json"]).json();
    let offset = entry(&report, "bad")["offset"].as_u64().unwrap() as usize;
    // A dead lease in another object, so recovery has something to do besides.
    let marker = common::TempPath::new("permit");
    let mut dead = common::spawn("hold_permit", &[name.as_str(), marker.as_str()]);
    marker_text(&marker, "a permit to be held");
    dead.kill();
    // Overwrite the bad mutex's magic, as a hostile or buggy peer could.
    // SAFETY: `offset` is a validated object offset inside the SIZE-byte mapping; the
    // first word of a mutex is its header's magic, which nothing writes meanwhile.
    unsafe {
        region
            .segment()
            .as_ptr()
            .add(offset)
            .cast::<u32>()
            .write_volatile(0xdead_beef)
    };

    let run = tool(&["inspect", name.as_str(), "--json"]);
    assert_eq!(run.code, 3, "{}", run.out);
    let report = run.json();
    assert_eq!(entry(&report, "good")["state"], "free");
    let bad = entry(&report, "bad");
    assert_eq!(bad["needs_recovery"], true);
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("not a shmsync object"),
        "{bad}"
    );

    // `list` flags it, and exits 3.
    let run = tool(&["list", "--json"]);
    assert_eq!(run.code, 3, "{}", run.out);
    let out = run.json();
    let row = out["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == name.as_str())
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(row["needs_recovery"], true, "{row}");

    let run = tool(&["recover", name.as_str(), "--json"]);
    assert_eq!(run.code, 6, "{}", run.out);
    let out = run.json();
    assert_eq!(object(&out, "bad")["outcome"], "unreachable");
    assert!(object(&out, "bad")["actions"][0]
        .as_str()
        .unwrap()
        .contains("could not read it"));
    assert_eq!(object(&out, "good")["outcome"], "fine");
    assert_eq!(object(&out, "pool")["outcome"], "recovered");
    assert_eq!(sem.value(), 2);
}
