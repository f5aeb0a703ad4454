//! The harness's building blocks, shared by the `shmsync-bench` binary and the criterion
//! bench: shared-memory and process helpers ([`harness`]), the measured protocols and
//! their shmsync and glibc implementations ([`impls`]), and the peers ([`peers`]), each
//! behind its own cargo feature.
#![allow(clippy::disallowed_types)]

pub mod harness;
pub mod impls;
pub mod peers;
