//! build, test, lint, run.

use std::{path::PathBuf, process::Command};

use crate::{cmd, ebpf};

/// A test tier. Without `--tier`, all run in one `cargo test` invocation.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Tier {
    /// Host unit tests of the pure logic (no privileges).
    Unit,
    /// BPF_PROG_TEST_RUN: crafted packets fed to the loaded programs (root).
    Bpf,
    /// Real namespaces, cgroups, daemon and clients (root).
    Integration,
}

/// Builds the eBPF object, then the user-space binaries that embed it.
/// Returns the directory that holds the binaries.
pub fn build(release: bool) -> anyhow::Result<PathBuf> {
    let object = ebpf::build()?;
    let mut c = host_cargo("build", &object);
    c.args(["--workspace", "--bins"]);
    if release {
        c.arg("--release");
    }
    cmd::run(&mut c)?;
    Ok(cmd::workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" }))
}

/// `cargo <sub>` on the host workspace, with the eBPF object to embed.
fn host_cargo(sub: &str, object: &std::path::Path) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(cmd::workspace_root())
        .arg(sub)
        .env("FI_EBPF_OBJECT", object);
    c
}

pub fn test(tier: Option<Tier>, args: &[String]) -> anyhow::Result<()> {
    // On a fresh machine this is where the toolchain and packages arrive; on a ready one
    // it checks in a second and prints nothing.
    crate::setup::run(crate::setup::Report::WhenChanged)?;
    // The binaries (fi-daemon, fictl) must exist before the integration tests start them.
    let bin_dir = build(false)?;
    let object = ebpf::object_path();
    let mut c = host_cargo("test", &object);
    c.env("FI_BIN_DIR", &bin_dir);
    // The privileged tests are one binary (`it`), a module per area.
    match tier {
        None => c.args(["--workspace", "--"]),
        Some(Tier::Unit) => c.args(["--workspace", "--exclude", "fi-tests", "--"]),
        Some(Tier::Bpf) => c.args(["-p", "fi-tests", "--test", "it", "--", "prog_test_run::"]),
        Some(Tier::Integration) => c.args(["-p", "fi-tests", "--test", "it", "--"]),
    };
    c.args(args);
    cmd::run(&mut c)
}

pub fn lint() -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    cmd::run(
        Command::new("cargo")
            .current_dir(&root)
            .args(["fmt", "--all", "--check"]),
    )?;
    cmd::run(
        Command::new("cargo")
            .current_dir(root.join("fi-ebpf"))
            .args(["+nightly", "fmt", "--all", "--check"]),
    )?;
    cmd::run(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    cmd::run(ebpf::cargo("clippy").args(["--release", "--", "-D", "warnings"]))
}

pub fn run(release: bool, args: &[String]) -> anyhow::Result<()> {
    let bin_dir = build(release)?;
    cmd::run(Command::new(bin_dir.join("fi-daemon")).args(args))
}

pub fn bench(short: bool, only: Option<&str>) -> anyhow::Result<()> {
    // Numbers come from an optimized build; the short mode only checks that it all runs.
    let bin_dir = build(!short)?;
    let out = cmd::workspace_root().join("bench/results");
    let mut c = Command::new(bin_dir.join("fi-bench"));
    c.env("FI_BIN_DIR", &bin_dir)
        .args(if short { &["--short"][..] } else { &[][..] })
        .arg("--out")
        .arg(&out);
    if let Some(only) = only {
        c.args(["--only", only]);
    }
    cmd::run(&mut c)
}

/// The demo: set-up if needed, build, then the example shop explored end to end
/// (tests/src/bin/fi-demo.rs). Its report goes to target/fi-demo/report.html.
pub fn demo() -> anyhow::Result<()> {
    crate::setup::run(crate::setup::Report::WhenChanged)?;
    let bin_dir = build(false)?;
    let report_dir = cmd::workspace_root().join("target/fi-demo");
    // Ctrl-C goes to the whole terminal group: the demo cleans up and exits on its own;
    // this process waits for it rather than leaving it behind.
    // SAFETY: ignoring a signal has no memory-safety conditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let result = cmd::run(
        Command::new(bin_dir.join("fi-demo"))
            .env("FI_BIN_DIR", &bin_dir)
            .arg("--report-dir")
            .arg(&report_dir),
    );
    // SAFETY: restoring the default action takes no pointer and installs no handler, so,
    // like ignoring the signal, it has no memory-safety conditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    result
}

/// Writes docs/FICTL.md from `fictl docs-markdown`.
pub fn docs() -> anyhow::Result<()> {
    let bin_dir = build(false)?;
    let out = Command::new(bin_dir.join("fictl"))
        .arg("docs-markdown")
        .output()?;
    anyhow::ensure!(out.status.success(), "fictl docs-markdown failed");
    let path = cmd::workspace_root().join("docs/FICTL.md");
    std::fs::write(&path, out.stdout)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Exactly what CI does: `.ci/run` on a fresh clone of HEAD (committed work only), which
/// runs README's commands in a pristine Debian root. Needs root and a few minutes.
pub fn ci(newcomer: bool) -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    let clone = std::env::temp_dir().join(format!("fi-ci-clone-{}", std::process::id()));
    cmd::run(
        Command::new("git")
            .args(["clone", "--quiet", "--no-hardlinks"])
            .arg(&root)
            .arg(&clone),
    )?;
    let mut run = Command::new("bash");
    run.arg(clone.join(".ci/run"));
    if newcomer {
        run.arg("--newcomer");
    }
    let result = cmd::run(&mut run);
    std::fs::remove_dir_all(&clone)?;
    result
}
