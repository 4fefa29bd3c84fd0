#!/usr/bin/env bash
# Builds and runs chorus in embedded mode (one process, data under ./data).
# The built `chorus` is linked into ~/.cargo/bin (on the PATH of every rustup
# install), so the README's `chorus …` commands work in any new shell.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus-target}"
cargo build --locked -p chorus-tools --bin chorus
mkdir -p "$HOME/.cargo/bin"
ln -sf "$CARGO_TARGET_DIR/debug/chorus" "$HOME/.cargo/bin/chorus"
exec "$CARGO_TARGET_DIR/debug/chorus" dev "$@"
