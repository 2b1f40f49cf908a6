//! The control plane: malformed input never hurts the daemon, and its socket lets no one
//! in who does not belong.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use fi_daemon::{api::v1 as api, client};
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

/// A rule request with at least one field made invalid.
fn malformed(rng: &mut Rng) -> api::CreateRuleRequest {
    let mut req = api::CreateRuleRequest {
        r#match: Some(api::Match {
            destination: rng
                .pick(&["", "10.77.0.2", "10.77.0.0/24", "fd77::/64"])
                .to_owned(),
            port: [0u32, 80, 8080][(rng.next() % 3) as usize],
            methods: if rng.next().is_multiple_of(2) {
                vec![]
            } else {
                vec!["GET".into()]
            },
            host: rng.pick(&["", "b.svc", "*.svc"]).to_owned(),
            path: rng.pick(&["", "/a", "/api/*"]).to_owned(),
            ..Default::default()
        }),
        fault: Some(api::Fault {
            kind: api::FaultKind::Reset as i32,
            ..Default::default()
        }),
        probability_ppm: (rng.next() % 1_000_001) as u32,
        ..Default::default()
    };
    let m = req.r#match.as_mut().expect("set above");
    let f = req.fault.as_mut().expect("set above");
    match rng.next() % 16 {
        0 => f.kind = [0, 7, 99, -1][(rng.next() % 4) as usize],
        1 => {
            f.kind = api::FaultKind::Abort as i32;
            f.status = [0, 99, 600, 1000, u32::MAX][(rng.next() % 5) as usize];
        }
        2 => {
            f.kind = api::FaultKind::Delay as i32;
            f.delay = [
                None,
                Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                }),
                Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
            ][(rng.next() % 3) as usize];
        }
        3 => m.destination = format!("{}!", rng.junk(40)),
        4 => m.port = 65_536 + (rng.next() % 1_000_000) as u32,
        5 => m.methods = vec![rng.junk(12).to_lowercase() + "x"],
        6 => m.host = format!("{} {}", rng.junk(10), rng.junk(10)),
        7 => m.path = format!("x{}", rng.junk(30)),
        8 => {
            m.header_name = format!("x-{}", rng.next());
            m.header_value = "v".into();
        }
        9 => m.header_value = rng.junk(20) + "v",
        10 => req.probability_ppm = 1_000_001 + (rng.next() % 1_000_000) as u32,
        11 => {
            req.nth = 1 + (rng.next() % 5) as u32;
            req.skip_first = 1 + (rng.next() % 5) as u32;
        }
        12 => {
            req.ttl = Some(prost_types::Duration {
                seconds: -5,
                nanos: 0,
            })
        }
        13 => req.description = "d".repeat(1025 + (rng.next() % 5000) as usize),
        14 => m.container = format!("/no/such/{}", rng.next()),
        _ => {
            f.kind = api::FaultKind::Refuse as i32;
            m.path = "/x".into();
        }
    }
    req
}

#[test]
fn a_thousand_malformed_rules_are_each_refused_as_invalid_and_the_daemon_stays_healthy() {
    let lab = Lab::new();
    let daemon = Daemon::start(lab.id(), &[], lab.cgroup());
    fi_tests::block_on(async {
        let mut rules = client::rules(daemon.socket()).await.expect("connect");
        let mut rng = Rng(0x5eed_f00d_1234_5678);
        for i in 0..1000 {
            let req = malformed(&mut rng);
            let shown = format!("{req:?}");
            match rules.create_rule(req).await {
                Ok(rule) => panic!(
                    "request {i} was accepted as rule {}: {shown}",
                    rule.get_ref().id
                ),
                Err(status) => assert_eq!(
                    status.code(),
                    tonic::Code::InvalidArgument,
                    "request {i}: {status:?} for {shown}"
                ),
            }
        }
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
    });
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
    use fi_daemon::api::v1 as api;
    use tonic::Code;
    let lab = Lab::new();
    let daemon = Daemon::start(lab.id(), &["lo"], lab.cgroup());
    fi_tests::block_on(async {
        let mut c = fi_daemon::client::explore(daemon.socket())
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
