//! Links the bare-metal image with `linker.ld` (load address 1 MiB) as a
//! plain static executable. Nothing happens for host builds, so the
//! workspace's host `cargo build`/`clippy`/`test` are untouched.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
    let target = env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-none" {
        return;
    }
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let script = dir.join("linker.ld");
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    // The target links a static PIE by default; the image is loaded at its
    // link addresses with nobody to apply relocations, and the 32-bit entry
    // code uses absolute addresses. `--no-pie` comes after rustc's `-pie`
    // and wins; it is the link-time half of `-C relocation-model=static`
    // (the PIC code rustc emits is fine in a non-PIE executable).
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
}
