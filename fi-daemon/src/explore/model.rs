//! What an exploration is made of: call sites, faults, plans, and what one execution of
//! the test showed. Plain data (serde), shared by the search, the runner, the store and
//! the reports.

use std::fmt;

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
    /// `ip:port` of the server.
    pub destination: String,
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

/// One fault of a fault set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultSpec {
    Reset,
    Timeout,
    Abort { status: u16 },
    Delay { millis: u32 },
    ResponseLost,
}

impl FaultSpec {
    /// Reset, timeout, abort 500 and abort 503: the failures every caller must handle.
    pub const DEFAULT_SET: [FaultSpec; 4] = [
        FaultSpec::Reset,
        FaultSpec::Timeout,
        FaultSpec::Abort { status: 500 },
        FaultSpec::Abort { status: 503 },
    ];

    /// Parses `reset`, `timeout`, `abort500`/`abort:500`, `delay200ms`/`delay:200ms`,
    /// `response-lost`.
    pub fn parse(text: &str) -> Result<FaultSpec, String> {
        let t = text.trim().to_ascii_lowercase();
        let arg = |prefix: &str| {
            t.strip_prefix(prefix)
                .map(|rest| rest.trim_start_matches([':', '=', ' ']).to_owned())
        };
        if t == "reset" {
            return Ok(FaultSpec::Reset);
        }
        if t == "timeout" {
            return Ok(FaultSpec::Timeout);
        }
        if t == "response-lost" || t == "response_lost" {
            return Ok(FaultSpec::ResponseLost);
        }
        if let Some(code) = arg("abort") {
            let status: u16 = code
                .parse()
                .map_err(|_| format!("{text:?}: abort needs a status, e.g. abort500"))?;
            if !(200..=599).contains(&status) {
                return Err(format!("{text:?}: the status must be in 200..=599"));
            }
            return Ok(FaultSpec::Abort { status });
        }
        if let Some(d) = arg("delay") {
            let d = humantime::parse_duration(&d)
                .map_err(|e| format!("{text:?}: delay needs a duration, e.g. delay200ms: {e}"))?;
            let millis = u32::try_from(d.as_millis())
                .ok()
                .filter(|m| (1..=60_000).contains(m))
                .ok_or_else(|| format!("{text:?}: the delay must be 1 ms ..= 60 s"))?;
            return Ok(FaultSpec::Delay { millis });
        }
        Err(format!(
            "{text:?}: unknown fault (reset, timeout, abort<status>, delay<duration>, response-lost)"
        ))
    }

    /// Parses a comma-separated set; `default` stands for [`FaultSpec::DEFAULT_SET`].
    pub fn parse_set(text: &str) -> Result<Vec<FaultSpec>, String> {
        let mut set = Vec::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            if part.trim().eq_ignore_ascii_case("default") {
                set.extend(FaultSpec::DEFAULT_SET);
            } else {
                set.push(FaultSpec::parse(part)?);
            }
        }
        set.sort();
        set.dedup();
        if set.is_empty() {
            return Err("the fault set is empty".to_owned());
        }
        Ok(set)
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultSpec::Reset => write!(f, "reset"),
            FaultSpec::Timeout => write!(f, "timeout"),
            FaultSpec::Abort { status } => write!(f, "abort{status}"),
            FaultSpec::Delay { millis } => write!(f, "delay{millis}ms"),
            FaultSpec::ResponseLost => write!(f, "response-lost"),
        }
    }
}

/// A fault on one call site.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlannedFault {
    pub site: CallSite,
    pub fault: FaultSpec,
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
    pub injected: Option<FaultSpec>,
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
