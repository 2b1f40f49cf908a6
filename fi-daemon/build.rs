//! Compiles the public API (proto/fi/v1) and embeds the eBPF object that xtask built.
//!
//! The eBPF crate is not built here: `cargo xtask build|test|run` builds it once with the
//! nightly toolchain and passes its path in `FI_EBPF_OBJECT`. Without it (plain `cargo
//! check` or clippy), an empty object is embedded and the daemon says at start-up how to
//! build the real one, so host tooling never needs bpf-linker.
use std::{env, fs, path::PathBuf};

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let proto_root = manifest_dir.join("../proto");
    let protos = [
        "fi/v1/system.proto",
        "fi/v1/observe.proto",
        "fi/v1/rules.proto",
        "fi/v1/explore.proto",
    ]
    .map(|p| proto_root.join(p));
    for proto in &protos {
        println!("cargo::rerun-if-changed={}", proto.display());
    }
    tonic_prost_build::configure()
        .compile_protos(&protos, &[proto_root])
        .context("compiling proto/fi/v1 (is protoc installed? run `cargo xtask setup`)")?;

    println!("cargo::rerun-if-env-changed=FI_EBPF_OBJECT");
    let object = env::var_os("FI_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../target/bpfel-unknown-none/release/fi-ebpf"));
    println!("cargo::rerun-if-changed={}", object.display());
    let embedded = out_dir.join("fi-ebpf.o");
    match fs::read(&object) {
        Ok(bytes) => fs::write(&embedded, bytes)?,
        Err(_) => fs::write(&embedded, b"")?,
    }
    Ok(())
}
