//! Declares `myapp.Record` with another layout (`bigger`: one more field; `reordered`:
//! the same size and alignment, fields in another order) and tries to attach to the
//! server's objects. Exits 0 when every attempt is refused as a type mismatch, printing
//! each error; 1 otherwise.

use shmsync::{Error, Region, RobustMutex, SeqLock, SharedType};
use shmsync_typeid_tests::{fail, region_from_args, FEED, RECORD};

mod bigger {
    #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    pub struct Record {
        id: u64,
        count: u32,
        flags: u32,
        extra: u64,
    }
    shmsync::shared_type!(Record = "myapp.Record", fields: id, count, flags, extra);
}

mod reordered {
    #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    pub struct Record {
        count: u32,
        flags: u32,
        id: u64,
    }
    shmsync::shared_type!(Record = "myapp.Record", fields: id, count, flags);
}

fn main() {
    let (region, args) = region_from_args(false);
    match args.first().map(String::as_str) {
        Some("bigger") => refused::<bigger::Record>(&region),
        Some("reordered") => refused::<reordered::Record>(&region),
        _ => fail("expected `bigger` or `reordered`"),
    }
}

fn refused<T: SharedType + bytemuck::NoUninit + Send>(region: &Region) {
    expect_mismatch(RECORD, region.get::<RobustMutex<T>>(RECORD).map(drop));
    expect_mismatch(FEED, region.get::<SeqLock<T>>(FEED).map(drop));
    // Creating under the name does not replace the object either.
    let init = T::zeroed();
    expect_mismatch(
        RECORD,
        region.get_or_init::<RobustMutex<T>>(RECORD, init).map(drop),
    );
}

fn expect_mismatch(object: &str, result: shmsync::Result<()>) {
    match result {
        Err(e @ Error::TypeMismatch { .. }) => println!("{object}: {e}"),
        Err(e) => fail(&format!("{object}: not a type mismatch: {e}")),
        Ok(()) => fail(&format!("{object}: attached with another layout")),
    }
}
