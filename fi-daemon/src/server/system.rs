//! fi.v1.SystemService.

use std::sync::Arc;

use fi_api::v1::{self as api, system_service_server::SystemService};
use tonic::{Request, Response, Status};

use super::convert::control_error;
use crate::{
    daemon::Daemon,
    dataplane::{Hook, TcMode},
};

#[derive(Debug, Clone)]
pub struct SystemApi {
    daemon: Arc<Daemon>,
}

impl SystemApi {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }
}

fn capability(name: &str, present: bool, detail: &str) -> api::Capability {
    api::Capability {
        name: name.to_owned(),
        present,
        detail: detail.to_owned(),
    }
}

fn usage(name: &str, used: u64, capacity: u32) -> api::MapUsage {
    api::MapUsage {
        name: name.to_owned(),
        used,
        capacity: u64::from(capacity),
    }
}

#[tonic::async_trait]
impl SystemService for SystemApi {
    async fn get_status(
        &self,
        _request: Request<api::GetStatusRequest>,
    ) -> Result<Response<api::GetStatusResponse>, Status> {
        let status = self.daemon.control().status().map_err(control_error)?;
        let counters = status
            .counters
            .into_iter()
            .map(|(counter, value)| api::Counter {
                name: counter.name().to_owned(),
                value,
            })
            .collect();
        let attachments = status
            .attachments
            .iter()
            .map(|a| api::Attachment {
                kind: match a.hook {
                    Hook::TcEgress => api::AttachKind::TcEgress,
                    Hook::TcIngress => api::AttachKind::TcIngress,
                    Hook::SockOps => api::AttachKind::SockOps,
                } as i32,
                target: a.target.clone(),
                program: a.program.to_owned(),
            })
            .collect();
        let capabilities = vec![
            // Everything below is required at load: a daemon that runs has them.
            capability(
                "tcx",
                status.tc_mode == Some(TcMode::Tcx),
                match status.tc_mode {
                    Some(TcMode::Tcx) => "tc attach: TCX links, which die with the daemon",
                    Some(TcMode::Netlink) => {
                        "tc attach: netlink clsact filters (no TCX here, or --tc netlink); \
                         a dead or hung daemon's faults stop within 1 s (dead-man switch) \
                         and the next daemon removes its filters"
                    }
                    None => "tc attach: nothing attached yet",
                },
            ),
            capability(
                "bpf_loop",
                true,
                "parsing and rule evaluation (Linux 5.17+)",
            ),
            capability("ring_buffer", true, "events to the daemon (Linux 5.8+)"),
            capability(
                "btf",
                std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
                "/sys/kernel/btf/vmlinux",
            ),
            capability(
                "cgroup2",
                status.cgroup2.is_some(),
                &status
                    .cgroup2
                    .map(|m| m.display().to_string())
                    .unwrap_or_default(),
            ),
        ];
        let maps = vec![
            usage(
                fi_common::maps::FI_FLOWS,
                status.flows_in_use,
                fi_common::flow::MAX_FLOWS,
            ),
            usage(
                fi_common::maps::FI_RULES,
                u64::from(status.active_rules),
                fi_common::rule::MAX_RULES,
            ),
            usage(
                fi_common::maps::FI_TARGETS,
                u64::from(status.targets),
                fi_common::flow::MAX_TARGETS,
            ),
        ];
        Ok(Response::new(api::GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kernel_release: status.kernel_release,
            attachments,
            counters,
            uptime_seconds: status.uptime.as_secs(),
            capabilities,
            maps,
            rules: status.active_rules,
            targets: status.targets,
        }))
    }
}
