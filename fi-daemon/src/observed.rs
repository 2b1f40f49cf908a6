//! What the daemon tells of one request: the kernel's events, joined.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use fi_common::{http::Method, rule::Fault};

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Response {
        status: u16,
        latency: Duration,
    },
    /// The connection closed first.
    NoResponse,
}

/// One request, as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRequest {
    pub id: u64,
    pub start: SystemTime,
    pub source_cgroup: String,
    pub source_cgroup_id: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub method: Method,
    pub host: String,
    pub path: String,
    pub path_truncated: bool,
    pub http_minor: u8,
    /// Captured headers, lower-case name -> value.
    pub headers: Vec<(String, String)>,
    pub outcome: Outcome,
    pub index: u32,
    /// The fault a rule injected into it: (rule id, fault).
    pub fault: Option<(u32, Fault)>,
}
