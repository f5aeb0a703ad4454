//! Creates the region and its objects with this program's `Record`, then waits (bounded)
//! until another program has written them and checks what it wrote. With `check` after
//! the region's name, checks instead that the objects still hold that final state.

use std::time::{Duration, Instant};

use shmsync::{RobustMutex, SeqLock};
use shmsync_typeid_tests::{fail, objects, print_type_name, region_from_args, FEED, RECORD};

#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Record {
    id: u64,
    count: u32,
    flags: u32,
}
shmsync::shared_type!(Record = "myapp.Record", fields: id, count, flags);

/// The record once the server has seen the client's write.
const FINAL: Record = Record {
    id: 7,
    count: 3,
    flags: 0xc1,
};

fn main() {
    if std::env::args().nth(2).as_deref() == Some("check") {
        return check();
    }
    let (region, _) = region_from_args(true);
    let first = Record {
        id: 7,
        count: 1,
        flags: 0,
    };
    let record = region
        .get_or_init::<RobustMutex<Record>>(RECORD, first)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let feed = region
        .get_or_init::<SeqLock<Record>>(FEED, first)
        .unwrap_or_else(|e| fail(&e.to_string()));
    print_type_name::<Record>();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut r = record.lock().unwrap_or_else(|e| fail(&e.to_string()));
        if r.count == 2 {
            let expected = Record {
                id: 7,
                count: 2,
                flags: 0xc1,
            };
            if *r != expected || feed.read() != expected {
                fail(&format!("the client wrote {:?} / {:?}", *r, feed.read()));
            }
            *r = FINAL;
            // The feed too, so `check` sees one final state in both.
            feed.store(FINAL).unwrap_or_else(|e| fail(&e.to_string()));
            println!("saw the client's write");
            return;
        }
        drop(r);
        if Instant::now() > deadline {
            fail("no client wrote the record within 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn check() {
    let (region, _) = region_from_args(false);
    let (record, feed) = objects::<Record>(&region);
    let r = *record.lock().unwrap_or_else(|e| fail(&e.to_string()));
    if r != FINAL || feed.read() != FINAL {
        fail(&format!("changed: {r:?} / {:?}", feed.read()));
    }
    println!("unchanged");
}
