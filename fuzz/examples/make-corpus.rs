//! Writes the seed corpus: `cargo run --example make-corpus [DIR]` (default: `corpus/` next
//! to this crate's manifest). Regions with one object of every kind — fresh; left by a
//! process killed holding everything; with mutexes not recoverable; half initialized —
//! for the region targets, and each of their objects for the `objects` target.

use std::path::PathBuf;

use shmsync::{Region, Segment};
use shmsync_fuzz::exercise;

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let region = Region::from_segment(Segment::anonymous(exercise::REGION_LEN).expect("mmap"))
        .expect("a fresh region");
    let images = exercise::seed_images(&region, || {
        // SAFETY: this program is single-threaded, so the child may do anything; it
        // takes everything and exits without unlocking, as a killed process would.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let code = i32::from(exercise::die_holding(&region).is_err());
            // SAFETY: _exit has no preconditions.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child failed"
        );
    })
    .expect("seed images");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join(name), bytes).expect("write");
        println!("{}/{name}: {} bytes", d.display(), bytes.len());
    };
    for (name, image) in &images {
        // A half-initialized region only means something to an initializer; an
        // unrecoverable one adds nothing for it beyond the dead holders.
        if *name != "half-initialized" {
            write("region_observer", name, image);
        }
        if *name != "not-recoverable" {
            write("region_initializer", name, image);
        }
    }
    for (name, image) in images.iter().filter(|(n, _)| *n != "half-initialized") {
        for (object, input) in exercise::object_seeds(image) {
            write("objects", &format!("{name}-{object}"), &input);
        }
    }
}
