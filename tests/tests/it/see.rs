//! Issue "See": every outgoing HTTP/1.x request of a targeted container is identified in
//! the kernel, attributed to its cgroup, paired with its response, and streamed; the call
//! graph shows the edges. Real clients: curl and Python requests.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use fi_tests::{Container, Daemon, Lab, fixture};
use serde_json::Value;

const PORT: u16 = 8080;
const ECHO_PORT: u16 = PORT + 1000;

fn ok_stdout(container: &Container, program: &str, args: &[&str]) -> String {
    let out = container.run(program, args);
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} in {} failed: {stdout} {}",
        container.name,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn curl(from: &Container, url: &str) -> String {
    fi_tests::clients::curl_status(from, url)
}

fn py(from: &Container, args: &[&str]) -> String {
    let script = fixture("py_client.py");
    let mut full = vec![script.to_str().expect("UTF-8 path")];
    full.extend_from_slice(args);
    ok_stdout(from, "python3", &full)
}

fn cgroup_of(lab: &Lab, c: &Container) -> String {
    format!(
        "/{}/{}",
        lab.cgroup()
            .file_name()
            .expect("lab cgroup has a name")
            .to_string_lossy(),
        c.name
    )
}

#[test]
fn requests_of_a_targeted_container_are_seen_once_with_method_host_path_status_and_owner() {
    let lab = Lab::new();
    // The daemon starts before the containers exist: it must find their veths by itself.
    let daemon = Daemon::start_with(
        lab.id(),
        lab.cgroup(),
        &[
            "--iface=".to_owned(),
            format!("--veth-prefix=fv{}", lab.id()),
        ],
    );
    let a = lab.container("a", 1);
    let b = lab.container("b", 2);
    let c = lab.container("c", 3);
    daemon.wait_attached(&[&a.host_veth, &b.host_veth, &c.host_veth]);
    let _server = b.http_server(PORT);

    let a_cgroup = cgroup_of(&lab, &a);
    let (ok, out, err) = daemon.fictl(&["--json", "target", "add", &a_cgroup]);
    assert!(ok, "target add failed: {out} {err}");
    let target: Value = serde_json::from_str(&out).expect("target add --json prints JSON");
    assert_eq!(target["cgroup"], a_cgroup.as_str());

    let base4 = format!("http://{}:{PORT}", b.ipv4);
    let base6 = format!("http://[{}]:{PORT}", b.ipv6);
    assert_eq!(curl(&a, &format!("{base4}/hello?x=1")), "200");
    assert_eq!(
        py(&a, &["post", &format!("{base4}/orders"), "qty=1"]),
        "200"
    );
    assert_eq!(
        py(&a, &["session", &format!("{base4}/session"), "5"]),
        "200 200 200 200 200"
    );
    assert_eq!(curl(&a, &format!("{base6}/v6")), "200");
    assert_eq!(
        py(
            &a,
            &["echo", &b.ipv4, &ECHO_PORT.to_string(), "PING not http"]
        ),
        "PING not http"
    );
    // Not targeted: C's requests must not be reported.
    assert_eq!(curl(&c, &format!("{base4}/from-c")), "200");

    let (ok, out, err) = daemon.fictl(&["--json", "watch", "--recent", "--count", "8"]);
    assert!(ok, "watch failed: {err}");
    let seen: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    let summary: Vec<String> = seen
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r["method"], r["host"], r["path"], r["status"]
            )
        })
        .collect();
    let expected = [
        ("GET", format!("{}:{PORT}", b.ipv4), "/hello?x=1"),
        ("POST", format!("{}:{PORT}", b.ipv4), "/orders"),
        ("GET", format!("{}:{PORT}", b.ipv4), "/session/0"),
        ("GET", format!("{}:{PORT}", b.ipv4), "/session/1"),
        ("GET", format!("{}:{PORT}", b.ipv4), "/session/2"),
        ("GET", format!("{}:{PORT}", b.ipv4), "/session/3"),
        ("GET", format!("{}:{PORT}", b.ipv4), "/session/4"),
        ("GET", format!("[{}]:{PORT}", b.ipv6), "/v6"),
    ];
    assert_eq!(seen.len(), expected.len(), "{summary:#?}");
    for (r, (method, host, path)) in seen.iter().zip(&expected) {
        assert_eq!(r["method"], *method, "{summary:#?}");
        assert_eq!(r["host"], host.as_str(), "{summary:#?}");
        assert_eq!(r["path"], *path, "{summary:#?}");
        assert_eq!(r["status"], 200, "{summary:#?}");
        assert_eq!(r["outcome"], "response");
        assert_eq!(r["source_cgroup"], a_cgroup.as_str(), "owner cgroup");
        assert!(r["latency_ns"].as_u64().unwrap() > 0);
    }
    assert!(
        seen[0]["client"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:", a.ipv4))
    );
    assert_eq!(seen[7]["server"], format!("[{}]:{PORT}", b.ipv6));
    // The keep-alive session: one connection, requests 0..4 on it.
    let session = &seen[2..7];
    let ports: BTreeSet<_> = session
        .iter()
        .map(|r| r["client"].as_str().unwrap())
        .collect();
    assert_eq!(ports.len(), 1, "the session used one connection: {ports:?}");
    let indices: Vec<_> = session
        .iter()
        .map(|r| r["index_on_connection"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [0, 1, 2, 3, 4]);

    // The graph: A -> B over IPv4 (7 requests) and IPv6 (1); nothing from C.
    let (ok, out, err) = daemon.fictl(&["graph", "--format", "json"]);
    assert!(ok, "graph failed: {err}");
    let graph: Value = serde_json::from_str(&out).expect("graph JSON");
    assert_eq!(graph["requests"], 8, "{graph:#}");
    let edges = graph["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{graph:#}");
    let v4 = edges
        .iter()
        .find(|e| e["destination"] == format!("{}:{PORT}", b.ipv4))
        .expect("IPv4 edge");
    assert_eq!(v4["source"], a_cgroup.as_str());
    assert_eq!(v4["requests"], 7);
    assert_eq!(v4["statuses"]["200"], 7);
    let endpoints: Vec<_> = v4["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["method"].as_str().unwrap(),
                e["path"].as_str().unwrap(),
                e["requests"]
            )
        })
        .collect();
    assert!(
        endpoints.contains(&"GET /session/{id} 5".to_owned()),
        "{endpoints:?}"
    );
    let (ok, dot, _) = daemon.fictl(&["graph", "--format", "dot"]);
    assert!(ok);
    assert!(
        dot.contains(&format!("\"{a_cgroup}\" -> \"{}:{PORT}\"", b.ipv4)),
        "{dot}"
    );

    let counters = daemon.counters();
    assert_eq!(counters["requests"], 8, "{counters:?}");
    assert_eq!(counters["responses"], 8, "{counters:?}");
    assert_eq!(counters["parse_errors"], 0, "{counters:?}");
    assert_eq!(counters["events_lost"], 0, "{counters:?}");

    // Status reports what the kernel offers and how full the maps are.
    let (ok, out, err) = daemon.fictl(&["--json", "status"]);
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(status["capabilities"]["tcx"], true, "{status:#}");
    assert_eq!(status["targets"], 1, "{status:#}");
    let flows = status["maps"]
        .as_array()
        .and_then(|maps| maps.iter().find(|m| m["name"] == fi_common::maps::FI_FLOWS))
        .expect("FI_FLOWS usage");
    assert_eq!(flows["capacity"], 65_536);

    // Live: a watch opened now prints the next request.
    let mut watch = daemon
        .fictl_command(&["--json", "watch", "--count", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting fictl watch");
    let deadline = Instant::now() + Duration::from_secs(10);
    while watch.try_wait().expect("polling fictl watch").is_none() {
        assert!(
            Instant::now() < deadline,
            "fictl watch printed nothing in 10 s"
        );
        curl(&a, &format!("{base4}/live"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = watch.wait_with_output().expect("fictl watch output");
    let live: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(live["path"], "/live");

    // Every connection above is closed: the flow map forgets them (no leak).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (ok, out, err) = daemon.fictl(&["--json", "status"]);
        assert!(ok, "{err}");
        let status: Value = serde_json::from_str(&out).expect("status JSON");
        let used = status["maps"]
            .as_array()
            .and_then(|maps| maps.iter().find(|m| m["name"] == fi_common::maps::FI_FLOWS))
            .and_then(|m| m["used"].as_u64())
            .expect("FI_FLOWS usage");
        if used == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{used} flow(s) still in the map after their connections closed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn target_errors_are_clear_and_change_nothing() {
    let lab = Lab::new();
    let daemon = Daemon::start(lab.id(), &[], lab.cgroup());
    let (ok, _, err) = daemon.fictl(&["target", "add", "/no/such/cgroup"]);
    assert!(!ok);
    assert!(err.contains("does not exist"), "{err}");
    let (ok, _, err) = daemon.fictl(&["target", "add", "0123456789abcdef0123"]);
    assert!(!ok);
    assert!(err.contains("no container with id"), "{err}");
    let (ok, _, err) = daemon.fictl(&["target", "add", "../../etc"]);
    assert!(!ok);
    assert!(err.contains(".."), "{err}");
    let (ok, _, err) = daemon.fictl(&["watch", "--count", "1"]);
    assert!(!ok);
    assert!(err.contains("no targets"), "{err}");
    let (ok, out, _) = daemon.fictl(&["--json", "target", "ls"]);
    assert!(ok);
    assert_eq!(out.trim(), "[]");
}

#[test]
fn pipelined_requests_and_responses_in_one_segment_are_all_seen_and_paired() {
    let lab = Lab::new();
    let a = lab.container("a", 1);
    let b = lab.container("b", 2);
    let daemon = Daemon::start(lab.id(), &[&a.host_veth, &b.host_veth], lab.cgroup());
    let _server = b.http_server(PORT);
    let a_cgroup = cgroup_of(&lab, &a);
    let (ok, _, err) = daemon.fictl(&["target", "add", &a_cgroup]);
    assert!(ok, "{err}");
    // Three GETs in one write: against the ordinary server (one response per write) and
    // against the pipelining one (all three responses in one write).
    for (port, path) in [(PORT, "/pipe"), (PORT + 2000, "/burst")] {
        let answered = py(&a, &["pipeline", &b.ipv4, &port.to_string(), "3", path]);
        assert_eq!(
            answered, "3",
            "the client got three responses from port {port}"
        );
    }
    let (ok, out, err) = daemon.fictl(&["--json", "watch", "--recent", "--count", "6"]);
    assert!(ok, "{err}");
    let seen: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let mut got: Vec<String> = seen
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["path"].as_str().unwrap_or("?"),
                r["status"],
                r["index_on_connection"]
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "/burst/0 200 0",
            "/burst/1 200 1",
            "/burst/2 200 2",
            "/pipe/0 200 0",
            "/pipe/1 200 1",
            "/pipe/2 200 2"
        ],
        "{seen:#?}"
    );
    let counters = daemon.counters();
    assert_eq!(counters["requests"], 6, "{counters:?}");
    assert_eq!(counters["responses"], 6, "{counters:?}");
}

/// `watch --recent --count N` gives the newest N remembered requests (oldest of them
/// first); a reader that closes the pipe ends fictl quietly; and a watch whose daemon dies
/// says so, with exit status 69 (unavailable), not a transport error.
#[test]
fn recent_means_newest_a_closed_pipe_is_quiet_and_a_dead_daemon_is_named() {
    let lab = Lab::new();
    let a = lab.container("a", 1);
    let b = lab.container("b", 2);
    let daemon = Daemon::start(lab.id(), &[&a.host_veth, &b.host_veth], lab.cgroup());
    let _server = b.http_server(PORT);
    let (ok, _, err) = daemon.fictl(&["target", "add", &cgroup_of(&lab, &a)]);
    assert!(ok, "{err}");
    for i in 0..10 {
        assert_eq!(curl(&a, &format!("http://{}:{PORT}/r{i}", b.ipv4)), "200");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let newest = loop {
        let (ok, out, err) = daemon.fictl(&["--json", "watch", "--recent", "--count", "3"]);
        assert!(ok, "{err}");
        let paths: Vec<String> = out
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).expect("JSON")["path"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        if paths.last().map(String::as_str) == Some("/r9") || Instant::now() > deadline {
            break paths;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(newest, ["/r7", "/r8", "/r9"]);

    // More than a pipe holds (64 KiB), read by a reader that stops at the first line.
    let description = "d".repeat(1000);
    for i in 0..100 {
        let path = format!("/never/{i}");
        let (ok, _, err) = daemon.fictl(&[
            "rules",
            "add",
            "--fault",
            "reset",
            "--path",
            &path,
            "--description",
            &description,
        ]);
        assert!(ok, "{err}");
    }
    let fictl = fi_tests::process::bin_path("fictl");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} --socket {} --json rules ls | head -1",
            fictl.display(),
            daemon.socket().display()
        ))
        .output()
        .expect("sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some("[")
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );

    // The daemon dies under an open watch.
    let mut watch = daemon
        .fictl_command(&["watch"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("fictl watch");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!daemon.kill().success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = watch.try_wait().expect("polling fictl") {
            break status;
        }
        assert!(Instant::now() < deadline, "fictl watch outlived its daemon");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().expect("stderr"), &mut stderr)
        .expect("reading stderr");
    assert_eq!(status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("fi-daemon went away"), "{stderr}");
    assert!(!stderr.contains("h2 protocol error"), "{stderr}");
}
