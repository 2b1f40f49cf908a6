//! The request log: joins the kernel's request and response events into completed
//! requests, keeps the recent ones, feeds the call graph, and broadcasts to watchers.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use fi_common::{
    event::{FlowClosedEvent, RequestEvent, ResponseEvent},
    flow::as_v4,
    http::{CAPTURE_SLOTS, FLAG_PATH_TRUNCATED, Method, RequestHead},
    rule::Fault,
};
use tokio::sync::broadcast;

pub use crate::observed::{ObservedRequest, Outcome};
use crate::{cgroup_fs::CgroupPaths, events::KernelEvent, graph::CallGraph};

/// Completed requests kept for `include_recent` and late watchers.
pub const RECENT: usize = 10_000;
/// Requests waiting for a response, at most (a bound on memory, whatever the traffic).
pub const MAX_PENDING: usize = 65_536;

fn socket(addr: &[u8; 16], port: u16) -> SocketAddr {
    let ip = match as_v4(addr) {
        Some(v4) => IpAddr::from(v4),
        None => IpAddr::V6(Ipv6Addr::from(*addr)),
    };
    SocketAddr::new(ip, port)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Converts CLOCK_MONOTONIC (what the kernel stamps) to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    boot: SystemTime,
}

impl Clock {
    pub fn new() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes a timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let mono = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        Self {
            boot: SystemTime::now() - mono,
        }
    }

    pub fn wall(&self, monotonic_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(monotonic_ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The join of requests and responses. It never looks at the filesystem: the cgroups of
/// its events come named by the event pump (`crate::pump`), so holding its lock stays
/// short.
#[derive(Debug)]
pub struct RequestLog {
    clock: Clock,
    header_names: Vec<String>,
    next_id: u64,
    pending: HashMap<(u64, u32), ObservedRequest>,
    pending_order: VecDeque<(u64, u32)>,
    recent: VecDeque<Arc<ObservedRequest>>,
    graph: CallGraph,
    completed: broadcast::Sender<Arc<ObservedRequest>>,
    /// Requests into which a fault was injected, as soon as the kernel says so (before
    /// they complete): exploration keeps the test's list of injected faults current.
    injected: broadcast::Sender<Arc<ObservedRequest>>,
    /// Injections sent on `injected` so far: a subscriber that has received as many has
    /// seen every injection the log knows.
    injected_sent: u64,
    decode_errors: u64,
}

impl RequestLog {
    /// `header_names[i]` is the name captured in slot i.
    pub fn new(header_names: Vec<String>) -> Self {
        let (completed, _) = broadcast::channel(4096);
        let (injected, _) = broadcast::channel(1024);
        Self {
            clock: Clock::new(),
            header_names,
            next_id: 1,
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            recent: VecDeque::new(),
            graph: CallGraph::default(),
            completed,
            injected,
            injected_sent: 0,
            decode_errors: 0,
        }
    }

    /// Requests with an injected fault, when the fault happens; and how many were sent
    /// before this subscription.
    pub fn subscribe_injected(&self) -> (broadcast::Receiver<Arc<ObservedRequest>>, u64) {
        (self.injected.subscribe(), self.injected_sent)
    }

    /// Injections sent to subscribers so far.
    pub fn injected_sent(&self) -> u64 {
        self.injected_sent
    }

    /// Completed requests, as they complete.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ObservedRequest>> {
        self.completed.subscribe()
    }

    pub fn recent(&self) -> impl Iterator<Item = &Arc<ObservedRequest>> {
        self.recent.iter()
    }

    pub fn graph(&self) -> &CallGraph {
        &self.graph
    }

    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Requests still waiting for a response or for their connection to close (a
    /// blackholed request stays here until its connection dies, which can take minutes).
    pub fn pending_requests(&self) -> Vec<ObservedRequest> {
        self.pending.values().cloned().collect()
    }

    pub fn count_decode_error(&mut self) {
        self.decode_errors += 1;
    }

    /// Applies one event. `cgroups` names the cgroup of every request event (as
    /// [`CgroupIndex::path_of`] does); an id it lacks is shown as `cgroup:<id>`.
    pub fn on_event(&mut self, event: &KernelEvent, cgroups: &CgroupPaths) {
        match event {
            KernelEvent::Request(e) => self.on_request(e, cgroups),
            KernelEvent::Response(e) => self.on_response(e),
            KernelEvent::FlowClosed(e) => self.on_flow_closed(e),
            // Held packets go to the delay queue, not to the log.
            KernelEvent::Held(_) => {}
        }
    }

    fn on_request(&mut self, e: &RequestEvent, cgroups: &CgroupPaths) {
        let cgroup_id = e.header.cgroup_id;
        let head: &RequestHead = &e.head;
        // The kernel reports heads of known methods only: anything else is corrupt.
        let Some(method) = Method::from_u8(head.method) else {
            self.decode_errors += 1;
            return;
        };
        let headers = (0..CAPTURE_SLOTS)
            .filter_map(|slot| {
                let value = head.header_bytes(slot)?;
                let name = self.header_names.get(slot)?;
                Some((name.clone(), text(value)))
            })
            .collect();
        let request = ObservedRequest {
            id: self.next_id,
            start: self.clock.wall(e.header.ts_ns),
            source_cgroup: cgroups
                .get(&cgroup_id)
                .cloned()
                .unwrap_or_else(|| format!("cgroup:{cgroup_id}")),
            source_cgroup_id: cgroup_id,
            client: socket(&e.header.key.client, e.header.key.client_port),
            server: socket(&e.header.key.server, e.header.key.server_port),
            method,
            host: text(head.host_bytes()),
            path: text(head.path_bytes()),
            path_truncated: head.flags & FLAG_PATH_TRUNCATED != 0,
            http_minor: head.version_minor,
            headers,
            outcome: Outcome::NoResponse,
            index: e.index,
            fault: Fault::from_u8(e.fault).map(|f| (e.rule_id, f)),
        };
        self.next_id += 1;
        if request.fault.is_some() {
            let _ = self.injected.send(Arc::new(request.clone()));
            self.injected_sent += 1;
        }
        // A reset or a timeout ends the request at once, with its fault as its outcome:
        // no answer will come (a blackholed connection can linger for minutes).
        if matches!(request.fault, Some((_, Fault::Reset | Fault::Blackhole))) {
            self.complete(request);
            return;
        }
        let key = (e.header.cookie, e.index);
        self.pending.insert(key, request);
        self.pending_order.push_back(key);
        while self.pending.len() > MAX_PENDING {
            let Some(oldest) = self.pending_order.pop_front() else {
                break;
            };
            if let Some(request) = self.pending.remove(&oldest) {
                self.complete(request);
            }
        }
    }

    fn on_response(&mut self, e: &ResponseEvent) {
        let Some(mut request) = self.pending.remove(&(e.header.cookie, e.index)) else {
            return;
        };
        request.outcome = Outcome::Response {
            status: e.head.status,
            latency: Duration::from_nanos(e.latency_ns),
        };
        self.complete(request);
    }

    fn on_flow_closed(&mut self, e: &FlowClosedEvent) {
        for index in e.responses..e.requests {
            if let Some(request) = self.pending.remove(&(e.header.cookie, index)) {
                self.complete(request);
            }
        }
    }

    fn complete(&mut self, request: ObservedRequest) {
        self.graph.record(&request);
        let request = Arc::new(request);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Arc::clone(&request));
        // No watcher is not an error.
        let _ = self.completed.send(request);
        if self.pending_order.len() > 2 * MAX_PENDING {
            let pending = &self.pending;
            self.pending_order.retain(|k| pending.contains_key(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use fi_common::{
        event::{EVENT_FLOW_CLOSED, EVENT_REQUEST, EVENT_RESPONSE, EventHeader},
        flow::{FlowKey, v4_mapped},
        http::{CaptureConfig, parse_request, parse_response},
    };

    use super::*;

    fn header(kind: u32, cookie: u64) -> EventHeader {
        EventHeader {
            kind,
            ifindex: 1,
            ts_ns: 1_000,
            cookie,
            cgroup_id: 1,
            key: FlowKey {
                client: v4_mapped([10, 0, 0, 1]),
                server: v4_mapped([10, 0, 0, 2]),
                client_port: 40000,
                server_port: 8080,
                _pad: 0,
            },
        }
    }

    fn request(cookie: u64, index: u32, raw: &[u8]) -> KernelEvent {
        let config = CaptureConfig::from_names(["traceparent"]).unwrap();
        KernelEvent::Request(RequestEvent {
            header: header(EVENT_REQUEST, cookie),
            index,
            rule_id: 0,
            fault: 0,
            _pad: [0; 7],
            head: parse_request(raw, &config).unwrap(),
        })
    }

    fn response(cookie: u64, index: u32, raw: &[u8]) -> KernelEvent {
        KernelEvent::Response(ResponseEvent {
            header: header(EVENT_RESPONSE, cookie),
            index,
            _pad: 0,
            latency_ns: 2_500_000,
            head: parse_response(raw, &CaptureConfig::EMPTY).unwrap(),
        })
    }

    fn log() -> RequestLog {
        RequestLog::new(vec!["traceparent".into()])
    }

    #[test]
    fn responses_complete_their_requests_in_order() {
        let mut log = log();
        let mut rx = log.subscribe();
        // The pump names the events' cgroups; the log takes the names as given.
        let named = CgroupPaths::from([(1, "/shop/api".to_owned())]);
        log.on_event(
            &request(
                7,
                0,
                b"GET /a HTTP/1.1\r\nHost: b:8080\r\ntraceparent: t1\r\n\r\n",
            ),
            &named,
        );
        log.on_event(
            &request(7, 1, b"POST /b HTTP/1.1\r\nHost: b:8080\r\n\r\n"),
            &named,
        );
        assert!(
            rx.try_recv().is_err(),
            "nothing completes before its response"
        );
        log.on_event(
            &response(7, 0, b"HTTP/1.1 200 OK\r\n\r\n"),
            &CgroupPaths::new(),
        );
        log.on_event(
            &response(7, 1, b"HTTP/1.1 503 Busy\r\n\r\n"),
            &CgroupPaths::new(),
        );
        let first = rx.try_recv().unwrap();
        let second = rx.try_recv().unwrap();
        assert_eq!((first.method.as_str(), first.path.as_str()), ("GET", "/a"));
        assert_eq!(
            (first.source_cgroup.as_str(), first.source_cgroup_id),
            ("/shop/api", 1)
        );
        assert_eq!(
            first.headers,
            vec![("traceparent".to_owned(), "t1".to_owned())]
        );
        assert_eq!(first.client.to_string(), "10.0.0.1:40000");
        assert_eq!(first.server.to_string(), "10.0.0.2:8080");
        assert_eq!(
            second.outcome,
            Outcome::Response {
                status: 503,
                latency: Duration::from_micros(2500)
            }
        );
        let edge = log.graph().edges.values().next().unwrap();
        assert_eq!(edge.requests, 2);
        assert_eq!(edge.statuses.get(&503), Some(&1));
    }

    #[test]
    fn a_closed_flow_completes_what_got_no_answer() {
        let mut log = log();
        let mut rx = log.subscribe();
        log.on_event(
            &request(9, 0, b"GET /x HTTP/1.1\r\n\r\n"),
            &CgroupPaths::new(),
        );
        log.on_event(
            &KernelEvent::FlowClosed(FlowClosedEvent {
                header: header(EVENT_FLOW_CLOSED, 9),
                requests: 1,
                responses: 0,
            }),
            &CgroupPaths::new(),
        );
        let request = rx.try_recv().unwrap();
        assert_eq!(request.outcome, Outcome::NoResponse);
        assert_eq!(
            request.source_cgroup, "cgroup:1",
            "an id not named is shown as such"
        );
        assert_eq!(log.graph().edges.values().next().unwrap().no_response, 1);
    }

    #[test]
    fn a_response_without_a_request_is_ignored() {
        let mut log = log();
        log.on_event(
            &response(1, 0, b"HTTP/1.1 200 OK\r\n\r\n"),
            &CgroupPaths::new(),
        );
        assert_eq!(log.recent().count(), 0);
    }
}
