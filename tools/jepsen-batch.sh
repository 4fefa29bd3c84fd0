#!/usr/bin/env bash
# Long Jepsen runs, one per seed, and a summary line per run (the nightly job).
#
#   tools/jepsen-batch.sh [FIRST_SEED] [RUNS] [SECONDS] [NEMESIS] [-- extra chorus jepsen flags]
#   tools/jepsen-batch.sh 100 5 300 all          # five 5-minute runs, seeds 100..104
#
# Results go to jepsen-batch/seed-N/ (history, verdict.json, report.html; the
# cluster's data only for invalid runs). Exits non-zero if any run is invalid.
set -uo pipefail
first="${1:-1}"; runs="${2:-3}"; secs="${3:-300}"; nemesis="${4:-all}"
shift $(( $# < 4 ? $# : 4 ))
[ "${1:-}" = "--" ] && shift
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
cargo build --release --locked -p chorus-tools --bin chorus >/dev/null
bin="${CARGO_TARGET_DIR:-$here/target}/release/chorus"
out="jepsen-batch"; mkdir -p "$out"
failed=0
for seed in $(seq "$first" $((first + runs - 1))); do
    dir="$out/seed-$seed"; rm -rf "$dir"
    RUST_LOG=warn "$bin" jepsen --time "$secs" --nemesis "$nemesis" --seed "$seed" --out "$dir" "$@" >"$out/seed-$seed.log" 2>&1 || failed=1
    if [ -f "$dir/verdict.json" ]; then
        jq -r --arg seed "$seed" '"seed \($seed): valid=\(.valid) faults=\(.faults|length) ops=\([.ops[]]|add) " +
            "send.ok=\(.ops["send.ok"] // 0) info=\([.ops|to_entries[]|select(.key|endswith(".info"))|.value]|add // 0) " +
            "anomalies=\([.verdict.anomalies[]|length]|add // 0) worst_stall_ms=\([.faults[].stall_ms]|max // 0) " +
            "liveness_ms=\(.liveness.recovered_ms) reseeds=\([.reseeds[]]|add // 0)"' "$dir/verdict.json"
    else
        echo "seed $seed: the harness failed, see $out/seed-$seed.log"; failed=1
    fi
done
exit $failed
