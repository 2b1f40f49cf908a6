//! fi.v1.ObserveService: targets, the request stream, the call graph.

use std::{pin::Pin, sync::Arc};

use fi_api::v1::{self as api, observe_service_server::ObserveService};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::convert::{self, control_error};
use crate::{control::WatchRequest, daemon::Daemon};

#[derive(Debug, Clone)]
pub struct ObserveApi {
    daemon: Arc<Daemon>,
}

impl ObserveApi {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }
}

type RequestStream = Pin<Box<dyn Stream<Item = Result<api::ObservedRequest, Status>> + Send>>;

/// The API's "empty means any" for a watch filter.
fn given(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}

#[tonic::async_trait]
impl ObserveService for ObserveApi {
    async fn add_target(
        &self,
        request: Request<api::AddTargetRequest>,
    ) -> Result<Response<api::Target>, Status> {
        let spec = request.into_inner().target;
        let info = self
            .daemon
            .control()
            .add_target(&spec)
            .await
            .map_err(control_error)?;
        tracing::info!(target = %info.cgroup, "target added");
        Ok(Response::new(convert::target(info)))
    }

    async fn remove_target(
        &self,
        request: Request<api::RemoveTargetRequest>,
    ) -> Result<Response<api::RemoveTargetResponse>, Status> {
        let spec = request.into_inner().target;
        let info = self
            .daemon
            .control()
            .remove_target(&spec)
            .await
            .map_err(control_error)?;
        tracing::info!(target = %info.cgroup, "target removed");
        Ok(Response::new(api::RemoveTargetResponse {}))
    }

    async fn list_targets(
        &self,
        _request: Request<api::ListTargetsRequest>,
    ) -> Result<Response<api::ListTargetsResponse>, Status> {
        let targets = self
            .daemon
            .control()
            .list_targets()
            .map_err(control_error)?
            .into_iter()
            .map(convert::target)
            .collect();
        Ok(Response::new(api::ListTargetsResponse { targets }))
    }

    type WatchRequestsStream = RequestStream;

    async fn watch_requests(
        &self,
        request: Request<api::WatchRequestsRequest>,
    ) -> Result<Response<Self::WatchRequestsStream>, Status> {
        let req = request.into_inner();
        let recent = req.include_recent.then(|| {
            req.recent_limit
                .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
        });
        let mut watch = self
            .daemon
            .control()
            .watch(WatchRequest {
                targets: req.targets,
                method: given(req.method),
                host: given(req.host),
                path_prefix: given(req.path_prefix),
                recent,
            })
            .await
            .map_err(control_error)?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            for r in std::mem::take(&mut watch.past) {
                if tx.send(Ok(convert::request(&r))).await.is_err() {
                    return;
                }
            }
            loop {
                tokio::select! {
                    () = tx.closed() => break,
                    changed = watch.stopping.changed() => {
                        if changed.is_err() || *watch.stopping.borrow() {
                            break;
                        }
                    }
                    next = watch.live.recv() => match next {
                        Ok(r) if watch.filter.matches(&r) => {
                            if tx.send(Ok(convert::request(&r))).await.is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(skipped = n, "a watcher is too slow; requests skipped");
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
            // The watch's lease (its targets) goes with it.
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_call_graph(
        &self,
        _request: Request<api::GetCallGraphRequest>,
    ) -> Result<Response<api::CallGraph>, Status> {
        let graph = self.daemon.control().call_graph().map_err(control_error)?;
        Ok(Response::new(convert::graph(&graph)))
    }
}
