//! Runs an exploration in the daemon: for each plan the search hands out, installs one
//! rule per planned fault, runs the test command in its own cgroup, collects the
//! requests the kernel saw, and stores the execution.

use std::{
    ffi::CString,
    io::Write as _,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use fi_common::rule::Fault;
use serde::Serialize;
use tokio::{io::AsyncReadExt as _, sync::broadcast};

use super::{
    model::{Execution, FaultSpec, Outcome, Plan, PlannedFault, Response, SiteCall},
    search::{Next, Search, SearchConfig},
    sites::{Seen, call_sites},
};
use crate::{
    requests::{ObservedRequest, Outcome as RequestOutcome},
    rules::{self, Draft},
    server::Daemon,
    store::{ExploreConfig, Status, Store, StoreError},
    targets::{TargetInfo, Targets},
};

pub use super::model::TEST_SOURCE;
/// How long events may trail the test's exit (ring buffer, response pairing).
const SETTLE: Duration = Duration::from_millis(250);
/// Output kept per execution.
const OUTPUT_TAIL: usize = 4096;

/// A fault injected during the running execution (a line of FI_INJECTED_FAULTS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InjectedFault {
    pub execution: u32,
    pub rule: u32,
    pub source: String,
    pub destination: String,
    pub method: String,
    pub path: String,
    pub fault: String,
}

/// Where a running exploration is, for watchers.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub id: i64,
    pub status: Status,
    pub done: u32,
    pub known: u32,
    pub failures: u32,
    pub elapsed: Duration,
    pub remaining: Duration,
    pub last: Option<Execution>,
    pub error: Option<String>,
}

/// A running exploration's handles.
#[derive(Debug)]
pub struct Running {
    pub id: i64,
    cancel: tokio::sync::watch::Sender<bool>,
    pub progress: broadcast::Sender<Progress>,
    pub current: Mutex<Progress>,
    pub injected: Mutex<(u32, Vec<InjectedFault>)>,
}

impl Running {
    pub fn cancel(&self) {
        // send_replace: stored even when nobody waits yet (between executions).
        self.cancel.send_replace(true);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExploreError {
    #[error("exploration {0} is running: wait for it or cancel it (fictl explore cancel {0})")]
    Busy(i64),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("execution {1} of exploration {0} does not exist")]
    NoExecution(i64, u32),
    #[error("creating the test's cgroup {path:?}: {source}")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to run: a search, or one plan again.
#[derive(Debug, Clone)]
pub enum Mode {
    Explore,
    Replay(Plan),
}

/// The daemon's explorer: the store and the exploration in progress (one at a time).
#[derive(Debug)]
pub struct Explorer {
    pub store: Mutex<Store>,
    pub running: Mutex<Option<Arc<Running>>>,
    /// Where FI_INJECTED_FAULTS files live.
    pub runtime_dir: PathBuf,
    /// Where test cgroups are made (absolute): the sock_ops cgroup, so that the test's
    /// connections are attributed.
    pub cgroup_parent: PathBuf,
}

impl Explorer {
    pub fn new(store: Store, runtime_dir: PathBuf, cgroup_parent: PathBuf) -> Explorer {
        Explorer {
            store: Mutex::new(store),
            running: Mutex::new(None),
            runtime_dir,
            cgroup_parent,
        }
    }
}

/// Checks the request, records the exploration and starts it in the background.
pub fn start(
    daemon: &Arc<Daemon>,
    config: ExploreConfig,
    mode: Mode,
) -> Result<Arc<Running>, ExploreError> {
    if config.command.trim().is_empty() {
        return Err(ExploreError::Invalid {
            field: "command",
            reason: "the test command is empty".into(),
        });
    }
    if !Path::new(&config.working_dir).is_absolute() {
        return Err(ExploreError::Invalid {
            field: "working_dir",
            reason: format!("{:?} is not an absolute path", config.working_dir),
        });
    }
    let targets = {
        let t = daemon.targets.lock().map_err(|_| poisoned())?;
        let mut infos = Vec::new();
        for spec in &config.targets {
            infos.push(t.resolve(spec).map_err(|e| ExploreError::Invalid {
                field: "targets",
                reason: e.to_string(),
            })?);
        }
        infos
    };
    let mut slot = daemon.explorer.running.lock().map_err(|_| poisoned())?;
    if let Some(running) = slot.as_ref() {
        return Err(ExploreError::Busy(running.id));
    }
    let id = daemon
        .explorer
        .store
        .lock()
        .map_err(|_| poisoned())?
        .create(&config)?;
    let first = Progress {
        id,
        status: Status::Running,
        done: 0,
        known: 1,
        failures: 0,
        elapsed: Duration::ZERO,
        remaining: Duration::ZERO,
        last: None,
        error: None,
    };
    let running = Arc::new(Running {
        id,
        cancel: tokio::sync::watch::Sender::new(false),
        progress: broadcast::channel(1024).0,
        current: Mutex::new(first),
        injected: Mutex::new((0, Vec::new())),
    });
    *slot = Some(Arc::clone(&running));
    drop(slot);
    let daemon = Arc::clone(daemon);
    let handle = Arc::clone(&running);
    tokio::spawn(async move {
        let result = Run::new(&daemon, &handle, config, targets);
        let (status, error) = match result {
            Ok(mut run) => {
                let outcome = run.go(mode).await;
                run.teardown();
                outcome
            }
            Err(e) => (Status::Failed, Some(e.to_string())),
        };
        if let Ok(store) = daemon.explorer.store.lock()
            && let Err(e) = store.finish(id, status, error.as_deref())
        {
            tracing::error!(exploration = id, "recording the end: {e}");
        }
        let last = {
            let mut current = handle.current.lock().unwrap_or_else(|p| p.into_inner());
            current.status = status;
            current.error = error.clone();
            current.last = None;
            current.clone()
        };
        let _ = handle.progress.send(last);
        if let Ok(mut slot) = daemon.explorer.running.lock() {
            *slot = None;
        }
        tracing::info!(
            exploration = id,
            status = status.as_str(),
            "exploration ended"
        );
    });
    Ok(running)
}

fn poisoned() -> ExploreError {
    ExploreError::Invalid {
        field: "daemon",
        reason: "daemon state is poisoned by an earlier panic".into(),
    }
}

/// One exploration's resources: the test cgroup, target leases, the faults file.
struct Run {
    daemon: Arc<Daemon>,
    running: Arc<Running>,
    config: ExploreConfig,
    /// (cgroup relative path, label), the test's first.
    sources: Vec<(String, String)>,
    leases: Vec<u64>,
    test_cgroup: PathBuf,
    faults_file: PathBuf,
    started: Instant,
    /// Addresses of the targets' containers -> their labels, for the report.
    names: std::collections::BTreeMap<String, String>,
    run_durations: Vec<Duration>,
    failures: u32,
    done: u32,
}

impl Run {
    fn new(
        daemon: &Arc<Daemon>,
        running: &Arc<Running>,
        config: ExploreConfig,
        targets: Vec<TargetInfo>,
    ) -> Result<Run, ExploreError> {
        let id = running.id;
        let mount = daemon
            .targets
            .lock()
            .map_err(|_| poisoned())?
            .mount()
            .to_owned();
        // Below the sock_ops cgroup, so that the test's connections are attributed.
        let test_cgroup = crate::instance::test_cgroup(&daemon.explorer.cgroup_parent, id);
        let rel = test_cgroup
            .strip_prefix(&mount)
            .map(|p| format!("/{}", p.display()))
            .unwrap_or_else(|_| test_cgroup.display().to_string());
        std::fs::create_dir_all(&test_cgroup).map_err(|source| ExploreError::Cgroup {
            path: test_cgroup.clone(),
            source,
        })?;
        let dir = crate::instance::runtime_dir(&daemon.explorer.runtime_dir, id);
        std::fs::create_dir_all(&dir).map_err(|source| ExploreError::Cgroup {
            path: dir.clone(),
            source,
        })?;
        let mut run = Run {
            daemon: Arc::clone(daemon),
            running: Arc::clone(running),
            config,
            sources: vec![(rel.clone(), TEST_SOURCE.to_owned())],
            leases: Vec::new(),
            test_cgroup,
            faults_file: dir.join("injected-faults.jsonl"),
            started: Instant::now(),
            names: std::collections::BTreeMap::new(),
            run_durations: Vec::new(),
            failures: 0,
            done: 0,
        };
        {
            let mut t = daemon.targets.lock().map_err(|_| poisoned())?;
            for spec in
                std::iter::once(rel.as_str()).chain(targets.iter().map(|t| t.cgroup.as_str()))
            {
                let info = t.lease(spec).map_err(|e| ExploreError::Invalid {
                    field: "targets",
                    reason: e.to_string(),
                })?;
                if run.leases.is_empty() {
                    // The test's cgroup as the registry spells cgroup paths.
                    run.sources[0].0 = info.cgroup.clone();
                }
                run.leases.push(info.cgroup_id);
            }
        }
        for target in &targets {
            run.sources
                .push((target.cgroup.clone(), label(&target.spec)));
            let dir = mount.join(target.cgroup.trim_start_matches('/'));
            for ip in container_addresses(&dir) {
                run.names.insert(ip, label(&target.spec));
            }
        }
        Ok(run)
    }

    fn teardown(&mut self) {
        kill_cgroup(&self.test_cgroup);
        if let Ok(mut t) = self.daemon.targets.lock() {
            for id in self.leases.drain(..) {
                if let Err(e) = t.release(id) {
                    tracing::warn!("releasing a target: {e}");
                }
            }
        }
        // The cgroup can be removed once its processes are gone (killing takes a moment).
        for _ in 0..50 {
            if std::fs::remove_dir(&self.test_cgroup).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(dir) = self.faults_file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    fn cancelled(&self) -> bool {
        *self.running.cancel.borrow() || *self.daemon.stopping.borrow()
    }

    /// Runs the search (or the replay) to its end: the final status.
    async fn go(&mut self, mode: Mode) -> (Status, Option<String>) {
        match mode {
            Mode::Replay(plan) => {
                let execution = self.execute(&plan, 1).await;
                self.snapshot_graph(&execution.calls);
                self.finish_execution(execution, 0);
                if self.cancelled() {
                    return (
                        Status::Interrupted,
                        Some("cancelled or daemon stopping".into()),
                    );
                }
                (Status::Finished, None)
            }
            Mode::Explore => self.search().await,
        }
    }

    async fn search(&mut self) -> (Status, Option<String>) {
        let mut search = Search::new(SearchConfig {
            faults: self.config.faults.clone(),
            reduction: self.config.reduction,
            max_executions: self.config.max_executions,
            test_requests: self.config.test_requests,
        });
        let mut number = 0u32;
        while let Some(next) = search.next_step() {
            if self.cancelled() {
                return self.stopped_status();
            }
            let mut execution = match next {
                Next::Run(plan) => {
                    let mut e = self.execute(&plan, number).await;
                    if e.outcome == Outcome::Interrupted {
                        self.finish_execution(e, search.pending() as u32);
                        return self.stopped_status();
                    }
                    let notes = search.record(&plan, number, &e.outcome, &e.calls);
                    e.notes.extend(notes);
                    if plan.is_reference() {
                        self.snapshot_graph(&e.calls);
                    }
                    e
                }
                Next::Prune(plan, pruned) => Execution {
                    number,
                    plan,
                    outcome: Outcome::Pruned,
                    duration_ms: 0,
                    test_ms: 0,
                    calls: Vec::new(),
                    pruned: Some(pruned),
                    output_tail: String::new(),
                    notes: Vec::new(),
                },
            };
            let reference_failed = number == 0 && execution.outcome != Outcome::Passed;
            if reference_failed {
                execution
                    .notes
                    .push("the test must pass without faults before fi can explore".into());
            }
            self.finish_execution(execution.clone(), search.pending() as u32);
            number += 1;
            if reference_failed {
                return (
                    Status::Failed,
                    Some(format!(
                        "the reference run (no fault) did not pass ({}): fix the test or the \
                         services first; its output is in execution 0",
                        describe(&execution.outcome)
                    )),
                );
            }
        }
        if search.truncated() {
            return (
                Status::Finished,
                Some(format!(
                    "stopped at --max-executions {} with {} plans not run",
                    self.config.max_executions,
                    search.pending()
                )),
            );
        }
        (Status::Finished, None)
    }

    fn stopped_status(&self) -> (Status, Option<String>) {
        if *self.daemon.stopping.borrow() {
            (
                Status::Interrupted,
                Some("the daemon stopped while it ran".into()),
            )
        } else {
            (Status::Cancelled, Some("cancelled".into()))
        }
    }

    fn snapshot_graph(&self, calls: &[SiteCall]) {
        let edges: Vec<serde_json::Value> = calls
            .iter()
            .map(|c| {
                serde_json::json!({
                    "source": c.site.source,
                    "destination": c.site.destination,
                    "method": c.site.method,
                    "path": c.site.path,
                    "response": c.response,
                })
            })
            .collect();
        let graph = serde_json::json!({ "edges": edges, "names": self.names });
        if let Ok(store) = self.daemon.explorer.store.lock()
            && let Err(e) = store.save_graph(self.running.id, &graph)
        {
            tracing::warn!("saving the call graph: {e}");
        }
    }

    /// Stores an execution and tells watchers.
    fn finish_execution(&mut self, execution: Execution, pending: u32) {
        if execution.outcome != Outcome::Pruned {
            self.run_durations
                .push(Duration::from_millis(execution.duration_ms));
        }
        if execution.outcome.is_failure() {
            self.failures += 1;
        }
        self.done += 1;
        if let Ok(store) = self.daemon.explorer.store.lock()
            && let Err(e) = store.save_execution(self.running.id, &execution)
        {
            tracing::error!("storing execution {}: {e}", execution.number);
        }
        let mean = if self.run_durations.is_empty() {
            Duration::ZERO
        } else {
            self.run_durations.iter().sum::<Duration>() / self.run_durations.len() as u32
        };
        let progress = Progress {
            id: self.running.id,
            status: Status::Running,
            done: self.done,
            known: self.done + pending,
            failures: self.failures,
            elapsed: self.started.elapsed(),
            remaining: mean * pending,
            last: Some(execution),
            error: None,
        };
        if let Ok(mut current) = self.running.current.lock() {
            *current = progress.clone();
        }
        let _ = self.running.progress.send(progress);
    }

    /// Runs the test once under `plan`.
    async fn execute(&mut self, plan: &Plan, number: u32) -> Execution {
        let began = Instant::now();
        let mut execution = Execution {
            number,
            plan: plan.clone(),
            outcome: Outcome::Passed,
            duration_ms: 0,
            test_ms: 0,
            calls: Vec::new(),
            pruned: None,
            output_tail: String::new(),
            notes: Vec::new(),
        };
        if let Ok(mut injected) = self.running.injected.lock() {
            *injected = (number, Vec::new());
        }
        if let Err(e) = std::fs::write(&self.faults_file, b"") {
            execution.outcome = Outcome::Error {
                message: format!("writing {:?}: {e}", self.faults_file),
            };
            return execution;
        }
        if let Some(reset) = self.config.reset_command.clone()
            && let Err(message) = self.reset(&reset).await
        {
            execution.outcome = Outcome::Error { message };
            return execution;
        }
        let mut completed = self.daemon.requests_subscribe();
        let mut injections = self.daemon.injections_subscribe();
        let rules = match self.install(plan) {
            Ok(rules) => rules,
            Err(message) => {
                execution.outcome = Outcome::Error { message };
                return execution;
            }
        };
        let wall_start = SystemTime::now();
        let test_began = Instant::now();
        let (outcome, output) = self.run_test(number, plan, &rules, &mut injections).await;
        execution.test_ms = test_began.elapsed().as_millis() as u64;
        // Late events: responses and closes the ring buffer still holds.
        let settle = tokio::time::sleep(SETTLE);
        tokio::pin!(settle);
        loop {
            tokio::select! {
                () = &mut settle => break,
                injection = injections.recv() => {
                    if let Ok(request) = injection {
                        self.note_injection(number, &request, &rules);
                    }
                }
            }
        }
        self.uninstall(&rules);
        // Requests without an answer yet (a blackholed one waits for its connection to
        // die) count as unanswered; then those that completed.
        let mut requests: Vec<ObservedRequest> = self
            .daemon
            .requests
            .lock()
            .map(|log| log.pending_requests())
            .unwrap_or_default();
        let mut lagged = 0;
        loop {
            match completed.try_recv() {
                Ok(request) => requests.push((*request).clone()),
                Err(broadcast::error::TryRecvError::Lagged(n)) => lagged += n,
                Err(_) => break,
            }
        }
        // A request may have completed after the pending snapshot: keep its last state.
        let mut by_id = std::collections::BTreeMap::new();
        for r in requests {
            by_id.insert(r.id, r);
        }
        let seen: Vec<Seen> = by_id
            .values()
            .filter(|r| r.start + Duration::from_millis(5) >= wall_start)
            .filter_map(|r| self.seen(r, &rules, wall_start))
            .collect();
        if lagged > 0 {
            execution.notes.push(format!(
                "{lagged} requests were not recorded (the daemon's buffer overflowed)"
            ));
        }
        execution.calls = call_sites(seen);
        execution.outcome = outcome;
        execution.output_tail = output;
        execution.duration_ms = began.elapsed().as_millis() as u64;
        execution
    }

    fn label_of(&self, cgroup: &str) -> Option<String> {
        self.sources
            .iter()
            .filter(|(root, _)| Targets::is_under(cgroup, std::slice::from_ref(root)))
            .max_by_key(|(root, _)| root.len())
            .map(|(_, label)| label.clone())
    }

    fn seen(
        &self,
        r: &ObservedRequest,
        rules: &[(u32, PlannedFault)],
        wall_start: SystemTime,
    ) -> Option<Seen> {
        let source = self.label_of(&r.source_cgroup)?;
        let start_ns = r
            .start
            .duration_since(wall_start)
            .unwrap_or_default()
            .as_nanos() as u64;
        let (response, latency_us) = match r.outcome {
            RequestOutcome::Response { status, latency } => {
                (Response::Status { status }, latency.as_micros() as u64)
            }
            RequestOutcome::NoResponse => (Response::None, 0),
        };
        Some(Seen {
            start_ns,
            source,
            source_cgroup: r.source_cgroup.clone(),
            client: r.client,
            server: r.server,
            method: r.method.clone(),
            path: r.path.clone(),
            response,
            latency_us,
            traceparent: r
                .headers
                .iter()
                .find(|(name, _)| name == "traceparent")
                .map(|(_, v)| v.clone()),
            injected: r.fault.and_then(|(rule, _)| {
                rules
                    .iter()
                    .find(|(id, _)| *id == rule)
                    .map(|(_, f)| f.fault)
            }),
        })
    }

    /// One rule per planned fault: the call site's container, destination, method and
    /// path, skipping the site's earlier occurrences, injecting once. A later occurrence
    /// of the same endpoint gets the higher priority, so that every rule of an endpoint
    /// counts every request of it (the first rule that fires ends the evaluation).
    fn install(&self, plan: &Plan) -> Result<Vec<(u32, PlannedFault)>, String> {
        let mut installed = Vec::new();
        for planned in &plan.0 {
            let site = &planned.site;
            let server: std::net::SocketAddr = site
                .destination
                .parse()
                .map_err(|e| format!("call site destination {:?}: {e}", site.destination))?;
            let (fault, status, delay) = match planned.fault {
                FaultSpec::Reset => (Fault::Reset, 0, None),
                FaultSpec::Timeout => (Fault::Blackhole, 0, None),
                FaultSpec::Abort { status } => (Fault::Abort, u32::from(status), None),
                FaultSpec::Delay { millis } => (
                    Fault::Delay,
                    0,
                    Some(Duration::from_millis(u64::from(millis))),
                ),
                FaultSpec::ResponseLost => (Fault::ResponseLost, 0, None),
            };
            // The test's own calls come from this run's test cgroup: a replay's is not
            // the one the plan was found in (that one is gone).
            let container = if site.source == TEST_SOURCE {
                self.sources
                    .first()
                    .map_or_else(|| site.source_cgroup.clone(), |(cgroup, _)| cgroup.clone())
            } else {
                site.source_cgroup.clone()
            };
            let draft = Draft {
                container: Some(container),
                destination: Some(server.ip().to_string()),
                port: Some(u32::from(server.port())),
                methods: vec![site.method.clone()],
                path: Some(site.rule_path()),
                fault: Some(fault),
                status,
                delay,
                // The call site's index-th request: skip those before it.
                skip_first: (site.index > 0).then_some(site.index),
                max_injections: Some(1),
                // Expires on its own should this exploration be stuck.
                ttl: Some(
                    Duration::from_millis(self.config.run_timeout_ms) + Duration::from_secs(60),
                ),
                priority: 1_000_000 + site.index as i32,
                description: format!("exploration {}: {planned}", self.running.id),
                ..Draft::default()
            };
            let result = (|| {
                let validated = {
                    let targets = self
                        .daemon
                        .targets
                        .lock()
                        .map_err(|_| "poisoned".to_owned())?;
                    rules::validate(draft, &self.daemon.capture, &targets)
                        .map_err(|e| e.to_string())?
                };
                self.daemon
                    .rules
                    .lock()
                    .map_err(|_| "poisoned".to_owned())?
                    .create(validated)
                    .map_err(|e| e.to_string())
            })();
            match result {
                Ok(id) => installed.push((id, planned.clone())),
                Err(e) => {
                    self.uninstall(&installed);
                    return Err(format!("installing the rule for [{planned}]: {e}"));
                }
            }
        }
        Ok(installed)
    }

    fn uninstall(&self, rules: &[(u32, PlannedFault)]) {
        if let Ok(mut r) = self.daemon.rules.lock() {
            for (id, _) in rules {
                // An exhausted rule may already be gone: nothing to do then.
                let _ = r.delete(*id);
            }
        }
    }

    fn note_injection(&self, number: u32, r: &ObservedRequest, rules: &[(u32, PlannedFault)]) {
        let Some((rule, _)) = r.fault else { return };
        let Some((_, planned)) = rules.iter().find(|(id, _)| *id == rule) else {
            return;
        };
        let entry = InjectedFault {
            execution: number,
            rule,
            source: planned.site.source.clone(),
            destination: r.server.to_string(),
            method: r.method.clone(),
            path: r.path.clone(),
            fault: planned.fault.to_string(),
        };
        if let Ok(line) = serde_json::to_string(&entry) {
            // One write per line (O_APPEND): a reader never sees half a line.
            let written = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.faults_file)
                .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
            if let Err(e) = written {
                tracing::warn!("writing {:?}: {e}", self.faults_file);
            }
        }
        if let Ok(mut injected) = self.running.injected.lock() {
            injected.1.push(entry);
        }
    }

    async fn reset(&self, command: &str) -> Result<(), String> {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(&self.config.working_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let timeout = Duration::from_millis(self.config.run_timeout_ms);
        let out = tokio::time::timeout(timeout, cmd.output())
            .await
            .map_err(|_| format!("the reset command did not end within {timeout:?}"))?
            .map_err(|e| format!("starting the reset command: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "the reset command failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Runs the test command in the test cgroup, keeping the faults file current.
    async fn run_test(
        &self,
        number: u32,
        plan: &Plan,
        rules: &[(u32, PlannedFault)],
        injections: &mut broadcast::Receiver<Arc<ObservedRequest>>,
    ) -> (Outcome, String) {
        let procs = match CString::new(
            self.test_cgroup
                .join("cgroup.procs")
                .as_os_str()
                .as_encoded_bytes(),
        ) {
            Ok(p) => p,
            Err(e) => {
                return (
                    Outcome::Error {
                        message: e.to_string(),
                    },
                    String::new(),
                );
            }
        };
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(&self.config.command)
            .current_dir(&self.config.working_dir)
            .env("FI_EXPLORATION_ID", self.running.id.to_string())
            .env("FI_EXECUTION", number.to_string())
            .env("FI_INJECTED_FAULTS", &self.faults_file)
            .env("FI_PLAN", plan.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: between fork and exec only async-signal-safe calls (open, write,
        // close) on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0": the writing process itself.
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if ok { Ok(()) } else { Err(err) }
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return (
                    Outcome::Error {
                        message: format!("starting `sh -c {:?}`: {e}", self.config.command),
                    },
                    String::new(),
                );
            }
        };
        let output = Arc::new(Mutex::new(Vec::<u8>::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(collect(out, Arc::clone(&output))));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(collect(err, Arc::clone(&output))));
        }
        let timeout = tokio::time::sleep(Duration::from_millis(self.config.run_timeout_ms));
        tokio::pin!(timeout);
        let mut cancel = self.running.cancel.subscribe();
        let mut stopping = self.daemon.stopping.subscribe();
        let outcome = loop {
            tokio::select! {
                status = child.wait() => break match status {
                    Ok(s) if s.success() => Outcome::Passed,
                    Ok(s) => Outcome::Failed {
                        exit_code: s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
                    },
                    Err(e) => Outcome::Error { message: format!("waiting for the test: {e}") },
                },
                () = &mut timeout => break Outcome::TimedOut,
                _ = cancel.wait_for(|c| *c) => break Outcome::Interrupted,
                _ = stopping.wait_for(|s| *s) => break Outcome::Interrupted,
                injection = injections.recv() => {
                    if let Ok(request) = injection {
                        self.note_injection(number, &request, rules);
                    }
                }
            }
        };
        kill_cgroup(&self.test_cgroup);
        let _ = child.kill().await;
        for reader in readers {
            let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
        }
        let bytes = output.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let text = String::from_utf8_lossy(&bytes);
        let tail = match text.char_indices().rev().nth(OUTPUT_TAIL) {
            Some((i, _)) => text[i..].to_owned(),
            None => text.into_owned(),
        };
        (outcome, tail)
    }
}

/// Reads a pipe of the test to its end, keeping the last bytes of its output.
async fn collect<R: tokio::io::AsyncRead + Unpin>(mut pipe: R, output: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut o = output.lock().unwrap_or_else(|p| p.into_inner());
        o.extend_from_slice(&buf[..n]);
        if o.len() > 4 * OUTPUT_TAIL {
            let cut = o.len() - OUTPUT_TAIL;
            o.drain(..cut);
        }
    }
}

/// Kills every process left in the test cgroup (a test's background jobs included).
fn kill_cgroup(cgroup: &Path) {
    if let Err(e) = std::fs::write(cgroup.join("cgroup.kill"), b"1")
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("killing the test's processes in {cgroup:?}: {e}");
    }
}

/// The addresses a container has: read from the network namespace of a process in its
/// cgroup (or below), so that the report names servers rather than printing addresses.
fn container_addresses(cgroup: &Path) -> Vec<String> {
    let mut dirs = vec![cgroup.to_owned()];
    let mut pid = None;
    while let Some(dir) = dirs.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs"))
            && let Some(first) = procs.lines().next()
        {
            pid = Some(first.trim().to_owned());
            break;
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path()),
            );
        }
    }
    let Some(pid) = pid else { return Vec::new() };
    let mut found = Vec::new();
    // IPv4: /32 host LOCAL entries of the FIB trie.
    if let Ok(trie) = std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie")) {
        let mut last = "";
        for line in trie.lines() {
            let line = line.trim();
            if let Some(addr) = line.strip_prefix("|-- ") {
                last = addr;
            } else if line.starts_with("/32 host LOCAL")
                && !last.starts_with("127.")
                && !found.iter().any(|f| f == last)
            {
                found.push(last.to_owned());
            }
        }
    }
    // IPv6: global addresses.
    if let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/if_inet6")) {
        for line in table.lines() {
            let Some(hex) = line.split_whitespace().next() else {
                continue;
            };
            let Ok(bits) = u128::from_str_radix(hex, 16) else {
                continue;
            };
            let ip = std::net::Ipv6Addr::from(bits);
            if !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80 {
                found.push(ip.to_string());
            }
        }
    }
    found
}

/// A short name for a target: the last part of its cgroup path or the id as given.
fn label(spec: &str) -> String {
    spec.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(spec)
        .to_owned()
}

/// An outcome in words.
pub fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Passed => "passed".into(),
        Outcome::Failed { exit_code } => format!("exit status {exit_code}"),
        Outcome::TimedOut => "killed after the run timeout".into(),
        Outcome::Error { message } => message.clone(),
        Outcome::Pruned => "pruned".into(),
        Outcome::Interrupted => "interrupted".into(),
    }
}
