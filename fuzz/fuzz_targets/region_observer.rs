//! A region's bytes (cut or zero-filled to `exercise::REGION_LEN`), opened as an
//! observer (the `shmsync` tool's way: nothing written), then every call of `exercise`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmsync_fuzz::with_harness(|h| {
        h.load(data);
        h.region(false);
    });
});
