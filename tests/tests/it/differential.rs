//! Issue "Exact", differential: the kernel's request parser, fed through BPF_PROG_TEST_RUN
//! as TCP segments cut at random points, against an independent reading of the same bytes
//! on the host (`fi_tests::oracle`: httparse and an RFC 9112 body framer).
//!
//! Generated connections: keep-alive and pipelining (several messages, cut anywhere),
//! chunked bodies whose data reads as requests (with extensions and trailers),
//! Content-Length bodies that do too, 100-continue, HEAD, upgrades and CONNECT followed by
//! request-looking bytes, LF-only lines, absolute-form targets, and heads around 16 KiB.
//! Half of them are then mutated (bytes flipped, dropped, inserted, repeated).
//! Hostile input: a million random and mutated segments on tracked flows.

use std::time::{Duration, Instant};

use aya::{
    maps::{HashMap as BpfHashMap, MapData, RingBuf},
    programs::{TestRun as _, TestRunOptions},
};
use fi_common::{
    counters::Counter,
    event::{EVENT_REQUEST, EVENT_RESPONSE, RequestEvent, ResponseEvent},
    flow::{FlowKey, TARGET_WATCH, v4_mapped},
    http::{CaptureConfig, Method},
};
use fi_daemon::dataplane::{DataPlane, program};
use fi_tests::{
    oracle::{self, Head},
    packet, require_privileges,
};

const CAPTURED: &str = "x-user";
const CGROUP: u64 = 4242;
const CLIENT: [u8; 4] = [10, 77, 0, 1];
const SERVER: [u8; 4] = [10, 77, 0, 2];
const FIRST_SEQ: u32 = 0xffff_f000; // Wraps within the first connections' streams.
const SERVER_FIRST_SEQ: u32 = 0x7fff_ff00;
/// Largest payload BPF_PROG_TEST_RUN takes in one frame (a page, less headroom, the
/// shared info and the headers).
const MAX_TEST_PAYLOAD: usize = 3_500;

/// The loaded programs with one watched flow, its requests read from the ring buffer.
struct Rig {
    dataplane: DataPlane,
    ring: RingBuf<MapData>,
    out: Vec<u8>,
    segments: u64,
    slowest: Duration,
}

impl Rig {
    fn new() -> Rig {
        require_privileges();
        let config = CaptureConfig::from_names([CAPTURED]).expect("capture config");
        let mut dataplane = DataPlane::load(&config).expect("loading fi's programs");
        let mut targets: BpfHashMap<MapData, u64, u32> =
            dataplane.take_targets_map().expect("targets map");
        targets
            .insert(CGROUP, TARGET_WATCH, 0)
            .expect("watching the cgroup");
        let ring = dataplane.take_events().expect("events ring");
        Rig {
            dataplane,
            ring,
            out: vec![0u8; 8192],
            segments: 0,
            slowest: Duration::ZERO,
        }
    }

    fn key(port: u16) -> FlowKey {
        FlowKey {
            client: v4_mapped(CLIENT),
            server: v4_mapped(SERVER),
            client_port: port,
            server_port: 8080,
            _pad: 0,
        }
    }

    /// A new connection: its stream starts at FIRST_SEQ, as sock_ops records it.
    fn connect(&mut self, port: u16) {
        self.dataplane
            .track_flow_from(Rig::key(port), CGROUP, FIRST_SEQ, SERVER_FIRST_SEQ)
            .expect("tracking the flow");
    }

    /// One segment of the client's stream, `offset` bytes into it, at the egress hook.
    fn send(&mut self, port: u16, offset: usize, payload: &[u8]) {
        let seq = FIRST_SEQ.wrapping_add(offset as u32);
        let frame = packet::tcp4_seq(
            CLIENT,
            SERVER,
            port,
            8080,
            packet::TCP_PSH_ACK,
            seq,
            payload,
        );
        self.run(program::TC_EGRESS, &frame);
    }

    /// One segment of the server's stream, `offset` bytes into it, on its way back: the
    /// ingress hook of the same interface.
    fn answer(&mut self, port: u16, offset: usize, payload: &[u8]) {
        let seq = SERVER_FIRST_SEQ.wrapping_add(offset as u32);
        let frame = packet::tcp4_seq(
            SERVER,
            CLIENT,
            8080,
            port,
            packet::TCP_PSH_ACK,
            seq,
            payload,
        );
        self.run(program::TC_INGRESS, &frame);
    }

    fn run(&mut self, program: &'static str, frame: &[u8]) {
        let prog = self.dataplane.classifier(program).expect("classifier");
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut self.out),
            ..TestRunOptions::default()
        };
        let result = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        self.segments += 1;
        self.slowest = self.slowest.max(result.duration);
    }

    /// The request heads and the responses reported since the last call.
    fn reported(&mut self) -> (Vec<RequestEvent>, Vec<ResponseEvent>) {
        let (mut requests, mut responses) = (Vec::new(), Vec::new());
        while let Some(item) = self.ring.next() {
            let kind = u32::from_ne_bytes(item[..4].try_into().expect("event kind"));
            if kind == EVENT_REQUEST && item.len() >= size_of::<RequestEvent>() {
                // SAFETY: the ring item holds a whole RequestEvent (checked above), written
                // by the kernel as this repr(C) struct of integers; read unaligned.
                requests.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
            }
            if kind == EVENT_RESPONSE && item.len() >= size_of::<ResponseEvent>() {
                // SAFETY: as above, a whole ResponseEvent.
                responses.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
            }
        }
        (requests, responses)
    }

    fn counter(&self, wanted: Counter) -> u64 {
        self.dataplane
            .counters()
            .expect("counters")
            .into_iter()
            .find_map(|(c, v)| (c == wanted).then_some(v))
            .expect("counter")
    }
}

/// What is compared of a head: method, path, host, captured header, head length.
type Viewed = (String, Vec<u8>, Vec<u8>, Option<Vec<u8>>, usize);

/// The kernel's report of one head, in the oracle's terms.
fn as_head(event: &RequestEvent) -> Viewed {
    let head = &event.head;
    let method = Method::from_u8(head.method).map_or("?", Method::as_str);
    (
        method.to_owned(),
        head.path_bytes().to_vec(),
        head.host_bytes().to_vec(),
        head.header_bytes(0).map(<[u8]>::to_vec),
        head.head_len as usize,
    )
}

fn oracle_view(head: &Head) -> Viewed {
    (
        head.method.clone(),
        head.path.clone(),
        head.host.clone(),
        head.captured.clone(),
        head.head_len,
    )
}

/// Random traffic a client sends.
struct Generator {
    rng: fastrand::Rng,
}

/// Bytes that read as a request: what a body must never be taken for.
const DECOY: &[u8] = b"GET /x HTTP/1.1\r\nHost: b\r\n\r\n";

impl Generator {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.usize(..items.len())]
    }

    fn body_bytes(&mut self, len: usize) -> Vec<u8> {
        if self.rng.bool() {
            DECOY.iter().copied().cycle().take(len).collect()
        } else {
            (0..len).map(|_| self.rng.u8(..)).collect()
        }
    }

    /// One connection's client stream.
    fn connection(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        for _ in 0..self.rng.usize(1..=4) {
            if self.message(&mut wire) {
                break;
            }
        }
        wire
    }

    /// Appends one request; true when nothing HTTP may follow it (upgrade, CONNECT).
    fn message(&mut self, wire: &mut Vec<u8>) -> bool {
        let eol: &[u8] = if self.rng.u8(..8) == 0 {
            b"\n"
        } else {
            b"\r\n"
        };
        let line = |wire: &mut Vec<u8>, text: &[u8]| {
            wire.extend_from_slice(text);
            wire.extend_from_slice(eol);
        };
        if self.rng.u8(..10) == 0 {
            wire.extend_from_slice(eol); // An empty line before a request.
        }
        let connect = self.rng.u16(..60) == 0;
        let method = if connect {
            "CONNECT"
        } else {
            self.pick(&[
                "GET", "GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "OPTIONS",
            ])
        };
        let n = self.rng.u32(..1000);
        let target = if connect {
            format!("svc{n}.example:443")
        } else {
            match self.rng.u8(..10) {
                0 => format!("http://svc{n}.example:8080/abs/{n}?q={n}"),
                1 => format!("http://svc{n}.example"),
                2 => "/x".to_owned(),
                3 => format!("/{}", "p".repeat(self.rng.usize(100..300))),
                _ => format!("/api/v{}/items/{n}?page={}", n % 3, n % 7),
            }
        };
        line(
            wire,
            format!("{method} {target} HTTP/1.{}", self.rng.u8(..2)).as_bytes(),
        );
        line(wire, format!("Host: b{n}.example:8080").as_bytes());
        if self.rng.bool() {
            line(wire, format!("X-User: user-{n}").as_bytes());
        }
        let pad = match self.rng.u8(..20) {
            0 => self.rng.usize(16_300..16_450), // Around the 16 KiB limit.
            1..=3 => self.rng.usize(1_000..9_000),
            _ => self.rng.usize(0..200),
        };
        if pad > 0 {
            line(wire, format!("X-Pad: {}", "a".repeat(pad)).as_bytes());
        }
        if connect {
            line(wire, b"");
            wire.extend_from_slice(DECOY);
            return true;
        }
        if self.rng.u8(..30) == 0 {
            line(wire, b"Upgrade: websocket");
            line(wire, b"Connection: Upgrade");
            line(wire, b"");
            wire.extend_from_slice(DECOY);
            return true;
        }
        let with_body = matches!(method, "POST" | "PUT" | "PATCH") || self.rng.u8(..10) == 0;
        if !with_body {
            line(wire, b"");
            return false;
        }
        if self.rng.u8(..4) == 0 {
            line(wire, b"Expect: 100-continue");
        }
        if self.rng.bool() {
            let len = self.rng.usize(0..3000);
            line(wire, format!("Content-Length: {len}").as_bytes());
            line(wire, b"");
            let body = self.body_bytes(len);
            wire.extend_from_slice(&body);
        } else {
            line(
                wire,
                self.pick(&[
                    "Transfer-Encoding: chunked",
                    "Transfer-Encoding: gzip, chunked",
                ])
                .as_bytes(),
            );
            line(wire, b"");
            for _ in 0..self.rng.usize(0..5) {
                let len = self.rng.usize(1..2500);
                let ext = if self.rng.u8(..4) == 0 { ";name=v" } else { "" };
                line(wire, format!("{len:x}{ext}").as_bytes());
                let data = self.body_bytes(len);
                wire.extend_from_slice(&data);
                line(wire, b"");
            }
            line(wire, b"0");
            if self.rng.u8(..4) == 0 {
                line(wire, b"Trailer-One: t");
            }
            line(wire, b"");
        }
        false
    }

    /// The server's stream answering `heads` (what the oracle read of the client's):
    /// interim responses, bodies by length or chunked (whose data reads as a response),
    /// none for HEAD, 204 and 304, a tunnel after an upgrade or CONNECT, sometimes a last
    /// body delimited by the close.
    fn responses(&mut self, heads: &[Head]) -> Vec<u8> {
        const DECOY_RESPONSE: &[u8] = b"HTTP/1.1 500 Bad\r\nContent-Length: 0\r\n\r\n";
        let mut wire = Vec::new();
        for (i, head) in heads.iter().enumerate() {
            let eol: &[u8] = if self.rng.u8(..8) == 0 {
                b"\n"
            } else {
                b"\r\n"
            };
            let line = |wire: &mut Vec<u8>, text: &[u8]| {
                wire.extend_from_slice(text);
                wire.extend_from_slice(eol);
            };
            if self.rng.u8(..6) == 0 {
                line(&mut wire, b"HTTP/1.1 100 Continue");
                line(&mut wire, b"");
            }
            let tunnel = head.method == "CONNECT" || self.rng.u8(..40) == 0;
            if tunnel {
                let status = if head.method == "CONNECT" {
                    "200 Connection established"
                } else {
                    "101 Switching Protocols"
                };
                line(&mut wire, format!("HTTP/1.1 {status}").as_bytes());
                line(&mut wire, b"");
                wire.extend_from_slice(DECOY_RESPONSE);
                break;
            }
            let status = *[200u16, 200, 201, 204, 304, 404, 500]
                .get(self.rng.usize(..7))
                .unwrap_or(&200);
            line(
                &mut wire,
                format!("HTTP/1.{} {status} Reason", self.rng.u8(..2)).as_bytes(),
            );
            line(&mut wire, b"Server: test");
            let no_body = head.method == "HEAD" || status == 204 || status == 304;
            let last = i + 1 == heads.len();
            match self.rng.u8(..10) {
                0 if last && !no_body => {
                    // Delimited by the close: nothing after it is read.
                    line(&mut wire, b"");
                    wire.extend_from_slice(DECOY_RESPONSE);
                }
                1..=4 => {
                    line(&mut wire, b"Transfer-Encoding: chunked");
                    line(&mut wire, b"");
                    if !no_body {
                        for _ in 0..self.rng.usize(0..4) {
                            let len = self.rng.usize(1..2000);
                            line(&mut wire, format!("{len:x}").as_bytes());
                            let data: Vec<u8> =
                                DECOY_RESPONSE.iter().copied().cycle().take(len).collect();
                            wire.extend_from_slice(&data);
                            line(&mut wire, b"");
                        }
                        line(&mut wire, b"0");
                        line(&mut wire, b"");
                    }
                }
                _ => {
                    let len = self.rng.usize(0..2500);
                    line(&mut wire, format!("Content-Length: {len}").as_bytes());
                    line(&mut wire, b"");
                    if !no_body {
                        let body: Vec<u8> =
                            DECOY_RESPONSE.iter().copied().cycle().take(len).collect();
                        wire.extend_from_slice(&body);
                    }
                }
            }
        }
        wire
    }

    /// A few random edits: what a hostile or broken client sends.
    fn mutate(&mut self, wire: &mut Vec<u8>) {
        for _ in 0..self.rng.usize(1..=3) {
            if wire.is_empty() {
                return;
            }
            let at = self.rng.usize(..wire.len());
            match self.rng.u8(..4) {
                0 => wire[at] = self.rng.u8(..),
                1 => {
                    wire.remove(at);
                }
                2 => wire.insert(at, *self.pick_byte()),
                _ => {
                    let end = (at + self.rng.usize(1..40)).min(wire.len());
                    let piece = wire[at..end].to_vec();
                    wire.splice(at..at, piece);
                }
            }
        }
    }

    fn pick_byte(&mut self) -> &'static u8 {
        const BYTES: &[u8] = b"\r\n :;\t0aG/\x00\x7f\xff";
        &BYTES[self.rng.usize(..BYTES.len())]
    }

    /// Where a stream is cut into segments: byte by byte, a few bytes, a typical MSS, or
    /// as large as a test run takes.
    fn cuts(&mut self, len: usize) -> Vec<(usize, usize)> {
        let style = self.rng.u8(..20);
        let mut cuts = Vec::new();
        let mut at = 0;
        while at < len {
            let size = match style {
                0 if len < 1500 => 1,
                1..=3 => self.rng.usize(1..=16),
                // BPF_PROG_TEST_RUN takes at most a page per packet: past SCAN_LEN, which
                // is what the kernel's windows need (the real clients test lo's 64 KiB).
                4..=6 => self.rng.usize(1..=MAX_TEST_PAYLOAD),
                _ => self.rng.usize(1..=1448),
            };
            let end = (at + size).min(len);
            cuts.push((at, end));
            at = end;
        }
        cuts
    }
}

#[test]
fn the_kernel_parser_agrees_with_httparse_on_100_000_connections_cut_at_random() {
    let mut rig = Rig::new();
    let mut generator = Generator {
        rng: fastrand::Rng::with_seed(0x005e_edf1),
    };
    let connections = 100_000;
    let (mut messages, mut responses, mut mutated, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let started = Instant::now();
    for i in 0..connections {
        let mut wire = generator.connection();
        let mutate = i % 2 == 1;
        if mutate {
            generator.mutate(&mut wire);
            mutated += 1;
        }
        let port = 1024 + (i % 60_000) as u16;
        rig.connect(port);
        for (start, end) in generator.cuts(wire.len()) {
            rig.send(port, start, &wire[start..end]);
        }
        let heads = oracle::requests(&wire, CAPTURED);
        // The server answers what it read, its stream cut at random too, mutated in a
        // quarter of the connections.
        let mut answers = generator.responses(&heads);
        if i % 4 == 2 {
            generator.mutate(&mut answers);
        }
        for (start, end) in generator.cuts(answers.len()) {
            rig.answer(port, start, &answers[start..end]);
        }
        bytes += (wire.len() + answers.len()) as u64;
        let expected: Vec<_> = heads.iter().map(oracle_view).collect();
        let (requests_seen, responses_seen) = rig.reported();
        let seen: Vec<_> = requests_seen.iter().map(as_head).collect();
        messages += expected.len() as u64;
        let methods: Vec<&str> = heads.iter().map(|h| h.method.as_str()).collect();
        let statuses = oracle::responses(&answers, &methods);
        let kernel_statuses: Vec<u16> = responses_seen.iter().map(|r| r.head.status).collect();
        let indices: Vec<u32> = responses_seen.iter().map(|r| r.index).collect();
        responses += statuses.len() as u64;
        assert!(
            kernel_statuses == statuses && indices.iter().enumerate().all(|(n, i)| *i == n as u32),
            "connection {i}: the kernel paired responses {kernel_statuses:?} (to requests \
             {indices:?}), the oracle {statuses:?}\nrequests: {methods:?}\nstream: {:?}",
            String::from_utf8_lossy(&answers)
        );
        if seen != expected {
            let show = |h: &Viewed| {
                format!(
                    "{} {} host={} captured={:?} head_len={}",
                    h.0,
                    String::from_utf8_lossy(&h.1),
                    String::from_utf8_lossy(&h.2),
                    h.3.as_deref().map(String::from_utf8_lossy),
                    h.4
                )
            };
            panic!(
                "connection {i} ({} bytes{}): the kernel saw {} heads, the oracle {}\n\
                 kernel: {:#?}\noracle: {:#?}\nstream: {:?}",
                wire.len(),
                if mutate { ", mutated" } else { "" },
                seen.len(),
                expected.len(),
                seen.iter().map(show).collect::<Vec<_>>(),
                expected.iter().map(show).collect::<Vec<_>>(),
                String::from_utf8_lossy(&wire),
            );
        }
    }
    println!(
        "differential: {connections} connections ({mutated} mutated), {} segments, \
         {bytes} bytes, {messages} request heads and {responses} responses agreed in {:.1?}; \
         slowest segment {:?}",
        rig.segments,
        started.elapsed(),
        rig.slowest
    );
    assert_eq!(rig.counter(Counter::EventsLost), 0);
}

#[test]
fn a_million_hostile_segments_report_nothing_the_oracle_does_not_see() {
    let mut rig = Rig::new();
    let mut generator = Generator {
        rng: fastrand::Rng::with_seed(0x0bad_05e9),
    };
    let mut segments = 0u64;
    let mut connections = 0u64;
    let mut reported = 0u64;
    let started = Instant::now();
    while segments < 1_000_000 {
        connections += 1;
        // Random bytes, or a mutated request stream, cut small so the count is segments.
        let mut wire = if generator.rng.u8(..4) == 0 {
            (0..generator.rng.usize(1..3000))
                .map(|_| generator.rng.u8(..))
                .collect()
        } else {
            let mut w = generator.connection();
            w.truncate(4000);
            generator.mutate(&mut w);
            w
        };
        if wire.is_empty() {
            wire.push(b'G');
        }
        let port = 1024 + (connections % 60_000) as u16;
        rig.connect(port);
        let mut at = 0;
        while at < wire.len() {
            let end = (at + generator.rng.usize(1..=64)).min(wire.len());
            rig.send(port, at, &wire[at..end]);
            segments += 1;
            at = end;
        }
        let expected = oracle::requests(&wire, CAPTURED);
        let seen = rig.reported().0;
        reported += seen.len() as u64;
        // Nothing the oracle does not see, in order.
        let kernel: Vec<_> = seen.iter().map(|e| e.head.path_bytes().to_vec()).collect();
        let oracle: Vec<_> = expected.iter().map(|h| h.path.clone()).collect();
        assert!(
            kernel == oracle,
            "connection {connections}: kernel {:?}, oracle {:?}, stream {:?}",
            kernel
                .iter()
                .map(|p| String::from_utf8_lossy(p))
                .collect::<Vec<_>>(),
            oracle
                .iter()
                .map(|p| String::from_utf8_lossy(p))
                .collect::<Vec<_>>(),
            String::from_utf8_lossy(&wire[..wire.len().min(400)])
        );
    }
    let elapsed = started.elapsed();
    println!(
        "hostile: {segments} segments on {connections} connections, {reported} requests \
         reported (all seen by the oracle) in {elapsed:.1?}; slowest segment {:?}",
        rig.slowest
    );
    // Bounded time per packet: the programs' work is bounded by construction (bpf_loop
    // counts, the tail-call limit); this only catches a runaway (speed itself is
    // measured by `cargo xtask bench`, not asserted here).
    assert!(
        rig.slowest < Duration::from_millis(10),
        "slowest segment {:?}",
        rig.slowest
    );
}
