#!/usr/bin/env bash
# Runs every test of chorus, after installing what they need.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus-target}"
# Incremental caches of a persistent target dir only grow (GBs): CI builds from
# fresh clones, where they are never reused.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# A persistent target dir keeps every old test binary (hundreds of MB each with
# debug info): keep the newest two of each name (two crates may share a test name).
if [ -d "$CARGO_TARGET_DIR/debug/deps" ]; then
  find "$CARGO_TARGET_DIR/debug/deps" -maxdepth 1 -type f -executable ! -name '*.so' -printf '%T@ %f\n' \
    | sort -rn | awk '{n=$2; sub(/-[0-9a-f]+$/, "", n); if (seen[n]++ >= 2) print $2}' \
    | (cd "$CARGO_TARGET_DIR/debug/deps" && xargs -r rm -f)
fi
# Every test and the chorus binary (which the cluster tests start as real
# processes) are built first, in one go: `cargo build -p chorus-tools` would
# resolve other features of shared dependencies than the test build and
# compile RocksDB's C++ a second time.
cargo test --locked --workspace --no-run
mkdir -p "$HOME/.cargo/bin"
ln -sf "$CARGO_TARGET_DIR/debug/chorus" "$HOME/.cargo/bin/chorus"   # the README's `chorus …` commands
cargo test --locked --workspace "$@"
