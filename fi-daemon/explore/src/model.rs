//! What an exploration is made of: call sites, faults, plans, and what one execution of
//! the test showed. Plain data (serde), shared by the search, the runner, the store and
//! the reports.

use std::{collections::BTreeMap, fmt, net::SocketAddr};

pub use fi_common::fault::Fault;
use serde::{Deserialize, Serialize};

/// The source label of the test command's own requests.
pub const TEST_SOURCE: &str = "test";

/// Where a request comes from in the program: the same call in every run of the test.
///
/// Identity is (source, destination, method, normalized path, occurrence index): the
/// third `GET /stock/{id}` that `frontend` sends to 10.77.0.4:8080 in a run is one call
/// site, whatever the id in its path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallSite {
    /// The target the caller belongs to, as the user named it, or `test` for the test
    /// command itself.
    pub source: String,
    /// The caller's cgroup (relative to the cgroup2 mount): what a rule selects.
    pub source_cgroup: String,
    /// The server (stored as `ip:port` text).
    pub destination: SocketAddr,
    pub method: String,
    /// The path without query, ids replaced by `{id}`.
    pub path: String,
    /// 0 for the first request of this (source, destination, method, path) in a run.
    pub index: u32,
}

impl CallSite {
    /// The path matcher of a rule that selects this site: exact, or a prefix up to the
    /// first normalized segment (the kernel matches hashes, not patterns).
    pub fn rule_path(&self) -> String {
        match self.path.find("{id}") {
            Some(at) => format!("{}*", &self.path[..at]),
            None => self.path.clone(),
        }
    }
}

impl fmt::Display for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} → {} {}{}",
            self.source, self.method, self.destination, self.path
        )?;
        if self.index > 0 {
            write!(f, " #{}", self.index + 1)?;
        }
        Ok(())
    }
}

/// A fault on one call site.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlannedFault {
    pub site: CallSite,
    pub fault: Fault,
}

impl fmt::Display for PlannedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.fault, self.site)
    }
}

/// The faults of one execution, sorted: a plan is a set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Plan(pub Vec<PlannedFault>);

impl Plan {
    pub fn new(mut faults: Vec<PlannedFault>) -> Plan {
        faults.sort();
        faults.dedup();
        Plan(faults)
    }

    pub fn with(&self, extra: PlannedFault) -> Plan {
        let mut faults = self.0.clone();
        faults.push(extra);
        Plan::new(faults)
    }

    pub fn is_reference(&self) -> bool {
        self.0.is_empty()
    }

    pub fn faults_site(&self, site: &CallSite) -> bool {
        self.0.iter().any(|f| &f.site == site)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "(no fault: reference run)");
        }
        for (i, fault) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, " + ")?;
            }
            write!(f, "{fault}")?;
        }
        Ok(())
    }
}

/// How a request ended, as its caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Response {
    Status {
        status: u16,
    },
    /// The connection ended without a response (reset, closed, timed out).
    None,
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Status { status } => write!(f, "{status}"),
            Response::None => write!(f, "no response"),
        }
    }
}

/// One request of an execution, tied to its call site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteCall {
    pub site: CallSite,
    /// The raw path, query included.
    pub raw_path: String,
    pub response: Response,
    pub latency_us: u64,
    /// The call this one was made while serving (see `sites::link_parents`).
    pub parent: Option<CallSite>,
    /// The fault injected into this request, if any.
    pub injected: Option<Fault>,
}

/// How the test command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    Passed,
    Failed {
        exit_code: i32,
    },
    /// Killed after the per-run timeout.
    TimedOut,
    /// Could not run (the command did not start, rules could not be installed...).
    Error {
        message: String,
    },
    /// Not run: equivalent to another execution (see [`Pruned`]).
    Pruned,
    /// The daemon stopped or the exploration was cancelled while it ran.
    Interrupted,
}

impl Outcome {
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Failed { .. } | Outcome::TimedOut | Outcome::Error { .. }
        )
    }

    /// The outcome in words: `exit status 1`, `killed after the run timeout`...
    pub fn describe(&self) -> String {
        match self {
            Outcome::Passed => "passed".into(),
            Outcome::Failed { exit_code } => format!("exit status {exit_code}"),
            Outcome::TimedOut => "killed after the run timeout".into(),
            Outcome::Error { message } => message.clone(),
            Outcome::Pruned => "pruned".into(),
            Outcome::Interrupted => "interrupted".into(),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed { .. } => "FAILED",
            Outcome::TimedOut => "TIMED OUT",
            Outcome::Error { .. } => "ERROR",
            Outcome::Pruned => "pruned",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// Why an execution was not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    /// The executed (or scheduled) plan it is equivalent to.
    pub equivalent: Plan,
    /// In words, for the report.
    pub reason: String,
}

/// One run of the test under one plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// 0 is the reference run; numbers follow the order of execution.
    pub number: u32,
    pub plan: Plan,
    pub outcome: Outcome,
    /// The whole execution: reset, rules, the test, settling, clean-up.
    pub duration_ms: u64,
    /// The test command alone (from its start to its exit); the rest is fi's share.
    #[serde(default)]
    pub test_ms: u64,
    pub calls: Vec<SiteCall>,
    /// Set when the execution was pruned.
    pub pruned: Option<Pruned>,
    /// The last lines of the test's output, for the report.
    pub output_tail: String,
    /// Observations that are worth a look even when the test passed (a non-idempotent
    /// request sent again after its response was lost...).
    pub notes: Vec<String>,
}

/// Where an exploration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Running,
    Finished,
    Cancelled,
    /// Its daemon stopped (or died) while it ran.
    Interrupted,
    /// It could not go on (the reference run failed, the command does not exist...).
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Finished => "finished",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
            Status::Failed => "failed",
        }
    }

    /// The status a stored word names (an unknown word: the daemon stopped mid-run).
    pub fn parse(text: &str) -> Status {
        match text {
            "running" => Status::Running,
            "finished" => Status::Finished,
            "cancelled" => Status::Cancelled,
            "failed" => Status::Failed,
            _ => Status::Interrupted,
        }
    }
}

/// What the user asked for: everything needed to run the exploration again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExploreConfig {
    pub targets: Vec<String>,
    pub faults: Vec<Fault>,
    pub command: String,
    pub reset_command: Option<String>,
    pub working_dir: String,
    pub reduction: bool,
    pub max_executions: u32,
    pub run_timeout_ms: u64,
    /// Set for a replay: the exploration and execution it replays.
    pub replay_of: Option<(i64, u32)>,
    /// Whether the test's own requests are faulted too (absent in stores written before
    /// the option existed, when they always were).
    #[serde(default)]
    pub test_requests: bool,
    /// A name for listings (absent in stores written before it existed).
    #[serde(default)]
    pub label: Option<String>,
}

/// One exploration as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplorationRow {
    pub id: i64,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    pub status: Status,
    pub config: ExploreConfig,
    pub error: Option<String>,
    pub executions: u32,
    pub failures: u32,
}

/// An exploration with its executions: what reports are made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exploration {
    #[serde(flatten)]
    pub row: ExplorationRow,
    pub executions: Vec<Execution>,
    /// The last call-graph snapshot, if any.
    pub graph: Option<GraphSnapshot>,
}

/// The calls of the reference run, kept with the exploration for its report's graph.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphSnapshot {
    #[serde(default)]
    pub edges: Vec<GraphEdge>,
    /// Addresses of the targets' containers -> their labels.
    #[serde(default)]
    pub names: BTreeMap<String, String>,
}

impl GraphSnapshot {
    /// The target a server address belongs to: by `ip:port` (a socket it listens on),
    /// else by its address.
    pub fn name_of(&self, server: &SocketAddr) -> Option<&String> {
        name_in(&self.names, server)
    }
}

/// A server's name in an `ip:port` / `ip` -> name map.
pub fn name_in<'a>(names: &'a BTreeMap<String, String>, server: &SocketAddr) -> Option<&'a String> {
    names
        .get(&server.to_string())
        .or_else(|| names.get(&server.ip().to_string()))
}

/// One call of a [`GraphSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphEdge {
    pub source: String,
    pub destination: SocketAddr,
    pub method: String,
    pub path: String,
    pub response: Response,
}
