//! `cargo xtask demo`, the README's main command, run to its end without a terminal: it
//! must show the expected findings and leave nothing behind.

use std::{collections::BTreeSet, path::Path, process::Command};

/// What the demo could leave behind: namespaces, lab cgroups, test links, processes.
fn leftovers() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    for line in String::from_utf8_lossy(&netns.stdout).lines() {
        found.insert(format!(
            "netns {}",
            line.split_whitespace().next().unwrap_or("")
        ));
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
        if ["fib", "fv", "fii"].iter().any(|p| name.starts_with(p)) {
            found.insert(format!("link {name}"));
        }
    }
    let mount = fi_tests::net::cgroup2_mount();
    for entry in std::fs::read_dir(&mount).expect("cgroup2 mount").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("fi-test-") || name.starts_with("fi.explore-") {
            found.insert(format!("cgroup {name}"));
        }
    }
    for program in ["fi-daemon", "fi-shop", "fi-demo"] {
        let out = Command::new("pgrep")
            .args(["-x", program])
            .output()
            .expect("pgrep");
        for pid in String::from_utf8_lossy(&out.stdout).lines() {
            found.insert(format!("process {program} {pid}"));
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
