#!/usr/bin/env bash
# Runs every test: unit, integration and multi-process tests (cargo-nextest: each test in
# its own process, which keeps fork-based tests safe), doctests, the release-mode stress
# and chaos tests, and the loom models. This is the README's test command; .ci/run calls
# it. Ends with one line: "tests: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."

profile=default
[ "${CI:-}" = "true" ] && profile=ci
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=0
run() {
    echo "== $1"
    shift
    local t0=$SECONDS
    "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    echo "== took $((SECONDS - t0)) s"
    if [ "$rc" -ne 0 ]; then
        echo "!! failed (exit $rc): $*"
        failed=1
    fi
}

run "unit, integration and multi-process tests (debug)" \
    cargo nextest run --workspace --profile "$profile"

run "doctests" cargo test -p shmsync --doc

run "stress and chaos tests (release; SHMSYNC_CHAOS_ROUNDS scales them)" \
    cargo nextest run -p shmsync --release --profile "$profile" --run-ignored only --no-tests=warn -E 'test(/^stress_/)'

: "${LOOM_MAX_PREEMPTIONS:=2}"
run "loom models (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)" \
    env RUSTFLAGS="--cfg shmsync_loom" LOOM_MAX_PREEMPTIONS="$LOOM_MAX_PREEMPTIONS" \
    cargo test -p shmsync-loom-tests --release --target-dir target/loom --tests

# Totals: nextest's "N tests run: P passed, F failed" and libtest's "test result: ...
# P passed; F failed".
passed=$(grep -hoE '([0-9]+) passed' "$log" | awk '{s += $1} END {print s + 0}')
nfailed=$(grep -hoE '([0-9]+) failed' "$log" | awk '{s += $1} END {print s + 0}')
mkdir -p target
echo "tests: $passed passed, $nfailed failed" | tee target/test-summary.txt
[ "$failed" -eq 0 ] && [ "$nfailed" -eq 0 ]
