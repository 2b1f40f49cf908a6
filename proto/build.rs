//! Compiles the public API (fi/v1/*.proto) into Rust messages, clients and servers.
use std::{env, path::PathBuf};

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
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
        .context("compiling fi/v1")?;
    Ok(())
}
