//! fi's daemon as a library. From the bottom up:
//!
//! - the kernel and the machine: `dataplane` (programs, maps, attachments), `ebpf_object`,
//!   `cgroup_fs`, `links` (rtnetlink), `cut` (sock_diag), `instance` (names of what this
//!   daemon makes on shared ground);
//! - state services: `targets`, `rules` (the rule engine), `requests` + `events` + `graph`
//!   (what the kernel saw), `delay` (held requests), `store` (SQLite);
//! - the core that owns them: `control`, and the `explore` service built on it;
//! - tasks that feed the core: `pump` (ring buffer), `interfaces` (veths), `heartbeat`;
//! - `daemon` (the services together) and `server` (gRPC, the only transport).
//!
//! Nothing imports upwards in this list; a test (`tests/tests/layers.rs`) checks it. The
//! binary `fi-daemon` is a thin shell; fictl is a crate of its own (`fi-daemon/fictl`).

pub mod cgroup_fs;
pub mod clock;
pub mod config;
pub mod control;
pub mod cut;
pub mod daemon;
pub mod dataplane;
pub mod delay;
pub mod ebpf_object;
pub mod events;
pub mod explore;
pub mod graph;
pub mod heartbeat;
pub mod instance;
pub mod interfaces;
#[cfg(test)]
mod layers;
pub mod links;
pub mod observed;
pub mod pump;
pub mod requests;
pub mod rules;
pub mod server;
pub mod store;
pub mod targets;
pub mod tc_filters;

pub use fi_api::DEFAULT_SOCKET;

/// Where the daemon keeps explorations and their reports unless told otherwise.
pub const DEFAULT_STORE: &str = "/var/lib/fi/fi.db";

/// Request headers the kernel copies out unless told otherwise: the W3C trace context
/// (links a request to the inbound one that caused it) and the per-request targeting
/// header (a fault rule can select the requests of one user by it).
pub const DEFAULT_CAPTURE_HEADERS: [&str; 2] = ["traceparent", "x-fi-target"];
