//! fi.v1.SystemService.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Daemon, lock};
use crate::{
    api::v1::{self as api, system_service_server::SystemService},
    dataplane::Hook,
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

#[tonic::async_trait]
impl SystemService for SystemApi {
    async fn get_status(
        &self,
        _request: Request<api::GetStatusRequest>,
    ) -> Result<Response<api::GetStatusResponse>, Status> {
        let dataplane = lock(&self.daemon.dataplane)?;
        let counters = dataplane
            .counters()
            .map_err(|e| Status::internal(e.to_string()))?
            .into_iter()
            .map(|(counter, value)| api::Counter {
                name: counter.name().to_owned(),
                value,
            })
            .collect();
        let attachments = dataplane
            .attachments()
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
        Ok(Response::new(api::GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kernel_release: self.daemon.kernel_release.clone(),
            attachments,
            counters,
            uptime_seconds: dataplane.loaded_at().elapsed().as_secs(),
        }))
    }
}
