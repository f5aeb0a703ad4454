//! One object's bytes attached as a primitive: the first byte picks the kind
//! (`exercise::KINDS`, modulo their number), the rest are the object (cut or
//! zero-filled to the kind's size, page aligned) — glibc's `pthread_mutex_t` words
//! included. Then non-blocking use of it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((&kind, bytes)) = data.split_first() {
        shmsync_fuzz::with_harness(|h| h.object(kind, bytes));
    }
});
