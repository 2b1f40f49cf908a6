//! fi's daemon as a library: the data plane (eBPF programs and their attachments), the
//! gRPC API, and a client for it. The binaries `fi-daemon` and `fictl` are thin shells.

pub mod api;
pub mod cgroup_fs;
pub mod client;
pub mod dataplane;
pub mod ebpf_object;
pub mod server;

/// Where the daemon listens and fictl connects unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/fi/fi.sock";
