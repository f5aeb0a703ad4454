//! Three separately built programs (three crates), each declaring its own mirror of
//! `myapp.Record`, share named objects in one region: the server creates them, the
//! client attaches by name and writes while the server waits, and a program declaring
//! the same name with another layout is refused with an error naming both layouts.
#![allow(clippy::disallowed_types)]
#[path = "../../common/mod.rs"]
mod common;

use std::process::{Command, Output};

use shmsync::Location;
use shmsync::Region;

fn start(exe: &str, args: &[&str]) -> common::Program {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    common::Program::start(cmd, &format!("{exe} {args:?}"))
}

fn run(exe: &str, args: &[&str]) -> Output {
    start(exe, args).finish(common::WATCHDOG)
}

fn stdout_of(out: &Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {:?}\nstdout: {text}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn type_name_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("type_name="))
        .unwrap_or_else(|| panic!("no type_name line in {stdout:?}"))
}

#[test]
fn mirrors_in_different_crates_share_objects_and_another_layout_is_refused() {
    let name = common::ShmName::new("typeid");
    let server = start(env!("CARGO_BIN_EXE_typeid-server"), &[name.as_str()]);
    // The test declares no `Record`: it waits for the table entries by name only.
    let location = Location::parse(name.as_str()).unwrap();
    common::wait_until(common::WATCHDOG, "the server's objects", || {
        Region::open(&location)
            .and_then(|r| r.entries())
            .is_ok_and(|e| e.len() == 2)
    });

    let client = run(env!("CARGO_BIN_EXE_typeid-client"), &[name.as_str()]);
    let client_out = stdout_of(&client, "the client");
    let server_out = stdout_of(&server.finish(common::WATCHDOG), "the server");
    assert!(
        server_out.contains("saw the client's write"),
        "{server_out}"
    );
    // The programs' Rust names for their types differ, so an identity derived from
    // `type_name` would have refused the client.
    let (server_type, client_type) = (type_name_line(&server_out), type_name_line(&client_out));
    assert_ne!(server_type, client_type);
    assert!(server_type.ends_with("::Record") && client_type.ends_with("::Record"));

    let bigger = stdout_of(
        &run(
            env!("CARGO_BIN_EXE_typeid-other"),
            &[name.as_str(), "bigger"],
        ),
        "the bigger layout",
    );
    let reordered = stdout_of(
        &run(
            env!("CARGO_BIN_EXE_typeid-other"),
            &[name.as_str(), "reordered"],
        ),
        "the reordered layout",
    );
    for (out, requested_size) in [(&bigger, 24), (&reordered, 16)] {
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        for line in lines {
            // Both layouts are named: the stored one, then the requested one.
            let (stored, requested) = line
                .split_once(" but ")
                .unwrap_or_else(|| panic!("one side missing: {line}"));
            assert!(
                stored.contains("holds myapp.Record (size 16, align 8, type hash"),
                "{line}"
            );
            let want = format!("myapp.Record (size {requested_size}, align 8, type hash");
            assert!(requested.contains(&want), "{line}");
            assert_ne!(hash_in(stored), hash_in(requested), "{line}");
        }
    }

    // The refused programs changed nothing: the objects still hold the server's last
    // write, and the table still has exactly the two objects.
    let check = run(
        env!("CARGO_BIN_EXE_typeid-server"),
        &[name.as_str(), "check"],
    );
    assert!(stdout_of(&check, "the check").contains("unchanged"));
    let region = Region::open(&location).unwrap();
    assert_eq!(region.entries().unwrap().len(), 2);
    eprintln!("{bigger}{reordered}");
}

/// The `type hash 0x...` in one side of a mismatch message.
fn hash_in(side: &str) -> &str {
    let at = side.find("type hash ").expect("a type hash") + "type hash ".len();
    &side[at..at + 18]
}
