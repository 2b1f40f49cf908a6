use super::*;
use crate::{
    flow::v4_mapped,
    http::{CaptureConfig, Method, parse_request_with_digest},
};

fn config() -> CaptureConfig {
    CaptureConfig::from_names(["traceparent", "x-fi-target"]).unwrap()
}

fn digest(raw: &[u8]) -> (u8, [u8; 4], RequestDigest) {
    let (head, d) = parse_request_with_digest(raw, &config()).unwrap();
    (head.method, head.header_lens, d)
}

fn rule() -> Rule {
    Rule {
        flags: RULE_ACTIVE,
        probability_ppm: 1_000_000,
        ..Rule::EMPTY
    }
}

fn matches(r: &Rule, raw: &[u8]) -> bool {
    let (m, lens, d) = digest(raw);
    matches_request(r, m, &lens, &d)
}

#[test]
fn host_exact_ignores_case_and_port() {
    let mut r = rule();
    r.flags |= MATCH_HOST;
    r.host_hash = fnv(b"api.example.com");
    assert!(matches(
        &r,
        b"GET / HTTP/1.1\r\nHost: API.Example.com:8443\r\n\r\n"
    ));
    assert!(matches(
        &r,
        b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
    ));
    assert!(!matches(
        &r,
        b"GET / HTTP/1.1\r\nHost: x.api.example.com\r\n\r\n"
    ));
    assert!(!matches(&r, b"GET / HTTP/1.1\r\n\r\n"), "no Host, no match");
}

#[test]
fn host_suffix_matches_the_domain_and_below_only() {
    let mut r = rule();
    r.flags |= MATCH_HOST | MATCH_HOST_SUFFIX;
    r.host_hash = fnv(b"example.com");
    assert!(matches(&r, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"));
    assert!(matches(
        &r,
        b"GET / HTTP/1.1\r\nHost: a.b.example.com:80\r\n\r\n"
    ));
    assert!(!matches(
        &r,
        b"GET / HTTP/1.1\r\nHost: badexample.com\r\n\r\n"
    ));
    assert!(!matches(
        &r,
        b"GET / HTTP/1.1\r\nHost: example.com.evil\r\n\r\n"
    ));
}

#[test]
fn ipv6_literal_hosts_keep_their_colons() {
    let mut r = rule();
    r.flags |= MATCH_HOST;
    r.host_hash = fnv(b"[fd00::2]");
    assert!(matches(
        &r,
        b"GET / HTTP/1.1\r\nHost: [fd00::2]:8080\r\n\r\n"
    ));
}

#[test]
fn path_exact_and_prefix_ignore_the_query() {
    let mut exact = rule();
    exact.flags |= MATCH_PATH;
    exact.path_hash = fnv(b"/api/users");
    exact.path_len = 10;
    assert!(matches(&exact, b"GET /api/users?id=1 HTTP/1.1\r\n\r\n"));
    assert!(!matches(&exact, b"GET /api/users/1 HTTP/1.1\r\n\r\n"));
    let mut prefix = exact;
    prefix.flags |= MATCH_PATH_PREFIX;
    assert!(matches(&prefix, b"GET /api/users/1 HTTP/1.1\r\n\r\n"));
    assert!(matches(&prefix, b"GET /api/users HTTP/1.1\r\n\r\n"));
    assert!(!matches(&prefix, b"GET /api/use HTTP/1.1\r\n\r\n"));
    assert!(!matches(&prefix, b"GET /api?/users HTTP/1.1\r\n\r\n"));
}

#[test]
fn exact_paths_longer_than_what_is_kept_still_match_exactly() {
    let long = format!("/{}", "x".repeat(300));
    let mut r = rule();
    r.flags |= MATCH_PATH;
    r.path_hash = fnv(long.as_bytes());
    r.path_len = long.len() as u32;
    assert!(matches(
        &r,
        format!("GET {long} HTTP/1.1\r\n\r\n").as_bytes()
    ));
    assert!(!matches(
        &r,
        format!("GET {long}y HTTP/1.1\r\n\r\n").as_bytes()
    ));
}

#[test]
fn header_value_must_be_present_and_equal() {
    let mut r = rule();
    r.flags |= MATCH_HEADER;
    r.header_slot = 1;
    r.header_hash = fnv(b"user-42");
    assert!(matches(
        &r,
        b"GET / HTTP/1.1\r\nX-Fi-Target: user-42\r\n\r\n"
    ));
    assert!(!matches(
        &r,
        b"GET / HTTP/1.1\r\nX-Fi-Target: user-43\r\n\r\n"
    ));
    assert!(!matches(&r, b"GET / HTTP/1.1\r\n\r\n"));
    assert!(
        !matches(&r, b"GET / HTTP/1.1\r\ntraceparent: user-42\r\n\r\n"),
        "other slot"
    );
}

#[test]
fn methods_are_a_set() {
    let mut r = rule();
    r.flags |= MATCH_METHOD;
    r.method_mask = (1 << Method::Post as u8) | (1 << Method::Put as u8);
    assert!(matches(&r, b"POST / HTTP/1.1\r\n\r\n"));
    assert!(matches(&r, b"PUT / HTTP/1.1\r\n\r\n"));
    assert!(!matches(&r, b"GET / HTTP/1.1\r\n\r\n"));
}

fn flow(cgroup: u64, ancestors: &[u64]) -> FlowState {
    let mut a = [0; CGROUP_LEVELS];
    a[..ancestors.len()].copy_from_slice(ancestors);
    FlowState::new(1, cgroup, a)
}

fn key(server: [u8; 4], port: u16) -> FlowKey {
    FlowKey {
        client: v4_mapped([10, 0, 0, 1]),
        server: v4_mapped(server),
        client_port: 40000,
        server_port: port,
        _pad: 0,
    }
}

#[test]
fn containers_match_with_their_descendants() {
    let mut r = rule();
    r.flags |= MATCH_CGROUP;
    r.cgroup_id = 20;
    let k = key([10, 0, 0, 2], 80);
    assert!(matches_connection(&r, &flow(20, &[10, 20]), &k, 0));
    assert!(
        matches_connection(&r, &flow(30, &[10, 20, 30]), &k, 0),
        "a child cgroup"
    );
    assert!(
        !matches_connection(&r, &flow(21, &[10, 21]), &k, 0),
        "a sibling"
    );
}

#[test]
fn destinations_match_by_cidr_and_port() {
    let mut r = rule();
    r.flags |= MATCH_DST | MATCH_PORT;
    r.dst_addr = v4_mapped([10, 77, 0, 0]);
    r.dst_prefix = 96 + 24;
    r.dst_port = 8080;
    let f = flow(1, &[]);
    assert!(matches_connection(&r, &f, &key([10, 77, 0, 9], 8080), 0));
    assert!(!matches_connection(&r, &f, &key([10, 77, 1, 9], 8080), 0));
    assert!(!matches_connection(&r, &f, &key([10, 77, 0, 9], 8081), 0));
    r.dst_prefix = 128;
    r.dst_addr = v4_mapped([10, 77, 0, 9]);
    assert!(matches_connection(&r, &f, &key([10, 77, 0, 9], 8080), 0));
    assert!(!matches_connection(&r, &f, &key([10, 77, 0, 8], 8080), 0));
}

#[test]
fn inactive_and_expired_rules_match_nothing() {
    let f = flow(1, &[]);
    let k = key([1, 2, 3, 4], 80);
    let mut r = rule();
    r.expires_ns = 1000;
    assert!(matches_connection(&r, &f, &k, 999));
    assert!(!matches_connection(&r, &f, &k, 1000));
    r.flags = 0;
    assert!(!matches_connection(&r, &f, &k, 0));
}

#[test]
fn gates_skip_pick_the_nth_and_sample() {
    let mut r = rule();
    r.skip_first = 2;
    assert!(!gates_open(&r, 1, 0));
    assert!(!gates_open(&r, 2, 0));
    assert!(gates_open(&r, 3, 0));
    r.skip_first = 0;
    r.nth = 4;
    assert!(!gates_open(&r, 3, 0));
    assert!(gates_open(&r, 4, 0));
    assert!(!gates_open(&r, 5, 0));
    r.nth = 0;
    r.probability_ppm = 300_000;
    assert!(gates_open(&r, 1, 299_999));
    assert!(!gates_open(&r, 1, 300_000));
}

#[test]
fn prefixes_cover_whole_bytes_and_bits() {
    let a = v4_mapped([192, 168, 1, 130]);
    assert!(in_prefix(&a, &v4_mapped([192, 168, 1, 128]), 96 + 25));
    assert!(!in_prefix(&a, &v4_mapped([192, 168, 1, 0]), 96 + 25));
    assert!(in_prefix(&a, &[0; 16], 0), "/0 is everything");
}
