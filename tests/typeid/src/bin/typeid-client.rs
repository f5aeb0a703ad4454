//! Attaches by name to the objects the server made, with this program's own mirror of
//! `Record`, checks what the server wrote and writes its own update.

use shmsync_typeid_tests::{fail, objects, print_type_name, region_from_args};

#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Record {
    id: u64,
    count: u32,
    flags: u32,
}
shmsync::shared_type!(Record = "myapp.Record", fields: id, count, flags);

fn main() {
    let (region, _) = region_from_args(false);
    let (record, feed) = objects::<Record>(&region);
    print_type_name::<Record>();
    let mut r = record.lock().unwrap_or_else(|e| fail(&e.to_string()));
    let first = Record {
        id: 7,
        count: 1,
        flags: 0,
    };
    if *r != first || feed.read() != first {
        fail(&format!("the server wrote {:?} / {:?}", *r, feed.read()));
    }
    let update = Record {
        count: 2,
        flags: 0xc1,
        ..first
    };
    // The feed first: the server checks it once it sees the record's count change.
    feed.store(update).unwrap_or_else(|e| fail(&e.to_string()));
    *r = update;
    println!("wrote {update:?}");
}
