//! The `shmsync` operator tool against real regions where processes died holding things.
#![allow(clippy::disallowed_types)]
#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

use serde_json::Value;
use shmsync::region::Location;
use shmsync::{Acquired, LeasedSemaphore, RawRobustMutex, Region, SeqLock};

const SIZE: usize = 1 << 16;

#[test]
fn child_role() {
    common::dispatch(&[
        ("hold_lock", hold_lock),
        ("hold_everything", hold_everything),
    ]);
}

type Feed = [u64; 4];

/// Takes two leased permits and half-writes a seqlock update, writes the marker file
/// `args[1]`, then waits to be killed.
fn hold_everything(args: &[String]) {
    let region = Region::open(&Location::parse(&args[0]).unwrap()).unwrap();
    let sem = region.get::<LeasedSemaphore>("pool").unwrap();
    let feed = region.get::<SeqLock<Feed>>("feed").unwrap();
    let _held = [sem.acquire().unwrap(), sem.acquire().unwrap()];
    feed.__test_write_partial([9; 4], 2).unwrap();
    std::fs::write(&args[1], "held").unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Locks `args[1]` in region `args[0]`, writes the marker file `args[2]`, then waits to
/// be killed.
fn hold_lock(args: &[String]) {
    let region = Region::open(&Location::parse(&args[0]).unwrap()).unwrap();
    let m = region.get::<RawRobustMutex>(&args[1]).unwrap();
    let _ = m.lock().unwrap();
    std::fs::write(&args[2], "locked").unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Runs the tool; returns (exit code, stdout, stderr).
fn tool(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shmsync"))
        .args(args)
        .output()
        .expect("run shmsync");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tool_json(args: &[&str]) -> (i32, Value) {
    let (code, out, err) = tool(args);
    let v = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {out}\nstderr: {err}"));
    (code, v)
}

fn entry<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no entry {name} in {report}"))
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
    common::wait_until(common::WATCHDOG, "the holder to lock", || {
        marker.path().exists()
    });

    // Held by a live process: reported with its pid, nothing to recover.
    let (code, report) = tool_json(&["inspect", name.as_str(), "--json"]);
    assert_eq!(code, 0, "{report}");
    let lock = entry(&report, "lock");
    assert_eq!(lock["state"], "locked");
    assert_eq!(lock["owner_pid"], holder.pid());
    assert_eq!(lock["owner"], "alive");
    assert_eq!(entry(&report, "idle")["state"], "free");

    holder.kill();
    let (code, report) = tool_json(&["inspect", name.as_str(), "--json"]);
    assert_eq!(code, 3, "owner died must be flagged: {report}");
    assert_eq!(entry(&report, "lock")["state"], "owner_died");
    assert_eq!(entry(&report, "lock")["needs_recovery"], true);
    let (_, text, _) = tool(&["inspect", name.as_str()]);
    assert!(text.contains("owner died"), "{text}");

    // Without --mark-consistent the data is left for the application to repair.
    let (code, out) = tool_json(&["recover", name.as_str(), "--json"]);
    assert_eq!(code, 3, "{out}");
    assert!(out["actions"][0]["action"]
        .as_str()
        .unwrap()
        .contains("left for the application"));

    let (code, out) = tool_json(&["recover", name.as_str(), "--json", "--mark-consistent"]);
    assert_eq!(code, 0, "{out}");
    assert!(out["actions"][0]["action"]
        .as_str()
        .unwrap()
        .contains("marked consistent"));
    assert_eq!(entry(&out["after"], "lock")["state"], "free");
    assert_eq!(m.lock(), Ok(Acquired::Clean));
    // SAFETY: held by this thread.
    unsafe { m.unlock() };
}

#[test]
fn remove_leaves_nothing_behind_and_errors_are_clear() {
    let name = common::ShmName::new("toolrm");
    let loc = Location::parse(name.as_str()).unwrap();
    drop(Region::create(&loc, SIZE).unwrap());
    let dev_shm = format!("/dev/shm{}", name.as_str());
    assert!(std::path::Path::new(&dev_shm).exists());
    let (code, out, _) = tool(&["remove", name.as_str()]);
    assert_eq!(code, 0);
    assert!(out.contains("removed"));
    assert!(!std::path::Path::new(&dev_shm).exists());

    // Missing region, bad name, usage error.
    let (code, _, err) = tool(&["inspect", name.as_str()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("No such file") && err.contains(name.as_str()),
        "{err}"
    );
    let (code, _, err) = tool(&["inspect", "no-slash"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid name"), "{err}");
    let (code, _, _) = tool(&["frobnicate"]);
    assert_eq!(code, 2);

    // A segment that is not a region.
    let garbage = common::ShmName::new("toolgarbage");
    {
        let seg = shmsync::Segment::posix_create(garbage.as_str(), SIZE).unwrap();
        // SAFETY: fresh mapping of SIZE bytes, used by nobody else.
        unsafe { std::ptr::write_bytes(seg.as_ptr(), 0x5A, 16) };
    }
    let (code, _, err) = tool(&["inspect", garbage.as_str()]);
    assert_eq!(code, 1);
    assert!(err.contains("not a shmsync object"), "{err}");

    // A zeroed segment is reported, never initialized by the tool.
    let zero = common::ShmName::new("toolzero");
    drop(shmsync::Segment::posix_create(zero.as_str(), SIZE).unwrap());
    let (code, _, err) = tool(&["inspect", zero.as_str()]);
    assert_eq!(code, 1);
    assert!(err.contains("no initialized region"), "{err}");
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
    common::wait_until(common::WATCHDOG, "the holder to take everything", || {
        marker.path().exists()
    });
    let pid = holder.pid();
    holder.kill();

    let (code, report) = tool_json(&["inspect", name.as_str(), "--json"]);
    assert_eq!(code, 3, "{report}");
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

    let (code, out) = tool_json(&["recover", name.as_str(), "--json"]);
    assert_eq!(code, 0, "{out}");
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
    assert_eq!(entry(&out["after"], "pool")["value"], 4);
    assert_eq!(entry(&out["after"], "feed")["torn"], false);

    // Everything works afterwards: value + live holdings == capacity, writes are clean.
    assert_eq!(sem.value(), 4);
    drop(mine);
    assert_eq!(sem.value(), 5);
    assert!(!feed.store([2; 4]).unwrap().repaired);
    assert_eq!(feed.read(), [2; 4]);
    let (code, _) = tool_json(&["inspect", name.as_str(), "--json"]);
    assert_eq!(code, 0);
}
