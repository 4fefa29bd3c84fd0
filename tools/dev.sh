#!/usr/bin/env bash
# Builds and runs chorus in embedded mode (one process, data under ./data).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus-target}"
exec cargo run --locked -p chorus-tools --bin chorus -- dev "$@"
