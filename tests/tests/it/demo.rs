//! `cargo xtask demo`, the README's main command, run to its end without a terminal: it
//! must show the expected findings and leave nothing behind.

use std::{collections::BTreeSet, path::Path, process::Command};

/// Whether a process descends from this test process: the other tests of this binary run
/// beside the demo, and what they make is theirs, not the demo's.
fn ours(pid: u32) -> bool {
    let me = std::process::id();
    let mut pid = pid;
    for _ in 0..64 {
        if pid == me {
            return true;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces, so read after its ')'.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            return false;
        };
        if ppid <= 1 {
            return false;
        }
        pid = ppid;
    }
    false
}

/// Whether a name made by a lab or a daemon is of this test process (labs carry its pid in
/// hex, daemons' injectors and test cgroups their own pid in decimal).
fn made_by_us(name: &str) -> bool {
    let hex = format!("{:x}", std::process::id());
    // Bridges `fib<id>`, veths `fv<id>..`, cgroups `fi-test-<id>`, namespaces `fi<id><name>`.
    let lab = ["fib", "fv", "fi-test-", "fi"]
        .iter()
        .any(|p| name.strip_prefix(p).is_some_and(|id| id.starts_with(&hex)));
    let daemon = ["fii", "fi.explore-"].iter().any(|p| {
        name.strip_prefix(p)
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|pid| pid.parse().ok())
            .is_some_and(ours)
    });
    lab || daemon
}

/// What the demo could leave behind: namespaces, lab cgroups, test links, processes.
fn leftovers() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    for line in String::from_utf8_lossy(&netns.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if !made_by_us(name) {
            found.insert(format!("netns {name}"));
        }
    }
    let links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip");
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        let name = line
            .split(": ")
            .nth(1)
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap_or("");
        if ["fib", "fv", "fii"].iter().any(|p| name.starts_with(p)) && !made_by_us(name) {
            found.insert(format!("link {name}"));
        }
    }
    let mount = fi_tests::net::cgroup2_mount();
    for entry in std::fs::read_dir(&mount).expect("cgroup2 mount").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if (name.starts_with("fi-test-") || name.starts_with("fi.explore-")) && !made_by_us(&name) {
            found.insert(format!("cgroup {name}"));
        }
    }
    for program in ["fi-daemon", "fi-shop", "fi-demo"] {
        let out = Command::new("pgrep")
            .args(["-x", program])
            .output()
            .expect("pgrep");
        for pid in String::from_utf8_lossy(&out.stdout).lines() {
            if !pid.trim().parse().is_ok_and(ours) {
                found.insert(format!("process {program} {pid}"));
            }
        }
    }
    found
}

#[test]
fn cargo_xtask_demo_runs_to_the_end_and_leaves_nothing_behind() {
    fi_tests::require_privileges();
    let before = leftovers();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("cargo")
        .args(["xtask", "demo"])
        .current_dir(&root)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running cargo xtask demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for expected in [
        // A few requests, live.
        "POST    http://10.77.0.1:8080/checkout",
        // The manual fault and its effect.
        "the test FAILED, as it should",
        "stopped: 1 rule(s) removed",
        // The exploration's findings (examples/shop/README.md).
        "failing plans (36)",
        "frontend → inventory",
        "abort:503 ✗",
        "frontend → recommend",
        "non-idempotent request repeated",
        "HTML report: ",
        "cleaning up",
    ] {
        assert!(
            stdout.contains(expected),
            "demo output lacks {expected:?}:\n{stdout}\n{stderr}"
        );
    }
    let report = root.join("target/fi-demo/report.html");
    assert!(std::fs::read_to_string(&report).is_ok_and(|r| r.contains("<svg")));
    // The kernel frees a deleted namespace (and its veths) once its last socket is gone:
    // give it a moment.
    let mut left: Vec<String> = Vec::new();
    for _ in 0..100 {
        left = leftovers().difference(&before).cloned().collect();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert!(left.is_empty(), "the demo left {left:?}");
}
