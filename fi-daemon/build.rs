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
    // protoc and the well-known types (google/protobuf/duration.proto) come from a crate,
    // not from the system: Debian splits them over two packages, and a machine with only
    // one of them failed here (docs/DECISIONS.md).
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let well_known = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .compile_with_config(config, &protos, &[proto_root, well_known])
        .context("compiling proto/fi/v1")?;

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
