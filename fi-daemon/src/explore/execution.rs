//! One execution: the plan's rules in, the test run in its cgroup (with the faults file
//! kept current), the requests the kernel saw turned into call sites, the rules out.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use fi_explore::{
    compile::{self, RuleSpec},
    model::{Execution, ExploreConfig, Outcome, Plan, PlannedFault, Response},
    sites::{Seen, call_sites},
};
use tokio::sync::broadcast;

use super::{
    handle::{InjectedFault, Running},
    spawn::{Exit, Spawn},
};
use crate::{
    control::Control,
    requests::{ObservedRequest, Outcome as RequestOutcome},
    rules::Draft,
    targets::Targets,
};

/// How long events may trail the test's exit (ring buffer, response pairing).
const SETTLE: Duration = Duration::from_millis(250);

/// What one execution needs of its exploration.
pub(super) struct Setting<'a> {
    pub control: &'a Arc<Control>,
    pub running: &'a Running,
    pub config: &'a ExploreConfig,
    /// (cgroup relative path, label), the test's first.
    pub sources: &'a [(String, String)],
    pub faults_file: &'a Path,
    /// The daemon's socket.
    pub socket: &'a Path,
    pub test_cgroup: &'a Path,
    /// Addresses and listening sockets of the targets -> their labels.
    pub names: &'a std::collections::BTreeMap<String, String>,
}

/// The rules of one execution: (rule id, what it injects).
type Installed = Vec<(u32, PlannedFault)>;

/// An execution with nothing in it yet.
pub(super) fn empty(number: u32, plan: Plan) -> Execution {
    Execution {
        number,
        plan,
        outcome: Outcome::Passed,
        duration_ms: 0,
        test_ms: 0,
        calls: Vec::new(),
        pruned: None,
        output_tail: String::new(),
        notes: Vec::new(),
    }
}

/// Runs the test once under `plan`.
pub(super) async fn execute(run: &Setting<'_>, plan: &Plan, number: u32) -> Execution {
    let began = Instant::now();
    let mut execution = empty(number, plan.clone());
    run.running.begin_execution(number);
    if let Err(e) = std::fs::write(run.faults_file, b"") {
        execution.outcome = Outcome::Error {
            message: format!("writing {:?}: {e}", run.faults_file),
        };
        return execution;
    }
    if let Some(reset) = run.config.reset_command.clone()
        && let Err(message) = reset_state(run, &reset).await
    {
        execution.outcome = Outcome::Error { message };
        return execution;
    }
    let control = Arc::clone(run.control);
    let subscribed = control
        .subscribe_requests()
        .and_then(|c| Ok((c, control.subscribe_injections()?)));
    let (mut completed, mut injections) = match subscribed {
        Ok((completed, (injections, sent))) => {
            run.running.injections_from(sent);
            (completed, injections)
        }
        Err(e) => {
            execution.outcome = Outcome::Error {
                message: e.to_string(),
            };
            return execution;
        }
    };
    let rules = match install(run, plan).await {
        Ok(rules) => rules,
        Err(message) => {
            execution.outcome = Outcome::Error { message };
            return execution;
        }
    };
    let wall_start = SystemTime::now();
    let test_began = Instant::now();
    let (outcome, output) = run_test(run, number, plan, &rules, &mut injections).await;
    execution.test_ms = test_began.elapsed().as_millis() as u64;
    // Late events: responses and closes the ring buffer still holds.
    let settle = tokio::time::sleep(SETTLE);
    tokio::pin!(settle);
    loop {
        tokio::select! {
            () = &mut settle => break,
            injection = injections.recv() => take_injection(run, number, injection, &rules),
        }
    }
    control.forget_rules(rules.iter().map(|(id, _)| *id));
    // Requests without an answer yet (a blackholed one waits for its connection to die)
    // count as unanswered; then those that completed.
    let mut requests = control.pending_requests().unwrap_or_default();
    let mut lagged = 0;
    loop {
        match completed.try_recv() {
            Ok(request) => requests.push((*request).clone()),
            Err(broadcast::error::TryRecvError::Lagged(n)) => lagged += n,
            Err(_) => break,
        }
    }
    // A request may have completed after the pending snapshot: keep its last state.
    let by_id: BTreeMap<u64, ObservedRequest> = requests.into_iter().map(|r| (r.id, r)).collect();
    let seen: Vec<Seen> = by_id
        .values()
        .filter(|r| r.start + Duration::from_millis(5) >= wall_start)
        .filter_map(|r| seen(run, r, &rules, wall_start))
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

/// A rule of the plan as the rule engine takes it.
fn draft(spec: RuleSpec) -> Draft {
    Draft {
        container: Some(spec.container),
        destination: Some(spec.destination.ip().to_string()),
        port: Some(u32::from(spec.destination.port())),
        methods: vec![spec.method],
        path: Some(spec.path),
        fault: Some(spec.fault),
        skip_first: spec.skip_first,
        max_injections: Some(spec.max_injections),
        ttl: Some(spec.ttl),
        priority: spec.priority,
        description: spec.description,
        ..Draft::default()
    }
}

/// Installs the plan's rules; all or none.
async fn install(run: &Setting<'_>, plan: &Plan) -> Result<Installed, String> {
    let test_cgroup = run
        .sources
        .first()
        .map(|(cgroup, _)| cgroup.as_str())
        .unwrap_or_default();
    let context = compile::Context {
        exploration: run.running.id,
        test_cgroup,
        run_timeout: Duration::from_millis(run.config.run_timeout_ms),
    };
    let control = &run.control;
    let mut installed = Vec::new();
    for (planned, spec) in compile::compile(plan, context) {
        match control.create_rule(draft(spec)).await {
            Ok(view) => installed.push((view.id, planned)),
            Err(e) => {
                control.forget_rules(installed.iter().map(|(id, _)| *id));
                return Err(format!("installing the rule for [{planned}]: {e}"));
            }
        }
    }
    Ok(installed)
}

/// Runs the reset command, within the run timeout.
async fn reset_state(run: &Setting<'_>, command: &str) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(&run.config.working_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let timeout = Duration::from_millis(run.config.run_timeout_ms);
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
    run: &Setting<'_>,
    number: u32,
    plan: &Plan,
    rules: &Installed,
    injections: &mut broadcast::Receiver<Arc<ObservedRequest>>,
) -> (Outcome, String) {
    let spawn = Spawn {
        command: &run.config.command,
        working_dir: &run.config.working_dir,
        env: vec![
            ("FI_EXPLORATION_ID", run.running.id.to_string()),
            ("FI_EXECUTION", number.to_string()),
            ("FI_INJECTED_FAULTS", run.faults_file.display().to_string()),
            ("FI_PLAN", plan.to_string()),
            // fictl and the test helpers reach this daemon through them.
            ("FI_SOCKET", run.socket.display().to_string()),
            ("FI_FICTL", fictl_path()),
        ],
        cgroup: run.test_cgroup,
    };
    let mut test = match spawn.start() {
        Ok(test) => test,
        Err(message) => return (Outcome::Error { message }, String::new()),
    };
    let timeout = tokio::time::sleep(Duration::from_millis(run.config.run_timeout_ms));
    tokio::pin!(timeout);
    let mut cancel = run.running.cancelled();
    let mut stopping = run.control.stopping();
    let outcome = loop {
        tokio::select! {
            exit = test.wait() => break match exit {
                Exit::Code(0) => Outcome::Passed,
                Exit::Code(exit_code) => Outcome::Failed { exit_code },
                Exit::Error(message) => Outcome::Error { message },
            },
            () = &mut timeout => break Outcome::TimedOut,
            _ = cancel.wait_for(|c| *c) => break Outcome::Interrupted,
            _ = stopping.wait_for(|s| *s) => break Outcome::Interrupted,
            injection = injections.recv() => take_injection(run, number, injection, rules),
        }
    };
    (outcome, test.finish().await)
}

/// fictl, installed beside this daemon (the test helpers run it); "fictl" from PATH
/// otherwise.
fn fictl_path() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("fictl")))
        .filter(|p| p.is_file())
        .map_or_else(|| "fictl".to_owned(), |p| p.display().to_string())
}

/// An injection the log sent: noted if it is one of this execution's rules, and counted
/// (a subscriber that lagged counts what it missed: the log has moved past them).
fn take_injection(
    run: &Setting<'_>,
    number: u32,
    injection: Result<Arc<ObservedRequest>, broadcast::error::RecvError>,
    rules: &Installed,
) {
    match injection {
        Ok(request) => {
            note_injection(run, number, &request, rules);
            run.running.injections_taken(1);
        }
        Err(broadcast::error::RecvError::Lagged(n)) => run.running.injections_taken(n),
        Err(broadcast::error::RecvError::Closed) => {}
    }
}

/// Appends an injection of this execution's rules to the faults file and the live list.
fn note_injection(run: &Setting<'_>, number: u32, r: &ObservedRequest, rules: &Installed) {
    let Some((rule, _)) = r.fault else { return };
    let Some((_, planned)) = rules.iter().find(|(id, _)| *id == rule) else {
        return;
    };
    let entry = InjectedFault {
        execution: number,
        rule,
        source: planned.site.source.clone(),
        destination: r.server,
        method: r.method.as_str().to_owned(),
        path: r.path.clone(),
        service: fi_explore::model::name_in(run.names, &r.server).cloned(),
        fault: planned.fault,
    };
    if let Ok(line) = serde_json::to_string(&entry) {
        // One write per line (O_APPEND): a reader never sees half a line.
        let written = std::fs::OpenOptions::new()
            .append(true)
            .open(run.faults_file)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            tracing::warn!("writing {:?}: {e}", run.faults_file);
        }
    }
    run.running.note_injected(entry);
}

/// The label of the source a cgroup belongs to (the deepest that contains it).
fn label_of(run: &Setting<'_>, cgroup: &str) -> Option<String> {
    run.sources
        .iter()
        .filter(|(root, _)| Targets::is_under(cgroup, std::slice::from_ref(root)))
        .max_by_key(|(root, _)| root.len())
        .map(|(_, label)| label.clone())
}

/// A request of this execution as the call-site derivation takes it.
fn seen(
    run: &Setting<'_>,
    r: &ObservedRequest,
    rules: &Installed,
    wall_start: SystemTime,
) -> Option<Seen> {
    let source = label_of(run, &r.source_cgroup)?;
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
        method: r.method.as_str().to_owned(),
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
