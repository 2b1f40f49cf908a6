//! Running commands on the host, with panics that say what failed.

use std::process::{Command, Output};

/// Runs a command and panics with its stderr if it fails.
pub fn must(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ip ARGS...`, which must succeed.
pub fn ip(args: &[&str]) {
    must(Command::new("ip").args(args));
}

/// `ip ARGS...`, whose failure is ignored (cleanup of things that may already be gone).
pub fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

/// Where the workspace's binaries (fi-daemon, fictl) are: `FI_BIN_DIR`, set by
/// `cargo xtask test`, else next to this executable (a binary such as fi-bench), else the
/// directory above it (a test binary in `deps/`).
pub fn bin_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("FI_BIN_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            let here = exe.parent()?;
            if here.join(name).is_file() {
                Some(here.to_owned())
            } else {
                Some(here.parent()?.to_owned())
            }
        })
        .expect("cannot find the binaries' directory; set FI_BIN_DIR");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo xtask test` does)",
        path.display()
    );
    path
}
