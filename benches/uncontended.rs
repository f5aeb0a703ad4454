//! Placeholder; the benchmarks issue fills this in.
fn main() {}
