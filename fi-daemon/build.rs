//! Embeds the eBPF object that xtask built.
//!
//! The eBPF crate is not built here: `cargo xtask build|test|run` builds it once with the
//! nightly toolchain and passes its path in `FI_EBPF_OBJECT`. Without it (plain `cargo
//! check` or clippy), an empty object is embedded and the daemon says at start-up how to
//! build the real one, so host tooling never needs bpf-linker.
use std::{env, fs, path::PathBuf};

fn main() -> std::io::Result<()> {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    println!("cargo::rerun-if-env-changed=FI_EBPF_OBJECT");
    let object = env::var_os("FI_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../target/bpfel-unknown-none/release/fi-ebpf"));
    println!("cargo::rerun-if-changed={}", object.display());
    let embedded = out_dir.join("fi-ebpf.o");
    match fs::read(&object) {
        Ok(bytes) => fs::write(&embedded, bytes),
        Err(_) => fs::write(&embedded, b""),
    }
}
