//! Builds the LD_PRELOAD shim of the "lose un-fsynced writes" nemesis
//! (`shim/sync_shim.c`) with the system C compiler. Without a compiler the
//! harness still builds; that nemesis then reports itself unavailable.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=shim/sync_shim.c");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("libchorus_sync_shim.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
        .arg(&out)
        .arg("shim/sync_shim.c")
        .arg("-ldl")
        .status()
        .is_ok_and(|s| s.success());
    if built {
        println!("cargo:rustc-env=CHORUS_SYNC_SHIM={}", out.display());
    } else {
        println!("cargo:warning=could not build the sync shim with {cc}; the lose-unsynced nemesis is unavailable");
        println!("cargo:rustc-env=CHORUS_SYNC_SHIM=");
    }
}
