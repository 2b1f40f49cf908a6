//! Helpers for the functional tests that `fictl explore run` runs, in Rust: whether fi
//! injected a fault in this execution, and where. Filibuster's names; services named as
//! in fi's reports.
//!
//! ```no_run
//! match std::net::TcpStream::connect("10.77.0.2:8080") {
//!     Err(_) if fi_testing::was_fault_injected_on("payments") => { /* expected */ }
//!     other => { /* ... */ }
//! }
//! ```
//!
//! Each answer is exact when the call returns: the daemon reads what the kernel wrote
//! before it answers, and the kernel writes a fault before the client sees it. No polling.
//! Outside an exploration (no `FI_EXPLORATION_ID`), nothing was injected. The daemon is
//! the one at `FI_SOCKET`, which fi sets for the test.

use std::path::PathBuf;

use fi_api::v1 as api;

/// A fault fi injected into one of the execution's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The rule that injected it.
    pub rule: u32,
    /// Who sent the request: a target's name, or "test".
    pub source: String,
    /// ip:port.
    pub destination: String,
    /// The target the destination belongs to, as fi's reports name it.
    pub service: Option<String>,
    pub method: String,
    pub path: String,
    /// In fi's grammar: "reset", "timeout", "abort:503", "delay:200ms", "response-lost".
    pub fault: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach fi-daemon at {socket}: {message}")]
    Connect { socket: String, message: String },
    #[error("fi-daemon refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Runtime(#[from] std::io::Error),
}

/// The faults fi injected so far in this execution.
pub fn faults_injected() -> Result<Vec<Fault>, Error> {
    let Some(exploration) = env_number("FI_EXPLORATION_ID") else {
        return Ok(Vec::new());
    };
    let execution = env_number("FI_EXECUTION").unwrap_or(0);
    let socket = std::env::var_os("FI_SOCKET")
        .map_or_else(|| PathBuf::from("/run/fi/fi.sock"), PathBuf::from);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = fi_api::client::explore(socket.as_path())
            .await
            .map_err(|e| Error::Connect {
                socket: socket.display().to_string(),
                message: e.to_string(),
            })?;
        let found = client
            .get_injected_faults(api::GetInjectedFaultsRequest {
                exploration_id: exploration,
                execution: execution as u32,
            })
            .await
            .map_err(|status| Error::Refused(status.message().to_owned()))?
            .into_inner();
        Ok(found
            .faults
            .into_iter()
            .map(|f| Fault {
                rule: f.rule_id,
                source: f.source,
                destination: f.destination,
                service: (!f.service.is_empty()).then_some(f.service),
                method: f.method,
                path: f.path,
                fault: f.fault,
            })
            .collect())
    })
}

/// Whether fi injected any fault in this execution so far (false when fi cannot be
/// asked: a test then fails on its own error, as it would without fi).
pub fn was_fault_injected() -> bool {
    faults_injected().is_ok_and(|f| !f.is_empty())
}

/// Whether fi injected a fault into a request to `service` (its name in fi's report, or
/// its ip:port).
pub fn was_fault_injected_on(service: &str) -> bool {
    faults_injected().is_ok_and(|faults| faults.iter().any(|f| to(f, service)))
}

/// Whether fi injected a fault into a `method` request to `service`.
pub fn was_fault_injected_on_method(service: &str, method: &str) -> bool {
    faults_injected()
        .is_ok_and(|faults| faults.iter().any(|f| to(f, service) && f.method == method))
}

fn to(fault: &Fault, service: &str) -> bool {
    fault.service.as_deref() == Some(service) || fault.destination == service
}

fn env_number(name: &str) -> Option<i64> {
    std::env::var(name).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_is_on_a_service_by_name_or_address() {
        let fault = Fault {
            rule: 1,
            source: "test".into(),
            destination: "10.77.0.2:8080".into(),
            service: Some("payments".into()),
            method: "POST".into(),
            path: "/charge".into(),
            fault: "reset".into(),
        };
        assert!(to(&fault, "payments"));
        assert!(to(&fault, "10.77.0.2:8080"));
        assert!(!to(&fault, "orders"));
    }
}
