//! From the requests the kernel saw during one execution to call sites: occurrence
//! indices, and the causal link from each request to the one its caller was serving.

use std::{collections::HashMap, net::SocketAddr};

use crate::{
    model::{CallSite, Fault, Response, SiteCall},
    path::normalize,
};

/// One completed request of an execution, as the runner hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Monotonic start, nanoseconds.
    pub start_ns: u64,
    /// The target label of the caller (or `test`).
    pub source: String,
    pub source_cgroup: String,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub method: String,
    pub path: String,
    pub response: Response,
    /// Zero when there was no response.
    pub latency_us: u64,
    pub traceparent: Option<String>,
    pub injected: Option<Fault>,
}

impl Seen {
    /// Whether the server got the request at all: a reset, a timeout or an abort is done
    /// by the kernel on the caller's side, so the server never served it, and it can be
    /// nobody's parent.
    fn reached_server(&self) -> bool {
        !matches!(
            self.injected,
            Some(Fault::Reset | Fault::Timeout | Fault::Abort(_))
        )
    }

    /// When the caller stopped waiting; without a response, the end of the execution.
    fn end_ns(&self) -> u64 {
        match self.response {
            Response::Status { .. } => self.start_ns + self.latency_us * 1000,
            Response::None => u64::MAX,
        }
    }

    /// The W3C trace id (32 hex digits), when the request carries a traceparent.
    fn trace_id(&self) -> Option<&str> {
        let tp = self.traceparent.as_deref()?;
        let id = tp.get(3..35)?;
        id.bytes().all(|b| b.is_ascii_hexdigit()).then_some(id)
    }
}

/// Assigns call sites (in order of start) and parents.
///
/// The parent of a request R from service S is the latest request that started before R,
/// was still waiting for its response when R started, and was sent to S's address (the
/// request S was serving), and that the server got (a request that fi reset, blackholed or
/// aborted never reached it). When both carry a traceparent, they must share the trace id:
/// that tells concurrent inbound requests apart. On loopback every service has the same
/// address, so without traceparent the link may be wrong there (docs/EXPLORE.md).
pub fn call_sites(mut seen: Vec<Seen>) -> Vec<SiteCall> {
    seen.sort_by_key(|s| s.start_ns);
    let mut counts: HashMap<(String, SocketAddr, String, String), u32> = HashMap::new();
    let sites: Vec<CallSite> = seen
        .iter()
        .map(|s| {
            let path = normalize(&s.path);
            let destination = s.server;
            let key = (
                s.source.clone(),
                destination,
                s.method.clone(),
                path.clone(),
            );
            let count = counts.entry(key).or_insert(0);
            let index = *count;
            *count += 1;
            CallSite {
                source: s.source.clone(),
                source_cgroup: s.source_cgroup.clone(),
                destination,
                method: s.method.clone(),
                path,
                index,
            }
        })
        .collect();
    seen.iter()
        .enumerate()
        .map(|(i, s)| {
            let parent = (0..i)
                .rev()
                .find(|&j| {
                    let p = &seen[j];
                    p.server.ip() == s.client.ip()
                        && p.reached_server()
                        && p.source != s.source
                        && p.start_ns <= s.start_ns
                        && s.start_ns <= p.end_ns()
                        && match (p.trace_id(), s.trace_id()) {
                            (Some(a), Some(b)) => a == b,
                            _ => true,
                        }
                })
                .map(|j| sites[j].clone());
            SiteCall {
                site: sites[i].clone(),
                raw_path: s.path.clone(),
                response: s.response,
                latency_us: s.latency_us,
                parent,
                injected: s.injected,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(start: u64, source: &str, client: &str, server: &str, path: &str) -> Seen {
        Seen {
            start_ns: start,
            source: source.into(),
            source_cgroup: format!("lab/{source}"),
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            method: "GET".into(),
            path: path.into(),
            response: Response::Status { status: 200 },
            latency_us: 1000,
            traceparent: None,
            injected: None,
        }
    }

    #[test]
    fn occurrence_indices_count_per_endpoint_and_ignore_ids() {
        let calls = call_sites(vec![
            seen(30, "a", "10.0.0.1:5", "10.0.0.2:80", "/stock/43?x=1"),
            seen(10, "a", "10.0.0.1:3", "10.0.0.2:80", "/stock/42"),
            seen(20, "a", "10.0.0.1:4", "10.0.0.3:80", "/stock/42"),
        ]);
        let got: Vec<(String, u32)> = calls
            .iter()
            .map(|c| (c.site.destination.to_string(), c.site.index))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.2:80".to_owned(), 0),
                ("10.0.0.3:80".to_owned(), 0),
                ("10.0.0.2:80".to_owned(), 1)
            ]
        );
        assert_eq!(calls[2].site.path, "/stock/{id}");
        assert_eq!(calls[2].raw_path, "/stock/43?x=1");
        assert_eq!(calls[2].site.rule_path(), "/stock/*");
    }

    #[test]
    fn parent_is_the_request_the_caller_was_serving() {
        // test -> a (10.0.0.2), a -> b (10.0.0.3) while serving it; then a later call
        // from a after the first one ended has no parent.
        let mut outer = seen(10, "test", "10.0.0.1:1", "10.0.0.2:80", "/checkout");
        outer.latency_us = 100; // ends at 100_010 ns
        let inner = seen(50_000, "a", "10.0.0.2:7", "10.0.0.3:80", "/stock");
        let late = seen(200_000, "a", "10.0.0.2:8", "10.0.0.3:80", "/stock");
        let calls = call_sites(vec![outer, inner, late]);
        assert_eq!(calls[0].parent, None);
        assert_eq!(
            calls[1].parent.as_ref().map(|p| p.path.as_str()),
            Some("/checkout")
        );
        assert_eq!(calls[2].parent, None);
    }

    #[test]
    fn trace_ids_separate_concurrent_requests() {
        let tp = |id: char| {
            Some(format!(
                "00-{}-{}-01",
                id.to_string().repeat(32),
                "1".repeat(16)
            ))
        };
        let mut first = seen(10, "test", "10.0.0.1:1", "10.0.0.2:80", "/one");
        first.traceparent = tp('a');
        let mut second = seen(20, "test", "10.0.0.1:2", "10.0.0.2:80", "/two");
        second.traceparent = tp('b');
        let mut inner = seen(30, "a", "10.0.0.2:9", "10.0.0.3:80", "/x");
        inner.traceparent = tp('a');
        let calls = call_sites(vec![first, second, inner]);
        assert_eq!(
            calls[2].parent.as_ref().map(|p| p.path.as_str()),
            Some("/one")
        );
    }

    #[test]
    fn a_request_without_response_stays_open_until_the_end() {
        let mut outer = seen(10, "test", "10.0.0.1:1", "10.0.0.2:80", "/slow");
        outer.response = Response::None;
        outer.latency_us = 0;
        let inner = seen(9_000_000_000, "a", "10.0.0.2:7", "10.0.0.3:80", "/x");
        let calls = call_sites(vec![outer, inner]);
        assert!(calls[1].parent.is_some());
    }

    #[test]
    fn a_request_fi_stopped_on_its_way_is_nobodys_parent() {
        // On loopback every service has the same address: a's request is blackholed; b's
        // later request must not be taken for one made while serving it.
        let mut blackholed = seen(100, "a", "127.0.0.1:40000", "127.0.0.1:8081", "/x");
        blackholed.injected = Some(Fault::Timeout);
        blackholed.response = Response::None;
        blackholed.latency_us = 0;
        let later = seen(200, "b", "127.0.0.1:40001", "127.0.0.1:8082", "/y");
        let calls = call_sites(vec![blackholed.clone(), later.clone()]);
        assert_eq!(calls[1].parent, None);
        // Had it reached its server, it would be the parent.
        blackholed.injected = None;
        let calls = call_sites(vec![blackholed, later]);
        assert!(calls[1].parent.is_some());
    }
}
