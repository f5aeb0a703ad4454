//! A region's bytes (cut or zero-filled to `exercise::REGION_LEN`), opened as an
//! initializer (an application's way: a region not yet initialized, or left so by a
//! dead initializer, is initialized), then every call of `exercise`, `get_or_init` of
//! every kind included.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmsync_fuzz::with_harness(|h| {
        h.load(data);
        h.region(true);
    });
});
