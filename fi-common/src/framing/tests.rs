//! The framer against connections whose boundaries are known (they are generated), cut
//! into segments at random points, with every head it finds checked by httparse, an
//! independent HTTP/1.x parser; and against mutated streams, where it must never panic
//! and never end a head where httparse would not.

use super::*;

/// xorshift64*: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A boundary the generator put into a stream: (offset, what).
type Expected = Vec<(u64, Event)>;

/// One direction of a generated connection.
#[derive(Default)]
struct Stream {
    bytes: Vec<u8>,
    expected: Expected,
    /// (head start, head end, method or status) of each message, for httparse.
    heads: Vec<(usize, usize, String)>,
}

impl Stream {
    fn head(&mut self, head: &[u8], label: String, body: &[u8], ends_with_head: bool) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(head);
        let end = self.bytes.len() - 1;
        self.expected.push((start as u64, Event::HeadStart));
        self.expected.push((
            end as u64,
            if ends_with_head {
                Event::HeadEndMessageEnd
            } else {
                Event::HeadEnd
            },
        ));
        self.heads.push((start, end, label));
        self.bytes.extend_from_slice(body);
        if !ends_with_head && !body.is_empty() {
            self.expected
                .push(((self.bytes.len() - 1) as u64, Event::MessageEnd));
        }
    }
}

/// A body as the message sends it, chunked or not.
fn body(rng: &mut Rng, chunked: bool, nl: &str) -> (Vec<u8>, Option<String>) {
    let pieces = [
        "GET /x HTTP/1.1\r\nHost: b\r\n\r\n".to_owned(),
        "HTTP/1.1 200 OK\r\n\r\n".to_owned(),
        "x".repeat(rng.below(3000) as usize),
        "{\"a\":1}".to_owned(),
        "\r\n\r\n".to_owned(),
        "0\r\n\r\n".to_owned(),
    ];
    let n = 1 + rng.below(4);
    if !chunked {
        let mut data = Vec::new();
        for _ in 0..n {
            data.extend_from_slice(rng.pick(&pieces).as_bytes());
        }
        let length = data.len().to_string();
        return (data, Some(length));
    }
    let mut data = Vec::new();
    for _ in 0..n {
        let piece = rng.pick(&pieces).clone();
        if piece.is_empty() {
            continue;
        }
        let ext = if rng.chance(20) { ";name=value" } else { "" };
        let size = if rng.chance(50) {
            format!("{:x}", piece.len())
        } else {
            format!("{:X}", piece.len())
        };
        data.extend_from_slice(format!("{size}{ext}{nl}").as_bytes());
        data.extend_from_slice(piece.as_bytes());
        data.extend_from_slice(nl.as_bytes());
    }
    data.extend_from_slice(format!("0{nl}").as_bytes());
    if rng.chance(20) {
        data.extend_from_slice(format!("x-trailer: t{nl}").as_bytes());
    }
    data.extend_from_slice(nl.as_bytes());
    (data, None)
}

/// A generated connection: both streams, with their boundaries.
struct Generated {
    request: Stream,
    response: Stream,
    /// Exchanges in order: (request bytes end, response bytes end) after each, so that
    /// the feed can send each response after its request.
    turns: Vec<(usize, usize)>,
}

fn generate(rng: &mut Rng) -> Generated {
    let mut request = Stream::default();
    let mut response = Stream::default();
    let mut turns = Vec::new();
    let exchanges = 1 + rng.below(5);
    for i in 0..exchanges {
        let nl = if rng.chance(15) { "\n" } else { "\r\n" };
        let method = *rng.pick(&["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]);
        let target = if rng.chance(15) {
            "http://b.example:8080/x?q=1".to_owned()
        } else {
            format!("/p/{}", rng.below(1000))
        };
        let upgrade = i == exchanges - 1 && rng.chance(10);
        let mut head = format!("{method} {target} HTTP/1.1{nl}Host: b.example{nl}");
        if rng.chance(10) {
            head.push_str(&format!(
                "Cookie: c={}{nl}",
                "k".repeat(rng.below(8 * 1024) as usize)
            ));
        }
        if rng.chance(20) {
            head.push_str(&format!("Authorization: Bearer {}{nl}", "a".repeat(4096)));
        }
        let has_body = matches!(method, "POST" | "PUT" | "PATCH") && !upgrade;
        let chunked = has_body && rng.chance(40);
        let expect = has_body && rng.chance(20);
        let (data, length) = if has_body {
            body(rng, chunked, nl)
        } else {
            (Vec::new(), None)
        };
        if chunked {
            head.push_str(&format!(
                "Transfer-Encoding: {}{nl}",
                if rng.chance(30) {
                    "gzip, chunked"
                } else {
                    "chunked"
                }
            ));
        } else if let Some(length) = &length {
            head.push_str(&format!("content-length: {length}{nl}"));
        }
        if expect {
            head.push_str(&format!("Expect: 100-continue{nl}"));
        }
        if upgrade {
            head.push_str(&format!("Connection: Upgrade{nl}Upgrade: websocket{nl}"));
        }
        head.push_str(nl);
        request.head(head.as_bytes(), method.to_owned(), &data, data.is_empty());

        // The answer.
        let rnl = if rng.chance(10) { "\n" } else { "\r\n" };
        if expect {
            response.head(
                format!("HTTP/1.1 100 Continue{rnl}{rnl}").as_bytes(),
                "100".to_owned(),
                b"",
                true,
            );
        }
        let status: u16 = if upgrade {
            101
        } else {
            *rng.pick(&[200, 200, 201, 204, 304, 404, 500, 503])
        };
        let mut head = format!("HTTP/1.1 {status} Reason{rnl}");
        let bodiless = method == "HEAD" || status == 204 || status == 304 || status == 101;
        let (data, length) = if bodiless {
            (Vec::new(), Some(rng.below(5000).to_string()))
        } else if rng.chance(10) {
            (Vec::new(), Some("0".to_owned()))
        } else {
            let chunked = rng.chance(40);
            body(rng, chunked, rnl)
        };
        match &length {
            // A HEAD's or a 304's Content-Length tells the size of a body that is not sent.
            Some(length) if status != 204 && status != 101 => {
                head.push_str(&format!("Content-Length: {length}{rnl}"));
            }
            Some(_) => {}
            None => head.push_str(&format!("transfer-encoding: chunked{rnl}")),
        }
        if upgrade {
            head.push_str(&format!("Connection: Upgrade{rnl}Upgrade: websocket{rnl}"));
        }
        head.push_str(rnl);
        response.head(head.as_bytes(), status.to_string(), &data, data.is_empty());
        if upgrade {
            // The new protocol's data may look like HTTP: never framed.
            request
                .bytes
                .extend_from_slice(b"GET /x HTTP/1.1\r\nHost: b\r\n\r\n");
            response.bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        }
        turns.push((request.bytes.len(), response.bytes.len()));
    }
    Generated {
        request,
        response,
        turns,
    }
}

/// Feeds a stream's bytes `from..to` in random segments, counting them.
fn feed_cut(
    rng: &mut Rng,
    c: &mut Connection,
    (side, bytes): (Side, &[u8]),
    (from, to): (usize, usize),
    found: &mut Expected,
    segments: &mut u64,
) {
    let mut at = from;
    while at < to {
        let len = match rng.below(4) {
            0 => 1 + rng.below(4) as usize,
            1 => 1 + rng.below(64) as usize,
            2 => 1 + rng.below(1460) as usize,
            _ => 1 + rng.below(64 * 1024) as usize,
        }
        .min(to - at);
        c.feed(side, at as u64, &bytes[at..at + len], |b| {
            found.push((b.offset, b.event));
        });
        *segments += 1;
        at += len;
    }
}

/// httparse agrees with every head the generator made (and so the framer found).
fn check_heads_with_httparse(stream: &Stream, side: Side) {
    for (start, end, label) in &stream.heads {
        let bytes = &stream.bytes[*start..=*end];
        let mut headers = [httparse::EMPTY_HEADER; 64];
        match side {
            Side::Request => {
                let mut r = httparse::Request::new(&mut headers);
                let parsed = r.parse(bytes).expect("httparse takes the head");
                assert_eq!(parsed, httparse::Status::Complete(bytes.len()));
                assert_eq!(r.method, Some(label.as_str()));
            }
            Side::Response => {
                let mut r = httparse::Response::new(&mut headers);
                let parsed = r.parse(bytes).expect("httparse takes the head");
                assert_eq!(parsed, httparse::Status::Complete(bytes.len()));
                assert_eq!(
                    r.code.map(|c| c.to_string()).as_deref(),
                    Some(label.as_str())
                );
            }
        }
    }
}

#[test]
fn generated_connections_cut_anywhere_are_framed_exactly() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut connections, mut segments, mut messages) = (0u64, 0u64, 0u64);
    for _ in 0..100_000 {
        let g = generate(&mut rng);
        let mut c = Connection::new();
        let (mut req_found, mut resp_found) = (Vec::new(), Vec::new());
        let (mut req_at, mut resp_at) = (0, 0);
        // Requests first, a few at a time (pipelining), then their answers.
        let mut turn = 0;
        while turn < g.turns.len() {
            let ahead = (turn + rng.below(3) as usize).min(g.turns.len() - 1);
            let req_to = g.turns[ahead].0;
            feed_cut(
                &mut rng,
                &mut c,
                (Side::Request, &g.request.bytes),
                (req_at, req_to),
                &mut req_found,
                &mut segments,
            );
            req_at = req_to;
            for t in turn..=ahead {
                let resp_to = g.turns[t].1;
                feed_cut(
                    &mut rng,
                    &mut c,
                    (Side::Response, &g.response.bytes),
                    (resp_at, resp_to),
                    &mut resp_found,
                    &mut segments,
                );
                resp_at = resp_to;
            }
            turn = ahead + 1;
        }
        // What an upgrade's new protocol sent is not framed: drop the Stopped marks.
        req_found.retain(|(_, e)| !matches!(e, Event::Stopped(_)));
        resp_found.retain(|(_, e)| !matches!(e, Event::Stopped(_)));
        assert_eq!(
            req_found,
            g.request.expected,
            "requests of {:?}",
            String::from_utf8_lossy(&g.request.bytes)
        );
        assert_eq!(
            resp_found,
            g.response.expected,
            "responses of {:?}",
            String::from_utf8_lossy(&g.response.bytes)
        );
        check_heads_with_httparse(&g.request, Side::Request);
        check_heads_with_httparse(&g.response, Side::Response);
        connections += 1;
        messages += (g.request.heads.len() + g.response.heads.len()) as u64;
    }
    println!("framed {connections} connections, {segments} segments, {messages} messages");
}

#[test]
fn mutated_streams_never_end_a_head_where_httparse_would_not() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut checked = 0u64;
    for _ in 0..20_000 {
        let g = generate(&mut rng);
        let mut bytes = g.request.bytes.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(bytes.len() as u64) as usize;
            match rng.below(3) {
                0 => bytes[at] = rng.next() as u8,
                1 => bytes.insert(at, *rng.pick(b"\r\n :0aZ;")),
                _ => {
                    bytes.remove(at);
                }
            }
            if bytes.is_empty() {
                break;
            }
        }
        let mut c = Connection::new();
        let mut found = Vec::new();
        c.feed(Side::Request, 0, &bytes, |b| {
            found.push((b.offset, b.event))
        });
        let mut start = None;
        for (offset, event) in found {
            match event {
                Event::HeadStart => start = Some(offset as usize),
                Event::HeadEnd | Event::HeadEndMessageEnd => {
                    let Some(s) = start.take() else {
                        panic!("a head ended that never started");
                    };
                    let head = &bytes[s..=offset as usize];
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    let mut r = httparse::Request::new(&mut headers);
                    if let Ok(status) = r.parse(head) {
                        // Where httparse takes the bytes as a head, it ends where fi does.
                        assert_eq!(
                            status,
                            httparse::Status::Complete(head.len()),
                            "{:?}",
                            String::from_utf8_lossy(head)
                        );
                    }
                    checked += 1;
                }
                _ => {}
            }
        }
    }
    println!("checked {checked} heads of mutated streams");
}

fn boundaries(c: &mut Connection, side: Side, bytes: &[u8]) -> Vec<(u64, Event)> {
    let mut found = Vec::new();
    c.feed(side, 0, bytes, |b| found.push((b.offset, b.event)));
    found
}

#[test]
fn a_chunk_whose_data_looks_like_a_request_is_body() {
    let mut c = Connection::new();
    let stream = b"POST /y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1c\r\nGET /x HTTP/1.1\r\nHost: b\r\n\r\n\r\n0\r\n\r\nGET /z HTTP/1.1\r\n\r\n";
    let found = boundaries(&mut c, Side::Request, stream);
    let heads: Vec<_> = found
        .iter()
        .filter(|(_, e)| *e == Event::HeadStart)
        .map(|(o, _)| *o)
        .collect();
    let z = stream.windows(6).position(|w| w == b"GET /z").unwrap() as u64;
    assert_eq!(heads, [0, z]);
}

#[test]
fn a_request_with_an_unknown_coding_or_a_huge_head_stops_the_direction() {
    let mut c = Connection::new();
    let found = boundaries(
        &mut c,
        Side::Request,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
    );
    assert!(
        found.contains(&(43, Event::Stopped(Stop::UnknownFraming))),
        "{found:?}"
    );
    assert_eq!(
        found.iter().filter(|(_, e)| *e == Event::HeadStart).count(),
        1
    );

    let mut c = Connection::new();
    let mut big = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
    big.extend(std::iter::repeat_n(b'c', MAX_HEAD as usize));
    big.extend_from_slice(b"\r\n\r\nGET /x HTTP/1.1\r\n\r\n");
    let found = boundaries(&mut c, Side::Request, &big);
    assert_eq!(
        found.last(),
        Some(&(u64::from(MAX_HEAD), Event::Stopped(Stop::HeadTooLong)))
    );
    assert_eq!(c.request.stopped(), Some(Stop::HeadTooLong));
}

#[test]
fn an_upgrade_answered_101_stops_both_directions_and_one_refused_goes_on() {
    let mut c = Connection::new();
    boundaries(
        &mut c,
        Side::Request,
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    assert!(c.request_waits());
    boundaries(
        &mut c,
        Side::Response,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(c.request.stopped(), Some(Stop::Upgraded));
    assert_eq!(c.response.stopped(), Some(Stop::Upgraded));
    assert!(boundaries(&mut c, Side::Request, b"GET /x HTTP/1.1\r\n\r\n").is_empty());

    let mut c = Connection::new();
    boundaries(
        &mut c,
        Side::Request,
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
    );
    boundaries(
        &mut c,
        Side::Response,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    assert!(!c.request_waits());
    let found = boundaries(&mut c, Side::Request, b"GET /x HTTP/1.1\r\n\r\n");
    assert_eq!(found.first(), Some(&(0, Event::HeadStart)));
}

#[test]
fn head_and_304_answers_have_no_body_whatever_their_length_says() {
    let mut c = Connection::new();
    boundaries(
        &mut c,
        Side::Request,
        b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    );
    let found = boundaries(
        &mut c,
        Side::Response,
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
    );
    let ends: Vec<_> = found
        .iter()
        .filter(|(_, e)| *e == Event::HeadEndMessageEnd)
        .collect();
    assert_eq!(ends.len(), 2, "{found:?}");
}

#[test]
fn interim_responses_and_bare_lf_heads_are_framed() {
    let mut c = Connection::new();
    boundaries(
        &mut c,
        Side::Request,
        b"PUT /f HTTP/1.1\nExpect: 100-continue\nContent-Length: 3\n\n",
    );
    let found = boundaries(&mut c, Side::Response, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(found.last().map(|b| b.1), Some(Event::HeadEndMessageEnd));
    let found = boundaries(&mut c, Side::Request, b"abcGET / HTTP/1.1\n\n");
    assert_eq!(found[0], (2, Event::MessageEnd));
    assert_eq!(found[1], (3, Event::HeadStart));
    let found = boundaries(
        &mut c,
        Side::Response,
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(found.last().map(|b| b.1), Some(Event::HeadEndMessageEnd));
}

#[test]
fn a_response_body_that_runs_to_the_close_stops_the_direction() {
    let mut c = Connection::new();
    boundaries(&mut c, Side::Request, b"GET / HTTP/1.1\r\n\r\n");
    let found = boundaries(
        &mut c,
        Side::Response,
        b"HTTP/1.0 200 OK\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    );
    assert_eq!(found.len(), 2);
    assert_eq!(c.response.stopped(), Some(Stop::UntilClose));
}

#[test]
fn absolute_form_targets_are_requests() {
    let mut c = Connection::new();
    let found = boundaries(
        &mut c,
        Side::Request,
        b"GET http://b:8080/x HTTP/1.1\r\nHost: b\r\n\r\n",
    );
    assert_eq!(found.last().map(|b| b.1), Some(Event::HeadEndMessageEnd));
}
