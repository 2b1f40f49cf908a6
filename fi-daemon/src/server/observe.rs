//! fi.v1.ObserveService: targets, the request stream, the call graph.

use std::{pin::Pin, sync::Arc};

use tokio::sync::{broadcast, mpsc};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{Daemon, convert, lock};
use crate::{
    api::v1::{self as api, observe_service_server::ObserveService},
    requests::ObservedRequest,
    targets::Targets,
};

/// Longest accepted filter string or target spec (bytes): bounds what a client can make
/// the daemon hold.
const MAX_FIELD: usize = 4096;
/// Targets one watch stream may lease.
const MAX_WATCH_TARGETS: usize = 64;

#[derive(Debug, Clone)]
pub struct ObserveApi {
    daemon: Arc<Daemon>,
}

impl ObserveApi {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }
}

fn check_len(field: &str, value: &str) -> Result<(), Status> {
    if value.len() > MAX_FIELD {
        return Err(Status::invalid_argument(format!(
            "{field} is longer than {MAX_FIELD} bytes"
        )));
    }
    Ok(())
}

/// What a watcher asked to see.
#[derive(Debug)]
struct Filter {
    cgroups: Vec<String>,
    method: String,
    host: String,
    path_prefix: String,
}

impl Filter {
    fn matches(&self, r: &ObservedRequest) -> bool {
        Targets::is_under(&r.source_cgroup, &self.cgroups)
            && (self.method.is_empty() || r.method.eq_ignore_ascii_case(&self.method))
            && (self.host.is_empty() || r.host.contains(&self.host))
            && (self.path_prefix.is_empty() || r.path.starts_with(&self.path_prefix))
    }
}

type RequestStream = Pin<Box<dyn Stream<Item = Result<api::ObservedRequest, Status>> + Send>>;

#[tonic::async_trait]
impl ObserveService for ObserveApi {
    async fn add_target(
        &self,
        request: Request<api::AddTargetRequest>,
    ) -> Result<Response<api::Target>, Status> {
        let spec = request.into_inner().target;
        check_len("target", &spec)?;
        if spec.is_empty() {
            return Err(Status::invalid_argument("target is empty"));
        }
        let info = lock(&self.daemon.targets)?
            .add(&spec)
            .map_err(convert::target_error)?;
        tracing::info!(target = %info.cgroup, "target added");
        Ok(Response::new(convert::target(info)))
    }

    async fn remove_target(
        &self,
        request: Request<api::RemoveTargetRequest>,
    ) -> Result<Response<api::RemoveTargetResponse>, Status> {
        let spec = request.into_inner().target;
        check_len("target", &spec)?;
        let info = lock(&self.daemon.targets)?
            .remove(&spec)
            .map_err(convert::target_error)?;
        tracing::info!(target = %info.cgroup, "target removed");
        Ok(Response::new(api::RemoveTargetResponse {}))
    }

    async fn list_targets(
        &self,
        _request: Request<api::ListTargetsRequest>,
    ) -> Result<Response<api::ListTargetsResponse>, Status> {
        let targets = lock(&self.daemon.targets)?
            .list()
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
        for (name, value) in [
            ("method", &req.method),
            ("host", &req.host),
            ("path_prefix", &req.path_prefix),
        ] {
            check_len(name, value)?;
        }
        if req.targets.len() > MAX_WATCH_TARGETS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_WATCH_TARGETS} targets per watch"
            )));
        }
        for spec in &req.targets {
            check_len("targets", spec)?;
        }
        // Lease every target first; on any error give back what was taken.
        let mut leased = Vec::new();
        let cgroups = {
            let mut targets = lock(&self.daemon.targets)?;
            for spec in &req.targets {
                match targets.lease(spec) {
                    Ok(info) => leased.push(info),
                    Err(err) => {
                        for info in &leased {
                            let _ = targets.release(info.cgroup_id);
                        }
                        return Err(convert::target_error(err));
                    }
                }
            }
            let cgroups: Vec<String> = if leased.is_empty() {
                targets.list().into_iter().map(|t| t.cgroup).collect()
            } else {
                leased.iter().map(|t| t.cgroup.clone()).collect()
            };
            if cgroups.is_empty() {
                return Err(Status::failed_precondition(
                    "no targets: name one in the watch (fictl watch --target CONTAINER) or \
                     add one first (fictl target add CONTAINER)",
                ));
            }
            cgroups
        };
        let filter = Filter {
            cgroups,
            method: req.method,
            host: req.host,
            path_prefix: req.path_prefix,
        };

        let (mut completed, recent) = {
            let log = lock(&self.daemon.requests)?;
            let mut recent: Vec<_> = if req.include_recent {
                log.recent()
                    .filter(|r| filter.matches(r))
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            // The newest N (`watch --recent --count N`), in the order they completed.
            if let Some(limit) = req.recent_limit {
                let keep = usize::try_from(limit).unwrap_or(usize::MAX);
                recent.drain(..recent.len().saturating_sub(keep));
            }
            (log.subscribe(), recent)
        };
        let (tx, rx) = mpsc::channel(256);
        let daemon = Arc::clone(&self.daemon);
        let mut stopping = self.daemon.stopping.subscribe();
        tokio::spawn(async move {
            for r in recent {
                if tx.send(Ok(convert::request(&r))).await.is_err() {
                    break;
                }
            }
            loop {
                tokio::select! {
                    () = tx.closed() => break,
                    changed = stopping.changed() => {
                        if changed.is_err() || *stopping.borrow() {
                            break;
                        }
                    }
                    next = completed.recv() => match next {
                        Ok(r) if filter.matches(&r) => {
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
            if let Ok(mut targets) = daemon.targets.lock() {
                for info in &leased {
                    let _ = targets.release(info.cgroup_id);
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_call_graph(
        &self,
        _request: Request<api::GetCallGraphRequest>,
    ) -> Result<Response<api::CallGraph>, Status> {
        let log = lock(&self.daemon.requests)?;
        Ok(Response::new(convert::graph(log.graph())))
    }
}
