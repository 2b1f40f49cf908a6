//! fi's daemon as a library: the data plane (eBPF programs and their attachments), the
//! gRPC API, and a client for it. The binaries `fi-daemon` and `fictl` are thin shells.

pub mod api;
pub mod cgroup_fs;
pub mod cli;
pub mod client;
pub mod config;
pub mod cut;
pub mod dataplane;
pub mod delay;
pub mod ebpf_object;
pub mod events;
pub mod explore;
pub mod graph;
pub mod heartbeat;
pub mod instance;
pub mod interfaces;
pub mod links;
pub mod pump;
pub mod render;
pub mod requests;
pub mod rules;
pub mod server;
pub mod store;
pub mod targets;

/// Where the daemon listens and fictl connects unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/fi/fi.sock";

/// Where the daemon keeps explorations and their reports unless told otherwise.
pub const DEFAULT_STORE: &str = "/var/lib/fi/fi.db";

/// Request headers the kernel copies out unless told otherwise: the W3C trace context
/// (links a request to the inbound one that caused it) and the per-request targeting
/// header (a fault rule can select the requests of one user by it).
pub const DEFAULT_CAPTURE_HEADERS: [&str; 2] = ["traceparent", "x-fi-target"];
