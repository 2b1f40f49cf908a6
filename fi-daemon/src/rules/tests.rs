use std::sync::{Arc, Mutex};

use super::*;
use crate::targets::{TargetSink, Targets};

#[derive(Default)]
struct Kernel {
    slots: BTreeMap<u32, Rule>,
    count: u32,
    stats: BTreeMap<u32, RuleStats>,
}

#[derive(Clone, Default)]
struct FakeSink(Arc<Mutex<Kernel>>);

impl RuleSink for FakeSink {
    fn set_slot(&mut self, slot: u32, rule: &Rule, _: &AbortResponse) -> Result<(), MapError> {
        self.0.lock().unwrap().slots.insert(slot, *rule);
        Ok(())
    }
    fn set_count(&mut self, count: u32) -> Result<(), MapError> {
        self.0.lock().unwrap().count = count;
        Ok(())
    }
    fn add_stats(&mut self, id: u32) -> Result<(), MapError> {
        self.0
            .lock()
            .unwrap()
            .stats
            .insert(id, RuleStats::default());
        Ok(())
    }
    fn remove_stats(&mut self, id: u32) -> Result<(), MapError> {
        self.0.lock().unwrap().stats.remove(&id);
        Ok(())
    }
    fn stats(&self, id: u32) -> RuleStats {
        self.0
            .lock()
            .unwrap()
            .stats
            .get(&id)
            .copied()
            .unwrap_or_default()
    }
}

struct NoTargets;
impl TargetSink for NoTargets {
    fn insert(&mut self, _: u64) -> Result<(), MapError> {
        Ok(())
    }
    fn remove(&mut self, _: u64) -> Result<(), MapError> {
        Ok(())
    }
}

fn targets() -> Targets {
    Targets::new(std::env::temp_dir(), Box::new(NoTargets))
}

fn capture() -> Vec<String> {
    vec!["traceparent".into(), "x-fi-target".into()]
}

fn draft(fault: Fault) -> Draft {
    Draft {
        fault: Some(fault),
        ..Draft::default()
    }
}

fn field_of(result: Result<Validated, RuleError>) -> &'static str {
    match result {
        Err(RuleError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn every_bad_field_is_named() {
    let t = targets();
    let c = capture();
    let check = |d: Draft| field_of(validate(d, &c, &t));
    assert_eq!(check(Draft::default()), "fault.kind");
    assert_eq!(
        check(Draft {
            destination: Some("10.0.0.300".into()),
            ..draft(Fault::Reset)
        }),
        "match.destination"
    );
    assert_eq!(
        check(Draft {
            destination: Some("10.0.0.0/33".into()),
            ..draft(Fault::Reset)
        }),
        "match.destination"
    );
    assert_eq!(
        check(Draft {
            port: Some(70000),
            ..draft(Fault::Reset)
        }),
        "match.port"
    );
    assert_eq!(
        check(Draft {
            methods: vec!["FETCH".into()],
            ..draft(Fault::Reset)
        }),
        "match.methods"
    );
    assert_eq!(
        check(Draft {
            host: Some("a b".into()),
            ..draft(Fault::Reset)
        }),
        "match.host"
    );
    assert_eq!(
        check(Draft {
            host: Some("b:8080".into()),
            ..draft(Fault::Reset)
        }),
        "match.host"
    );
    assert_eq!(
        check(Draft {
            path: Some("api".into()),
            ..draft(Fault::Reset)
        }),
        "match.path"
    );
    assert_eq!(
        check(Draft {
            path: Some("/a?b".into()),
            ..draft(Fault::Reset)
        }),
        "match.path"
    );
    assert_eq!(
        check(Draft {
            header_name: Some("x-other".into()),
            header_value: Some("v".into()),
            ..draft(Fault::Reset)
        }),
        "match.header_name"
    );
    assert_eq!(
        check(Draft {
            header_value: Some("v".into()),
            ..draft(Fault::Reset)
        }),
        "match.header_name"
    );
    assert_eq!(
        check(Draft {
            header_name: Some("x-fi-target".into()),
            ..draft(Fault::Reset)
        }),
        "match.header_value"
    );
    assert_eq!(
        check(Draft {
            path: Some("/x".into()),
            ..draft(Fault::Refuse)
        }),
        "fault.kind"
    );
    assert_eq!(
        check(Draft {
            probability_ppm: Some(1_000_001),
            ..draft(Fault::Reset)
        }),
        "probability_ppm"
    );
    assert_eq!(
        check(Draft {
            nth: Some(2),
            skip_first: Some(1),
            ..draft(Fault::Reset)
        }),
        "nth"
    );
    assert!(matches!(
        validate(
            Draft {
                container: Some("/no/such/cgroup-fi".into()),
                ..draft(Fault::Reset)
            },
            &c,
            &t
        ),
        Err(RuleError::Container(_))
    ));
}

#[test]
fn a_full_rule_sets_every_matcher() {
    let d = Draft {
        destination: Some("10.77.0.0/24".into()),
        port: Some(8080),
        methods: vec!["get".into(), "POST".into()],
        host: Some("*.svc.local".into()),
        path: Some("/api/*".into()),
        header_name: Some("X-Fi-Target".into()),
        header_value: Some("user-42".into()),
        probability_ppm: Some(300_000),
        ..draft(Fault::Abort(503))
    };
    let v = validate(d, &capture(), &targets()).unwrap();
    let k = v.kernel;
    for flag in [
        MATCH_DST,
        MATCH_PORT,
        MATCH_METHOD,
        MATCH_HOST,
        MATCH_HOST_SUFFIX,
        MATCH_PATH,
        MATCH_PATH_PREFIX,
        MATCH_HEADER,
    ] {
        assert_ne!(k.flags & flag, 0, "flag {flag:#x}");
    }
    assert_eq!(k.dst_prefix, 96 + 24);
    assert_eq!(k.header_slot, 1);
    assert_eq!(k.host_hash, fnv(b"svc.local"));
    assert_eq!(k.path_hash, fnv(b"/api/"));
    assert_eq!(k.probability_ppm, 300_000);
    let response = v.response.unwrap();
    assert_eq!(response.len % 4, 0);
    let text = std::str::from_utf8(&response.bytes[..response.len as usize]).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{text}"
    );
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{text}"
    );
}

#[test]
fn abort_responses_parse_as_http_for_every_status() {
    for status in [200, 404, 429, 500, 503, 599] {
        let r = abort_response(status);
        let parsed = fi_common::http::parse_response(
            &r.bytes[..r.len as usize],
            &fi_common::http::CaptureConfig::EMPTY,
        )
        .unwrap();
        assert_eq!(parsed.status, status);
        assert_eq!(parsed.message_len(1), Some(r.len));
    }
}

#[test]
fn precedence_is_priority_then_creation_and_stop_clears_everything() {
    let sink = FakeSink::default();
    let mut rules = Rules::new(Box::new(sink.clone()));
    let v = |priority| {
        validate(
            Draft {
                priority,
                ..draft(Fault::Reset)
            },
            &capture(),
            &targets(),
        )
        .unwrap()
    };
    let a = rules.create(v(0)).unwrap();
    let b = rules.create(v(10)).unwrap();
    let c = rules.create(v(0)).unwrap();
    {
        let k = sink.0.lock().unwrap();
        assert_eq!(k.count, 3);
        let order: Vec<u32> = (0..3).map(|s| k.slots[&s].id).collect();
        assert_eq!(order, [b, a, c]);
    }
    rules.delete(a).unwrap();
    assert!(matches!(rules.delete(a), Err(RuleError::NotFound(_))));
    {
        let k = sink.0.lock().unwrap();
        assert_eq!(k.count, 2);
        assert_eq!(k.slots[&1].id, c);
        assert!(!k.stats.contains_key(&a));
    }
    assert_eq!(rules.stop_all().unwrap(), 2);
    let k = sink.0.lock().unwrap();
    assert_eq!(k.count, 0);
    assert!(k.stats.is_empty());
}

#[test]
fn expired_rules_leave_the_kernel_and_keep_their_counters() {
    let sink = FakeSink::default();
    let mut rules = Rules::new(Box::new(sink.clone()));
    let d = Draft {
        ttl: Some(Duration::from_millis(1)),
        ..draft(Fault::Reset)
    };
    let id = rules
        .create(validate(d, &capture(), &targets()).unwrap())
        .unwrap();
    assert_ne!(
        sink.0.lock().unwrap().slots[&0].expires_ns,
        0,
        "the kernel knows the expiry"
    );
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(rules.expire().unwrap(), [id]);
    assert_eq!(sink.0.lock().unwrap().count, 0);
    assert_eq!(rules.get(id).unwrap().state, State::Expired);
    // Listed, and removable, while expired; `stop` counts only what was in effect.
    assert_eq!(rules.list().len(), 1);
    assert_eq!(rules.stop_all().unwrap(), 0);
    rules.delete(id).unwrap();
    assert!(matches!(rules.get(id), Err(RuleError::NotFound(_))));
}

#[test]
fn only_the_newest_expired_rules_are_kept() {
    let sink = FakeSink::default();
    let mut rules = Rules::new(Box::new(sink.clone()));
    let d = Draft {
        ttl: Some(Duration::from_nanos(1)),
        ..draft(Fault::Reset)
    };
    let ids: Vec<u32> = (0..FINISHED + 5)
        .map(|_| {
            rules
                .create(validate(d.clone(), &capture(), &targets()).unwrap())
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1));
    rules.expire().unwrap();
    let listed: Vec<u32> = rules.list().iter().map(|v| v.id).collect();
    assert_eq!(listed, ids[5..], "the last {FINISHED}, oldest gone");
}

#[test]
fn cidrs_parse_for_both_families() {
    assert_eq!(
        parse_cidr("10.0.0.2"),
        Some((v4_mapped([10, 0, 0, 2]), 128))
    );
    assert_eq!(
        parse_cidr("10.0.0.0/8"),
        Some((v4_mapped([10, 0, 0, 0]), 104))
    );
    assert_eq!(parse_cidr("fd00::/64").map(|(_, p)| p), Some(64));
    assert_eq!(parse_cidr("[fd00::2]").map(|(_, p)| p), Some(128));
    assert_eq!(parse_cidr("nope"), None);
    assert_eq!(parse_cidr("::/129"), None);
}

#[test]
fn an_empty_or_zero_value_is_refused_never_read_as_any() {
    let t = targets();
    let c = capture();
    let check = |d: Draft| field_of(validate(d, &c, &t));
    let empty = || Some(String::new());
    let cases: Vec<(Draft, &str)> = vec![
        (
            Draft {
                container: empty(),
                ..draft(Fault::Reset)
            },
            "match.container",
        ),
        (
            Draft {
                destination: empty(),
                ..draft(Fault::Reset)
            },
            "match.destination",
        ),
        (
            Draft {
                host: empty(),
                ..draft(Fault::Reset)
            },
            "match.host",
        ),
        (
            Draft {
                path: empty(),
                ..draft(Fault::Reset)
            },
            "match.path",
        ),
        (
            Draft {
                header_name: empty(),
                header_value: Some("v".into()),
                ..draft(Fault::Reset)
            },
            "match.header_name",
        ),
        (
            Draft {
                header_name: Some("x-fi-target".into()),
                header_value: empty(),
                ..draft(Fault::Reset)
            },
            "match.header_value",
        ),
        (
            Draft {
                methods: vec![String::new()],
                ..draft(Fault::Reset)
            },
            "match.methods",
        ),
        (
            Draft {
                port: Some(0),
                ..draft(Fault::Reset)
            },
            "match.port",
        ),
        (
            Draft {
                probability_ppm: Some(0),
                ..draft(Fault::Reset)
            },
            "probability_ppm",
        ),
        (
            Draft {
                max_injections: Some(0),
                ..draft(Fault::Reset)
            },
            "max_injections",
        ),
        (
            Draft {
                nth: Some(0),
                ..draft(Fault::Reset)
            },
            "nth",
        ),
        (
            Draft {
                skip_first: Some(0),
                ..draft(Fault::Reset)
            },
            "skip_first",
        ),
        (
            Draft {
                ttl: Some(Duration::ZERO),
                ..draft(Fault::Reset)
            },
            "ttl",
        ),
    ];
    for (d, field) in cases {
        let shown = format!("{d:?}");
        assert_eq!(check(d), field, "{shown}");
    }
}

#[test]
fn odd_wildcards_control_characters_and_interim_statuses_are_refused() {
    let t = targets();
    let c = capture();
    let check = |d: Draft| field_of(validate(d, &c, &t));
    for path in ["/a*b", "/**", "/a*", "*", "/a/*/b", "/a/**", "a/*"] {
        let d = Draft {
            path: Some(path.into()),
            ..draft(Fault::Reset)
        };
        assert_eq!(check(d), "match.path", "{path}");
    }
    for host in ["a\r\nb", "b.svc\n", "a*b", "*", "*."] {
        let d = Draft {
            host: Some(host.into()),
            ..draft(Fault::Reset)
        };
        assert_eq!(check(d), "match.host", "{host:?}");
    }
    let d = Draft {
        header_name: Some("x-fi-target".into()),
        header_value: Some("u\r\nx-evil: 1".into()),
        ..draft(Fault::Reset)
    };
    assert_eq!(check(d), "match.header_value");
    let d = Draft {
        description: "a\u{1b}[2J".into(),
        ..draft(Fault::Reset)
    };
    assert_eq!(check(d), "description");
    let d = Draft {
        destination: Some("a".repeat(MAX_FIELD + 1)),
        ..draft(Fault::Reset)
    };
    assert_eq!(check(d), "match.destination");
}

#[test]
fn the_edge_values_that_are_valid_are_accepted() {
    let t = targets();
    let c = capture();
    let ok = |d: Draft| validate(d, &c, &t).unwrap_or_else(|e| panic!("{e}"));
    for path in ["/", "/*", "/api/*", "/a"] {
        ok(Draft {
            path: Some(path.into()),
            ..draft(Fault::Reset)
        });
    }
    let k = ok(Draft {
        path: Some("/*".into()),
        ..draft(Fault::Reset)
    })
    .kernel;
    assert_eq!((k.path_hash, k.path_len), (fnv(b"/"), 1));
    for port in [1, 65_535] {
        ok(Draft {
            port: Some(port),
            ..draft(Fault::Reset)
        });
    }
    for ppm in [1, 1_000_000] {
        ok(Draft {
            probability_ppm: Some(ppm),
            ..draft(Fault::Reset)
        });
    }
    for n in [1, u32::MAX] {
        ok(Draft {
            max_injections: Some(n),
            nth: Some(n),
            ..draft(Fault::Reset)
        });
        ok(Draft {
            skip_first: Some(n),
            ..draft(Fault::Reset)
        });
    }
    for status in [200, 599] {
        ok(draft(Fault::Abort(status)));
    }
    ok(Draft {
        ttl: Some(Duration::from_nanos(1)),
        ..draft(Fault::Reset)
    });
    ok(Draft {
        ttl: Some(Duration::from_secs(30 * 86_400)),
        ..draft(Fault::Reset)
    });
    ok(Draft {
        description: "d".repeat(MAX_DESCRIPTION),
        ..draft(Fault::Reset)
    });
}

/// The one fault grammar end to end: fictl's text, the API message, the rule engine's
/// kernel rule, and back to the same text.
#[test]
fn every_fault_round_trips_from_text_through_the_api_and_the_kernel_rule() {
    let t = targets();
    let c = capture();
    for text in [
        "timeout",
        "reset",
        "refuse",
        "response-lost",
        "abort:200",
        "abort:503",
        "abort:599",
        "delay:1ms",
        "delay:250ms",
        "delay:1s500ms",
        "delay:1m",
    ] {
        let parsed: Fault = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        let message = fi_api::v1::Fault::from(parsed);
        let from_api = fi_api::fault::from_api(&message)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .expect("a fault");
        let validated = validate(draft(from_api), &c, &t).unwrap_or_else(|e| panic!("{text}: {e}"));
        let back = Fault::of_rule(&validated.kernel).expect("a known code");
        assert_eq!(back.to_string(), text);
        if let Fault::Abort(status) = back {
            let response = validated.response.expect("an abort has its response");
            let head =
                String::from_utf8_lossy(&response.bytes[..response.len as usize]).into_owned();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        }
    }
}
