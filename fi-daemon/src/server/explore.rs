//! fi.v1.ExploreService: explorations, their reports, replays, and the faults injected.

use std::{pin::Pin, sync::Arc, time::Duration};

use fi_api::{
    time,
    v1::{self as api, explore_service_server::ExploreService},
};
use fi_explore::{
    model::{Execution, ExplorationRow, Outcome, Status as RunStatus},
    report,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::convert::explore_error;
use crate::{
    daemon::Daemon,
    explore::{ExploreRequest, Followed, InjectedFault, Progress, Running},
};

#[derive(Debug, Clone)]
pub struct ExploreApi {
    daemon: Arc<Daemon>,
    /// Whether explorations may be started over TCP (`--tcp-explore`).
    tcp_explore: bool,
}

impl ExploreApi {
    pub fn new(daemon: Arc<Daemon>, tcp_explore: bool) -> Self {
        Self {
            daemon,
            tcp_explore,
        }
    }

    /// Explorations run a command as root: over TCP only when the daemon allows it.
    fn check_transport<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if request.remote_addr().is_some() && !self.tcp_explore {
            return Err(Status::permission_denied(
                "explorations run the test command as root: not over TCP unless fi-daemon \
                 runs with --tcp-explore (use the Unix socket)",
            ));
        }
        Ok(())
    }
}

/// The request in the explorer's terms: the API's zero values mean "the default".
fn exploration(req: api::StartExplorationRequest) -> Result<ExploreRequest, Status> {
    let faults = req
        .faults
        .iter()
        .map(|f| match fi_api::fault::from_api(f) {
            Ok(Some(fault)) => Ok(fault),
            Ok(None) => Err(Status::invalid_argument("faults: a fault without a kind")),
            Err(e) => Err(Status::invalid_argument(format!("faults: {e}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ExploreRequest {
        targets: req.targets,
        faults,
        command: req.command,
        reset_command: Some(req.reset_command),
        working_dir: Some(req.working_dir).filter(|d| !d.is_empty()),
        reduction: !req.no_reduction,
        max_executions: Some(req.max_executions).filter(|n| *n != 0),
        run_timeout: time::duration("run_timeout", req.run_timeout)
            .map_err(|e| Status::invalid_argument(e.to_string()))?,
        test_requests: req.include_test_requests,
        label: req.label,
    })
}

fn status(s: RunStatus) -> i32 {
    (match s {
        RunStatus::Running => api::ExplorationStatus::Running,
        RunStatus::Finished => api::ExplorationStatus::Finished,
        RunStatus::Cancelled => api::ExplorationStatus::Cancelled,
        RunStatus::Interrupted => api::ExplorationStatus::Interrupted,
        RunStatus::Failed => api::ExplorationStatus::Failed,
    }) as i32
}

pub fn summary(e: &Execution) -> api::ExecutionSummary {
    let outcome = match &e.outcome {
        Outcome::Passed => api::ExecutionOutcome::Passed,
        Outcome::Failed { .. } => api::ExecutionOutcome::Failed,
        Outcome::TimedOut => api::ExecutionOutcome::TimedOut,
        Outcome::Error { .. } => api::ExecutionOutcome::Error,
        Outcome::Pruned => api::ExecutionOutcome::Pruned,
        Outcome::Interrupted => api::ExecutionOutcome::Interrupted,
    };
    api::ExecutionSummary {
        number: e.number,
        plan: e.plan.to_string(),
        outcome: outcome as i32,
        duration: time::to_api(Duration::from_millis(e.duration_ms)),
        pruned_reason: e
            .pruned
            .as_ref()
            .map(|p| p.reason.clone())
            .unwrap_or_default(),
        notes: e.notes.clone(),
        detail: e.outcome.describe(),
        requests: e.calls.len() as u32,
    }
}

fn progress(p: &Progress) -> api::ExplorationProgress {
    api::ExplorationProgress {
        exploration_id: p.id,
        status: status(p.status),
        done: p.done,
        known: p.known,
        failures: p.failures,
        elapsed: time::to_api(p.elapsed),
        remaining: time::to_api(p.remaining),
        last: p.last.as_ref().map(summary),
        error: p.error.clone().unwrap_or_default(),
    }
}

fn info(r: &ExplorationRow) -> api::ExplorationInfo {
    api::ExplorationInfo {
        id: r.id,
        status: status(r.status),
        created_unix_ms: r.created_ms as i64,
        finished_unix_ms: r.finished_ms.unwrap_or(0) as i64,
        targets: r.config.targets.clone(),
        command: r.config.command.clone(),
        executions: r.executions,
        failures: r.failures,
        replay_of: r
            .config
            .replay_of
            .map(|(x, e)| report::execution_id(x, e))
            .unwrap_or_default(),
        error: r.error.clone().unwrap_or_default(),
        label: r.config.label.clone().unwrap_or_default(),
        faults: r.config.faults.iter().map(ToString::to_string).collect(),
    }
}

fn injected(f: &InjectedFault) -> api::InjectedFault {
    api::InjectedFault {
        rule_id: f.rule,
        source: f.source.clone(),
        destination: f.destination.to_string(),
        method: f.method.clone(),
        path: f.path.clone(),
        fault: f.fault.to_string(),
        service: f.service.clone().unwrap_or_default(),
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<api::ExplorationProgress, Status>> + Send>>;

/// Streams a running exploration: where it is now, then every execution until it ends.
fn follow(running: &Arc<Running>) -> ProgressStream {
    let (now, mut updates) = running.follow();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let ended = now.status != RunStatus::Running;
        if tx.send(Ok(progress(&now))).await.is_err() || ended {
            return;
        }
        loop {
            match updates.recv().await {
                Ok(p) => {
                    let end = p.status != RunStatus::Running;
                    if tx.send(Ok(progress(&p))).await.is_err() || end {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// A finished exploration's last state, as a one-message stream.
fn ended(row: &ExplorationRow) -> ProgressStream {
    let message = api::ExplorationProgress {
        exploration_id: row.id,
        status: status(row.status),
        done: row.executions,
        known: row.executions,
        failures: row.failures,
        elapsed: None,
        remaining: None,
        last: None,
        error: row.error.clone().unwrap_or_default(),
    };
    Box::pin(tokio_stream::once(Ok(message)))
}

#[tonic::async_trait]
impl ExploreService for ExploreApi {
    type StartExplorationStream = ProgressStream;
    type WatchExplorationStream = ProgressStream;
    type ReplayExecutionStream = ProgressStream;

    async fn start_exploration(
        &self,
        request: Request<api::StartExplorationRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        self.check_transport(&request)?;
        let req = exploration(request.into_inner())?;
        let running = self
            .daemon
            .explorer()
            .start(req)
            .await
            .map_err(explore_error)?;
        Ok(Response::new(follow(&running)))
    }

    async fn watch_exploration(
        &self,
        request: Request<api::WatchExplorationRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let id = request.get_ref().exploration_id;
        Ok(Response::new(
            match self.daemon.explorer().follow(id).map_err(explore_error)? {
                Followed::Live(running) => follow(&running),
                Followed::Ended(row) => ended(&row),
            },
        ))
    }

    async fn cancel_exploration(
        &self,
        request: Request<api::CancelExplorationRequest>,
    ) -> Result<Response<api::CancelExplorationResponse>, Status> {
        self.daemon
            .explorer()
            .cancel(request.get_ref().exploration_id)
            .map_err(explore_error)?;
        Ok(Response::new(api::CancelExplorationResponse {}))
    }

    async fn list_explorations(
        &self,
        request: Request<api::ListExplorationsRequest>,
    ) -> Result<Response<api::ListExplorationsResponse>, Status> {
        let limit = match request.get_ref().limit {
            0 => 50,
            n => n.min(10_000),
        };
        let rows = self.daemon.explorer().list(limit).map_err(explore_error)?;
        Ok(Response::new(api::ListExplorationsResponse {
            explorations: rows.iter().map(info).collect(),
        }))
    }

    async fn get_report(
        &self,
        request: Request<api::GetReportRequest>,
    ) -> Result<Response<api::GetReportResponse>, Status> {
        let req = request.get_ref();
        let format = api::ReportFormat::try_from(req.format).map_err(|_| {
            Status::invalid_argument(format!("format: unknown value {}", req.format))
        })?;
        let x = self
            .daemon
            .explorer()
            .load(req.exploration_id)
            .map_err(explore_error)?;
        let (content, content_type) = match format {
            api::ReportFormat::Unspecified | api::ReportFormat::Text => {
                (report::text(&x), "text/plain; charset=utf-8")
            }
            api::ReportFormat::Json => (report::json(&x), "application/json"),
            api::ReportFormat::Html => (report::html(&x), "text/html; charset=utf-8"),
        };
        Ok(Response::new(api::GetReportResponse {
            content: content.into_bytes(),
            content_type: content_type.into(),
            info: Some(info(&x.row)),
        }))
    }

    async fn diff_explorations(
        &self,
        request: Request<api::DiffExplorationsRequest>,
    ) -> Result<Response<api::DiffExplorationsResponse>, Status> {
        let req = request.get_ref();
        let d = self
            .daemon
            .explorer()
            .diff(req.base, req.head)
            .map_err(explore_error)?;
        let list = |v: &[(String, u32, u32)]| {
            v.iter()
                .map(|(plan, b, h)| api::PlanComparison {
                    plan: plan.clone(),
                    base_execution: *b,
                    head_execution: *h,
                })
                .collect()
        };
        Ok(Response::new(api::DiffExplorationsResponse {
            new_failures: list(&d.new_failures),
            fixed: list(&d.fixed),
            still_failing: list(&d.still_failing),
            unchanged_passing: d.unchanged_passing,
            not_run: list(&d.not_run),
        }))
    }

    async fn replay_execution(
        &self,
        request: Request<api::ReplayExecutionRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        self.check_transport(&request)?;
        let req = request.get_ref();
        let running = self
            .daemon
            .explorer()
            .replay(req.exploration_id, req.execution)
            .await
            .map_err(explore_error)?;
        Ok(Response::new(follow(&running)))
    }

    async fn get_injected_faults(
        &self,
        request: Request<api::GetInjectedFaultsRequest>,
    ) -> Result<Response<api::GetInjectedFaultsResponse>, Status> {
        let req = request.get_ref();
        let found = self
            .daemon
            .explorer()
            .injected_now(req.exploration_id, req.execution)
            .await
            .map_err(explore_error)?;
        Ok(Response::new(api::GetInjectedFaultsResponse {
            exploration_id: found.exploration,
            execution: found.execution,
            faults: found.faults.iter().map(injected).collect(),
        }))
    }
}
