//! `shmsync`: inspect, recover and remove shmsync regions.
//!
//! ```text
//! shmsync inspect <REGION> [--json]
//! shmsync recover <REGION> [--json] [--dry-run] [--mark-consistent]
//! shmsync remove  <REGION>
//! ```
//!
//! `REGION` is `/name` (POSIX shared memory), `sysv:KEY` (decimal or 0x-hex), or a file
//! path. Exit codes: 0 — done, nothing needs recovery; 1 — error (missing, corrupt,
//! incompatible region…); 2 — usage error; 3 — something needs recovery (`inspect`), or
//! still does after recovering (`recover`).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use shmsync::inspect::{self, Fact, ObjectReport, RecoverOptions, RegionReport};
use shmsync::region::{Location, RegionOptions};
use shmsync::Region;

/// Inspect, recover and remove shmsync regions.
#[derive(Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "REGION is /name (POSIX shared memory), sysv:KEY, or a file path.\n\
Exit codes: 0 done, nothing needs recovery; 1 error; 2 usage error;\n\
3 something needs recovery (inspect) or still does after recovering (recover).";

#[derive(Subcommand)]
enum Command {
    /// Print every object with its kind and state, and who holds what (alive or dead).
    Inspect {
        /// The region.
        region: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Reclaim what dead processes left and print each action.
    Recover {
        /// The region.
        region: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only print what would be done.
        #[arg(long)]
        dry_run: bool,
        /// Mark owner-died mutexes consistent, accepting their data as it is.
        #[arg(long)]
        mark_consistent: bool,
    },
    /// Remove the region's name (processes that have it mapped keep using it).
    Remove {
        /// The region.
        region: String,
    },
}

const NEEDS_RECOVERY: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("shmsync: {e}");
            ExitCode::from(1)
        }
    }
}

fn open(name: &str) -> Result<Region, shmsync::Error> {
    let loc = Location::parse(name)?;
    Region::open_with(
        &loc,
        RegionOptions {
            wait: Duration::from_secs(1),
            initialize: false,
            ..RegionOptions::default()
        },
    )
}

fn run(command: Command) -> Result<u8, shmsync::Error> {
    match command {
        Command::Inspect { region, json } => {
            let region = open(&region)?;
            let report = inspect::inspect(&region)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report_json(&report)).unwrap_or_default()
                );
            } else {
                print_report(&report);
            }
            Ok(if report.needs_recovery() {
                NEEDS_RECOVERY
            } else {
                0
            })
        }
        Command::Recover {
            region,
            json,
            dry_run,
            mark_consistent,
        } => {
            let region = open(&region)?;
            let opts = RecoverOptions {
                mark_consistent,
                dry_run,
            };
            let actions = inspect::recover(&region, opts)?;
            let after = inspect::inspect(&region)?;
            if json {
                let out = json!({
                    "actions": actions.iter().map(|a| json!({"object": a.object, "action": a.what})).collect::<Vec<_>>(),
                    "needs_recovery": after.needs_recovery(),
                    "after": report_json(&after),
                });
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else {
                if actions.is_empty() {
                    println!("nothing to recover");
                }
                for a in &actions {
                    println!("{a}");
                }
            }
            Ok(if after.needs_recovery() {
                NEEDS_RECOVERY
            } else {
                0
            })
        }
        Command::Remove { region } => {
            let loc = Location::parse(&region)?;
            Region::remove(&loc)?;
            println!("removed {loc}");
            Ok(0)
        }
    }
}

fn print_report(r: &RegionReport) {
    println!(
        "region {}: {} bytes, {}/{} objects, {} bytes used, created by pid {} ({})",
        r.location.as_deref().unwrap_or("(anonymous)"),
        r.size,
        r.objects,
        r.capacity,
        r.used,
        r.creator_pid,
        r.creator.as_str()
    );
    if let Some((pid, l)) = r.claim {
        println!("  table claimed by pid {pid} — {}", l.as_str());
    }
    for o in &r.reports {
        let flag = if o.needs_recovery {
            "  [needs recovery]"
        } else {
            ""
        };
        println!(
            "  {:<16} {:<17} {}{flag}",
            o.entry.name,
            o.entry.kind.name(),
            o.state
        );
    }
}

fn fact_json(f: &Fact) -> Value {
    match f {
        Fact::Int(i) => json!(i),
        Fact::Bool(b) => json!(b),
        Fact::Text(t) => json!(t),
        Fact::List(items) => Value::Array(
            items
                .iter()
                .map(|rec| {
                    Value::Object(
                        rec.iter()
                            .map(|(k, v)| ((*k).to_owned(), fact_json(v)))
                            .collect(),
                    )
                })
                .collect(),
        ),
    }
}

fn object_json(o: &ObjectReport) -> Value {
    let mut obj = serde_json::Map::new();
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

fn report_json(r: &RegionReport) -> Value {
    json!({
        "region": r.location,
        "size": r.size,
        "objects": r.objects,
        "capacity": r.capacity,
        "used": r.used,
        "creator": {"pid": r.creator_pid, "liveness": r.creator.as_str()},
        "claim": r.claim.map(|(pid, l)| json!({"pid": pid, "liveness": l.as_str()})),
        "needs_recovery": r.needs_recovery(),
        "entries": r.reports.iter().map(object_json).collect::<Vec<_>>(),
    })
}
