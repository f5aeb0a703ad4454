//! What the three programs share that is not the shared type: opening the region and
//! reporting failures. Each program declares its own `Record`.

use shmsync::Location;
use shmsync::{Region, RobustMutex, SeqLock, SharedType};

/// The object names the programs use.
pub const RECORD: &str = "record";
/// See [`RECORD`].
pub const FEED: &str = "feed";

/// The region named by the first command-line argument, and the remaining arguments.
pub fn region_from_args(create: bool) -> (Region, Vec<String>) {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        fail("usage: PROGRAM REGION [ARGS...]")
    };
    let location = Location::parse(&name).unwrap_or_else(|e| fail(&e.to_string()));
    let region = if create {
        Region::create(&location, 1 << 16)
    } else {
        Region::open(&location)
    };
    let region = region.unwrap_or_else(|e| fail(&format!("region {name}: {e}")));
    (region, args.collect())
}

/// The two objects, attached as holding `T` (exits 1 on an error).
pub fn objects<T: SharedType + bytemuck::NoUninit + Send>(
    region: &Region,
) -> (&RobustMutex<T>, &SeqLock<T>) {
    let record = region.get::<RobustMutex<T>>(RECORD);
    let feed = region.get::<SeqLock<T>>(FEED);
    match (record, feed) {
        (Ok(record), Ok(feed)) => (record, feed),
        (Err(e), _) | (_, Err(e)) => fail(&e.to_string()),
    }
}

/// Prints `what` on stderr and exits 1.
pub fn fail(what: &str) -> ! {
    eprintln!("{}: {what}", program());
    std::process::exit(1)
}

/// Prints this program's Rust name for `T`, which differs between the programs.
pub fn print_type_name<T>() {
    println!("type_name={}", core::any::type_name::<T>());
}

fn program() -> String {
    std::env::args().next().unwrap_or_default()
}
