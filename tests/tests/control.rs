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
            methods: if rng.next() % 2 == 0 {
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
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
