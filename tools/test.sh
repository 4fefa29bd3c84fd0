#!/usr/bin/env bash
# Runs every test of chorus, after installing what they need.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus-target}"
# The chorus binary is built first: the cluster tests start it as real processes.
cargo build --locked -p chorus-tools --bin chorus
cargo test --locked --workspace "$@"
