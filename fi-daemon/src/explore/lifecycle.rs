//! The explorer as a service: starts an exploration or a replay (one at a time), tells
//! watchers where it is, cancels it, and answers for past ones from the store.
//!
//! Locks: `running`, then `store`; neither is held while the core ([`Control`]) is called.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use fi_common::fault::Fault;
use fi_explore::{
    model::{Execution, ExplorationRow, ExploreConfig, Status},
    report,
};

use super::handle::{ExploreError, InjectedFault, Mode, Running};
use super::{handle::invalid, records::Records, run::Run};
use crate::{control::Control, store::Store};

/// Longest accepted command, target or directory (bytes).
const MAX_FIELD: usize = 16 * 1024;
const MAX_TARGETS: usize = 64;
const DEFAULT_MAX_EXECUTIONS: u32 = 500;
const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(3600);

/// What a client asks for; [`Explorer::start`] fills in the defaults.
#[derive(Debug, Clone, Default)]
pub struct ExploreRequest {
    pub targets: Vec<String>,
    /// None: [`Fault::DEFAULT_SET`].
    pub faults: Vec<Fault>,
    pub command: String,
    pub reset_command: Option<String>,
    /// None: `/`.
    pub working_dir: Option<String>,
    pub reduction: bool,
    /// None: 500.
    pub max_executions: Option<u32>,
    /// None: 60 s.
    pub run_timeout: Option<Duration>,
    pub test_requests: bool,
    /// A name for listings.
    pub label: Option<String>,
}

/// Longest label (bytes).
const MAX_LABEL: usize = 256;

impl ExploreRequest {
    /// The configuration to run and record, with every default applied and every field
    /// checked.
    fn config(self) -> Result<ExploreConfig, ExploreError> {
        let working_dir = self.working_dir.unwrap_or_else(|| "/".into());
        for (field, value) in [("command", &self.command), ("working_dir", &working_dir)] {
            if value.len() > MAX_FIELD {
                return Err(invalid(field, format!("longer than {MAX_FIELD} bytes")));
            }
        }
        if self.command.trim().is_empty() {
            return Err(invalid("command", "the test command is empty"));
        }
        if !Path::new(&working_dir).is_absolute() {
            return Err(invalid(
                "working_dir",
                format!("{working_dir:?} is not an absolute path"),
            ));
        }
        if let Some(label) = &self.label {
            if label.trim().is_empty() {
                return Err(invalid("label", "empty; leave it out for none"));
            }
            if label.len() > MAX_LABEL || label.chars().any(char::is_control) {
                return Err(invalid(
                    "label",
                    format!("at most {MAX_LABEL} bytes, without control characters"),
                ));
            }
        }
        let reset_command = self.reset_command.filter(|c| !c.trim().is_empty());
        if reset_command.as_ref().is_some_and(|c| c.len() > MAX_FIELD) {
            return Err(invalid(
                "reset_command",
                format!("longer than {MAX_FIELD} bytes"),
            ));
        }
        if self.targets.len() > MAX_TARGETS || self.targets.iter().any(|t| t.len() > MAX_FIELD) {
            return Err(invalid(
                "targets",
                format!("at most {MAX_TARGETS}, each under {MAX_FIELD} bytes"),
            ));
        }
        if let Some(f) = self.faults.iter().find(|f| !f.acts_on_requests()) {
            return Err(invalid(
                "faults",
                format!("{f} acts on connections, not requests: it has no call site"),
            ));
        }
        let mut faults = if self.faults.is_empty() {
            Fault::DEFAULT_SET.to_vec()
        } else {
            self.faults
        };
        faults.sort();
        faults.dedup();
        let run_timeout = self.run_timeout.unwrap_or(DEFAULT_RUN_TIMEOUT);
        if run_timeout.is_zero() || run_timeout > MAX_RUN_TIMEOUT {
            return Err(invalid("run_timeout", "must be in (0, 1 h]"));
        }
        let max_executions = match self.max_executions {
            None => DEFAULT_MAX_EXECUTIONS,
            Some(0) => return Err(invalid("max_executions", "0: give at least 1")),
            Some(n) => n,
        };
        Ok(ExploreConfig {
            targets: self.targets,
            faults,
            command: self.command,
            reset_command,
            working_dir,
            reduction: self.reduction,
            max_executions,
            run_timeout_ms: run_timeout.as_millis() as u64,
            replay_of: None,
            test_requests: self.test_requests,
            label: self.label,
        })
    }
}

/// An exploration to follow: running, or already over.
#[derive(Debug)]
pub enum Followed {
    Live(Arc<Running>),
    Ended(Box<ExplorationRow>),
}

/// Faults injected in one execution.
#[derive(Debug, Clone)]
pub struct Injected {
    pub exploration: i64,
    pub execution: u32,
    pub faults: Vec<InjectedFault>,
}

/// The daemon's explorer: the store and the exploration in progress (one at a time).
#[derive(Debug)]
pub struct Explorer {
    control: Arc<Control>,
    running: Mutex<Option<Arc<Running>>>,
    records: Arc<Records>,
    /// Where FI_INJECTED_FAULTS files live.
    runtime_dir: PathBuf,
    /// The daemon's socket, which tests reach it by (FI_SOCKET).
    socket: PathBuf,
    /// Where test cgroups are made (absolute): the sock_ops cgroup, so that the test's
    /// connections are attributed.
    cgroup_parent: PathBuf,
}

impl Explorer {
    /// `socket` is the daemon's socket; its directory holds the explorations' files.
    pub fn new(
        control: Arc<Control>,
        store: Store,
        socket: PathBuf,
        cgroup_parent: PathBuf,
    ) -> Explorer {
        Explorer {
            control,
            running: Mutex::new(None),
            records: Arc::new(Records::new(store)),
            runtime_dir: socket
                .parent()
                .map_or_else(|| PathBuf::from("/run/fi"), Path::to_owned),
            socket,
            cgroup_parent,
        }
    }

    fn running(&self) -> Result<Option<Arc<Running>>, ExploreError> {
        Ok(self
            .running
            .lock()
            .map_err(|_| ExploreError::Poisoned("running"))?
            .clone())
    }

    /// Checks the request, records the exploration and starts it in the background.
    pub async fn start(
        self: &Arc<Self>,
        request: ExploreRequest,
    ) -> Result<Arc<Running>, ExploreError> {
        let running = self.launch(request.config()?, Mode::Explore).await?;
        tracing::info!(exploration = running.id, "exploration started");
        Ok(running)
    }

    /// Runs one execution of a past exploration again, under the same configuration.
    pub async fn replay(
        self: &Arc<Self>,
        exploration: i64,
        execution: u32,
    ) -> Result<Arc<Running>, ExploreError> {
        let (row, e) = self.execution(exploration, execution)?;
        let mut config = row.config;
        config.replay_of = Some((exploration, execution));
        let running = self.launch(config, Mode::Replay(e.plan)).await?;
        tracing::info!(
            exploration = running.id,
            replays = %report::execution_id(exploration, execution),
            "replay started"
        );
        Ok(running)
    }

    async fn launch(
        self: &Arc<Self>,
        config: ExploreConfig,
        mode: Mode,
    ) -> Result<Arc<Running>, ExploreError> {
        for spec in &config.targets {
            self.control
                .resolve_target(spec)
                .await
                .map_err(|e| invalid("targets", e.to_string()))?;
        }
        let mut slot = self
            .running
            .lock()
            .map_err(|_| ExploreError::Poisoned("running"))?;
        if let Some(running) = slot.as_ref() {
            return Err(ExploreError::Busy(running.id));
        }
        let id = self.records.store()?.create(&config)?;
        let running = Arc::new(Running::new(id));
        *slot = Some(Arc::clone(&running));
        drop(slot);
        tokio::spawn(Arc::clone(self).drive(Arc::clone(&running), config, mode));
        Ok(running)
    }

    /// Runs an exploration to its end and records how it ended.
    async fn drive(self: Arc<Self>, running: Arc<Running>, config: ExploreConfig, mode: Mode) {
        let id = running.id;
        let ground = super::run::Ground {
            control: Arc::clone(&self.control),
            records: Arc::clone(&self.records),
            runtime_dir: self.runtime_dir.clone(),
            socket: self.socket.clone(),
            cgroup_parent: self.cgroup_parent.clone(),
        };
        let (status, error) = match Run::new(ground, &running, config).await {
            Ok(mut run) => {
                let outcome = run.go(mode).await;
                run.teardown().await;
                outcome
            }
            Err(e) => (Status::Failed, Some(e.to_string())),
        };
        match self.records.store() {
            Ok(store) => {
                if let Err(e) = store.finish(id, status, error.as_deref()) {
                    tracing::error!(exploration = id, "recording the end: {e}");
                }
            }
            Err(e) => tracing::error!(exploration = id, "recording the end: {e}"),
        }
        let (mut last, _) = running.follow();
        last.status = status;
        last.error = error;
        last.last = None;
        running.publish(last);
        if let Ok(mut slot) = self.running.lock() {
            *slot = None;
        }
        tracing::info!(
            exploration = id,
            status = status.as_str(),
            "exploration ended"
        );
    }

    /// The exploration to follow: the running one, or a past one's last state.
    pub fn follow(&self, id: i64) -> Result<Followed, ExploreError> {
        if let Some(running) = self.running()?.filter(|r| r.id == id) {
            return Ok(Followed::Live(running));
        }
        Ok(Followed::Ended(Box::new(self.records.store()?.row(id)?)))
    }

    pub fn cancel(&self, id: i64) -> Result<(), ExploreError> {
        match self.running()? {
            Some(r) if r.id == id => {
                r.cancel();
                tracing::warn!(exploration = id, "exploration cancelled");
                Ok(())
            }
            _ => Err(ExploreError::NotRunning {
                id,
                status: self.records.store()?.row(id)?.status.as_str(),
            }),
        }
    }

    /// The newest explorations first.
    pub fn list(&self, limit: u32) -> Result<Vec<ExplorationRow>, ExploreError> {
        Ok(self.records.store()?.list(limit)?)
    }

    pub fn load(&self, id: i64) -> Result<fi_explore::model::Exploration, ExploreError> {
        Ok(self.records.store()?.load(id)?)
    }

    /// Two explorations, read together.
    pub fn diff(&self, base: i64, head: i64) -> Result<report::Diff, ExploreError> {
        let store = self.records.store()?;
        let (base, head) = (store.load(base)?, store.load(head)?);
        drop(store);
        Ok(report::diff(&base, &head))
    }

    /// An exploration's row and one of its executions.
    fn execution(
        &self,
        exploration: i64,
        number: u32,
    ) -> Result<(ExplorationRow, Execution), ExploreError> {
        let x = self.records.store()?.load(exploration)?;
        let e = x
            .executions
            .iter()
            .find(|e| e.number == number)
            .cloned()
            .ok_or(ExploreError::NoExecution(exploration, number))?;
        Ok((x.row, e))
    }

    /// [`Explorer::injected`], exact at the moment of the call for the running execution:
    /// every fault the kernel injected before it is in the answer. The event pump reads the
    /// ring buffer at once, and the answer waits until the execution has taken in what the
    /// log then sent (a moment; a second at most). A test can ask right after the error it
    /// saw, with no polling.
    pub async fn injected_now(
        &self,
        exploration: i64,
        execution: u32,
    ) -> Result<Injected, ExploreError> {
        if let Some(r) = self
            .running()?
            .filter(|r| exploration == 0 || r.id == exploration)
        {
            let sent = self.control.settle().await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            while r.injections_seen() < sent && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        self.injected(exploration, execution)
    }

    /// The faults injected in an execution: the running one's as they happen (exploration
    /// 0: whichever runs), a past one's from what its requests recorded.
    pub fn injected(&self, exploration: i64, execution: u32) -> Result<Injected, ExploreError> {
        if let Some(r) = self
            .running()?
            .filter(|r| exploration == 0 || r.id == exploration)
        {
            let (now, faults) = r.injected();
            if exploration == 0 || execution == now {
                return Ok(Injected {
                    exploration: r.id,
                    execution: now,
                    faults,
                });
            }
        }
        if exploration == 0 {
            return Err(ExploreError::NoneRunning);
        }
        let x = self.load(exploration)?;
        let e = x
            .executions
            .iter()
            .find(|e| e.number == execution)
            .ok_or(ExploreError::NoExecution(exploration, execution))?;
        let faults = e
            .calls
            .iter()
            .filter_map(|c| {
                c.injected.map(|fault| InjectedFault {
                    execution,
                    rule: 0,
                    source: c.site.source.clone(),
                    destination: c.site.destination,
                    method: c.site.method.clone(),
                    path: c.raw_path.clone(),
                    service: x
                        .graph
                        .as_ref()
                        .and_then(|g| g.name_of(&c.site.destination))
                        .cloned(),
                    fault,
                })
            })
            .collect();
        Ok(Injected {
            exploration,
            execution,
            faults,
        })
    }
}
