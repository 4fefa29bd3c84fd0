//! Builds the LD_PRELOAD shim of the "lose un-fsynced writes" nemesis
//! (`shim/sync_shim.c`) with the system C compiler. Without a compiler the
//! harness still builds; that nemesis then reports itself unavailable.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=shim/sync_shim.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    // Cargo always sets OUT_DIR; without it the shim is just not built.
    let out = std::env::var("OUT_DIR").ok().map(|dir| PathBuf::from(dir).join("libchorus_sync_shim.so"));
    let built = out.filter(|out| {
        Command::new(&cc)
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
            .arg(out)
            .arg("shim/sync_shim.c")
            .arg("-ldl")
            .status()
            .is_ok_and(|s| s.success())
    });
    if let Some(out) = built {
        println!("cargo:rustc-env=CHORUS_SYNC_SHIM={}", out.display());
    } else {
        println!("cargo:warning=could not build the sync shim with {cc}; the lose-unsynced nemesis is unavailable");
        println!("cargo:rustc-env=CHORUS_SYNC_SHIM=");
    }
}
