#!/usr/bin/env bash
# A short fuzzing run of every target in fuzz/ (cargo-fuzz, libFuzzer): each target
# starts from a copy of its seed corpus (fuzz/corpus/<target>; the repository is not
# written) and runs for SHMSYNC_FUZZ_SECS seconds (default 20). A crash, a panic or a
# hang (an input running longer than SHMSYNC_FUZZ_TIMEOUT seconds, default 10) fails
# the script and leaves the input under fuzz/artifacts/<target>/.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Where either
# is missing it says so loudly and exits 0: the deterministic mutation test
# (tests/mutation.rs) runs everywhere; this adds coverage-guided search where it can.
#
#   scripts/fuzz-smoke.sh                      every target, 20 s each
#   SHMSYNC_FUZZ_SECS=300 scripts/fuzz-smoke.sh objects
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${SHMSYNC_FUZZ_SECS:-20}
timeout=${SHMSYNC_FUZZ_TIMEOUT:-10}

skip() {
    echo "!!"
    echo "!! fuzz smoke SKIPPED: $*"
    echo "!! (tests/mutation.rs, which runs everywhere, still covers hostile segments)"
    echo "!!"
    exit 0
}
command -v cargo >/dev/null || skip "cargo is not installed"
cargo +nightly --version >/dev/null 2>&1 ||
    skip "no nightly toolchain (rustup toolchain install nightly)"
cargo +nightly fuzz --version >/dev/null 2>&1 ||
    skip "cargo-fuzz is not installed (cargo install cargo-fuzz)"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== build the fuzz targets (nightly, sanitizer instrumentation)"
cargo +nightly fuzz build --fuzz-dir fuzz 2>&1 | tail -n 3

for t in "${targets[@]}"; do
    echo "== fuzz $t for ${secs}s"
    mkdir -p "$work/$t"
    if [ -d "fuzz/corpus/$t" ]; then
        cp -R "fuzz/corpus/$t/." "$work/$t/"
    fi
    set +e
    cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$work/$t" -- \
        -max_total_time="$secs" -timeout="$timeout" -max_len=16384 -print_final_stats=1 \
        >"$work/$t.log" 2>&1
    rc=$?
    set -e
    grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb))' "$work/$t.log" || true
    if [ "$rc" -ne 0 ]; then
        # The log up to cargo-fuzz's dump of the input (which can be kilobytes long).
        sed '/^Output of `std::fmt::Debug`/q' "$work/$t.log" | tail -n 60
        echo "!! fuzz target $t failed (exit $rc); the input is under fuzz/artifacts/$t/"
        exit "$rc"
    fi
done
echo "fuzz smoke: ${#targets[@]} targets, ${secs}s each, no failure"
