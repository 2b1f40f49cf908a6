//! Keeps the TC programs on the interfaces the daemon was told about: named ones at start,
//! and host-side veths as containers come and go.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{control::Control, instance::INJECTOR_PREFIX, links::LinkEvent};

/// Which veths get the programs when they appear.
#[derive(Debug, Clone)]
pub struct VethPolicy {
    pub enabled: bool,
    /// Name prefixes; empty means every veth.
    pub prefixes: Vec<String>,
}

impl VethPolicy {
    pub fn wants(&self, name: &str) -> bool {
        self.enabled
            && !name.starts_with(INJECTOR_PREFIX)
            && (self.prefixes.is_empty() || self.prefixes.iter().any(|p| name.starts_with(p)))
    }
}

/// Applies interface events until the channel closes.
pub async fn follow(
    control: Arc<Control>,
    mut events: mpsc::UnboundedReceiver<LinkEvent>,
    policy: VethPolicy,
) {
    while let Some(event) = events.recv().await {
        match event {
            LinkEvent::Present {
                name, veth: true, ..
            } if policy.wants(&name) => match control.attach_interface(&name) {
                Ok(true) => {
                    info!(interface = %name, "attached TC egress and ingress to a new veth")
                }
                Ok(false) => {}
                // It may be gone already (a short-lived container): not fatal.
                Err(err) => warn!(interface = %name, %err, "could not attach to a new veth"),
            },
            LinkEvent::Gone { name, .. } => {
                if let Ok(true) = control.forget_interface(&name) {
                    info!(interface = %name, "interface gone");
                }
            }
            LinkEvent::Present { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_select_veths() {
        let all = VethPolicy {
            enabled: true,
            prefixes: vec![],
        };
        assert!(all.wants("veth12ab"));
        assert!(!all.wants("fii1234a"), "fi's own injector");
        assert!(!all.wants("fii1234a"), "fi's own injector");
        let some = VethPolicy {
            enabled: true,
            prefixes: vec!["veth".into(), "cali".into()],
        };
        assert!(some.wants("cali123"));
        assert!(!some.wants("eth0"));
        let off = VethPolicy {
            enabled: false,
            prefixes: vec![],
        };
        assert!(!off.wants("veth1"));
    }
}
