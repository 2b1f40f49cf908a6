//! `cargo xtask setup`: installs what is missing, checks the kernel, prints one table.
//!
//! Every step first looks whether its work is already done, so a second run changes
//! nothing and takes seconds.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Debian packages, and why fi needs each.
const APT_PACKAGES: &[(&str, &str)] = &[
    (
        "llvm-22-dev",
        "bpf-linker links against LLVM 22 (rustc's LLVM major)",
    ),
    (
        "libpolly-22-dev",
        "needed to link bpf-linker against LLVM 22",
    ),
    ("libzstd-dev", "needed to link bpf-linker against LLVM 22"),
    ("zlib1g-dev", "needed to link bpf-linker against LLVM 22"),
    ("bpftool", "tests inspect cgroup attachments"),
    ("iproute2", "ip: test namespaces, veths, bridges"),
    ("curl", "a real HTTP client in tests"),
    (
        "python3-requests",
        "Python requests, a real HTTP client in tests",
    ),
    (
        "procps",
        "pgrep: the demo test checks that no process is left",
    ),
    ("wrk", "HTTP load generator: the bench's data-path overhead"),
    (
        "nginx",
        "HTTP server and reverse proxy under load in the bench",
    ),
    (
        "chromium",
        "headless browser: a test renders the HTML exploration report to a PNG",
    ),
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// One row of the report.
struct Row {
    item: String,
    found: String,
    action: String,
    why: String,
}

/// How much [`run`] prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The whole table, always (`cargo xtask setup`).
    Table,
    /// The table only when a step was done or something is missing (before `test` and
    /// `demo`, which set up a fresh machine themselves but stay quiet on a ready one).
    WhenChanged,
}

pub fn run(report: Report) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut problems = Vec::new();

    apt(&mut rows)?;
    rust_src(&mut rows)?;
    bpf_linker(&mut rows)?;
    kernel(&mut rows, &mut problems);

    if report == Report::Table || !problems.is_empty() || steps_done(&rows) > 0 {
        print_table(&rows);
    }
    if !problems.is_empty() {
        bail!(
            "the machine cannot run fi:\n  - {}",
            problems.join("\n  - ")
        );
    }
    Ok(())
}

fn row(rows: &mut Vec<Row>, item: &str, found: impl Into<String>, action: impl Into<String>) {
    rows.push(Row {
        item: item.to_owned(),
        found: found.into(),
        action: action.into(),
        why: String::new(),
    });
}

fn dpkg_installed(package: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|s| s.trim() == "install ok installed")
}

fn apt(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !missing.is_empty() {
        println!("setup: apt-get install {}", missing.join(" "));
        cmd::run_quiet(Command::new("apt-get").args(["update", "-qq"]))
            .context("apt-get update (setup needs root)")?;
        cmd::run_quiet(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing),
        )?;
    }
    for (package, why) in APT_PACKAGES {
        let action = if missing.contains(package) {
            "apt-get install"
        } else {
            "none"
        };
        row(rows, &format!("apt {package}"), "installed", action);
        if let Some(last) = rows.last_mut() {
            last.why = (*why).to_owned();
        }
    }
    // The pyenv interpreter on some images does not see Debian's python3-requests.
    let python_has_requests = Command::new("python3")
        .args(["-c", "import requests"])
        .status()
        .is_ok_and(|s| s.success());
    if python_has_requests {
        row(rows, "python3 requests", "importable", "none");
    } else {
        cmd::run(Command::new("python3").args(["-m", "pip", "install", "-q", "requests"]))?;
        row(rows, "python3 requests", "importable", "pip installed");
    }
    Ok(())
}

fn rust_src(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let toolchains = cmd::output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is required")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        bail!("the nightly toolchain is missing (fi-ebpf needs nightly for -Z build-std)");
    }
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        row(rows, "nightly rust-src", "installed", "none");
    } else {
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
        row(
            rows,
            "nightly rust-src",
            "installed",
            "rustup component add",
        );
    }
    Ok(())
}

fn bpf_linker(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let version = cmd::output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        row(rows, "bpf-linker", version.trim(), "none");
        return Ok(());
    }
    let path = format!(
        "/usr/lib/llvm-22/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    cmd::run(Command::new("cargo").env("PATH", path).args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--no-default-features",
        "--features",
        "llvm-22",
    ]))?;
    row(
        rows,
        "bpf-linker",
        format!("bpf-linker {BPF_LINKER_VERSION}"),
        "cargo install (LLVM 22)",
    );
    Ok(())
}

fn kernel(rows: &mut Vec<Row>, problems: &mut Vec<String>) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let tcx = kernel_at_least(&release, 6, 6);
    row(rows, "kernel", format!("Linux {release}"), "check");
    check(
        rows,
        problems,
        "TCX (Linux 6.6+)",
        tcx,
        "fi attaches TC programs as TCX links",
    );

    let bpf = bpf_syscall_works();
    check(
        rows,
        problems,
        "bpf() syscall",
        bpf.is_ok(),
        &bpf.err().unwrap_or_default(),
    );
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    check(
        rows,
        problems,
        "BTF",
        btf,
        "/sys/kernel/btf/vmlinux is missing",
    );

    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let cgroup2 = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| f[1].to_owned())
    });
    match cgroup2 {
        Some(mount) => row(rows, "cgroup2 mount", mount, "check"),
        None => {
            row(rows, "cgroup2 mount", "MISSING", "check");
            problems.push("no cgroup2 filesystem in /proc/mounts".into());
        }
    }
}

fn check(rows: &mut Vec<Row>, problems: &mut Vec<String>, item: &str, ok: bool, why: &str) {
    row(rows, item, if ok { "yes" } else { "MISSING" }, "check");
    if !ok {
        problems.push(format!("{item}: {why}"));
    }
}

fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let found_major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let found_minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (found_major, found_minor) >= (major, minor)
}

/// Creates (and closes) a one-entry BPF array map: proves the syscall works for us.
fn bpf_syscall_works() -> Result<(), String> {
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        rest: [u8; 64],
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let attr = MapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        rest: [0; 64],
    };
    // SAFETY: bpf(2) reads `size_of::<MapCreate>()` bytes of a valid, zero-padded attr.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreate,
            std::mem::size_of::<MapCreate>(),
        )
    };
    if fd < 0 {
        return Err(format!(
            "creating a BPF map failed: {} (fi needs root)",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a descriptor we just got and own.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// Rows whose step changed the machine (installed something).
fn steps_done(rows: &[Row]) -> usize {
    rows.iter()
        .filter(|r| r.action != "none" && r.action != "check")
        .count()
}

fn print_table(rows: &[Row]) {
    let w_item = rows.iter().map(|r| r.item.len()).max().unwrap_or(4).max(4);
    let w_found = rows.iter().map(|r| r.found.len()).max().unwrap_or(5).max(5);
    let w_action = rows
        .iter()
        .map(|r| r.action.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<w_item$}  {:<w_found$}  {:<w_action$}  WHY",
        "ITEM", "FOUND", "ACTION"
    );
    for r in rows {
        println!(
            "{:<w_item$}  {:<w_found$}  {:<w_action$}  {}",
            r.item, r.found, r.action, r.why
        );
    }
    let done = steps_done(rows);
    if done == 0 {
        println!("\nsetup: nothing needed doing");
    } else {
        println!("\nsetup: {done} step(s) done");
    }
}

#[cfg(test)]
mod tests {
    use super::kernel_at_least;

    #[test]
    fn kernel_versions_compare_numerically() {
        assert!(kernel_at_least("6.18.44-fc-v769", 6, 6));
        assert!(kernel_at_least("6.6.0", 6, 6));
        assert!(!kernel_at_least("6.1.0-47-cloud-amd64", 6, 6));
        assert!(!kernel_at_least("5.15.0", 6, 6));
        assert!(kernel_at_least("7.0", 6, 6));
        assert!(!kernel_at_least("", 6, 6));
    }
}
