//! `shmsync`: find, inspect, recover and remove shmsync regions.
//!
//! ```text
//! shmsync list    [PATH...] [--json]
//! shmsync inspect <REGION> [--json] [--any-owner]
//! shmsync recover <REGION> [--json] [--dry-run] [--mark-consistent] [--wait SECS] [--any-owner]
//! shmsync remove  <REGION> [--json] [--force] [--any-owner]
//! ```
//!
//! `REGION` is `/name` (POSIX shared memory), `sysv:KEY` (decimal or 0x-hex), or a file
//! path. Exit codes are in [`EXIT_CODES`]; the JSON schema is in the README.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{json, Map, Value};
use shmsync::inspect::probe::{self, Attached, Content, Probe, Removal, RemoveOptions};
use shmsync::inspect::{
    self, acts_on_terminal, escape, Fact, ObjectReport, Outcome, RecoverOptions, Recovery,
    RegionReport,
};
use shmsync::{Error, Region};
use shmsync::{Location, RegionOptions};

/// The version of the `--json` output's shape; bumped on any incompatible change.
const SCHEMA_VERSION: u32 = 1;

/// Done; nothing needs recovery (`recover`: there was nothing to do).
const EXIT_OK: u8 = 0;
/// An error: the region is missing, corrupt, incompatible, not ours, or `remove` refused.
const EXIT_ERROR: u8 = 1;
/// A usage error: unknown command or flag, or a malformed region name or value.
const EXIT_USAGE: u8 = 2;
/// `list`/`inspect`: something needs recovery.
const EXIT_NEEDS_RECOVERY: u8 = 3;
/// `recover`: everything that needed recovery was recovered.
const EXIT_RECOVERED: u8 = 4;
/// `recover`: something is left that only the application can finish.
const EXIT_NEEDS_APPLICATION: u8 = 5;
/// `recover`: some object could not be reached within the bound, or could not be read.
const EXIT_UNREACHABLE: u8 = 6;

const EXIT_CODES: &str = "REGION is /name (POSIX shared memory), sysv:KEY, or a file path.\n\n\
Exit codes:\n  \
0  done; nothing needs recovery (recover: nothing to do)\n  \
1  error (missing, corrupt, incompatible or foreign region; remove refused)\n  \
2  usage error\n  \
3  list/inspect: something needs recovery\n  \
4  recover: everything that needed recovery was recovered\n  \
5  recover: something needs the application (an owner-died mutex its next locker repairs)\n  \
6  recover: something could not be reached within --wait, or could not be read";

/// Find, inspect, recover and remove shmsync regions.
#[derive(Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every region: POSIX objects in /dev/shm and SysV segments that carry a
    /// region header, and file regions at the given paths (files or directories).
    List {
        /// Files, or directories whose files are checked (not recursively).
        paths: Vec<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print every object with its kind and state, and who holds what (alive or dead).
    /// Maps the region read-only and takes no lock.
    Inspect {
        /// The region.
        region: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Inspect a region another user owns or created, or whose mode lets others in.
        #[arg(long)]
        any_owner: bool,
    },
    /// Reclaim what dead processes left and report, object by object, what was done,
    /// what only the application can do, and what could not be reached.
    Recover {
        /// The region.
        region: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only print what would be done (maps the region read-only).
        #[arg(long)]
        dry_run: bool,
        /// Mark owner-died mutexes consistent, accepting their data as it is.
        #[arg(long)]
        mark_consistent: bool,
        /// The longest wait for any one object, in seconds (or with an `ms` suffix).
        #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_wait)]
        wait: Duration,
        /// Recover a region another user owns or created, or whose mode lets others in.
        #[arg(long)]
        any_owner: bool,
    },
    /// Remove the region's name after checking that it is a shmsync region of this
    /// user's (processes that have it mapped keep using it). Never follows a symlink.
    Remove {
        /// The region.
        region: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Remove it even if it carries no region header.
        #[arg(long)]
        force: bool,
        /// Remove a region another user owns (or, for SysV, created).
        #[arg(long)]
        any_owner: bool,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::List { .. } => "list",
            Command::Inspect { .. } => "inspect",
            Command::Recover { .. } => "recover",
            Command::Remove { .. } => "remove",
        }
    }

    fn json(&self) -> bool {
        match *self {
            Command::List { json, .. }
            | Command::Inspect { json, .. }
            | Command::Recover { json, .. }
            | Command::Remove { json, .. } => json,
        }
    }
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    let (num, scale) = match s.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (s.strip_suffix('s').unwrap_or(s), 1.0),
    };
    let secs = num
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?
        * scale;
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("{s:?} is outside 0..=3600 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A failure, with the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let message = match &e {
            // The library names its option; the operator needs the flag.
            Error::ForeignOwner { .. }
            | Error::ForeignCreator { .. }
            | Error::OpenToOthers { .. } => {
                format!("{e}; for this tool: pass --any-owner to open it anyway")
            }
            other => other.to_string(),
        };
        Failure {
            code: EXIT_ERROR,
            message,
        }
    }
}

fn usage(message: String) -> Failure {
    Failure {
        code: EXIT_USAGE,
        message,
    }
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of the output goes
    // away (`shmsync list | head`) instead of failing a write; Rust ignores SIGPIPE.
    // SAFETY: restoring a signal's default disposition at startup, before any thread
    // exists, has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let (name, json) = (cli.command.name(), cli.command.json());
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            if json {
                print_json(&json!({
                    "schema_version": SCHEMA_VERSION,
                    "command": name,
                    "error": f.message,
                    "exit_code": f.code,
                }));
            } else {
                eprintln!("shmsync {name}: {}", escape_lines(&f.message));
            }
            ExitCode::from(f.code)
        }
    }
}

/// Reports a command-line error (exit 2), as JSON on stdout when `--json` was given;
/// help and version requests print normally and exit 0.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::from(EXIT_OK);
    }
    if std::env::args_os().any(|a| a == "--json") {
        let message = e.render().to_string();
        print_json(&json!({
            "schema_version": SCHEMA_VERSION,
            "command": Value::Null,
            "error": message.trim_end(),
            "exit_code": EXIT_USAGE,
        }));
    } else {
        eprint!("{}", escape_lines(&e.render().to_string()));
    }
    ExitCode::from(EXIT_USAGE)
}

/// [`escape`] line by line, keeping the line breaks.
fn escape_lines(s: &str) -> String {
    s.split('\n').map(escape).collect::<Vec<_>>().join("\n")
}

/// Pretty JSON on stdout. serde_json escapes C0 controls; DEL, C1 controls and
/// invisible format characters are escaped here too (still the same JSON value), so
/// the output is safe to show on a terminal.
fn print_json(v: &Value) {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // Outside strings, pretty JSON has only '\n' and spaces; anything caught here
        // is inside a string, where \uXXXX stands for the same character.
        if c != '\n' && acts_on_terminal(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    println!("{out}");
}

fn parse_location(s: &str) -> Result<Location, Failure> {
    Location::parse(s).map_err(|e| usage(e.to_string()))
}

/// Opens a region without ever initializing it, waiting at most a second for an
/// initializer: read-only (`O_RDONLY`/`SHM_RDONLY`, `PROT_READ`: needs only read
/// permission, can write nothing) to look, read-write to recover. Another user's
/// region only with `any_owner` (the `--any-owner` flag).
fn open(loc: &Location, read_only: bool, any_owner: bool) -> Result<Region, Failure> {
    let opts = RegionOptions::new()
        .wait(Duration::from_secs(1))
        .initialize(false)
        .read_only(read_only)
        .any_owner(any_owner);
    Ok(Region::open_with(loc, opts)?)
}

fn run(command: Command) -> Result<u8, Failure> {
    match command {
        Command::List { paths, json } => list(&paths, json),
        Command::Inspect {
            region,
            json,
            any_owner,
        } => {
            let loc = parse_location(&region)?;
            let region = open(&loc, true, any_owner)?;
            let report = inspect::inspect(&region)?;
            let probe = probe::probe(&loc).ok();
            if json {
                let mut v = report_json(&report, probe.as_ref(), &region);
                prepend_schema(&mut v, "inspect");
                print_json(&v);
            } else {
                print_report(&report, probe.as_ref(), &region);
            }
            Ok(if report.needs_recovery() {
                EXIT_NEEDS_RECOVERY
            } else {
                EXIT_OK
            })
        }
        Command::Recover {
            region,
            json,
            dry_run,
            mark_consistent,
            wait,
            any_owner,
        } => {
            let loc = parse_location(&region)?;
            let region = open(&loc, dry_run, any_owner)?;
            let opts = RecoverOptions {
                mark_consistent,
                dry_run,
                wait,
            };
            let recovery = inspect::recover(&region, opts)?;
            let code = match recovery.outcome() {
                Outcome::Fine => EXIT_OK,
                Outcome::Recovered => EXIT_RECOVERED,
                Outcome::NeedsApplication => EXIT_NEEDS_APPLICATION,
                Outcome::Unreachable => EXIT_UNREACHABLE,
            };
            if json {
                let after = inspect::inspect(&region)
                    .map(|r| report_json(&r, None, &region))
                    .unwrap_or_else(|e| json!({ "error": e.to_string() }));
                print_json(&recovery_json(&recovery, &loc, opts, code, after));
            } else {
                print_recovery(&recovery, &loc, opts);
            }
            Ok(code)
        }
        Command::Remove {
            region,
            json,
            force,
            any_owner,
        } => {
            let loc = parse_location(&region)?;
            match probe::remove(&loc, RemoveOptions { force, any_owner })? {
                Removal::Removed(p) => {
                    if json {
                        print_json(&json!({
                            "schema_version": SCHEMA_VERSION,
                            "command": "remove",
                            "region": p.location,
                            "backing": p.backing.as_str(),
                            "removed": true,
                            "was_region": p.is_region(),
                        }));
                    } else {
                        println!(
                            "removed {} ({}{})",
                            escape(&p.location),
                            p.backing.as_str(),
                            if p.is_region() {
                                ", a shmsync region"
                            } else {
                                ", not a region: --force"
                            }
                        );
                    }
                    Ok(EXIT_OK)
                }
                Removal::Refused(why) => Err(Failure {
                    code: EXIT_ERROR,
                    message: format!("refused, nothing removed: {why}"),
                }),
            }
        }
    }
}

fn prepend_schema(v: &mut Value, command: &str) {
    if let Value::Object(m) = v {
        let mut out = Map::new();
        out.insert("schema_version".into(), json!(SCHEMA_VERSION));
        out.insert("command".into(), json!(command));
        out.append(m);
        *m = out;
    }
}

/// `0600`.
fn mode(m: u32) -> String {
    format!("{m:04o}")
}

fn attached_count(a: &Attached) -> Option<u64> {
    match a {
        Attached::Count(n) => Some(*n),
        Attached::Pids { pids, .. } => Some(pids.len() as u64),
        Attached::Unknown => None,
    }
}

fn attached_text(a: &Attached) -> String {
    match a {
        Attached::Count(n) => n.to_string(),
        Attached::Pids { pids, complete } => {
            format!("{}{}", pids.len(), if *complete { "" } else { "+" })
        }
        Attached::Unknown => "?".into(),
    }
}

fn attached_json(a: &Attached, out: &mut Map<String, Value>) {
    out.insert("attached".into(), json!(attached_count(a)));
    let (pids, complete) = match a {
        Attached::Pids { pids, complete } => (json!(pids), json!(complete)),
        Attached::Count(_) => (Value::Null, json!(true)),
        Attached::Unknown => (Value::Null, json!(false)),
    };
    out.insert("attached_pids".into(), pids);
    out.insert("attached_complete".into(), complete);
}

/// One `list` row, with the region opened (read-only) for its recovery state.
struct Listed {
    probe: Probe,
    /// Whether it needs recovery, or why that is unknown.
    needs_recovery: Result<bool, String>,
}

fn list(paths: &[PathBuf], json: bool) -> Result<u8, Failure> {
    let (probes, errors) = probe::list(paths);
    let rows: Vec<Listed> = probes
        .into_iter()
        .map(|p| {
            let needs_recovery = match &p.content {
                Content::Region(h) if h.ready && h.incompatible.is_none() => p
                    .to_location()
                    .map_err(Failure::from)
                    .and_then(|loc| open(&loc, true, true))
                    .and_then(|r| Ok(inspect::inspect(&r)?))
                    .map(|r| r.needs_recovery())
                    .map_err(|f| f.message),
                Content::Region(h) => Err(h
                    .incompatible
                    .clone()
                    .unwrap_or_else(|| "still initializing (or its initializer died)".into())),
                Content::Unreadable(why) => Err(why.clone()),
                Content::NotRegion(why) => Err(why.clone()),
                Content::NotAFile(what) => Err((*what).into()),
            };
            Listed {
                probe: p,
                needs_recovery,
            }
        })
        .collect();
    let any = rows.iter().any(|r| r.needs_recovery == Ok(true));
    if json {
        let regions: Vec<Value> = rows.iter().map(listed_json).collect();
        print_json(&json!({
            "schema_version": SCHEMA_VERSION,
            "command": "list",
            "regions": regions,
            "errors": errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        }));
    } else {
        print_list(&rows);
        for e in &errors {
            eprintln!("shmsync list: {}", escape(&e.to_string()));
        }
    }
    Ok(if any { EXIT_NEEDS_RECOVERY } else { EXIT_OK })
}

fn listed_json(r: &Listed) -> Value {
    let p = &r.probe;
    let mut m = Map::new();
    m.insert("region".into(), json!(p.location));
    m.insert("backing".into(), json!(p.backing.as_str()));
    m.insert("size".into(), json!(p.size));
    m.insert("owner_uid".into(), json!(p.owner_uid));
    m.insert("creator_uid".into(), json!(p.creator_uid));
    m.insert("mode".into(), json!(mode(p.mode)));
    attached_json(&p.attached, &mut m);
    let (status, error) = match &p.content {
        Content::Region(h) if h.incompatible.is_some() => ("incompatible", h.incompatible.clone()),
        Content::Region(h) if h.ready => ("ready", None),
        Content::Region(_) => ("initializing", None),
        Content::Unreadable(why) => ("unreadable", Some(why.clone())),
        Content::NotRegion(why) => ("not_region", Some(why.clone())),
        Content::NotAFile(what) => ("not_region", Some((*what).to_owned())),
    };
    m.insert("status".into(), json!(status));
    m.insert("error".into(), json!(error));
    if let Content::Region(h) = &p.content {
        m.insert("objects".into(), json!(h.objects));
        m.insert("capacity".into(), json!(h.capacity));
        m.insert(
            "creator".into(),
            json!({"pid": h.creator_pid, "liveness": h.creator.as_str()}),
        );
        m.insert(
            "claim".into(),
            json!(h
                .claim
                .map(|(pid, l)| json!({"pid": pid, "liveness": l.as_str()}))),
        );
    } else {
        for k in ["objects", "capacity", "creator", "claim"] {
            m.insert(k.into(), Value::Null);
        }
    }
    m.insert(
        "needs_recovery".into(),
        json!(r.needs_recovery.as_ref().ok()),
    );
    if let (Err(why), None) = (&r.needs_recovery, &error) {
        m.insert("error".into(), json!(why));
    }
    Value::Object(m)
}

/// Prints rows under a header line, each column as wide as its widest cell; the last
/// column is not padded.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn print_list(rows: &[Listed]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let p = &r.probe;
            let objects = match &p.content {
                Content::Region(h) => format!("{}/{}", h.objects, h.capacity),
                _ => "-".into(),
            };
            let status = match (&p.content, &r.needs_recovery) {
                (_, Ok(true)) => "needs recovery".to_owned(),
                (_, Ok(false)) => "ok".to_owned(),
                (Content::Unreadable(_), Err(why)) => format!("unreadable: {why}"),
                (_, Err(why)) => format!("unknown: {why}"),
            };
            vec![
                escape(&p.location),
                p.backing.as_str().into(),
                p.size.to_string(),
                p.owner_uid.to_string(),
                mode(p.mode),
                attached_text(&p.attached),
                objects,
                escape(&status),
            ]
        })
        .collect();
    print_table(
        &[
            "REGION", "BACKING", "SIZE", "OWNER", "MODE", "ATTACHED", "OBJECTS", "STATUS",
        ],
        &cells,
    );
    if rows.is_empty() {
        println!("(no shmsync regions found)");
    }
}

fn fact_json(f: &Fact) -> Value {
    let record = |rec: &[(&str, Fact)]| {
        Value::Object(
            rec.iter()
                .map(|(k, v)| ((*k).to_owned(), fact_json(v)))
                .collect(),
        )
    };
    match f {
        Fact::Int(i) => json!(i),
        Fact::Bool(b) => json!(b),
        Fact::Text(t) => json!(t),
        Fact::List(items) => Value::Array(items.iter().map(|r| record(r)).collect()),
        Fact::Record(r) => record(r),
    }
}

fn object_json(o: &ObjectReport) -> Value {
    let mut obj = Map::new();
    obj.insert("name".into(), json!(o.entry.name));
    obj.insert("kind".into(), json!(o.entry.kind.name()));
    obj.insert("offset".into(), json!(o.entry.offset));
    obj.insert("size".into(), json!(o.entry.size));
    obj.insert("description".into(), json!(o.state));
    obj.insert("needs_recovery".into(), json!(o.needs_recovery));
    for (k, v) in &o.facts {
        obj.insert((*k).to_owned(), fact_json(v));
    }
    Value::Object(obj)
}

fn report_json(r: &RegionReport, probe: Option<&Probe>, region: &Region) -> Value {
    let mut m = Map::new();
    m.insert("region".into(), json!(r.location));
    m.insert("backing".into(), json!(probe.map(|p| p.backing.as_str())));
    m.insert("read_only".into(), json!(region.is_read_only()));
    m.insert("size".into(), json!(r.size));
    m.insert("owner_uid".into(), json!(probe.map(|p| p.owner_uid)));
    m.insert(
        "creator_uid".into(),
        json!(probe.and_then(|p| p.creator_uid)),
    );
    m.insert("mode".into(), json!(probe.map(|p| mode(p.mode))));
    attached_json(probe.map_or(&Attached::Unknown, |p| &p.attached), &mut m);
    m.insert("objects".into(), json!(r.objects));
    m.insert("capacity".into(), json!(r.capacity));
    m.insert("used".into(), json!(r.used));
    m.insert(
        "creator".into(),
        json!({"pid": r.creator_pid, "liveness": r.creator.as_str()}),
    );
    m.insert(
        "claim".into(),
        json!(r
            .claim
            .map(|(pid, l)| json!({"pid": pid, "liveness": l.as_str()}))),
    );
    m.insert("needs_recovery".into(), json!(r.needs_recovery()));
    m.insert(
        "entries".into(),
        Value::Array(r.reports.iter().map(object_json).collect()),
    );
    Value::Object(m)
}

fn print_report(r: &RegionReport, probe: Option<&Probe>, region: &Region) {
    let name = escape(r.location.as_deref().unwrap_or("(anonymous)"));
    let how = if region.is_read_only() {
        "read-only"
    } else {
        "read-write"
    };
    match probe {
        Some(p) => {
            println!("region    {name} ({}, mapped {how})", p.backing.as_str());
            println!("size      {} bytes, {} used", r.size, r.used);
            println!(
                "owner     uid {}{}, mode {}",
                p.owner_uid,
                p.creator_uid
                    .filter(|&c| c != p.owner_uid)
                    .map(|c| format!(" (creator uid {c})"))
                    .unwrap_or_default(),
                mode(p.mode)
            );
            let attached = match &p.attached {
                Attached::Count(n) => plural(*n, "process", "processes"),
                Attached::Pids { pids, complete } => format!(
                    "{}{}{}",
                    plural(pids.len() as u64, "process", "processes"),
                    if pids.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ": pid {}",
                            pids.iter()
                                .map(u32::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                    if *complete {
                        ""
                    } else {
                        " (some processes' maps were not readable)"
                    }
                ),
                Attached::Unknown => "unknown".into(),
            };
            println!("attached  {attached}");
        }
        None => {
            println!("region    {name} (mapped {how})");
            println!("size      {} bytes, {} used", r.size, r.used);
        }
    }
    println!("objects   {} of {}", r.objects, r.capacity);
    println!("creator   pid {} ({})", r.creator_pid, r.creator.as_str());
    match r.claim {
        Some((pid, l)) => println!("claim     held by pid {pid} ({})", l.as_str()),
        None => println!("claim     free"),
    }
    println!();
    let rows: Vec<Vec<String>> = r
        .reports
        .iter()
        .map(|o| {
            vec![
                escape(&o.entry.name),
                o.entry.kind.name().to_owned(),
                if o.needs_recovery {
                    "yes".into()
                } else {
                    "no".into()
                },
                escape(&o.state),
            ]
        })
        .collect();
    print_table(&["NAME", "KIND", "RECOVER", "STATE"], &rows);
}

fn outcome_text(o: Outcome, dry_run: bool) -> &'static str {
    match (o, dry_run) {
        (Outcome::Fine, _) => "fine",
        (Outcome::Recovered, false) => "recovered",
        (Outcome::Recovered, true) => "would recover",
        (Outcome::NeedsApplication, _) => "needs application",
        (Outcome::Unreachable, _) => "unreachable",
    }
}

fn print_recovery(rec: &Recovery, loc: &Location, opts: RecoverOptions) {
    let mut rows = Vec::new();
    for o in &rec.objects {
        let outcome = outcome_text(o.outcome, opts.dry_run).to_owned();
        if o.actions.is_empty() {
            rows.push(vec![
                escape(&o.object),
                o.kind.to_owned(),
                outcome.clone(),
                "-".into(),
            ]);
        }
        for (i, a) in o.actions.iter().enumerate() {
            let (name, kind, outcome) = if i == 0 {
                (escape(&o.object), o.kind.to_owned(), outcome.clone())
            } else {
                (String::new(), String::new(), String::new())
            };
            rows.push(vec![name, kind, outcome, escape(&a.what)]);
        }
    }
    println!(
        "{} {}{}",
        if opts.dry_run {
            "dry run of recovery of"
        } else {
            "recovering"
        },
        escape(&loc.to_string()),
        format_args!(" (waiting at most {:?} per object)", opts.wait)
    );
    print_table(&["OBJECT", "KIND", "OUTCOME", "ACTION"], &rows);
    println!(
        "{}: {} {}, {} need{} the application, {} unreachable, {} fine",
        plural(rec.objects.len() as u64, "object", "objects"),
        rec.count(Outcome::Recovered),
        if opts.dry_run {
            "would be recovered"
        } else {
            "recovered"
        },
        rec.count(Outcome::NeedsApplication),
        if rec.count(Outcome::NeedsApplication) == 1 {
            "s"
        } else {
            ""
        },
        rec.count(Outcome::Unreachable),
        rec.count(Outcome::Fine),
    );
}

fn recovery_json(
    rec: &Recovery,
    loc: &Location,
    opts: RecoverOptions,
    code: u8,
    after: Value,
) -> Value {
    let objects: Vec<Value> = rec
        .objects
        .iter()
        .map(|o| {
            json!({
                "name": o.object,
                "kind": o.kind,
                "outcome": o.outcome.as_str(),
                "actions": o.actions.iter().map(|a| a.what.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let actions: Vec<Value> = rec
        .actions()
        .map(|a| json!({"object": a.object, "action": a.what, "outcome": a.outcome.as_str()}))
        .collect();
    json!({
        "schema_version": SCHEMA_VERSION,
        "command": "recover",
        "region": loc.to_string(),
        "dry_run": opts.dry_run,
        "mark_consistent": opts.mark_consistent,
        "wait_ms": opts.wait.as_millis() as u64,
        "outcome": rec.outcome().as_str(),
        "exit_code": code,
        "counts": {
            "fine": rec.count(Outcome::Fine),
            "recovered": rec.count(Outcome::Recovered),
            "needs_application": rec.count(Outcome::NeedsApplication),
            "unreachable": rec.count(Outcome::Unreachable),
        },
        "objects": objects,
        "actions": actions,
        "needs_recovery": rec.outcome() > Outcome::Recovered,
        "after": after,
    })
}

/// `"1 process"`, `"2 processes"`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
