use super::*;

fn config() -> CaptureConfig {
    CaptureConfig::from_names(["traceparent", "X-Fi-Target"]).unwrap()
}

fn req(bytes: &[u8]) -> RequestHead {
    parse_request(bytes, &config()).unwrap_or_else(|e| panic!("{e:?} for {bytes:?}"))
}

fn text(bytes: &[u8]) -> &str {
    core::str::from_utf8(bytes).unwrap()
}

#[test]
fn every_standard_method_is_recognized() {
    for method in Method::ALL {
        let raw = format!("{} /x HTTP/1.1\r\nHost: a\r\n\r\n", method.as_str());
        let head = req(raw.as_bytes());
        assert_eq!(Method::from_u8(head.method), Some(method));
        assert_eq!(text(head.path_bytes()), "/x");
    }
}

#[test]
fn near_methods_are_not_http() {
    for raw in [
        &b"GETX / HTTP/1.1\r\n"[..],
        b"get / HTTP/1.1\r\n",
        b"POS / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"",
        b"G",
    ] {
        assert_eq!(
            parse_request(raw, &config()),
            Err(ParseError::NotHttp),
            "{raw:?}"
        );
    }
}

#[test]
fn origin_form_with_query_host_and_version() {
    let head = req(
        b"GET /api/v1/users?id=7&x=%20 HTTP/1.1\r\nHost: users.svc:8080\r\nAccept: */*\r\n\r\n",
    );
    assert_eq!(text(head.path_bytes()), "/api/v1/users?id=7&x=%20");
    assert_eq!(text(head.host_bytes()), "users.svc:8080");
    assert_eq!(head.version_minor, 1);
    assert_eq!(head.flags & FLAG_ABSOLUTE_FORM, 0);
    assert_eq!(head.message_len(), Some(head.head_len));
}

#[test]
fn http_1_0_without_host() {
    let head = req(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(head.version_minor, 0);
    assert_eq!(head.host_len, 0);
    assert_eq!(head.head_len, 18);
}

#[test]
fn absolute_form_gives_its_path_and_its_authority_as_host() {
    let head = req(b"GET http://b.example:81/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(text(head.path_bytes()), "/p?q=1");
    assert_eq!(text(head.host_bytes()), "b.example:81");
    assert_ne!(head.flags & FLAG_ABSOLUTE_FORM, 0);
    // Authority-form (CONNECT) is kept whole.
    let head = req(b"CONNECT b.example:443 HTTP/1.1\r\n\r\n");
    assert_eq!(text(head.path_bytes()), "b.example:443");
}

#[test]
fn bare_lf_ends_lines_as_servers_accept() {
    let head = req(b"GET /a HTTP/1.1\nHost: b\n\n");
    assert_eq!(text(head.path_bytes()), "/a");
    assert_eq!(text(head.host_bytes()), "b");
    assert_eq!(head.head_len, 25);
}

#[test]
fn header_names_match_case_insensitively_and_exactly() {
    let head = req(
        b"GET / HTTP/1.1\r\nhostname: wrong\r\nX-Host: wrong\r\nHOST:   right\r\n\
        TraceParent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\
        x-fi-target-not: no\r\nx-fi-targe: no\r\nX-FI-TARGET: user-42\r\n\r\n",
    );
    assert_eq!(text(head.host_bytes()), "right");
    assert_eq!(
        text(head.header_bytes(0).unwrap()),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(text(head.header_bytes(1).unwrap()), "user-42");
    assert_eq!(head.header_bytes(2), None);
}

#[test]
fn absent_captured_headers_are_none() {
    let head = req(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(head.header_bytes(0), None);
    assert_eq!(head.header_bytes(1), None);
}

#[test]
fn long_targets_are_truncated_with_a_flag_and_the_rest_still_parses() {
    let long = "/".to_owned() + &"a".repeat(300);
    let raw = format!("GET {long} HTTP/1.1\r\nHost: h\r\nX-Fi-Target: t\r\n\r\n");
    let head = req(raw.as_bytes());
    assert_ne!(head.flags & FLAG_PATH_TRUNCATED, 0);
    assert_eq!(head.path_len as usize, long.len());
    assert_eq!(text(head.path_bytes()), &long[..PATH_LEN]);
    assert_eq!(text(head.host_bytes()), "h");
    assert_eq!(text(head.header_bytes(1).unwrap()), "t");
    assert_eq!(head.head_len as usize, raw.len());
}

#[test]
fn long_host_and_header_values_are_truncated_with_flags() {
    let host = "h".repeat(100);
    let raw = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nx-fi-target: {}\r\n\r\n",
        "v".repeat(90)
    );
    let head = req(raw.as_bytes());
    assert_eq!(head.host_bytes().len(), HOST_LEN);
    assert_ne!(head.flags & FLAG_HOST_TRUNCATED, 0);
    assert_eq!(head.header_bytes(1).unwrap().len(), HEADER_VALUE_LEN);
    assert_ne!(head.flags & FLAG_HEADER_TRUNCATED, 0);
}

#[test]
fn content_length_gives_the_next_message_offset() {
    let raw = b"POST /orders HTTP/1.1\r\nHost: o\r\nContent-Length: 11\r\n\r\n{\"qty\": 1}\n";
    let head = req(raw);
    assert_ne!(head.flags & FLAG_CONTENT_LENGTH, 0);
    assert_eq!(head.content_length, 11);
    assert_eq!(head.message_len(), Some(raw.len() as u32));
}

#[test]
fn chunked_bodies_have_no_known_end() {
    let head =
        req(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    assert_ne!(head.flags & FLAG_CHUNKED, 0);
    assert_eq!(head.message_len(), None);
}

#[test]
fn a_bad_content_length_is_not_trusted() {
    let head = req(b"POST / HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n");
    assert_eq!(head.message_len(), None);
}

#[test]
fn pipelined_requests_parse_one_after_another() {
    let raw = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nPOST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcDELETE /three HTTP/1.1\r\n\r\n";
    let mut offset = 0usize;
    let mut paths = Vec::new();
    while offset < raw.len() {
        let head = req(&raw[offset..]);
        paths.push(text(head.path_bytes()).to_owned());
        offset += head.message_len().unwrap() as usize;
    }
    assert_eq!(paths, ["/one", "/two", "/three"]);
    assert_eq!(offset, raw.len());
}

#[test]
fn a_head_cut_by_the_end_of_the_bytes_is_flagged_incomplete() {
    let head = req(b"GET /partial HTTP/1.1\r\nHost: a\r\nAcc");
    assert_ne!(head.flags & FLAG_HEAD_INCOMPLETE, 0);
    assert_eq!(text(head.path_bytes()), "/partial");
    assert_eq!(head.message_len(), None);
}

#[test]
fn grammar_violations_are_invalid() {
    for raw in [
        &b"GET  / HTTP/1.1\r\n\r\n"[..],
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / HTTP/1.1\r\r\n",
        b"GET /a\x01b HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\rX\r\n\r\n",
    ] {
        assert_eq!(
            parse_request(raw, &config()),
            Err(ParseError::Invalid),
            "{raw:?}"
        );
    }
}

#[test]
fn responses_give_status_and_body_length() {
    let c = config();
    let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", &c).unwrap();
    assert_eq!((r.status, r.version_minor), (200, 1));
    assert_eq!(r.message_len(Method::Get as u8), Some(43));
    let r = parse_response(b"HTTP/1.0 503 Service Unavailable\r\n\r\n", &c).unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.message_len(Method::Get as u8), None, "delimited by close");
    let r = parse_response(b"HTTP/1.1 204\r\n\r\n", &c).unwrap();
    assert_eq!(r.message_len(Method::Delete as u8), Some(r.head_len));
    let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", &c).unwrap();
    assert_eq!(
        r.message_len(Method::Head as u8),
        Some(r.head_len),
        "HEAD has no body"
    );
    let r = parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", &c).unwrap();
    assert_eq!(r.message_len(Method::Get as u8), None);
}

#[test]
fn non_responses_are_not_http() {
    let c = config();
    for raw in [
        &b"HTTP/2 200\r\n"[..],
        b"HTTP/1.1 20\r\n",
        b"HTTP/1.1 099 x",
        b"GET / HTTP/1.1",
    ] {
        assert_eq!(parse_response(raw, &c), Err(ParseError::NotHttp), "{raw:?}");
    }
}

#[test]
fn capture_config_validates_names() {
    assert_eq!(
        CaptureConfig::from_names(["a", "b", "c", "d", "e"]),
        Err(CaptureConfigError::TooMany)
    );
    assert_eq!(
        CaptureConfig::from_names([""]),
        Err(CaptureConfigError::BadLength(0))
    );
    assert_eq!(
        CaptureConfig::from_names(["ok", &"x".repeat(33)]),
        Err(CaptureConfigError::BadLength(1))
    );
    assert_eq!(
        CaptureConfig::from_names(["bad name"]),
        Err(CaptureConfigError::BadChar(0))
    );
    let c = CaptureConfig::from_names(["X-Fi-Target"]).unwrap();
    assert_eq!(&c.names[0][..11], b"x-fi-target");
    assert_eq!(c.lens, [11, 0, 0, 0]);
}

/// Hostile input: random bytes, and random mutations of a valid request, never panic and
/// never report more than was there.
#[test]
fn random_and_mutated_input_never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid =
        b"POST /a/b?c=d HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nX-Fi-Target: u\r\n\r\nok";
    let c = config();
    for round in 0..20_000 {
        let mut bytes = if round % 2 == 0 {
            valid.to_vec()
        } else {
            (0..(next() % 300)).map(|_| next() as u8).collect()
        };
        if !bytes.is_empty() {
            for _ in 0..(next() % 4) {
                let i = next() as usize % bytes.len();
                bytes[i] = next() as u8;
            }
        }
        if let Ok(head) = parse_request(&bytes, &c) {
            assert!(head.path_bytes().len() <= PATH_LEN);
            assert!(head.head_len as usize <= bytes.len());
        }
        if let Ok(head) = parse_response(&bytes, &c) {
            assert!(head.head_len as usize <= bytes.len());
        }
    }
}
