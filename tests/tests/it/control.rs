//! The control plane: malformed input never hurts the daemon, and its socket lets no one
//! in who does not belong.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use fi_api::{client, v1 as api};
use fi_tests::{Daemon, Lab};

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn junk(&mut self, max: usize) -> String {
        let len = (self.next() % (max as u64 + 1)) as usize;
        (0..len)
            .map(|_| char::from(32 + (self.next() % 95) as u8))
            .collect()
    }
}

/// A rule as both fictl and the gRPC API can say it. Built valid, then one value is
/// made bad.
#[derive(Debug, Clone, Default)]
struct Spec {
    container: Option<String>,
    destination: Option<String>,
    port: Option<u32>,
    methods: Vec<String>,
    host: Option<String>,
    path: Option<String>,
    header: Option<(String, String)>,
    fault: api::Fault,
    fault_text: String,
    ppm: Option<u32>,
    /// fictl's `--percent` where it differs from `ppm` (its own syntax).
    percent_text: Option<String>,
    skip: Option<u32>,
    max: Option<u32>,
    nth: Option<u32>,
    ttl: Option<prost_types::Duration>,
    /// fictl's `--ttl` where it differs from `ttl`.
    ttl_text: Option<String>,
    description: String,
}

impl Spec {
    fn grpc(&self) -> api::CreateRuleRequest {
        let (header_name, header_value) = self.header.clone().unzip();
        api::CreateRuleRequest {
            r#match: Some(api::Match {
                container: self.container.clone(),
                destination: self.destination.clone(),
                port: self.port,
                methods: self.methods.clone(),
                host: self.host.clone(),
                path: self.path.clone(),
                header_name,
                header_value,
            }),
            fault: Some(self.fault),
            probability_ppm: self.ppm,
            skip_first: self.skip,
            max_injections: self.max,
            nth: self.nth,
            ttl: self.ttl,
            priority: 0,
            description: self.description.clone(),
        }
    }

    fn cli(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "rules".into(),
            "add".into(),
            "--fault".into(),
            self.fault_text.clone(),
        ];
        let mut flag = |name: &str, value: String| {
            a.push(format!("--{name}"));
            a.push(value);
        };
        if let Some(v) = &self.container {
            flag("container", v.clone());
        }
        if let Some(v) = &self.destination {
            flag("dst", v.clone());
        }
        if let Some(v) = self.port {
            flag("port", v.to_string());
        }
        for m in &self.methods {
            flag("method", m.clone());
        }
        if let Some(v) = &self.host {
            flag("host", v.clone());
        }
        if let Some(v) = &self.path {
            flag("path", v.clone());
        }
        if let Some((n, v)) = &self.header {
            flag("header", format!("{n}={v}"));
        }
        match (&self.percent_text, self.ppm) {
            (Some(t), _) => flag("percent", t.clone()),
            (None, Some(p)) => flag("percent", format!("{}%", f64::from(p) / 10_000.0)),
            (None, None) => {}
        }
        if let Some(v) = self.skip {
            flag("skip", v.to_string());
        }
        if let Some(v) = self.max {
            flag("max", v.to_string());
        }
        if let Some(v) = self.nth {
            flag("nth", v.to_string());
        }
        match (&self.ttl_text, self.ttl) {
            (Some(t), _) => flag("ttl", t.clone()),
            (None, Some(d)) => flag("ttl", format!("{}s", d.seconds)),
            (None, None) => {}
        }
        if !self.description.is_empty() {
            flag("description", self.description.clone());
        }
        a
    }
}

fn fault(kind: api::FaultKind, status: u32, delay: Option<(i64, i32)>) -> api::Fault {
    api::Fault {
        kind: kind as i32,
        status,
        delay: delay.map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
    }
}

/// A valid rule with some of its matchers, chosen by `rng`.
fn valid(rng: &mut Rng) -> Spec {
    let mut s = Spec {
        fault: fault(api::FaultKind::Reset, 0, None),
        fault_text: "reset".into(),
        ..Spec::default()
    };
    if rng.next().is_multiple_of(2) {
        s.destination = Some(rng.pick(&["10.77.0.2", "10.77.0.0/24", "fd77::/64"]).into());
    }
    if rng.next().is_multiple_of(2) {
        s.port = Some([1u32, 80, 8080, 65_535][(rng.next() % 4) as usize]);
    }
    if rng.next().is_multiple_of(2) {
        s.methods = vec![rng.pick(&["GET", "post", "DELETE"]).into()];
    }
    if rng.next().is_multiple_of(2) {
        s.host = Some(rng.pick(&["b.svc", "*.svc", ".svc"]).into());
    }
    if rng.next().is_multiple_of(2) {
        s.path = Some(rng.pick(&["/a", "/api/*", "/*"]).into());
    }
    if rng.next().is_multiple_of(2) {
        s.ppm = Some([1u32, 300_000, 1_000_000][(rng.next() % 3) as usize]);
    }
    s
}

/// How many kinds of bad value [`bad`] makes.
const KINDS: u64 = 52;

/// A valid rule with one value of kind `kind` made bad: the rule, the API field its
/// refusal must name, and what fictl's refusal must name (the field, or the flag when
/// fictl refuses the flag's own syntax before asking the daemon).
fn bad(kind: u64, rng: &mut Rng) -> (Spec, &'static str, &'static str) {
    use api::FaultKind as K;
    let mut s = valid(rng);
    let n = rng.next();
    let named = |field: &'static str| (field, field);
    let (field, flag) = match kind {
        0 => {
            s.container = Some(String::new());
            named("match.container")
        }
        1 => {
            s.container = Some(format!("/no/such/{n}"));
            named("match.container")
        }
        2 => {
            s.container = Some("/a\nb".into());
            named("match.container")
        }
        3 => {
            s.destination = Some(String::new());
            named("match.destination")
        }
        4 => {
            s.destination = Some(format!("{}!", rng.junk(30)));
            named("match.destination")
        }
        5 => {
            s.destination = Some("10.0.0.0/33".into());
            named("match.destination")
        }
        6 => {
            s.destination = Some("::/129".into());
            named("match.destination")
        }
        7 => {
            s.port = Some(0);
            named("match.port")
        }
        8 => {
            s.port = Some(65_536 + (n % 1_000_000) as u32);
            named("match.port")
        }
        9 => {
            s.port = Some(u32::MAX);
            named("match.port")
        }
        10 => {
            s.methods = vec![String::new()];
            named("match.methods")
        }
        11 => {
            s.methods = vec![rng.junk(12).to_lowercase() + "x"];
            named("match.methods")
        }
        12 => {
            s.methods = vec!["GET".into(); 10];
            named("match.methods")
        }
        13 => {
            s.host = Some(String::new());
            named("match.host")
        }
        14 => {
            s.host = Some(format!("{} {}", rng.junk(5), rng.junk(5)));
            named("match.host")
        }
        15 => {
            s.host = Some("b.svc:8080".into());
            named("match.host")
        }
        16 => {
            s.host = Some("b.svc\r\nx-evil: 1".into());
            named("match.host")
        }
        17 => {
            s.host = Some(rng.pick(&["*", "*.", "a*b", "**.svc"]).into());
            named("match.host")
        }
        18 => {
            s.host = Some("a".repeat(300));
            named("match.host")
        }
        19 => {
            s.path = Some(String::new());
            named("match.path")
        }
        20 => {
            s.path = Some(format!("x{}", rng.junk(10)));
            named("match.path")
        }
        21 => {
            s.path = Some(rng.pick(&["/a*b", "/**", "/a*", "/a/*/b", "*"]).into());
            named("match.path")
        }
        22 => {
            s.path = Some("/a?b=1".into());
            named("match.path")
        }
        23 => {
            s.path = Some(format!("/{}", "p".repeat(5000)));
            named("match.path")
        }
        24 => {
            s.path = Some("/a\tb".into());
            named("match.path")
        }
        25 => {
            s.header = Some(("x-fi-target".into(), "u\r\nx-evil: 1".into()));
            named("match.header_value")
        }
        26 => {
            s.header = Some((format!("x-other-{n}"), "v".into()));
            named("match.header_name")
        }
        27 => {
            s.header = Some((String::new(), "v".into()));
            ("match.header_name", "--header")
        }
        28 => {
            s.header = Some(("x-fi-target".into(), String::new()));
            ("match.header_value", "--header")
        }
        29 => {
            s.fault = fault(K::Unspecified, 0, None);
            s.fault_text = String::new();
            ("fault.kind", "--fault")
        }
        30 => {
            s.fault.kind = [7, 99, -1][(n % 3) as usize];
            s.fault_text = "blackhole".into();
            ("fault.kind", "--fault")
        }
        31 => {
            let status = [0u32, 100, 101, 199][(n % 4) as usize];
            s.fault = fault(K::Abort, status, None);
            s.fault_text = format!("abort:{status}");
            named("fault.status")
        }
        32 => {
            let status = [600u32, 1000, 65_535][(n % 3) as usize];
            s.fault = fault(K::Abort, status, None);
            s.fault_text = format!("abort:{status}");
            named("fault.status")
        }
        33 => {
            s.fault = fault(K::Abort, u32::MAX, None);
            s.fault_text = "abort:4294967296".into();
            ("fault.status", "--fault")
        }
        34 => {
            s.fault = fault(K::Delay, 0, None);
            s.fault_text = "delay:".into();
            ("fault.delay", "--fault")
        }
        35 => {
            s.fault = fault(K::Delay, 0, Some((-1, 0)));
            s.fault_text = "delay:-1s".into();
            ("fault.delay", "--fault")
        }
        36 => {
            s.fault = fault(K::Delay, 0, Some((3600, 0)));
            s.fault_text = "delay:1h".into();
            named("fault.delay")
        }
        37 => {
            s.fault = fault(K::Delay, 0, Some((0, 0)));
            s.fault_text = "delay:0s".into();
            named("fault.delay")
        }
        38 => {
            s.fault = fault(K::Reset, 503, None);
            s.fault_text = "reset:503".into();
            ("fault.status", "--fault")
        }
        39 => {
            s.fault = fault(K::Refuse, 0, None);
            s.fault_text = "refuse".into();
            s.path = Some("/x".into());
            named("fault.kind")
        }
        40 => {
            s.ppm = Some(0);
            s.percent_text = Some(rng.pick(&["0", "0%", "0.00001%"]).into());
            ("probability_ppm", "--percent")
        }
        41 => {
            s.ppm = Some(1_000_001 + (n % 1_000_000) as u32);
            s.percent_text = Some(rng.pick(&["101%", "100.01", "1e9%"]).into());
            ("probability_ppm", "--percent")
        }
        42 => {
            s.ppm = Some(u32::MAX);
            s.percent_text = Some(rng.pick(&["30%%", "-5%", "NaN", "inf%", "%"]).into());
            ("probability_ppm", "--percent")
        }
        43 => {
            s.skip = Some(0);
            named("skip_first")
        }
        44 => {
            s.max = Some(0);
            named("max_injections")
        }
        45 => {
            s.nth = Some(0);
            named("nth")
        }
        46 => {
            s.nth = Some(1 + (n % 5) as u32);
            s.skip = Some(1 + (n % 7) as u32);
            named("nth")
        }
        47 => {
            s.ttl = Some(prost_types::Duration {
                seconds: 0,
                nanos: 0,
            });
            s.ttl_text = Some("0s".into());
            named("ttl")
        }
        48 => {
            s.ttl = Some(prost_types::Duration {
                seconds: -5,
                nanos: 0,
            });
            s.ttl_text = Some(rng.pick(&["-1s", "-5m"]).into());
            ("ttl", "--ttl")
        }
        49 => {
            s.ttl = Some(prost_types::Duration {
                seconds: 31 * 86_400,
                nanos: 0,
            });
            s.ttl_text = Some("31days".into());
            named("ttl")
        }
        50 => {
            s.description = "d".repeat(1025 + (n % 5000) as usize);
            named("description")
        }
        _ => {
            s.description = "clear \u{1b}[2J screen".into();
            named("description")
        }
    };
    (s, field, flag)
}

#[test]
fn a_thousand_malformed_rules_are_each_refused_naming_the_field_over_grpc_and_fictl() {
    let lab = Lab::new();
    let daemon = Daemon::start(lab.id(), &[], lab.cgroup());
    let mut rng = Rng(0x5eed_f00d_1234_5678);
    let cases: Vec<(u64, Spec, &str, &str)> = (0..1000)
        .map(|i| {
            let kind = i % KINDS;
            let (spec, field, flag) = bad(kind, &mut rng);
            (kind, spec, field, flag)
        })
        .collect();
    fi_tests::block_on(async {
        let mut rules = client::rules(daemon.socket()).await.expect("connect");
        for (i, (kind, spec, field, _)) in cases.iter().enumerate() {
            let req = spec.grpc();
            let shown = format!("{req:?}");
            match rules.create_rule(req).await {
                Ok(rule) => panic!(
                    "request {i} (kind {kind}) was accepted as rule {}: {shown}",
                    rule.get_ref().id
                ),
                Err(status) => {
                    assert_eq!(
                        status.code(),
                        tonic::Code::InvalidArgument,
                        "request {i} (kind {kind}): {status:?} for {shown}"
                    );
                    assert!(
                        status.message().starts_with(&format!("{field}: ")),
                        "request {i} (kind {kind}) must name {field}: {:?} for {shown}",
                        status.message()
                    );
                }
            }
        }
    });
    for (i, (kind, spec, field, flag)) in cases.iter().enumerate() {
        let args = spec.cli();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = daemon.fictl(&args);
        assert!(!ok, "fictl {i} (kind {kind}) accepted {args:?}: {out}");
        assert!(
            err.contains(field) || err.contains(flag),
            "fictl {i} (kind {kind}) must name {field} or {flag}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // A description far over the daemon's message limit is named by fictl itself.
    let huge = "d".repeat(100_000);
    let (ok, _, err) = daemon.fictl(&["rules", "add", "--fault", "reset", "--description", &huge]);
    assert!(!ok && err.contains("description"), "{err}");

    fi_tests::block_on(async {
        let mut rules = client::rules(daemon.socket()).await.expect("connect");
        let list = rules
            .list_rules(api::ListRulesRequest {})
            .await
            .expect("list");
        assert!(list.get_ref().rules.is_empty(), "nothing was created");
        let missing = rules.get_rule(api::GetRuleRequest { id: 12345 }).await;
        assert_eq!(
            missing.expect_err("no such rule").code(),
            tonic::Code::NotFound
        );
        let missing = rules
            .delete_rule(api::DeleteRuleRequest { id: 12345 })
            .await;
        assert_eq!(
            missing.expect_err("no such rule").code(),
            tonic::Code::NotFound
        );
        // The edge values that are valid are accepted: the maxima ...
        let mut edge = Spec {
            fault: fault(api::FaultKind::Abort, 599, None),
            port: Some(65_535),
            ppm: Some(1_000_000),
            max: Some(u32::MAX),
            nth: Some(u32::MAX),
            ttl: Some(prost_types::Duration {
                seconds: 30 * 86_400,
                nanos: 0,
            }),
            path: Some("/*".into()),
            description: "d".repeat(1024),
            ..Spec::default()
        };
        let rule = rules
            .create_rule(edge.grpc())
            .await
            .expect("the maxima are valid");
        rules
            .delete_rule(api::DeleteRuleRequest {
                id: rule.get_ref().id,
            })
            .await
            .expect("delete");
        // ... and the minima.
        edge.fault = fault(api::FaultKind::Abort, 200, None);
        edge.port = Some(1);
        edge.ppm = Some(1);
        edge.max = Some(1);
        edge.nth = Some(1);
        edge.ttl = Some(prost_types::Duration {
            seconds: 0,
            nanos: 1,
        });
        edge.path = Some("/".into());
        rules
            .create_rule(edge.grpc())
            .await
            .expect("the minima are valid");
    });
    let (ok, out, err) = daemon.fictl(&[
        "--json",
        "rules",
        "add",
        "--fault",
        "abort:200",
        "--port",
        "1",
        "--percent",
        "0.0001%",
        "--max",
        "4294967295",
        "--skip",
        "1",
        "--ttl",
        "30days",
        "--path",
        "/",
    ]);
    assert!(ok, "{err}");
    let rule: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(rule["probability_ppm"], 1, "{rule:#}");
    assert_eq!(rule["max_injections"], u32::MAX, "{rule:#}");
    assert_eq!(rule["skip_first"], 1, "{rule:#}");
    // Still healthy, and still answering.
    let status = daemon.status();
    assert!(!status.attachments.is_empty());
}

#[test]
fn the_socket_is_root_only() {
    let lab = Lab::new();
    let daemon = Daemon::start(lab.id(), &[], lab.cgroup());
    let meta = std::fs::metadata(daemon.socket()).expect("socket exists");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "mode of {:?}",
        daemon.socket()
    );
    assert_eq!(meta.uid(), 0, "owned by root");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

#[test]
fn the_tcp_listener_needs_a_private_token_and_rejects_calls_without_it() {
    let lab = Lab::new();
    let dir = std::env::temp_dir().join(format!("fi-test-token-{}", lab.id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cr3t-t0ken-for-fi-tests\n").expect("token file");
    let port = free_port();
    let listen = format!("--listen=127.0.0.1:{port}");
    let fi_daemon = fi_tests::process::bin_path("fi-daemon");
    let socket = dir.join("refused.sock");

    // No token: the daemon refuses to start.
    let out = std::process::Command::new(&fi_daemon)
        .args(["--no-veths", "--iface=", &listen, "--socket"])
        .arg(&socket)
        .arg("--cgroup")
        .arg(lab.cgroup())
        .output()
        .expect("running fi-daemon");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("refusing to listen on TCP without --token-file")
    );
    // A token others can read: refused too.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = std::process::Command::new(&fi_daemon)
        .args(["--no-veths", "--iface=", &listen, "--socket"])
        .arg(&socket)
        .arg("--cgroup")
        .arg(lab.cgroup())
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .expect("running fi-daemon");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{out:?}"
    );

    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let token_arg = format!("--token-file={}", token_file.display());
    let daemon = Daemon::start_with(
        lab.id(),
        lab.cgroup(),
        &[
            "--no-veths".into(),
            "--iface=".into(),
            listen.clone(),
            token_arg,
        ],
    );
    let addr = format!("http://127.0.0.1:{port}");
    let fictl = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(fi_tests::process::bin_path("fictl"));
        cmd.arg("--addr").arg(&addr).args(extra).arg("status");
        cmd.output().expect("running fictl")
    };
    let without = fictl(&[]);
    assert!(
        !without.status.success(),
        "a call without the token was served"
    );
    assert_eq!(
        without.status.code(),
        Some(77),
        "exit code for permission errors"
    );
    assert!(String::from_utf8_lossy(&without.stderr).contains("bearer token"));
    let wrong_file = dir.join("wrong");
    std::fs::write(&wrong_file, "wrong-token-wrong-token").expect("file");
    let wrong = fictl(&["--token-file", wrong_file.to_str().expect("UTF-8")]);
    assert!(!wrong.status.success(), "a wrong token was accepted");
    let with = fictl(&["--token-file", token_file.to_str().expect("UTF-8")]);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(String::from_utf8_lossy(&with.stdout).contains("fi-daemon"));
    // A token holder may read reports but not run commands as root (no --tcp-explore).
    let token = token_file.to_str().expect("UTF-8");
    let run = std::process::Command::new(fi_tests::process::bin_path("fictl"))
        .args([
            "--addr",
            &addr,
            "--token-file",
            token,
            "explore",
            "run",
            "--",
            "true",
        ])
        .output()
        .expect("running fictl");
    assert_eq!(run.status.code(), Some(77), "{run:?}");
    assert!(String::from_utf8_lossy(&run.stderr).contains("--tcp-explore"));
    let ls = std::process::Command::new(fi_tests::process::bin_path("fictl"))
        .args(["--addr", &addr, "--token-file", token, "explore", "ls"])
        .output()
        .expect("running fictl");
    assert!(ls.status.success(), "{ls:?}");
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_loads_attaches_reports_and_leaves_nothing_behind() {
    let lab = Lab::new();
    let a = lab.container("a", 1);
    let out = std::process::Command::new(fi_tests::process::bin_path("fi-daemon"))
        .args(["--check", "--no-veths", &format!("--iface={}", a.host_veth)])
        .arg("--cgroup")
        .arg(lab.cgroup())
        .arg("--socket")
        .arg(std::env::temp_dir().join(format!("fi-test-{}-check.sock", lab.id())))
        .output()
        .expect("running fi-daemon --check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("fi-daemon --check: ok"), "{stdout}");
    assert!(stdout.contains(&a.host_veth), "{stdout}");
    use aya::programs::TcAttachType;
    assert!(fi_tests::kernel_view::tcx_programs(&a.host_veth, TcAttachType::Egress).is_empty());
    assert!(fi_tests::kernel_view::cgroup_programs(lab.cgroup()).is_empty());
}

#[test]
fn the_standard_health_service_answers_serving() {
    let lab = Lab::new();
    let daemon = Daemon::start(lab.id(), &[], lab.cgroup());
    fi_tests::block_on(async {
        let channel = client::connect(daemon.socket()).await.expect("connect");
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check");
        assert_eq!(
            answer.get_ref().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    });
}

#[test]
fn a_configuration_file_sets_what_flags_do_not_and_a_typo_is_refused() {
    let lab = Lab::new();
    let a = lab.container("a", 1);
    let dir = std::env::temp_dir().join(format!("fi-test-config-{}", lab.id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("fi.toml");
    std::fs::write(
        &file,
        format!(
            "ifaces = [\"{}\"]\nno_veths = true\ncapture_headers = [\"x-tenant\"]\n",
            a.host_veth
        ),
    )
    .expect("config file");
    let daemon = Daemon::start_with(
        lab.id(),
        lab.cgroup(),
        &[format!("--config={}", file.display())],
    );
    let status = daemon.status();
    assert!(
        status.attachments.iter().any(|at| at.target == a.host_veth),
        "the file's interface is attached: {:?}",
        status.attachments
    );
    assert!(
        !status.attachments.iter().any(|at| at.target == "lo"),
        "the file replaced the default"
    );
    let (ok, _, err) = daemon.fictl(&[
        "rules",
        "add",
        "--fault",
        "reset",
        "--header",
        "x-tenant=t1",
    ]);
    assert!(ok, "the file's captured header is usable: {err}");
    drop(daemon);

    std::fs::write(&file, "ifacez = [\"lo\"]\n").expect("config file");
    let out = std::process::Command::new(fi_tests::process::bin_path("fi-daemon"))
        .arg("--config")
        .arg(&file)
        .output()
        .expect("running fi-daemon");
    assert!(!out.status.success(), "a typo was accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ifacez"),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every ExploreService call, with bad input: the right code, a message naming the
/// problem, and a daemon that stays healthy.
#[test]
fn explore_calls_answer_bad_input_with_the_right_codes() {
    use fi_api::v1 as api;
    use tonic::Code;
    let lab = Lab::new();
    let daemon = Daemon::start(lab.id(), &["lo"], lab.cgroup());
    fi_tests::block_on(async {
        let mut c = fi_api::client::explore(daemon.socket())
            .await
            .expect("connect");
        let start = |f: &dyn Fn(&mut api::StartExplorationRequest)| {
            let mut r = api::StartExplorationRequest {
                command: "true".into(),
                working_dir: "/".into(),
                ..Default::default()
            };
            f(&mut r);
            r
        };
        let bad_starts: Vec<(api::StartExplorationRequest, &str)> = vec![
            (start(&|r| r.command = String::new()), "command"),
            (start(&|r| r.label = Some(String::new())), "label"),
            (start(&|r| r.label = Some("a\nb".into())), "label"),
            (
                start(&|r| r.working_dir = "relative/dir".into()),
                "working_dir",
            ),
            (
                start(&|r| r.targets = vec!["/no/such/cgroup".into()]),
                "targets",
            ),
            (
                start(&|r| {
                    r.faults = vec![api::Fault {
                        kind: api::FaultKind::Abort as i32,
                        status: 700,
                        delay: None,
                    }]
                }),
                "faults",
            ),
            (
                start(&|r| {
                    r.faults = vec![api::Fault {
                        kind: api::FaultKind::Refuse as i32,
                        ..Default::default()
                    }]
                }),
                "refuse",
            ),
            (
                start(&|r| {
                    r.faults = vec![api::Fault {
                        kind: 99,
                        ..Default::default()
                    }]
                }),
                "faults",
            ),
            (
                start(&|r| {
                    r.run_timeout = Some(prost_types::Duration {
                        seconds: 0,
                        nanos: 0,
                    })
                }),
                "run_timeout",
            ),
            (start(&|r| r.command = "x".repeat(20_000)), "command"),
        ];
        for (request, field) in bad_starts {
            let status = c
                .start_exploration(request)
                .await
                .expect_err("accepted bad input");
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(
                status.message().contains(field),
                "{field}: {}",
                status.message()
            );
        }
        let missing = 424_242;
        let codes = [
            c.watch_exploration(api::WatchExplorationRequest {
                exploration_id: missing,
            })
            .await
            .err()
            .map(|s| s.code()),
            c.cancel_exploration(api::CancelExplorationRequest {
                exploration_id: missing,
            })
            .await
            .err()
            .map(|s| s.code()),
            c.get_report(api::GetReportRequest {
                exploration_id: missing,
                format: 0,
            })
            .await
            .err()
            .map(|s| s.code()),
            c.diff_explorations(api::DiffExplorationsRequest {
                base: missing,
                head: 1,
            })
            .await
            .err()
            .map(|s| s.code()),
            c.replay_execution(api::ReplayExecutionRequest {
                exploration_id: missing,
                execution: 0,
            })
            .await
            .err()
            .map(|s| s.code()),
            c.get_injected_faults(api::GetInjectedFaultsRequest {
                exploration_id: missing,
                execution: 0,
            })
            .await
            .err()
            .map(|s| s.code()),
        ];
        assert!(
            codes.iter().all(|c| *c == Some(Code::NotFound)),
            "{codes:?}"
        );
        let none_running = c
            .get_injected_faults(api::GetInjectedFaultsRequest {
                exploration_id: 0,
                execution: 0,
            })
            .await
            .expect_err("nothing runs");
        assert_eq!(none_running.code(), Code::FailedPrecondition);

        // A good one: a test that takes a while; a second start is refused meanwhile.
        let mut stream = c
            .start_exploration(start(&|r| r.command = "sleep 10".into()))
            .await
            .expect("start")
            .into_inner();
        let first = stream
            .message()
            .await
            .expect("stream")
            .expect("a first message");
        let id = first.exploration_id;
        let busy = c
            .start_exploration(start(&|_| {}))
            .await
            .expect_err("two at once");
        assert_eq!(busy.code(), Code::FailedPrecondition);
        assert!(
            busy.message().contains("fictl explore cancel"),
            "{}",
            busy.message()
        );
        let bad_format = c
            .get_report(api::GetReportRequest {
                exploration_id: id,
                format: 42,
            })
            .await
            .expect_err("unknown format");
        assert_eq!(bad_format.code(), Code::InvalidArgument);
        c.cancel_exploration(api::CancelExplorationRequest { exploration_id: id })
            .await
            .expect("cancel");
        let mut last = first;
        while let Some(p) = stream.message().await.expect("stream") {
            last = p;
        }
        assert_eq!(
            last.status,
            api::ExplorationStatus::Cancelled as i32,
            "{last:?}"
        );
        let again = c
            .cancel_exploration(api::CancelExplorationRequest { exploration_id: id })
            .await
            .expect_err("not running any more");
        assert_eq!(again.code(), Code::FailedPrecondition);
        let listed = c
            .list_explorations(api::ListExplorationsRequest { limit: 0 })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.explorations[0].id, id);
        let diff = c
            .diff_explorations(api::DiffExplorationsRequest { base: id, head: id })
            .await
            .expect("diff of one with itself")
            .into_inner();
        assert!(diff.new_failures.is_empty() && diff.fixed.is_empty());

        // A reset command that fails makes the reference run an error, and the
        // exploration stops saying why.
        let mut stream = c
            .start_exploration(start(&|r| {
                r.reset_command = "echo db down >&2; exit 3".into()
            }))
            .await
            .expect("start")
            .into_inner();
        let mut last = None;
        while let Some(p) = stream.message().await.expect("stream") {
            last = Some(p);
        }
        let last = last.expect("messages");
        assert_eq!(
            last.status,
            api::ExplorationStatus::Failed as i32,
            "{last:?}"
        );
        assert!(last.error.contains("reference run"), "{}", last.error);
        let report = c
            .get_report(api::GetReportRequest {
                exploration_id: last.exploration_id,
                format: api::ReportFormat::Json as i32,
            })
            .await
            .expect("report")
            .into_inner();
        let text = String::from_utf8_lossy(&report.content);
        assert!(
            text.contains("the reset command failed") && text.contains("db down"),
            "{text}"
        );
    });
    assert!(daemon.status().version.len() > 1, "still healthy");
}

/// A second daemon on a busy socket refuses before it loads or attaches anything.
#[test]
fn a_second_daemon_on_a_busy_socket_attaches_nothing() {
    let lab = Lab::new();
    let a = lab.container("a", 1);
    let c = lab.container("c", 3);
    let daemon = Daemon::start(lab.id(), &[&a.host_veth], lab.cgroup());
    let out = std::process::Command::new(fi_tests::process::bin_path("fi-daemon"))
        .args(["--no-veths", &format!("--iface={}", c.host_veth)])
        .arg("--cgroup")
        .arg(lab.cgroup())
        .arg("--socket")
        .arg(daemon.socket())
        .env("FI_LOG", "debug")
        .output()
        .expect("running a second fi-daemon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("already listening"), "{stderr}");
    assert!(
        !stderr.contains("attached"),
        "it attached before refusing:\n{stderr}"
    );
    use aya::programs::TcAttachType;
    assert!(fi_tests::kernel_view::tcx_programs(&c.host_veth, TcAttachType::Egress).is_empty());
    // The first one is untouched.
    assert!(!daemon.status().attachments.is_empty());
}

/// A daemon run in a network namespace sweeps the injector pair that a killed daemon left
/// there (it lists the namespace's own interfaces, not the host's /sys/class/net).
#[test]
fn a_daemon_in_a_network_namespace_sweeps_the_injector_a_killed_daemon_left_there() {
    let lab = Lab::new();
    let ns = lab.container("ns", 9);
    // No process has this pid (above the kernel's pid_max): its daemon is dead.
    let stale = "fii4194400a";
    let out = std::process::Command::new("ip")
        .args([
            "-n",
            &ns.netns,
            "link",
            "add",
            stale,
            "type",
            "veth",
            "peer",
            "name",
            "fii4194400b",
        ])
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let daemon = Daemon::start_in(
        &format!("{}ns", lab.id()),
        lab.cgroup(),
        &["--no-veths".to_owned(), "--iface=".to_owned()],
        Some(&ns.netns),
    );
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.netns, "-o", "link", "show"])
        .output()
        .expect("ip");
    let links = String::from_utf8_lossy(&out.stdout);
    assert!(
        !links.contains(stale),
        "the stale injector is still there:\n{links}"
    );
    assert!(
        links.contains(&format!("fii{}a", daemon.pid())),
        "the daemon's own injector is in the namespace:\n{links}"
    );
    assert!(daemon.stop().success());
}

/// Listings show every matcher and gate; an expired rule stays listed with its counters,
/// can be removed, and is gone once 100 newer ones expired after it.
#[test]
fn listings_show_every_gate_and_expired_rules_live_on_for_a_bounded_while() {
    let lab = Lab::new();
    let daemon = Daemon::start(lab.id(), &[], lab.cgroup());
    let fictl = |args: &[&str]| {
        let (ok, out, err) = daemon.fictl(args);
        assert!(ok, "fictl {args:?}: {err}");
        out
    };
    let added = fictl(&[
        "rules",
        "add",
        "--fault",
        "abort:503",
        "--dst",
        "10.77.0.2",
        "--port",
        "8080",
        "--method",
        "GET",
        "--host",
        "b.svc",
        "--path",
        "/api/*",
        "--percent",
        "30%",
        "--skip",
        "2",
        "--max",
        "5",
        "--ttl",
        "1h",
    ]);
    for shown in [
        "abort:503",
        "b.svc",
        "10.77.0.2",
        ":8080/api/*",
        "GET",
        "skip 2",
        "max 5",
        "ttl ",
    ] {
        assert!(
            added.contains(shown),
            "`rules add` hides {shown:?}: {added}"
        );
    }
    let table = fictl(&["rules", "ls"]);
    for shown in ["30%", "skip 2", "max 5", "left", "PERCENT", "GATES"] {
        assert!(
            table.contains(shown),
            "`rules ls` hides {shown:?}:\n{table}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&fictl(&["--json", "rules", "get", "1"])).expect("JSON");
    assert_eq!(json["probability_ppm"], 300_000, "{json:#}");
    assert_eq!(json["skip_first"], 2, "{json:#}");
    assert_eq!(json["max_injections"], 5, "{json:#}");
    assert_eq!(json["nth"], serde_json::Value::Null, "{json:#}");
    assert_eq!(json["ttl_seconds"], 3600.0, "{json:#}");
    assert!(
        json["ttl_left_seconds"]
            .as_f64()
            .is_some_and(|s| s > 3500.0),
        "{json:#}"
    );
    assert!(
        json["expires_unix_nanos"].as_i64().is_some_and(|t| t > 0),
        "{json:#}"
    );

    // Expired: listed as such, then removable.
    fictl(&[
        "rules", "add", "--fault", "reset", "--path", "/gone", "--ttl", "200ms",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let expired = loop {
        let list: serde_json::Value =
            serde_json::from_str(&fictl(&["--json", "rules", "ls"])).expect("JSON");
        if let Some(rule) = list
            .as_array()
            .and_then(|l| l.iter().find(|r| r["id"] == 2 && r["state"] == "expired"))
        {
            break rule.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never listed as expired: {list:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        expired["matched"].is_u64(),
        "its counters are kept: {expired:#}"
    );
    let stopped: serde_json::Value =
        serde_json::from_str(&fictl(&["--json", "stop"])).expect("JSON");
    assert_eq!(
        stopped["removed"], 1,
        "only rule 1 was in effect: {stopped}"
    );
    fictl(&["rules", "rm", "2"]);
    let (ok, _, err) = daemon.fictl(&["rules", "get", "2"]);
    assert!(!ok && err.contains("no rule 2"), "{err}");

    // The bound: the newest 100 expired rules are kept.
    for _ in 0..101 {
        fictl(&[
            "rules", "add", "--fault", "reset", "--path", "/short", "--ttl", "1ms",
        ]);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let list: serde_json::Value =
        serde_json::from_str(&fictl(&["--json", "rules", "ls"])).expect("JSON");
    let ids: Vec<u64> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    // Rule 1 went with stop (in effect, not expired); rules 3..=103 expired, 3 is gone.
    assert_eq!(ids.len(), 100, "{ids:?}");
    assert!(
        !ids.contains(&3) && ids.contains(&4) && ids.contains(&103),
        "{ids:?}"
    );
}

/// A daemon that sees only someone else's cgroup2 subtree (a bind mount, as under
/// `ip netns exec` on some machines) refuses to start, and says how to start it instead.
#[test]
fn a_daemon_that_sees_only_a_bind_mounted_cgroup_subtree_refuses_to_start() {
    let lab = Lab::new();
    let mount = fi_tests::net::cgroup2_mount();
    let view = std::env::temp_dir().join(format!("fi-test-{}-cgview", lab.id()));
    std::fs::create_dir_all(&view).expect("a mount point");
    let socket = std::env::temp_dir().join(format!("fi-test-{}-foreign.sock", lab.id()));
    // In a mount namespace of its own: the real hierarchy goes, a subtree stays.
    let script = format!(
        "mount --bind {lab_cgroup} {view} && umount -l {mount} && exec {daemon} \
         --no-veths --iface= --cgroup / --socket {socket}",
        lab_cgroup = lab.cgroup().display(),
        view = view.display(),
        mount = mount.display(),
        daemon = fi_tests::process::bin_path("fi-daemon").display(),
        socket = socket.display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir(&view);
    assert!(!out.status.success(), "it started:\n{stderr}");
    assert!(
        stderr.contains("not the machine's own") && stderr.contains("nsenter --net="),
        "{stderr}"
    );
    assert!(!stderr.contains("attached"), "{stderr}");
}
