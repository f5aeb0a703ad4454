#!/usr/bin/env bash
# Instructions per uncontended operation, counted by valgrind's callgrind: unlike
# times, the counts do not depend on the machine's load or its vCPU placement.
#
#   scripts/callgrind.sh                        # shmsync and glibc, every operation
#   scripts/callgrind.sh --features peers       # and every peer that builds
#   scripts/callgrind.sh mutex:shmsync sem:glibc   # only these (see `shmsync-bench list-ops`)
#
# Each operation runs N and 2N times in a fresh process; the difference of the two
# instruction totals divided by N is the cost of one operation (setup, mapping and exit
# cancel out; the loop around the operation adds about 3 instructions).
set -euo pipefail
cd "$(dirname "$0")/.."

features=()
if [[ "${1:-}" == --features ]]; then
    features=(--features "$2")
    shift 2
fi
if ! command -v valgrind >/dev/null; then
    echo "callgrind.sh: valgrind not found (apt-get install valgrind)" >&2
    exit 1
fi
cargo build --release -q -p shmsync-bench "${features[@]}"
bin=target/release/shmsync-bench

ops=("$@")
if [[ ${#ops[@]} -eq 0 ]]; then
    mapfile -t ops < <("$bin" list-ops)
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
N=20000

# Total instructions (Ir) of one run of `op $1 $2`.
instructions() {
    valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$bin" op "$1" "$2" \
        2>"$tmp/log" >/dev/null || {
        echo "callgrind.sh: $1 failed:" >&2
        cat "$tmp/log" >&2
        return 1
    }
    awk '/^(summary|totals):/ { print $2; exit }' "$tmp/out"
}

echo "Instructions per operation (callgrind, valgrind $(valgrind --version | sed 's/valgrind-//'), N=$N)"
echo
echo "| operation | instructions |"
echo "|---|---:|"
for op in "${ops[@]}"; do
    a=$(instructions "$op" "$N")
    b=$(instructions "$op" $((2 * N)))
    awk -v op="$op" -v a="$a" -v b="$b" -v n="$N" 'BEGIN { printf "| %s | %.1f |\n", op, (b - a) / n }'
done
