//! Building fi-ebpf: once per xtask invocation, with the nightly toolchain, for
//! bpfel-unknown-none, into the workspace's one target directory.

use std::{path::PathBuf, process::Command};

use crate::cmd;

pub const TARGET: &str = "bpfel-unknown-none";

/// `cargo +nightly <sub> ...` in the fi-ebpf crate with the flags the BPF target needs.
pub fn cargo(sub: &str) -> Command {
    let root = cmd::workspace_root();
    let mut c = Command::new("cargo");
    c.current_dir(root.join("fi-ebpf"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTFLAGS")
        // BTF (with func_info) is what the kernel needs to accept bpf_loop callbacks; cpu v3
        // gives atomic fetch-add (rule counters).
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\x1f-Clink-arg=--btf\x1f-Ctarget-cpu=v3",
        )
        .args(["+nightly", sub, "--target", TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(root.join("target"));
    c
}

/// Builds the eBPF object and returns its path.
pub fn build() -> anyhow::Result<PathBuf> {
    cmd::run(cargo("build").arg("--release"))?;
    Ok(object_path())
}

/// Where [`build`] puts the object.
pub fn object_path() -> PathBuf {
    cmd::workspace_root()
        .join("target")
        .join(TARGET)
        .join("release/fi-ebpf")
}
