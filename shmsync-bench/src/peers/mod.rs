//! The peers shmsync is compared with, each behind its own cargo feature (`peers`
//! turns on all of them), and a report of which were built and which could not be.

use crate::impls::Visit;

#[cfg(shmsync_bench_boost)]
mod boost;
#[cfg(feature = "peer-iceoryx2")]
mod iceoryx2;
#[cfg(feature = "peer-raw-sync")]
mod raw_sync;
#[cfg(feature = "peer-rustix")]
mod rustix;

/// Offers every built peer's implementations to `v`.
pub fn visit(v: &mut impl Visit) {
    #[cfg(shmsync_bench_boost)]
    boost::visit(v);
    #[cfg(feature = "peer-raw-sync")]
    raw_sync::visit(v);
    #[cfg(feature = "peer-rustix")]
    rustix::visit(v);
    #[cfg(feature = "peer-iceoryx2")]
    iceoryx2::visit(v);
    let _ = v;
}

/// One line per peer: what was built and measured, what was not and why.
pub fn report() -> Vec<String> {
    vec![
        boost_line(),
        raw_sync_line(),
        rustix_line(),
        iceoryx2_line(),
    ]
}

#[cfg(shmsync_bench_boost)]
fn boost_line() -> String {
    boost::describe()
}

#[cfg(not(shmsync_bench_boost))]
fn boost_line() -> String {
    match option_env!("SHMSYNC_BENCH_BOOST_MISSING") {
        Some(why) => format!("Boost.Interprocess: not built: {why}"),
        None => "Boost.Interprocess: not built (feature peer-boost off; needs g++ and \
                 libboost-dev)"
            .into(),
    }
}

#[cfg(feature = "peer-raw-sync")]
fn raw_sync_line() -> String {
    raw_sync::describe()
}

#[cfg(not(feature = "peer-raw-sync"))]
fn raw_sync_line() -> String {
    "raw_sync: not built (feature peer-raw-sync off)".into()
}

#[cfg(feature = "peer-rustix")]
fn rustix_line() -> String {
    rustix::describe()
}

#[cfg(not(feature = "peer-rustix"))]
fn rustix_line() -> String {
    "rustix-futex-sync: not built (feature peer-rustix off)".into()
}

#[cfg(feature = "peer-iceoryx2")]
fn iceoryx2_line() -> String {
    iceoryx2::describe()
}

#[cfg(not(feature = "peer-iceoryx2"))]
fn iceoryx2_line() -> String {
    "iceoryx2-bb-posix: not built (feature peer-iceoryx2 off; needs libclang-dev)".into()
}
