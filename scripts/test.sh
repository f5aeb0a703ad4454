#!/usr/bin/env bash
# Runs every test: unit, integration and multi-process tests (cargo-nextest: each test in
# its own process, which keeps fork-based tests safe), doctests, the release-mode stress
# tests, and the loom models. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=default
[ "${CI:-}" = "true" ] && profile=ci

echo "== unit, integration and multi-process tests (debug)"
cargo nextest run --workspace --profile "$profile"

echo "== doctests"
cargo test --workspace --doc

echo "== stress tests (release)"
cargo nextest run --release --profile "$profile" --run-ignored only -E 'test(/^stress_/)' \
    || { rc=$?; [ "$rc" -eq 4 ] && echo "(no stress tests)" || exit "$rc"; }

echo "== loom models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:=2})"
RUSTFLAGS="--cfg shmsync_loom" LOOM_MAX_PREEMPTIONS="$LOOM_MAX_PREEMPTIONS" \
    cargo test -p shmsync-loom-tests --release --target-dir target/loom
