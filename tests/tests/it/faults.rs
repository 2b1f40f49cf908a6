//! Issue "Break": every fault against three real clients, asserting what the client saw
//! and what the server saw; per-request targeting; probability; isolation; expiry; the
//! kill switch; and a daemon killed with SIGKILL.

use std::time::{Duration, Instant};

use fi_tests::{
    Container, Daemon, Lab,
    clients::{Client, Seen},
    fixture,
    net::Guard,
};
use serde_json::Value;

const PORT: u16 = 8080;

/// Two containers (A calls B) and a third (C) that is not targeted, with a daemon on
/// their veths. Fields drop in order: server, daemon, containers, lab.
pub(crate) struct Scene {
    _server: Guard,
    pub(crate) daemon: Daemon,
    pub(crate) a: Container,
    pub(crate) b: Container,
    c: Container,
    lab: Lab,
}

impl Scene {
    pub(crate) fn new() -> Self {
        Self::with(&[])
    }

    /// A scene whose daemon gets `extra` flags too.
    fn with(extra: &[&str]) -> Self {
        let lab = Lab::new();
        let a = lab.container("a", 1);
        let b = lab.container("b", 2);
        let c = lab.container("c", 3);
        let mut args = vec!["--no-veths".to_owned(), Self::ifaces(&a, &b, &c)];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let daemon = Daemon::start_with(lab.id(), lab.cgroup(), &args);
        let server = b.http_server(PORT);
        Self {
            _server: server,
            daemon,
            a,
            b,
            c,
            lab,
        }
    }

    fn ifaces(a: &Container, b: &Container, c: &Container) -> String {
        format!("--iface={},{},{}", a.host_veth, b.host_veth, c.host_veth)
    }

    pub(crate) fn cgroup(&self, c: &Container) -> String {
        let parent = self
            .lab
            .cgroup()
            .file_name()
            .expect("lab cgroup name")
            .to_string_lossy()
            .into_owned();
        format!("/{parent}/{}", c.name)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}:{PORT}{path}", self.b.ipv4)
    }

    /// Requests the test server has seen (asked from inside B, over B's own loopback,
    /// which fi does not touch).
    pub(crate) fn server_count(&self) -> u64 {
        let out = self.b.run(
            "curl",
            &["-s", "-m", "2", &format!("http://[::1]:{PORT}/__count")],
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad /__count answer: {:?}", out))
    }

    /// `fictl --json rules add ...`; returns the rule's JSON.
    pub(crate) fn add_rule(&self, args: &[&str]) -> Value {
        let mut full = vec!["--json", "rules", "add"];
        full.extend_from_slice(args);
        let (ok, out, err) = self.daemon.fictl(&full);
        assert!(ok, "rules add {args:?} failed: {err}");
        serde_json::from_str(&out).expect("rules add --json prints JSON")
    }

    pub(crate) fn rule(&self, id: &Value) -> Value {
        let id = id.to_string();
        let (ok, out, err) = self.daemon.fictl(&["--json", "rules", "get", &id]);
        assert!(ok, "rules get failed: {err}");
        serde_json::from_str(&out).expect("JSON")
    }

    /// Established connections to the test server, as B's kernel sees them.
    fn server_connections(&self) -> usize {
        let filter = format!("( sport = :{PORT} )");
        let out = self.b.run("ss", &["-Htn", "state", "established", &filter]);
        String::from_utf8_lossy(&out.stdout).lines().count()
    }

    fn stop(&self) {
        let (ok, _, err) = self.daemon.fictl(&["stop"]);
        assert!(ok, "stop failed: {err}");
    }

    /// After a case: a fresh connection without a matching rule works.
    fn assert_clean(&self, client: Client) {
        let (seen, _) = client.get(&self.a, &self.url("/clean"), Duration::from_secs(3));
        assert_eq!(
            seen,
            Seen::Status(200),
            "{}: a fresh request after the case",
            client.name()
        );
    }
}

#[test]
fn every_fault_against_three_clients() {
    let s = Scene::new();
    let a_cgroup = s.cgroup(&s.a);
    let dst = s.b.ipv4.clone();
    let port = PORT.to_string();
    // (fault, what the client sees, whether the server sees the request)
    let cases: [(&str, Seen, bool); 6] = [
        ("timeout", Seen::Timeout, false),
        ("reset", Seen::Reset, false),
        ("refuse", Seen::Refused, false),
        ("abort:503", Seen::Status(503), false),
        ("response-lost", Seen::Reset, true),
        ("delay:300ms", Seen::Status(200), true),
    ];
    let mut failures = Vec::new();
    for (fault, expected, server_sees) in &cases {
        for client in Client::ALL {
            let path = format!("/m/{}/{}", fault.replace(':', "-"), client.name());
            let mut args = vec![
                "--fault",
                fault,
                "--container",
                &a_cgroup,
                "--dst",
                &dst,
                "--port",
                &port,
            ];
            if *fault != "refuse" {
                args.extend_from_slice(&["--path", &path]);
            }
            let rule = s.add_rule(&args);
            let before = s.server_count();
            let connections_before = s.server_connections();
            let (seen, took) = client.get(&s.a, &s.url(&path), Duration::from_secs(2));
            let after = s.server_count();
            let delta = after - before;
            let injected = s.rule(&rule["id"])["injected"].as_u64().unwrap_or(0);
            s.stop();
            let case = format!(
                "{fault} / {}: saw {seen:?} in {took:?}, server +{delta}, injected {injected}",
                client.name()
            );
            eprintln!("{case}");
            if seen != *expected || delta != u64::from(*server_sees) || injected != 1 {
                failures.push(case);
            }
            if matches!(*fault, "reset" | "abort:503") {
                // The server never saw the request: fi resets its half of the connection.
                // (Connections a timeout case left are the server's to time out: a
                // blackhole tells nobody anything.)
                let deadline = Instant::now() + Duration::from_secs(1);
                while s.server_connections() > connections_before && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let left = s.server_connections().saturating_sub(connections_before);
                if left > 0 {
                    failures.push(format!(
                        "{fault} / {}: the server kept {left} connection(s) open",
                        client.name()
                    ));
                }
            }
            if *fault == "delay:300ms" && took < Duration::from_millis(300) {
                failures.push(format!(
                    "{fault} / {}: answered after {took:?}, before the delay",
                    client.name()
                ));
            }
            s.assert_clean(client);
        }
    }
    assert!(
        failures.is_empty(),
        "cases that went wrong:\n{}",
        failures.join("\n")
    );
}

#[test]
fn only_the_requests_that_carry_the_header_are_faulted_on_one_keep_alive_connection() {
    let s = Scene::new();
    let a_cgroup = s.cgroup(&s.a);
    s.add_rule(&[
        "--fault",
        "abort:503",
        "--container",
        &a_cgroup,
        "--header",
        "x-fi-target=user-42",
    ]);
    let (ok, _, err) = s.daemon.fictl(&["target", "add", &a_cgroup]);
    assert!(ok, "{err}");
    let script = fixture("py_client.py");
    let out = s.a.run(
        "python3",
        &[
            script.to_str().expect("UTF-8"),
            "seq",
            &s.url("/user"),
            "-",
            "user-7",
            "-",
            "user-42",
        ],
    );
    let statuses = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        statuses, "200 200 200 503",
        "only the request with x-fi-target: user-42"
    );
    // All four went over one connection: the watch shows one client address.
    let (ok, out, err) = s.daemon.fictl(&[
        "--json", "watch", "--recent", "--count", "4", "--path", "/user",
    ]);
    assert!(ok, "{err}");
    let seen: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let clients: std::collections::BTreeSet<&str> = seen
        .iter()
        .map(|r| r["client"].as_str().expect("client"))
        .collect();
    assert_eq!(clients.len(), 1, "one keep-alive connection: {clients:?}");
    assert_eq!(seen[3]["headers"]["x-fi-target"], "user-42");
    assert_eq!(seen[3]["fault"], "abort");
    assert!(seen[..3].iter().all(|r| r["fault"].is_null()), "{seen:#?}");
}

#[test]
fn a_30_percent_rule_faults_a_share_of_1000_requests_within_bounds_and_no_one_else() {
    let s = Scene::new();
    let a_cgroup = s.cgroup(&s.a);
    let rule = s.add_rule(&[
        "--fault",
        "abort:503",
        "--container",
        &a_cgroup,
        "--path",
        "/p/*",
        "--percent",
        "30",
    ]);
    let script = fixture("py_client.py");
    let out = s.a.run(
        "python3",
        &[
            script.to_str().expect("UTF-8"),
            "many",
            &s.url("/p/x"),
            "1000",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |status: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{status} ")))
            .map_or(0, |n| n.trim().parse().expect("count"))
    };
    let (ok, faulted) = (count("200"), count("503"));
    assert_eq!(ok + faulted, 1000, "{text}");
    // Binomial(1000, 0.3): mean 300, sd 14.5; +-5 sd.
    assert!((228..=372).contains(&faulted), "{faulted} of 1000 faulted");
    let r = s.rule(&rule["id"]);
    assert_eq!(r["matched"], 1000);
    assert_eq!(
        r["injected"], faulted,
        "the counter agrees with what the client saw"
    );

    // Another container, and a request of A the rule does not select: untouched.
    let (seen, _) = Client::Curl.get(&s.c, &s.url("/p/x"), Duration::from_secs(3));
    assert_eq!(seen, Seen::Status(200), "C is not the rule's container");
    let (seen, _) = Client::Curl.get(&s.a, &s.url("/q/x"), Duration::from_secs(3));
    assert_eq!(seen, Seen::Status(200), "another path");
    assert_eq!(s.rule(&rule["id"])["matched"], 1000, "neither matched");
}

#[test]
fn count_limits_skip_cap_and_pick_the_nth() {
    let s = Scene::new();
    let a_cgroup = s.cgroup(&s.a);
    let run = |args: &[&str], path: &str| -> Vec<u16> {
        let mut full = vec![
            "--fault",
            "abort:500",
            "--container",
            &a_cgroup,
            "--path",
            path,
        ];
        full.extend_from_slice(args);
        s.add_rule(&full);
        let seen: Vec<u16> = (0..5)
            .map(|_| {
                match Client::Curl
                    .get(&s.a, &s.url(path), Duration::from_secs(3))
                    .0
                {
                    Seen::Status(code) => code,
                    other => panic!("unexpected {other:?}"),
                }
            })
            .collect();
        s.stop();
        seen
    };
    assert_eq!(run(&["--max", "2"], "/max"), [500, 500, 200, 200, 200]);
    assert_eq!(run(&["--skip", "2"], "/skip"), [200, 200, 500, 500, 500]);
    assert_eq!(run(&["--nth", "3"], "/nth"), [200, 200, 500, 200, 200]);
}

#[test]
fn an_expired_rule_stops_within_100ms_and_the_kill_switch_stops_everything() {
    let s = Scene::new();
    let a_cgroup = s.cgroup(&s.a);
    let created = Instant::now();
    let rule = s.add_rule(&[
        "--fault",
        "abort:503",
        "--container",
        &a_cgroup,
        "--ttl",
        "1s",
    ]);
    let mut last_fault = None;
    let first_clean = loop {
        let (seen, _) = Client::Curl.get(&s.a, &s.url("/ttl"), Duration::from_secs(3));
        let now = Instant::now();
        match seen {
            Seen::Status(503) => last_fault = Some(now),
            Seen::Status(200) => break now,
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            now - created < Duration::from_secs(5),
            "the rule never expired"
        );
    };
    assert!(last_fault.is_some(), "the rule never fired");
    let late = first_clean.saturating_duration_since(created + Duration::from_secs(1));
    assert!(
        late < Duration::from_millis(100),
        "clean {late:?} after expiry"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while s.rule(&rule["id"])["state"] != "expired" {
        assert!(
            Instant::now() < deadline,
            "the rule is not listed as expired"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    for path in ["/k1", "/k2", "/k3"] {
        s.add_rule(&[
            "--fault",
            "timeout",
            "--container",
            &a_cgroup,
            "--path",
            path,
        ]);
    }
    let (ok, out, err) = s.daemon.fictl(&["--json", "stop"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("JSON")["removed"],
        3
    );
    for path in ["/k1", "/k2", "/k3"] {
        let (seen, _) = Client::Curl.get(&s.a, &s.url(path), Duration::from_secs(2));
        assert_eq!(seen, Seen::Status(200), "{path} after stop");
    }
}

#[test]
fn a_daemon_killed_with_sigkill_leaves_no_fault_in_effect() {
    let s = Scene::new();
    let a_cgroup = s.cgroup(&s.a);
    s.add_rule(&["--fault", "timeout", "--container", &a_cgroup]);
    let (seen, _) = Client::Curl.get(&s.a, &s.url("/before"), Duration::from_millis(800));
    assert_eq!(seen, Seen::Timeout, "the rule is in effect");
    // Bindings drop in reverse order: the lab last, after the containers in it.
    let Scene {
        lab: _lab,
        c: _c,
        b,
        a,
        daemon,
        _server,
    } = s;
    let status = daemon.kill();
    assert!(!status.success());
    let url = format!("http://{}:{PORT}/after", b.ipv4);
    let (seen, _) = Client::Curl.get(&a, &url, Duration::from_secs(3));
    assert_eq!(seen, Seen::Status(200), "no fault after the daemon died");
}

#[test]
fn malformed_rules_are_refused_with_the_field_named_and_change_nothing() {
    let s = Scene::new();
    for (args, field) in [
        (vec!["--fault", "abort:700"], "fault.status"),
        (
            vec!["--fault", "reset", "--dst", "10.0.0.300"],
            "match.destination",
        ),
        (vec!["--fault", "reset", "--path", "no-slash"], "match.path"),
        (vec!["--fault", "refuse", "--path", "/x"], "fault.kind"),
        (
            vec!["--fault", "reset", "--header", "x-unknown=1"],
            "match.header_name",
        ),
        (
            vec!["--fault", "reset", "--container", "/no/such"],
            "match.container",
        ),
        (
            vec!["--fault", "reset", "--method", "FETCH"],
            "match.methods",
        ),
    ] {
        let mut full = vec!["rules", "add"];
        full.extend_from_slice(&args);
        let (ok, _, err) = s.daemon.fictl(&full);
        assert!(!ok, "{args:?} was accepted");
        assert!(
            err.contains(field),
            "{args:?}: the error names {field}: {err}"
        );
    }
    let (ok, out, _) = s.daemon.fictl(&["--json", "rules", "ls"]);
    assert!(ok);
    assert_eq!(out.trim(), "[]");
    let (seen, _) = Client::Curl.get(&s.a, &s.url("/ok"), Duration::from_secs(3));
    assert_eq!(seen, Seen::Status(200));
}

#[test]
fn two_hundred_fifty_six_rules_at_once_and_the_higher_priority_wins() {
    let s = Scene::new();
    let a_cgroup = s.cgroup(&s.a);
    for i in 0..254 {
        let path = format!("/other/{i}");
        s.add_rule(&[
            "--fault",
            "reset",
            "--container",
            &a_cgroup,
            "--path",
            &path,
        ]);
    }
    let low = s.add_rule(&["--fault", "abort:500", "--path", "/both"]);
    let high = s.add_rule(&["--fault", "abort:503", "--path", "/both", "--priority", "5"]);
    let (seen, _) = Client::Curl.get(&s.a, &s.url("/both"), Duration::from_secs(3));
    assert_eq!(seen, Seen::Status(503), "the higher priority rule decides");
    assert_eq!(s.rule(&high["id"])["injected"], 1);
    assert_eq!(
        s.rule(&low["id"])["matched"],
        0,
        "evaluation stops at the rule that fired"
    );
    let (seen, _) = Client::Curl.get(&s.a, &s.url("/other/253"), Duration::from_secs(3));
    assert_eq!(seen, Seen::Reset, "the last of 256 rules is evaluated too");
    let (ok, _, err) = s.daemon.fictl(&[
        "rules",
        "add",
        "--fault",
        "reset",
        "--path",
        "/one-too-many",
    ]);
    assert!(!ok, "a 257th rule was accepted");
    assert!(err.contains("too many rules"), "{err}");
}

/// Six requests held by a 10 s delay go on at once when the rule goes: by the kill switch,
/// by `rules rm`, and by expiry. The answer of `stop` and `rm` comes after they went.
#[test]
fn requests_held_by_a_delay_go_on_at_once_on_stop_rm_and_expiry() {
    type Held<'s> = std::thread::ScopedJoinHandle<'s, (Seen, Instant)>;
    // Six clients whose requests a rule will hold.
    fn hold_six<'scope, 'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        s: &'env Scene,
        path: &str,
    ) -> Vec<Held<'scope>> {
        (0..6)
            .map(|i| {
                let url = s.url(&format!("{path}{i}"));
                scope.spawn(move || {
                    let (seen, _) = Client::Curl.get(&s.a, &url, Duration::from_secs(20));
                    (seen, Instant::now())
                })
            })
            .collect()
    }
    // When the last of the clients had its answer, after `after`; each must get a 200.
    fn finish(clients: Vec<Held<'_>>, after: Instant) -> Duration {
        clients
            .into_iter()
            .map(|h| {
                let (seen, done) = h.join().expect("client thread");
                assert_eq!(seen, Seen::Status(200));
                done.saturating_duration_since(after)
            })
            .max()
            .expect("six")
    }
    let s = Scene::new();
    let a_cgroup = s.cgroup(&s.a);
    let wait_held = |rule: &Value, n: u64| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.rule(&rule["id"])["injected"].as_u64() != Some(n) {
            assert!(Instant::now() < deadline, "{n} requests were not held");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let delay = |path: &str, ttl: Option<&str>| {
        let mut args = vec![
            "--fault",
            "delay:10s",
            "--container",
            &a_cgroup,
            "--path",
            path,
        ];
        if let Some(ttl) = ttl {
            args.extend(["--ttl", ttl]);
        }
        s.add_rule(&args)
    };
    let before = s.server_count();

    std::thread::scope(|scope| {
        // The kill switch.
        let rule = delay("/stop/*", None);
        let clients = hold_six(scope, &s, "/stop/");
        wait_held(&rule, 6);
        assert_eq!(
            s.server_count(),
            before,
            "held: the server has seen none yet"
        );
        let (ok, out, err) = s.daemon.fictl(&["--json", "stop"]);
        let stopped = Instant::now();
        assert!(ok, "{err}");
        let answer: Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(answer["released_held"], 6, "{answer}");
        let late = finish(clients, stopped);
        println!("stop: the last of 6 held clients had its answer {late:?} after stop answered");
        assert!(late < Duration::from_millis(50), "{late:?}");
        assert_eq!(s.server_count(), before + 6);
    });

    std::thread::scope(|scope| {
        // Removing one rule lets go of what it holds, and only that.
        let other = delay("/keep/*", None);
        let rule = delay("/rm/*", None);
        let kept = hold_six(scope, &s, "/keep/");
        let clients = hold_six(scope, &s, "/rm/");
        wait_held(&rule, 6);
        wait_held(&other, 6);
        let (ok, _, err) = s.daemon.fictl(&["rules", "rm", &rule["id"].to_string()]);
        let removed = Instant::now();
        assert!(ok, "{err}");
        let late = finish(clients, removed);
        println!("rm: the last of 6 held clients had its answer {late:?} after rm answered");
        assert!(late < Duration::from_millis(50), "{late:?}");
        assert_eq!(
            s.server_count(),
            before + 12,
            "the other rule's six are still held"
        );
        s.stop();
        finish(kept, Instant::now());
        assert_eq!(s.server_count(), before + 18);
    });

    std::thread::scope(|scope| {
        // Expiry: the rule's time to live ends while it holds six.
        let created = Instant::now();
        let rule = delay("/ttl/*", Some("2s"));
        let clients = hold_six(scope, &s, "/ttl/");
        wait_held(&rule, 6);
        let late = finish(clients, created + Duration::from_secs(2));
        println!("expiry: the last of 6 held clients had its answer {late:?} after the ttl");
        // The expiry sweep runs every 100 ms.
        assert!(late < Duration::from_millis(200), "{late:?}");
    });
}

/// CLOCK_MONOTONIC in seconds, as Python's time.monotonic() reads it.
fn monotonic_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// A keep-alive connection blackholed by a timeout rule is ended when the rule goes (by
/// stop, rm, or expiry): the client's call fails at once, the server's half is reset, and
/// the dropped request never reaches the server, not even 30 s later.
#[test]
fn blackholed_keep_alive_connections_are_ended_at_once_and_the_request_never_arrives() {
    let s = Scene::new();
    let a_cgroup = s.cgroup(&s.a);
    let before = s.server_count();
    let script = fixture("keepalive_pair.py");
    let b = s.b.ipv4.clone();
    let port = PORT.to_string();
    // One client per way of ending the rule; each one's second request is blackholed.
    let start = |way: &str| {
        let rule = s.add_rule(&[
            "--fault",
            "timeout",
            "--container",
            &a_cgroup,
            "--path",
            &format!("/{way}/dropped"),
            "--ttl",
            if way == "ttl" { "3s" } else { "1h" },
        ]);
        let mut cmd = s.a.command("python3");
        cmd.arg(&script)
            .args([
                b.as_str(),
                port.as_str(),
                &format!("/{way}/first"),
                &format!("/{way}/dropped"),
            ])
            .stdout(std::process::Stdio::piped());
        let child = cmd.spawn().expect("python3");
        (rule, child)
    };
    let wait_dropped = |rule: &Value| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.rule(&rule["id"])["injected"].as_u64() != Some(1) {
            assert!(Instant::now() < deadline, "the request was not blackholed");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // What the client saw of its second request, and when (CLOCK_MONOTONIC seconds).
    let outcome = |child: std::process::Child| -> (String, f64) {
        let out = child.wait_with_output().expect("python3");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.starts_with("second"))
            .unwrap_or_else(|| panic!("no second answer: {text}"));
        let (what, at) = line.rsplit_once(' ').expect("a time");
        (what.to_owned(), at.parse().expect("seconds"))
    };

    let (rm_rule, rm_client) = start("rm");
    let (stop_rule, stop_client) = start("stop");
    wait_dropped(&rm_rule);
    wait_dropped(&stop_rule);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.server_count(),
        before + 2,
        "two first requests, no dropped one"
    );

    let (ok, _, err) = s.daemon.fictl(&["rules", "rm", &rm_rule["id"].to_string()]);
    let rm_done = monotonic_seconds();
    assert!(ok, "{err}");
    let (seen, at) = outcome(rm_client);
    println!(
        "rm: the client saw `{seen}` {:.1} ms after rm answered",
        (at - rm_done) * 1e3
    );
    assert_eq!(seen, "second error ECONNABORTED");
    assert!(at - rm_done < 0.05, "{:.3} s late", at - rm_done);

    let (ok, out, err) = s.daemon.fictl(&["--json", "stop"]);
    let stop_done = monotonic_seconds();
    assert!(ok, "{err}");
    let answer: Value = serde_json::from_str(&out).expect("JSON");
    let (seen, at) = outcome(stop_client);
    println!(
        "stop: the client saw `{seen}` {:.1} ms after stop answered",
        (at - stop_done) * 1e3
    );
    assert_eq!(seen, "second error ECONNABORTED");
    assert!(at - stop_done < 0.05, "{:.3} s late", at - stop_done);
    assert!(answer["closed_connections"].as_u64() >= Some(1), "{answer}");

    let (ttl_rule, ttl_client) = start("ttl");
    let created = monotonic_seconds();
    wait_dropped(&ttl_rule);
    let (seen, at) = outcome(ttl_client);
    println!(
        "expiry: the client saw `{seen}` {:.1} ms after the ttl",
        (at - created - 3.0) * 1e3
    );
    assert_eq!(seen, "second error ECONNABORTED");
    assert!(
        at - created - 3.0 < 0.25,
        "{:.3} s late",
        at - created - 3.0
    );

    // No server connection is left, and the dropped requests never arrive.
    let deadline = Instant::now() + Duration::from_secs(2);
    while s.server_connections() > 0 {
        assert!(Instant::now() < deadline, "the server's half is still open");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(30));
    assert_eq!(
        s.server_count(),
        before + 3,
        "only the three first requests, 30 s later"
    );
}

/// The dead-man switch: a daemon that hangs (SIGSTOP) stops injecting within its
/// heartbeat bound (1 s), and injects again once it runs.
#[test]
fn a_hung_daemon_stops_injecting_within_a_second_and_resumes_when_it_runs() {
    let s = Scene::new();
    let a_cgroup = s.cgroup(&s.a);
    s.add_rule(&[
        "--fault",
        "abort:503",
        "--container",
        &a_cgroup,
        "--path",
        "/hang",
    ]);
    let get = || {
        Client::Curl
            .get(&s.a, &s.url("/hang"), Duration::from_secs(3))
            .0
    };
    assert_eq!(get(), Seen::Status(503), "the rule is in effect");
    let pid = libc::pid_t::try_from(s.daemon.pid()).expect("pid");
    // SAFETY: kill(2) takes no pointers; `pid` is the daemon, our child, which its `Daemon`
    // still holds unreaped, so the pid cannot belong to another process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let stopped = Instant::now();
    let released = loop {
        match get() {
            Seen::Status(200) => break stopped.elapsed(),
            Seen::Status(503) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(3),
            "faults outlived the heartbeat"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("hung daemon: faults stopped {released:?} after it stopped");
    assert!(released <= Duration::from_millis(1300), "{released:?}");
    // SAFETY: as for SIGSTOP above: no pointers, and the daemon is still our unreaped child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let resumed = Instant::now();
    while get() != Seen::Status(503) {
        assert!(
            resumed.elapsed() < Duration::from_secs(1),
            "faults did not resume"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// On lo a timeout is a blackhole too: the client's own read timeout fires, whatever its
/// length, and a client with none waits (not the kernel's ETIMEDOUT after some 8 s of
/// local send failures: a dropped packet at an egress hook is reported to the sender; one
/// taken out of the path is not). Four clients at once: 2 s, 10 s, 30 s, and none.
#[test]
fn on_lo_a_timeout_leaves_the_clients_own_timeout_to_fire_whatever_its_length() {
    let lo = fi_tests::lo::OnLo::new("host-client");
    let container = lo.container();
    let (ok, _, err) = lo.daemon.fictl(&[
        "rules",
        "add",
        "--fault",
        "timeout",
        "--container",
        &container,
        "--path",
        "/lo",
    ]);
    assert!(ok, "{err}");
    let script = format!(
        "import socket, threading, time\n\
         said = {{}}\n\
         def call(name, timeout):\n    s = socket.create_connection(('127.0.0.1', {}))\n    s.settimeout(timeout)\n    s.sendall(b'GET /lo HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n    t = time.monotonic()\n    try:\n        s.recv(100)\n        said[name] = 'answered %.2f' % (time.monotonic() - t)\n    except socket.timeout:\n        said[name] = 'timeout %.2f' % (time.monotonic() - t)\n    except OSError as e:\n        said[name] = 'error%d %.2f' % (e.errno, time.monotonic() - t)\n\
         calls = [threading.Thread(target=call, args=(str(t), t), daemon=True) for t in (2, 10, 30)]\n\
         calls.append(threading.Thread(target=call, args=('none', None), daemon=True))\n\
         for c in calls:\n    c.start()\n\
         time.sleep(34)\n\
         for name in ('2', '10', '30', 'none'):\n    print(name, said.get(name, 'waiting'))\n",
        lo.port
    );
    let out = lo.python(&script);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("lo timeout: the clients saw\n{}", said.trim());
    let outcome = |name: &str| {
        said.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| {
                panic!(
                    "no outcome for {name}: {said}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .to_owned()
    };
    for (name, seconds) in [("2", 2.0), ("10", 10.0), ("30", 30.0)] {
        let got = outcome(name);
        let (what, after) = got.split_once(' ').expect("what and when");
        assert_eq!(what, "timeout", "the {name} s client: {got}");
        let after: f64 = after.parse().expect("seconds");
        assert!(
            after >= seconds - 0.05 && after < seconds + 1.0,
            "the {name} s client's own timeout fired at {after} s"
        );
    }
    assert_eq!(outcome("none"), "waiting", "a client with no timeout waits");
    assert_eq!(lo.server_count(), 0, "the server never saw them");
}

/// An abort answers `connection: close` and closes: a client that reads to the end of the
/// connection (as HTTP/1.0-style clients do) has its whole answer at once, not at its own
/// timeout.
#[test]
fn an_abort_closes_the_connection_so_a_read_to_eof_client_is_not_left_waiting() {
    let s = Scene::new();
    let a_cgroup = s.cgroup(&s.a);
    s.add_rule(&[
        "--fault",
        "abort:503",
        "--container",
        &a_cgroup,
        "--path",
        "/eof",
    ]);
    let script = format!(
        "import socket, time\n\
         s = socket.create_connection(('{}', {PORT}))\n\
         s.settimeout(5)\n\
         t = time.monotonic()\n\
         s.sendall(b'GET /eof HTTP/1.1\\r\\nHost: b\\r\\nConnection: close\\r\\n\\r\\n')\n\
         data = b''\n\
         try:\n    while True:\n        chunk = s.recv(4096)\n        if not chunk:\n            break\n        data += chunk\n    print('eof', data.split(b' ')[1].decode(), time.monotonic() - t)\n\
         except OSError as e:\n    print('error', type(e).__name__, time.monotonic() - t)\n",
        s.b.ipv4
    );
    let out = s.a.run("python3", &["-c", &script]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("read to EOF under abort: {}", said.trim());
    let fields: Vec<&str> = said.split_whitespace().collect();
    assert_eq!(fields.first().copied(), Some("eof"), "{said}");
    assert_eq!(fields.get(1).copied(), Some("503"), "{said}");
    let seconds: f64 = fields.get(2).and_then(|t| t.parse().ok()).expect("a time");
    assert!(seconds < 0.5, "the client waited {seconds} s for the end");
}

/// fi's netlink filters on an interface, as tc(8) lists them (names of the programs).
fn tc_filters(interface: &str) -> Vec<String> {
    let mut found = Vec::new();
    for hook in ["ingress", "egress"] {
        let out = std::process::Command::new("tc")
            .args(["filter", "show", "dev", interface, hook])
            .output()
            .expect("tc (iproute2)");
        found.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("fi_tc_"))
                .map(str::to_owned),
        );
    }
    found
}

/// Where a kernel has no TCX the classifiers are netlink filters, which outlive a killed
/// daemon: its faults stop within the dead-man bound, the next daemon removes its filters,
/// and a filter that is not fi's stays.
#[test]
fn netlink_filters_of_a_killed_daemon_stop_faulting_and_the_next_daemon_removes_them() {
    let s = Scene::with(&["--tc=netlink"]);
    let (ok, out, _) = s.daemon.fictl(&["--json", "status"]);
    assert!(ok);
    let status: Value = serde_json::from_str(&out).expect("status --json");
    assert_eq!(status["capabilities"]["tcx"], false, "{status:#}");
    let (ok, text, _) = s.daemon.fictl(&["status"]);
    assert!(ok && text.contains("netlink clsact filters"), "{text}");
    let a_cgroup = s.cgroup(&s.a);
    s.add_rule(&[
        "--fault",
        "abort:503",
        "--container",
        &a_cgroup,
        "--path",
        "/nl",
    ]);
    let (seen, _) = Client::Curl.get(&s.a, &s.url("/nl"), Duration::from_secs(3));
    assert_eq!(
        seen,
        Seen::Status(503),
        "the netlink-attached programs fault"
    );
    let veth = s.a.host_veth.clone();
    let before = tc_filters(&veth);
    assert_eq!(before.len(), 2, "egress and ingress: {before:?}");
    // A filter that is not fi's, on the same hook, after fi's (a higher number runs
    // later; this kernel has the u32 classifier and no tc actions).
    let foreign = std::process::Command::new("tc")
        .args([
            "filter", "add", "dev", &veth, "ingress", "prio", "300", "protocol", "all",
        ])
        .args(["u32", "match", "u32", "0", "0"])
        .status()
        .expect("tc");
    assert!(foreign.success());

    let Scene {
        lab,
        c,
        b,
        a,
        daemon,
        _server,
    } = s;
    assert!(!daemon.kill().success());
    assert_eq!(
        tc_filters(&veth),
        before,
        "netlink filters outlive their daemon"
    );
    let url = format!("http://{}:{PORT}/nl", b.ipv4);
    let began = Instant::now();
    let (seen, _) = Client::Curl.get(&a, &url, Duration::from_secs(3));
    assert_eq!(
        seen,
        Seen::Status(200),
        "the dead-man switch ended the fault"
    );
    assert!(began.elapsed() < Duration::from_secs(3));

    // The next daemon (which probes and gets TCX here) removes the dead one's filters.
    let next = Daemon::start_with(
        lab.id(),
        lab.cgroup(),
        &["--no-veths".to_owned(), Scene::ifaces(&a, &b, &c)],
    );
    assert!(tc_filters(&veth).is_empty(), "{:?}", tc_filters(&veth));
    let out = std::process::Command::new("tc")
        .args(["filter", "show", "dev", &veth, "ingress"])
        .output()
        .expect("tc");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("u32"),
        "the foreign filter stays"
    );
    let (ok, out, _) = next.fictl(&["--json", "status"]);
    assert!(ok);
    let status: Value = serde_json::from_str(&out).expect("status --json");
    assert_eq!(status["capabilities"]["tcx"], true, "{status:#}");
}
