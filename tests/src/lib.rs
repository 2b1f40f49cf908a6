//! Test scenery for fi: "containers" (a network namespace plus a cgroup v2 directory),
//! a bridge between them, and a running fi-daemon. Everything is removed on drop, also
//! when a test panics, and names are unique per process so test binaries can run in
//! parallel.
//!
//! Only addresses assigned inside namespaces made here are ever used, and no namespace has
//! a default route: nothing a test sends can leave the machine.

pub mod clients;
pub mod daemon;
pub mod example;
pub mod kernel_view;
pub mod lo;
pub mod net;
pub mod oracle;
pub mod packet;
pub mod privileges;
pub mod process;

pub use daemon::Daemon;
pub use net::{Container, Lab};
pub use privileges::require_privileges;

/// Runs a future to completion on a fresh single-threaded runtime (tests are synchronous;
/// the daemon's client is async).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime")
        .block_on(future)
}

/// A file in tests/fixtures (test servers and clients).
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}
