//! Uncontended, in-process costs of every implementation the harness knows (shmsync,
//! glibc, and the peers built with `--features peers`), over memory in a shared
//! mapping, in the same run: `cargo bench -p shmsync-bench --bench uncontended`.
//!
//! - mutex lock + increment + unlock;
//! - semaphore post + wait;
//! - read and write of a 64-byte cell (SeqLock, reader-writer locks).
//!
//! The cross-process figures (ping-pong, contention, oversubscription) are in the
//! `shmsync-bench` binary.
#![allow(clippy::disallowed_types, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use shmsync_bench::impls::{visit_all, Contender, Lock, Rw, Sem, Visit};

struct Bench<'a>(&'a mut Criterion);

impl Visit for Bench<'_> {
    fn lock<L: Lock>(&mut self, c: Contender<L>) {
        let l = (c.make)().expect(c.name);
        self.0
            .bench_function(&format!("mutex lock+unlock/{}", c.name), |b| {
                b.iter(|| l.bump())
            });
    }
    fn sem<S: Sem>(&mut self, c: Contender<S>, _gives_way: bool) {
        let s = (c.make)().expect(c.name);
        self.0
            .bench_function(&format!("semaphore post+wait/{}", c.name), |b| {
                b.iter(|| {
                    s.post();
                    s.wait();
                })
            });
    }
    fn rw<R: Rw>(&mut self, c: Contender<R>) {
        let r = (c.make)().expect(c.name);
        self.0
            .bench_function(&format!("read 64 bytes/{}", c.name), |b| {
                b.iter(|| black_box(r.read()))
            });
        let mut i = 0u64;
        self.0
            .bench_function(&format!("write 64 bytes/{}", c.name), |b| {
                b.iter(|| {
                    i += 1;
                    r.write(black_box(&[i; 8]))
                })
            });
    }
}

fn all(c: &mut Criterion) {
    visit_all(&mut Bench(c));
}

criterion_group!(benches, all);
criterion_main!(benches);
