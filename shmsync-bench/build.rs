//! Builds the Boost.Interprocess peer (peers/boost.cpp) when the `peer-boost` feature is
//! on. A machine without a C++ compiler or Boost's headers still builds the harness: the
//! reason is passed to the binary, which prints it instead of Boost's figures.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(shmsync_bench_boost)");
    println!("cargo:rerun-if-changed=peers/boost.cpp");
    println!("cargo:rerun-if-env-changed=CXX");
    if env::var_os("CARGO_FEATURE_PEER_BOOST").is_none() {
        return;
    }
    match build_boost() {
        Ok(()) => println!("cargo:rustc-cfg=shmsync_bench_boost"),
        Err(why) => {
            println!("cargo:warning=Boost.Interprocess peer not built: {why}");
            // One line: rustc-env values cannot hold newlines.
            let why = why.replace('\n', " | ");
            println!("cargo:rustc-env=SHMSYNC_BENCH_BOOST_MISSING={why}");
        }
    }
}

fn build_boost() -> Result<(), String> {
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let cxx = env::var("CXX").unwrap_or_else(|_| "g++".into());
    let obj = out.join("boost.o");
    let lib = out.join("libshmsync_bench_boost.a");
    let compiled = Command::new(&cxx)
        .args([
            "-O2",
            "-std=c++14",
            "-fPIC",
            "-pthread",
            "-c",
            "peers/boost.cpp",
            "-o",
        ])
        .arg(&obj)
        .output()
        .map_err(|e| format!("cannot run {cxx}: {e} (install g++)"))?;
    if !compiled.status.success() {
        let err = String::from_utf8_lossy(&compiled.stderr);
        let first = err.lines().find(|l| l.contains("error")).unwrap_or("");
        return Err(format!(
            "{cxx} failed on peers/boost.cpp ({}); install libboost-dev",
            first.trim()
        ));
    }
    let archived = Command::new("ar")
        .arg("crs")
        .arg(&lib)
        .arg(&obj)
        .status()
        .map_err(|e| format!("cannot run ar: {e}"))?;
    if !archived.success() {
        return Err("ar failed".into());
    }
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=shmsync_bench_boost");
    println!("cargo:rustc-link-lib=dylib=stdc++");
    Ok(())
}
