//! Hostile bytes: everything the crate reads from a segment may have been written by a
//! buggy or malicious peer. Real regions (fresh; left by a process killed holding every
//! object; with mutexes not recoverable; half initialized) are mutated at random — the
//! region header and table, the bytes inside each object (glibc's mutex words
//! included), and objects attached as any kind — and then put through every call of
//! `mutation/exercise.rs` (the same calls the `fuzz/` targets make): only errors, never
//! a panic, a crash, a hang, or a write by a reader.
//!
//! Deterministic: `SHMSYNC_MUTATION_SEED` (decimal or 0x-hex; a fixed default) picks the
//! mutations, `SHMSYNC_MUTATION_CASES` overrides every test's case count, and
//! `SHMSYNC_MUTATION_CASE` runs one case alone. A failing or hanging case prints the
//! command that replays it.
#![allow(clippy::disallowed_types)]

mod common;
#[path = "mutation/exercise.rs"]
mod exercise;

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::Rng;
use exercise::{Harness, Tally, KINDS, OBJECTS, REGION_LEN};
use shmsync::Location;
use shmsync::Region;

/// The seed when `SHMSYNC_MUTATION_SEED` is not set.
const DEFAULT_SEED: u64 = 0x5eed_f00d;

/// How long one case may run before the test aborts, naming it.
const CASE_WATCHDOG: Duration = Duration::from_secs(20);

#[test]
fn child_role() {
    common::dispatch(&[("die_holding", die_holding)]);
}

fn die_holding(args: &[String]) {
    let region = Region::open(&Location::parse(&args[0]).unwrap()).unwrap();
    exercise::die_holding(&region).unwrap();
    // Mapped until the process exits, as a killed holder's would be: the kernel marks
    // the held robust mutexes owner-died at exit only where it can still reach them.
    std::mem::forget(region);
}

/// The seed images (see `exercise::seed_images`), built once per test process; the
/// killed holder is a child process.
fn images() -> &'static [(&'static str, Vec<u8>)] {
    static IMAGES: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let name = common::ShmName::new("mutation");
        let region = Region::create(&Location::parse(name.as_str()).unwrap(), REGION_LEN).unwrap();
        exercise::seed_images(&region, || {
            common::spawn("die_holding", &[name.as_str()]).expect_success(common::WATCHDOG)
        })
        .unwrap()
    })
}

/// Where the objects lie (the same in every image).
fn spans() -> &'static [(String, usize, usize, usize)] {
    static SPANS: OnceLock<Vec<(String, usize, usize, usize)>> = OnceLock::new();
    SPANS.get_or_init(|| exercise::object_spans(&images()[0].1))
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// Runs `cases` cases of `test` (or the one `SHMSYNC_MUTATION_CASE` names), each with a
/// generator seeded from the run's seed, the test and the case number; a case that
/// panics or hangs is named with the command that replays it. Returns what the cases
/// reached when there were enough of them to expect every outcome.
fn run(
    test: &'static str,
    cases: u64,
    mut case: impl FnMut(&mut Rng, &mut Harness),
) -> Option<Tally> {
    let seed = env_u64("SHMSYNC_MUTATION_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_u64("SHMSYNC_MUTATION_CASES").unwrap_or(cases);
    let range = match env_u64("SHMSYNC_MUTATION_CASE") {
        Some(one) => one..one + 1,
        None => 0..cases,
    };
    let replay = move |i: u64| {
        format!(
            "SHMSYNC_MUTATION_SEED={seed:#x} SHMSYNC_MUTATION_CASE={i} \
             cargo nextest run -p shmsync --test mutation {test}"
        )
    };
    let current = std::sync::Arc::new(AtomicU64::new(u64::MAX));
    let watched = current.clone();
    std::thread::spawn(move || {
        let (mut last, mut since) = (u64::MAX, Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(200));
            // Relaxed: a progress indicator; a stale value only delays the verdict.
            let now = watched.load(Ordering::Relaxed);
            if now != last {
                (last, since) = (now, Instant::now());
            } else if now != u64::MAX && since.elapsed() > CASE_WATCHDOG {
                eprintln!("watchdog: {test} case {now} hangs; replay: {}", replay(now));
                std::process::abort();
            }
        }
    });
    let mut h = Harness::new();
    let (n, start) = (range.end - range.start, Instant::now());
    for i in range {
        // Relaxed: see the watchdog.
        current.store(i, Ordering::Relaxed);
        let mut rng = Rng(seed ^ fnv(test) ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03));
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| case(&mut rng, &mut h))) {
            eprintln!("{test}: case {i} failed; replay: {}", replay(i));
            resume_unwind(panic);
        }
    }
    current.store(u64::MAX, Ordering::Relaxed);
    eprintln!(
        "{test}: {n} cases from SHMSYNC_MUTATION_SEED={seed:#x} in {:?}: {:?}",
        start.elapsed(),
        h.tally
    );
    (n >= 500).then(|| h.tally.clone())
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// 32-bit values that mean something to glibc's mutex words (kinds, owner-died and
/// waiter bits, the not-recoverable and inconsistent owners) or to the crate's counters
/// and lengths (limits, off-by-ones).
const WORDS: [u32; 22] = [
    0,
    1,
    2,
    3,
    4,
    0x12,
    0x13,
    0x92,
    0x93,
    0xb2,
    0xd2,
    0x192,
    0x4000_0000,
    0x8000_0000,
    0xc000_0000,
    0x3fff_ffff,
    0x7fff_fffe,
    0x7fff_ffff,
    0xffff_fffe,
    u32::MAX,
    4096,
    49,
];

/// A word for a mutation: one of [`WORDS`], this thread's id, or random bits.
fn word(rng: &mut Rng) -> u32 {
    match rng.below(8) {
        0 => rng.next() as u32,
        // SAFETY: gettid has no preconditions.
        1 => (unsafe { libc::gettid() }) as u32,
        _ => WORDS[rng.index(WORDS.len())],
    }
}

/// One random change inside `buf[lo..hi]`: a byte, a bit, or an aligned 32- or 64-bit
/// word.
fn mutate(rng: &mut Rng, buf: &mut [u8], lo: usize, hi: usize) {
    let len = hi - lo;
    match rng.below(5) {
        2 | 3 if len >= 4 => {
            let at = lo + 4 * rng.index(len / 4);
            buf[at..at + 4].copy_from_slice(&word(rng).to_ne_bytes());
        }
        4 if len >= 8 => {
            let at = lo + 8 * rng.index(len / 8);
            let v = [0, u64::MAX, 1 << 63, rng.next(), u64::from(word(rng))][rng.index(5)];
            buf[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        }
        0 => buf[lo + rng.index(len)] = [0, 0xff, rng.next() as u8][rng.index(3)],
        _ => buf[lo + rng.index(len)] ^= 1 << rng.below(8),
    }
}

/// A change to one of glibc's mutex words or the mutex header inside an object of kind
/// `kind` at `offset` in `buf` (falls back to any byte of the object).
fn mutate_mutex(rng: &mut Rng, buf: &mut [u8], kind: usize, offset: usize, size: usize) {
    let mutexes = exercise::mutex_offsets(kind);
    if mutexes.is_empty() {
        return mutate(rng, buf, offset, offset + size);
    }
    let m = offset + mutexes[rng.index(mutexes.len())];
    // Header words (magic, kind, format, state, namespace tag), then glibc's __lock,
    // __count, __owner, __nusers, __kind, __spins/__elision; the kind word least often:
    // changing it makes attach refuse the object, so the harness never locks it.
    let words = [0, 4, 8, 12, 16, 20, 24, 24, 24, 28, 32, 32, 36, 40, 44];
    let at = m + words[rng.index(words.len())];
    buf[at..at + 4].copy_from_slice(&word(rng).to_ne_bytes());
}

#[test]
fn hostile_header_and_table_bytes_yield_errors_only() {
    let images = images();
    let table_end = 128 + OBJECTS.len() * 80;
    let mut buf = vec![0u8; REGION_LEN];
    let reached = run(
        "hostile_header_and_table_bytes_yield_errors_only",
        1500,
        |rng, h| {
            buf.copy_from_slice(&images[rng.index(images.len())].1);
            for _ in 0..1 + rng.below(6) {
                match rng.below(8) {
                    0 => mutate(rng, &mut buf, 0, REGION_LEN),
                    _ => mutate(rng, &mut buf, 0, table_end),
                }
            }
            h.load(&buf);
            h.region(rng.below(2) == 0);
        },
    );
    let Some(t) = reached else { return };
    assert!(t.opened > 0 && t.refused > 0, "both outcomes: {t:?}");
    assert!(t.tables > 0 && t.inspected > 0 && t.dry_runs > 0, "{t:?}");
    assert!(t.created > 0, "initializers created objects: {t:?}");
}

#[test]
fn hostile_object_bytes_yield_errors_only() {
    let (images, spans) = (images(), spans());
    let mut buf = vec![0u8; REGION_LEN];
    let reached = run("hostile_object_bytes_yield_errors_only", 1500, |rng, h| {
        buf.copy_from_slice(&images[rng.index(images.len())].1);
        for _ in 0..1 + rng.below(4) {
            let (_, kind, offset, size) = spans[rng.index(spans.len())];
            if rng.below(2) == 0 {
                mutate_mutex(rng, &mut buf, kind, offset, size);
            } else {
                mutate(rng, &mut buf, offset, offset + size);
            }
        }
        h.load(&buf);
        h.region(rng.below(2) == 0);
    });
    let Some(t) = reached else { return };
    for (_, kind) in OBJECTS {
        assert!(t.attached[kind] > 0, "no {} attached: {t:?}", KINDS[kind]);
    }
    assert!(t.locked > 0 && t.inspected > 0 && t.dry_runs > 0, "{t:?}");
}

#[test]
fn hostile_objects_attached_as_any_kind_yield_errors_only() {
    let (images, spans) = (images(), spans());
    let mut buf = vec![0u8; REGION_LEN];
    let reached = run(
        "hostile_objects_attached_as_any_kind_yield_errors_only",
        8000,
        |rng, h| {
            buf.copy_from_slice(&images[rng.index(images.len())].1);
            let (_, kind, offset, size) = spans[rng.index(spans.len())];
            for _ in 0..rng.below(4) {
                if rng.below(2) == 0 {
                    mutate_mutex(rng, &mut buf, kind, offset, size);
                } else {
                    mutate(rng, &mut buf, offset, offset + size);
                }
            }
            // Mostly as its own kind (the seqlock also as a view), else as any kind.
            let as_kind = match rng.below(4) {
                0 => rng.index(KINDS.len()),
                1 if kind == 6 => 7,
                _ => kind,
            };
            h.object(as_kind as u8, &buf[offset..offset + size]);
        },
    );
    let Some(t) = reached else { return };
    for (kind, n) in t.attached.iter().enumerate() {
        assert!(*n > 0, "no {} attached: {t:?}", KINDS[kind]);
    }
    assert!(t.locked > 0, "{t:?}");
}

/// The glibc mutex words with which the `objects` fuzz target once made glibc abort (a
/// priority-protect or priority-inherit kind word), kill the process with SIGILL (the
/// elision bit), or hang `try_acquire` and `lock` (a lock held by a live thread that
/// never unlocks, or the waiters bit with no owner), written into a fresh object of every
/// kind that embeds a mutex: a changed kind word is refused on attach, and every call on
/// the others returns.
#[test]
fn glibc_words_that_once_crashed_the_fuzzer_are_refused_or_survived() {
    const PSHARED: u32 = 128;
    const ROBUST: u32 = 16;
    const PI: u32 = 32;
    const PP: u32 = 64;
    const ELISION: u32 = 256;
    const FUTEX_WAITERS: u32 = 0x8000_0000;
    const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
    // (what, kind word or None to keep it, lock word or None to keep it)
    let cases: [(&str, Option<u32>, Option<u32>); 6] = [
        ("priority protect", Some(PP | PSHARED), None),
        (
            "priority inherit, owner died",
            Some(PI | PSHARED),
            Some(FUTEX_OWNER_DIED),
        ),
        ("robust priority inherit", Some(PI | ROBUST | PSHARED), None),
        ("elision", Some(ELISION), None),
        ("held by a live thread", None, Some(1)),
        ("waiters bit, no owner", None, Some(FUTEX_WAITERS)),
    ];
    let (fresh_name, fresh) = &images()[0];
    assert_eq!(*fresh_name, "fresh");
    let mut h = Harness::new();
    let mut refused = 0;
    for (name, kind, offset, size) in spans() {
        for &m in exercise::mutex_offsets(*kind) {
            for (what, kind_word, lock_word) in cases {
                let mut obj = fresh[*offset..offset + size].to_vec();
                let glibc = m + exercise::MUTEX_PTHREAD;
                if let Some(k) = kind_word {
                    let at = glibc + exercise::GLIBC_KIND;
                    obj[at..at + 4].copy_from_slice(&k.to_ne_bytes());
                }
                if let Some(l) = lock_word {
                    obj[glibc..glibc + 4].copy_from_slice(&l.to_ne_bytes());
                }
                let attached = h.tally.attached[*kind];
                let _w = common::Watchdog::new(CASE_WATCHDOG, "a glibc word the fuzzer found");
                h.object(*kind as u8, &obj);
                if kind_word.is_some() {
                    assert_eq!(
                        h.tally.attached[*kind], attached,
                        "{name} with a {what} kind word was attached"
                    );
                    refused += 1;
                }
            }
        }
    }
    assert!(refused >= 4 * 7, "too few objects with mutexes: {refused}");
}

/// The seed corpus in the repository (`fuzz/corpus/`, written by
/// `fuzz/examples/make-corpus.rs`) is in the current on-segment format: every object
/// input attaches as its kind and every region opens with a readable table, so fuzzing
/// starts past the format checks rather than at them.
#[test]
fn seed_corpus_is_in_the_current_format() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let regenerate = "regenerate it: cd fuzz && rm -r corpus && cargo run --example make-corpus";
    let mut h = Harness::new();
    let mut seen = 0;
    for target in ["objects", "region_observer", "region_initializer"] {
        let mut files: Vec<_> = std::fs::read_dir(dir.join(target))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(target).display()))
            .map(|e| e.expect("a corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds for {target}");
        for path in files {
            let bytes = std::fs::read(&path).expect("a corpus file");
            let before = h.tally.clone();
            if target == "objects" {
                let (&selector, object) = bytes.split_first().expect("a selector byte");
                let kind = usize::from(selector) % KINDS.len();
                h.object(selector, object);
                assert_eq!(
                    h.tally.attached[kind],
                    before.attached[kind] + 1,
                    "{} does not attach as {}; {regenerate}",
                    path.display(),
                    KINDS[kind]
                );
            } else {
                h.load(&bytes);
                h.region(target == "region_initializer");
                assert_eq!(
                    (h.tally.opened, h.tally.tables),
                    (before.opened + 1, before.tables + 1),
                    "{} does not open with its table; {regenerate}",
                    path.display()
                );
            }
            seen += 1;
        }
    }
    eprintln!("{seen} seeds in {} attach or open", dir.display());
}
