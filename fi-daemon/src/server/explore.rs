//! fi.v1.ExploreService: explorations, their reports, replays, and the faults injected.

use std::{pin::Pin, sync::Arc, time::Duration};

use tokio::sync::{broadcast, mpsc};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{Daemon, lock};
use crate::{
    api::v1::{self as api, explore_service_server::ExploreService},
    explore::{
        model::{Execution, FaultSpec, Outcome},
        report,
        runner::{self, ExploreError, Mode, Progress, Running},
    },
    store::{ExplorationRow, ExploreConfig, Status as RunStatus, StoreError},
};

/// Longest accepted command, target or directory (bytes).
const MAX_FIELD: usize = 16 * 1024;
const MAX_TARGETS: usize = 64;
const DEFAULT_MAX_EXECUTIONS: u32 = 500;
const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ExploreApi {
    daemon: Arc<Daemon>,
}

impl ExploreApi {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }

    /// Explorations run a command as root: over TCP only when the daemon allows it.
    fn check_transport<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if request.remote_addr().is_some() && !self.daemon.tcp_explore {
            return Err(Status::permission_denied(
                "explorations run the test command as root: not over TCP unless fi-daemon \
                 runs with --tcp-explore (use the Unix socket)",
            ));
        }
        Ok(())
    }
}

fn explore_error(e: ExploreError) -> Status {
    let message = e.to_string();
    match e {
        ExploreError::Busy(_) => Status::failed_precondition(message),
        ExploreError::Invalid { .. } => Status::invalid_argument(message),
        ExploreError::NoExecution(..) => Status::not_found(message),
        ExploreError::Store(StoreError::NotFound(_)) => Status::not_found(message),
        ExploreError::Store(_) | ExploreError::Cgroup { .. } => Status::internal(message),
    }
}

fn store_error(e: StoreError) -> Status {
    explore_error(ExploreError::Store(e))
}

fn fault_spec(f: &api::Fault) -> Result<FaultSpec, Status> {
    let bad = |m: String| Status::invalid_argument(format!("faults: {m}"));
    Ok(match api::FaultKind::try_from(f.kind) {
        Ok(api::FaultKind::Reset) => FaultSpec::Reset,
        Ok(api::FaultKind::Timeout) => FaultSpec::Timeout,
        Ok(api::FaultKind::ResponseLost) => FaultSpec::ResponseLost,
        Ok(api::FaultKind::Abort) => {
            let status = u16::try_from(f.status)
                .ok()
                .filter(|s| (200..=599).contains(s))
                .ok_or_else(|| bad(format!("abort status {} is not in 200..=599", f.status)))?;
            FaultSpec::Abort { status }
        }
        Ok(api::FaultKind::Delay) => {
            let d = f
                .delay
                .and_then(|d| Duration::try_from(d).ok())
                .ok_or_else(|| bad("delay needs a positive duration".into()))?;
            let millis = u32::try_from(d.as_millis())
                .ok()
                .filter(|m| (1..=60_000).contains(m))
                .ok_or_else(|| bad("delay must be 1 ms ..= 60 s".into()))?;
            FaultSpec::Delay { millis }
        }
        Ok(api::FaultKind::Refuse) => {
            return Err(bad(
                "refuse acts on connections, not requests: it has no call site".into(),
            ));
        }
        Ok(api::FaultKind::Unspecified) | Err(_) => {
            return Err(bad(format!("unknown fault kind {}", f.kind)));
        }
    })
}

fn config(req: &api::StartExplorationRequest) -> Result<ExploreConfig, Status> {
    for (field, value) in [
        ("command", &req.command),
        ("reset_command", &req.reset_command),
        ("working_dir", &req.working_dir),
    ] {
        if value.len() > MAX_FIELD {
            return Err(Status::invalid_argument(format!(
                "{field} is longer than {MAX_FIELD} bytes"
            )));
        }
    }
    if req.targets.len() > MAX_TARGETS || req.targets.iter().any(|t| t.len() > MAX_FIELD) {
        return Err(Status::invalid_argument(format!(
            "targets: at most {MAX_TARGETS}, each under {MAX_FIELD} bytes"
        )));
    }
    let mut faults = req
        .faults
        .iter()
        .map(fault_spec)
        .collect::<Result<Vec<_>, _>>()?;
    if faults.is_empty() {
        faults = FaultSpec::DEFAULT_SET.to_vec();
    }
    faults.sort();
    faults.dedup();
    let run_timeout = match req.run_timeout {
        None => DEFAULT_RUN_TIMEOUT,
        Some(d) => Duration::try_from(d)
            .ok()
            .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
            .ok_or_else(|| Status::invalid_argument("run_timeout: must be in (0, 1 h]"))?,
    };
    Ok(ExploreConfig {
        targets: req.targets.clone(),
        faults,
        command: req.command.clone(),
        reset_command: Some(req.reset_command.clone()).filter(|c| !c.trim().is_empty()),
        working_dir: if req.working_dir.is_empty() {
            "/".into()
        } else {
            req.working_dir.clone()
        },
        reduction: !req.no_reduction,
        max_executions: if req.max_executions == 0 {
            DEFAULT_MAX_EXECUTIONS
        } else {
            req.max_executions
        },
        run_timeout_ms: run_timeout.as_millis() as u64,
        replay_of: None,
        test_requests: req.include_test_requests,
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

fn proto_duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
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
        duration: proto_duration(Duration::from_millis(e.duration_ms)),
        pruned_reason: e
            .pruned
            .as_ref()
            .map(|p| p.reason.clone())
            .unwrap_or_default(),
        notes: e.notes.clone(),
        detail: runner::describe(&e.outcome),
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
        elapsed: proto_duration(p.elapsed),
        remaining: proto_duration(p.remaining),
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
    }
}

/// An exploration from the store, with one of its executions.
fn load_execution(
    daemon: &Daemon,
    exploration: i64,
    number: u32,
) -> Result<(crate::store::Exploration, Execution), Status> {
    let x = lock(&daemon.explorer.store)?
        .load(exploration)
        .map_err(store_error)?;
    let e = x
        .executions
        .iter()
        .find(|e| e.number == number)
        .cloned()
        .ok_or_else(|| explore_error(ExploreError::NoExecution(exploration, number)))?;
    Ok((x, e))
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<api::ExplorationProgress, Status>> + Send>>;

/// Streams a running exploration: where it is now, then every execution until it ends.
fn follow(running: &Arc<Running>) -> ProgressStream {
    let mut updates = running.progress.subscribe();
    let now = running
        .current
        .lock()
        .map(|p| p.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
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
        let config = config(request.get_ref())?;
        let running = runner::start(&self.daemon, config, Mode::Explore).map_err(explore_error)?;
        tracing::info!(exploration = running.id, "exploration started");
        Ok(Response::new(follow(&running)))
    }

    async fn watch_exploration(
        &self,
        request: Request<api::WatchExplorationRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let id = request.get_ref().exploration_id;
        let running = lock(&self.daemon.explorer.running)?.clone();
        if let Some(running) = running.filter(|r| r.id == id) {
            return Ok(Response::new(follow(&running)));
        }
        let row = lock(&self.daemon.explorer.store)?
            .row(id)
            .map_err(store_error)?;
        Ok(Response::new(ended(&row)))
    }

    async fn cancel_exploration(
        &self,
        request: Request<api::CancelExplorationRequest>,
    ) -> Result<Response<api::CancelExplorationResponse>, Status> {
        let id = request.get_ref().exploration_id;
        let running = lock(&self.daemon.explorer.running)?.clone();
        match running {
            Some(r) if r.id == id => {
                r.cancel();
                tracing::warn!(exploration = id, "exploration cancelled");
                Ok(Response::new(api::CancelExplorationResponse {}))
            }
            _ => {
                let row = lock(&self.daemon.explorer.store)?
                    .row(id)
                    .map_err(store_error)?;
                Err(Status::failed_precondition(format!(
                    "exploration {id} is not running (it is {})",
                    row.status.as_str()
                )))
            }
        }
    }

    async fn list_explorations(
        &self,
        request: Request<api::ListExplorationsRequest>,
    ) -> Result<Response<api::ListExplorationsResponse>, Status> {
        let limit = match request.get_ref().limit {
            0 => 50,
            n => n.min(10_000),
        };
        let rows = lock(&self.daemon.explorer.store)?
            .list(limit)
            .map_err(store_error)?;
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
        let x = lock(&self.daemon.explorer.store)?
            .load(req.exploration_id)
            .map_err(store_error)?;
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
        let (base, head) = {
            let store = lock(&self.daemon.explorer.store)?;
            (
                store.load(req.base).map_err(store_error)?,
                store.load(req.head).map_err(store_error)?,
            )
        };
        let d = report::diff(&base, &head);
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
        let (x, execution) = load_execution(&self.daemon, req.exploration_id, req.execution)?;
        let mut config = x.row.config.clone();
        config.replay_of = Some((req.exploration_id, req.execution));
        let running = runner::start(&self.daemon, config, Mode::Replay(execution.plan.clone()))
            .map_err(explore_error)?;
        tracing::info!(
            exploration = running.id,
            replays = %report::execution_id(req.exploration_id, req.execution),
            "replay started"
        );
        Ok(Response::new(follow(&running)))
    }

    async fn get_injected_faults(
        &self,
        request: Request<api::GetInjectedFaultsRequest>,
    ) -> Result<Response<api::GetInjectedFaultsResponse>, Status> {
        let req = request.get_ref();
        let running = lock(&self.daemon.explorer.running)?.clone();
        let to_api = |f: &runner::InjectedFault| api::InjectedFault {
            rule_id: f.rule,
            source: f.source.clone(),
            destination: f.destination.clone(),
            method: f.method.clone(),
            path: f.path.clone(),
            fault: f.fault.clone(),
        };
        if let Some(r) = running.filter(|r| req.exploration_id == 0 || r.id == req.exploration_id) {
            let injected = lock(&r.injected)?;
            if req.exploration_id == 0 || req.execution == injected.0 {
                return Ok(Response::new(api::GetInjectedFaultsResponse {
                    exploration_id: r.id,
                    execution: injected.0,
                    faults: injected.1.iter().map(to_api).collect(),
                }));
            }
        }
        if req.exploration_id == 0 {
            return Err(Status::failed_precondition("no exploration is running"));
        }
        // A past execution: the faults are those its requests record.
        let (_, e) = load_execution(&self.daemon, req.exploration_id, req.execution)?;
        let faults = e
            .calls
            .iter()
            .filter_map(|c| {
                c.injected.map(|f| api::InjectedFault {
                    rule_id: 0,
                    source: c.site.source.clone(),
                    destination: c.site.destination.clone(),
                    method: c.site.method.clone(),
                    path: c.raw_path.clone(),
                    fault: f.to_string(),
                })
            })
            .collect();
        Ok(Response::new(api::GetInjectedFaultsResponse {
            exploration_id: req.exploration_id,
            execution: req.execution,
            faults,
        }))
    }
}
