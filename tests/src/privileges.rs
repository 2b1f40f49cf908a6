//! Privileged tests fail loudly without privileges; they never skip.

/// Panics with a clear message unless this process is root and can use eBPF.
pub fn require_privileges() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root and eBPF (it loads BPF programs, creates network namespaces \
         and cgroups); run it as root, e.g. `sudo cargo xtask test` (euid is {euid})"
    );
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    assert!(
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("cgroup2")),
        "this test needs root and eBPF with a cgroup2 filesystem mounted; none is in /proc/mounts"
    );
}
