//! Tier 3: the daemon loads and attaches its programs, real traffic between two
//! containers moves its counters, and after it exits nothing of fi remains attached.

use std::{os::unix::fs::PermissionsExt as _, process::Command};

use aya::programs::TcAttachType;
use fi_tests::{
    Container, Daemon, Lab,
    kernel_view::{cgroup_programs, tcx_programs},
};

const HTTP_PORT: u16 = 8080;

/// Asserts what the kernel has attached on the lab's veths and its cgroup.
fn assert_attached(a: &Container, b: &Container, lab: &Lab, attached: bool) {
    for veth in [&a.host_veth, &b.host_veth] {
        for (hook, name) in [
            (TcAttachType::Egress, "fi_tc_egress"),
            (TcAttachType::Ingress, "fi_tc_ingress"),
        ] {
            let programs = tcx_programs(veth, hook);
            assert_eq!(
                programs.iter().any(|p| p == name),
                attached,
                "{name} on {veth} {hook:?}: kernel lists {programs:?}"
            );
        }
    }
    let programs = cgroup_programs(lab.cgroup());
    assert_eq!(
        programs.iter().any(|p| p == "fi_sockops"),
        attached,
        "fi_sockops on {:?}: kernel lists {programs:?}",
        lab.cgroup()
    );
}

fn curl(from: &Container, url: &str) -> String {
    fi_tests::clients::curl_status(from, url)
}

#[test]
fn curl_between_containers_moves_the_counters_and_sigterm_detaches_everything() {
    let lab = Lab::new();
    let a = lab.container("a", 1);
    let b = lab.container("b", 2);
    let _server = b.http_server(HTTP_PORT);

    let daemon = Daemon::start(lab.id(), &[&a.host_veth, &b.host_veth], lab.cgroup());
    assert_attached(&a, &b, &lab, true);
    let before = daemon.counters();

    let url = format!("http://{}:{HTTP_PORT}/", b.ipv4);
    assert_eq!(curl(&a, &url), "200");

    let after = daemon.counters();
    for name in [
        "egress_packets",
        "egress_bytes",
        "ingress_packets",
        "ingress_bytes",
    ] {
        assert!(
            after[name] > before[name],
            "{name} did not move: {before:?} -> {after:?}"
        );
    }
    // A TCP handshake plus a request and a response: at least 3 packets each way.
    assert!(
        after["egress_packets"] - before["egress_packets"] >= 3,
        "{after:?}"
    );
    assert_eq!(
        after["flows_active"] - before["flows_active"],
        1,
        "curl opened one connection"
    );
    assert_eq!(
        after["flows_passive"] - before["flows_passive"],
        1,
        "the server accepted one"
    );

    let status = daemon.stop();
    assert!(
        status.success(),
        "fi-daemon exited with {status} on SIGTERM"
    );
    assert_attached(&a, &b, &lab, false);

    // With the daemon gone, traffic flows as before.
    assert_eq!(curl(&a, &url), "200");
}

#[test]
fn sigkill_of_the_daemon_leaves_nothing_attached() {
    let lab = Lab::new();
    let a = lab.container("a", 1);
    let b = lab.container("b", 2);
    let daemon = Daemon::start(lab.id(), &[&a.host_veth, &b.host_veth], lab.cgroup());
    assert_attached(&a, &b, &lab, true);
    let status = daemon.kill();
    assert!(
        !status.success(),
        "SIGKILL should end the daemon abnormally: {status}"
    );
    assert_attached(&a, &b, &lab, false);
}

#[test]
fn a_daemon_asked_for_a_missing_interface_fails_and_leaves_nothing() {
    let lab = Lab::new();
    let a = lab.container("a", 1);
    let out = Command::new(fi_tests::process::bin_path("fi-daemon"))
        .args([
            "--iface",
            &a.host_veth,
            "--iface",
            "fi-no-such-if0",
            "--cgroup",
        ])
        .arg(lab.cgroup())
        .arg("--socket")
        .arg(std::env::temp_dir().join(format!("fi-test-{}-missing.sock", lab.id())))
        .output()
        .expect("running fi-daemon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "fi-daemon should refuse: {stderr}");
    assert!(
        stderr.contains("fi-no-such-if0"),
        "the error names the interface: {stderr}"
    );
    assert!(tcx_programs(&a.host_veth, TcAttachType::Egress).is_empty());
}

/// Run as an unprivileged user, a privileged test must fail and say why, never pass.
#[test]
fn privileged_tests_fail_with_a_clear_message_without_root() {
    fi_tests::require_privileges();
    // Copy this test binary where an unprivileged user can execute it.
    let dir = std::env::temp_dir().join(format!("fi-test-nonroot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let exe = dir.join("foundation-test");
    // Copied by a child process: had this process opened the copy for writing, a fork
    // by another test thread in that moment would inherit the descriptor, and executing
    // the copy would fail with ETXTBSY ("Text file busy").
    let copied = Command::new("cp")
        .arg(std::env::current_exe().expect("current exe"))
        .arg(&exe)
        .status()
        .expect("running cp");
    assert!(copied.success(), "copying the test binary");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args([
            "--exact",
            "foundation::sigkill_of_the_daemon_leaves_nothing_attached",
            "--test-threads=1",
        ])
        .env_remove("FI_BIN_DIR")
        .output()
        .expect("running the test binary as nobody");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "the privileged test passed as nobody:\n{text}"
    );
    assert!(
        text.contains("needs root and eBPF"),
        "no clear message:\n{text}"
    );
    assert!(
        text.contains("1 failed"),
        "the test must fail, not skip:\n{text}"
    );
}

#[test]
fn sigterm_stops_the_daemon_promptly_even_with_a_watch_stream_open() {
    let lab = Lab::new();
    let a = lab.container("a", 1);
    let daemon = Daemon::start(lab.id(), &[&a.host_veth], lab.cgroup());
    let target = format!(
        "/{}/a",
        lab.cgroup()
            .file_name()
            .expect("lab cgroup name")
            .to_string_lossy()
    );
    let mut watch = daemon
        .fictl_command(&["watch", "--target", &target])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting fictl watch");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        watch.try_wait().expect("polling").is_none(),
        "the watch is open"
    );
    let start = std::time::Instant::now();
    let status = daemon.stop();
    let took = start.elapsed();
    assert!(status.success(), "fi-daemon exited with {status}");
    assert!(
        took < std::time::Duration::from_secs(2),
        "stopping took {took:?}"
    );
    let watch_status = watch
        .wait()
        .expect("fictl watch ends when the daemon stops");
    assert!(
        watch_status.success(),
        "the stream ended cleanly: {watch_status}"
    );
    assert!(tcx_programs(&a.host_veth, TcAttachType::Egress).is_empty());
}
