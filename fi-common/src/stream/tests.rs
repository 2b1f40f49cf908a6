use super::*;
use crate::http::{CaptureConfig, FLAG_ABSOLUTE_FORM, RequestHead};

fn config() -> CaptureConfig {
    CaptureConfig::from_names(["x-user"]).expect("config")
}

/// Feeds `bytes` cut at `cuts` (offsets), as segments of one stream from seq 1000.
fn feed_cut(bytes: &[u8], cuts: &[usize]) -> (RequestStream, Vec<(usize, RequestHead)>) {
    let config = config();
    let mut stream = RequestStream::new();
    // As sock_ops does when the connection is established: the stream starts here.
    stream.sync(1000);
    let mut parser = RequestParser::new(Method::Get, 0);
    let mut heads = Vec::new();
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.iter().copied().filter(|c| *c < bytes.len()).collect();
    bounds.push(bytes.len());
    for end in bounds {
        if end <= start {
            continue;
        }
        let found = stream.feed(
            1000u32.wrapping_add(start as u32),
            &bytes[start..end],
            &mut parser,
            &config,
        );
        heads.extend(found.heads.into_iter().map(|(i, h)| (start + i, h)));
        start = end;
    }
    (stream, heads)
}

fn paths(heads: &[(usize, RequestHead)]) -> Vec<String> {
    heads
        .iter()
        .map(|(_, h)| String::from_utf8_lossy(h.path_bytes()).into_owned())
        .collect()
}

#[test]
fn a_head_is_found_however_the_stream_is_cut() {
    let cookie = "c".repeat(8 * 1024);
    let wire = format!(
        "GET /a HTTP/1.1\r\nHost: b\r\nCookie: {cookie}\r\nX-User: ann\r\n\r\n\
         POST /b HTTP/1.1\r\nHost: b\r\nContent-Length: 19\r\n\r\nGET /x HTTP/1.1\r\n\r\n\
         GET /c HTTP/1.1\r\nHost: b\r\n\r\n"
    );
    let bytes = wire.as_bytes();
    let (_, whole) = feed_cut(bytes, &[]);
    assert_eq!(paths(&whole), ["/a", "/b", "/c"]);
    // Every cut point (one at a time), cuts every 3 bytes, and every byte on its own.
    let mut cases: Vec<Vec<usize>> = (1..bytes.len()).step_by(7).map(|c| vec![c]).collect();
    cases.push((1..bytes.len()).step_by(3).collect());
    cases.push((1..bytes.len()).collect());
    for cuts in cases {
        let (_, heads) = feed_cut(bytes, &cuts);
        assert_eq!(heads, whole, "cut at {:?}", &cuts[..cuts.len().min(4)]);
    }
    assert_eq!(whole[0].1.header_bytes(0), Some(&b"ann"[..]));
}

#[test]
fn chunk_data_that_reads_as_a_request_is_body() {
    let wire = b"POST /y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
        1c;ext=1\r\nGET /x HTTP/1.1\r\nHost: b\r\n\r\n\r\n\
        3\r\nabc\r\n0\r\nTrailer: t\r\n\r\nGET /z HTTP/1.1\r\n\r\n";
    for cuts in [vec![], (1..wire.len()).collect::<Vec<_>>(), vec![51, 60]] {
        let (stream, heads) = feed_cut(wire, &cuts);
        assert_eq!(paths(&heads), ["/y", "/z"], "cuts {cuts:?}");
        assert!(stream.stopped().is_none());
    }
}

#[test]
fn bodies_by_length_are_skipped_whatever_they_hold() {
    let wire = b"PUT /p HTTP/1.1\r\nContent-Length: 19\r\n\r\nGET /x HTTP/1.1\r\n\r\nDELETE /d HTTP/1.0\r\n\r\n";
    let (_, heads) = feed_cut(wire, &[45]);
    assert_eq!(paths(&heads), ["/p", "/d"]);
}

#[test]
fn bare_lf_and_absolute_form_are_requests() {
    let wire =
        b"GET http://svc.local:8080/x?q=1 HTTP/1.1\nHost: other\n\nGET /y HTTP/1.1\nHost: b\n\n";
    let (_, heads) = feed_cut(wire, &[5, 17]);
    assert_eq!(paths(&heads), ["/x?q=1", "/y"]);
    let first = &heads[0].1;
    assert_ne!(first.flags & FLAG_ABSOLUTE_FORM, 0);
    assert_eq!(
        first.host_bytes(),
        b"svc.local:8080",
        "the authority, not the Host header"
    );
    let (_, heads) = feed_cut(b"OPTIONS http://h HTTP/1.1\r\n\r\n", &[]);
    assert_eq!(paths(&heads), ["/"]);
}

#[test]
fn what_fi_cannot_frame_stops_the_stream_for_good() {
    let cases: [(&[u8], Stop); 6] = [
        (b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /x HTTP/1.1\r\n\r\n", Stop::Malformed),
        (b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET /x HTTP/1.1\r\n\r\n", Stop::UnknownFraming),
        (b"POST /a HTTP/1.1\r\nContent-Length: 1 2\r\n\r\nGET /x HTTP/1.1\r\n\r\n", Stop::UnknownFraming),
        (b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /x HTTP/1.1\r\n\r\n", Stop::Upgraded),
        (b"CONNECT h:443 HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n", Stop::Upgraded),
        (b"GET /a HTTP/1.1\r\n\r\n\x16\x03\x01GET /x HTTP/1.1\r\n\r\n", Stop::Malformed),
    ];
    for (wire, why) in cases {
        let (stream, heads) = feed_cut(wire, &[]);
        assert_eq!(
            stream.stopped(),
            Some(why),
            "{}",
            String::from_utf8_lossy(wire)
        );
        assert!(
            !paths(&heads).contains(&"/x".to_owned()),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
    // A head of 16 KiB or more is not parsed: counted by the kernel, never misread.
    let long = format!(
        "GET /a HTTP/1.1\r\nX-Pad: {}\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
        "p".repeat(16 * 1024)
    );
    let (stream, heads) = feed_cut(long.as_bytes(), &[1400, 2800]);
    assert_eq!(stream.stopped(), Some(Stop::HeadTooLong));
    assert!(heads.is_empty());
}

#[test]
fn retransmissions_are_not_read_twice_and_a_gap_stops_the_stream() {
    let config = config();
    let mut stream = RequestStream::new();
    let mut parser = RequestParser::new(Method::Get, 0);
    // Not followed from its start: the first segment that begins with a request line
    // starts it.
    assert!(
        stream
            .feed(1, b"ody bytes", &mut parser, &config)
            .heads
            .is_empty()
    );
    let a = b"GET /a HTTP/1.1\r\n\r\n";
    assert_eq!(stream.feed(10, a, &mut parser, &config).heads.len(), 1);
    assert_eq!(stream.mode, SYNCED);
    assert!(
        stream.feed(10, a, &mut parser, &config).heads.is_empty(),
        "a retransmission"
    );
    // A segment past a gap: what it is cannot be known, for good.
    assert!(stream.feed(500, a, &mut parser, &config).heads.is_empty());
    assert_eq!(stream.stopped(), Some(Stop::Lost));
    assert!(stream.feed(519, a, &mut parser, &config).heads.is_empty());
}

/// Feeds a server's stream cut at `cuts`; the statuses of the final responses found.
fn responses_cut(bytes: &[u8], methods: &[Method], cuts: &[usize]) -> (ResponseStream, Vec<u16>) {
    let config = config();
    let methods: Vec<u8> = methods.iter().map(|m| *m as u8).collect();
    let mut stream = ResponseStream::new();
    stream.sync(7);
    let mut statuses = Vec::new();
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.iter().copied().filter(|c| *c < bytes.len()).collect();
    bounds.push(bytes.len());
    for end in bounds {
        if end <= start {
            continue;
        }
        let found = stream.feed(
            7u32.wrapping_add(start as u32),
            &bytes[start..end],
            &methods,
            &config,
        );
        statuses.extend(found.iter().map(|f| f.head.status));
        start = end;
    }
    (stream, statuses)
}

#[test]
fn responses_are_framed_exactly_however_they_are_cut() {
    let decoy = "HTTP/1.1 500 Bad\r\n\r\n";
    let wire = format!(
        "HTTP/1.1 100 Continue\r\n\r\n\
         HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x};x=y\r\n{decoy}\r\n0\r\nT: 1\r\n\r\n\
         HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n\
         HTTP/1.1 204 No Content\r\n\r\n\
         HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n\
         HTTP/1.0 404 Not Found\nContent-Length: {}\n\n{decoy}",
        decoy.len(),
        decoy.len()
    );
    let wire = wire.as_bytes();
    use Method::*;
    // The second 200 answers a HEAD: its Content-Length announces no body.
    let methods = [Post, Head, Get, Get, Get];
    let (stream, whole) = responses_cut(wire, &methods, &[]);
    assert_eq!(
        whole,
        [200, 200, 204, 304, 404],
        "the chunk data and the body are not heads"
    );
    assert!(stream.stopped().is_none());
    for cuts in [
        (1..wire.len()).collect::<Vec<_>>(),
        (1..wire.len()).step_by(5).collect(),
    ] {
        assert_eq!(responses_cut(wire, &methods, &cuts).1, whole);
    }
}

#[test]
fn what_follows_an_upgrade_or_a_body_until_close_is_never_read() {
    let cases: [(&[u8], Method, Stop); 3] = [
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            Method::Get,
            Stop::Upgraded,
        ),
        (
            b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            Method::Connect,
            Stop::Upgraded,
        ),
        (
            b"HTTP/1.0 200 OK\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            Method::Get,
            Stop::UntilClose,
        ),
    ];
    for (wire, method, why) in cases {
        let (stream, statuses) = responses_cut(wire, &[method, Method::Get], &[]);
        assert_eq!(statuses.len(), 1, "{}", String::from_utf8_lossy(wire));
        assert_eq!(stream.stopped(), Some(why));
    }
}

#[test]
fn a_watch_answer_holds_until_the_targets_change() {
    assert_eq!(watch(0, 0), None, "never asked");
    let cached = watch_cache(true, 7);
    assert_eq!(watch(cached, 7), Some(true));
    assert_eq!(watch(cached, 8), None, "the targets changed");
    assert_eq!(watch(watch_cache(false, 0), 0), Some(false));
    let wrapped = watch_cache(true, u32::MAX);
    assert_eq!(watch(wrapped, u32::MAX), Some(true));
    assert_eq!(watch(wrapped, 0), None);
}
