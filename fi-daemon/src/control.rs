//! The daemon's core for everything but explorations: the data plane, targets, rules and
//! the request log, behind one type that owns them. Transports (gRPC) and the explorer call
//! its methods; none of them reaches a lock.
//!
//! Lock order. A thread that must hold several of these locks takes them in this order,
//! and no lock is held across an `.await` or a call into another service:
//!
//! 1. `targets`
//! 2. `rules`
//! 3. `dataplane`
//! 4. `requests`
//!
//! Most methods take one lock at a time; the heartbeat takes `rules`, then `dataplane`.
//! Blocking work (closing connections through sock_diag, waiting for held requests) runs
//! on tokio's blocking threads, never on the async ones and never under a lock.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use fi_api::limits::MAX_FIELD;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::{
    dataplane::{Attachment, DataPlane, DataPlaneError},
    delay::Delays,
    graph::CallGraph,
    requests::{ObservedRequest, RequestLog},
    rules::{self, Draft, RuleError, RuleView, Rules},
    targets::{self, TargetError, TargetInfo, Targets},
};

/// Why a core operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    DataPlane(#[from] DataPlaneError),
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(
        "no targets: name one in the watch (fictl watch --target CONTAINER) or add one first \
         (fictl target add CONTAINER)"
    )]
    NoTargets,
    /// A blocking task of the core panicked.
    #[error("the daemon's {0} failed (a panic; see its log)")]
    Panicked(&'static str),
    /// A panic while a lock was held left its state unknown.
    #[error("daemon state ({0}) is poisoned by an earlier panic")]
    Poisoned(&'static str),
}

/// Locks a mutex; a poisoned one becomes [`ControlError::Poisoned`].
pub(crate) fn lock<'a, T>(
    mutex: &'a Mutex<T>,
    name: &'static str,
) -> Result<MutexGuard<'a, T>, ControlError> {
    mutex.lock().map_err(|_| ControlError::Poisoned(name))
}

/// What [`Control::end_faults`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ended {
    /// Delayed requests let go.
    pub released: usize,
    /// Blackholed connections closed.
    pub closed: usize,
}

/// What the kill switch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stopped {
    /// Rules removed.
    pub removed: u32,
    pub ended: Ended,
}

/// The daemon's state as `fictl status` shows it.
#[derive(Debug, Clone)]
pub struct Status {
    pub kernel_release: String,
    pub attachments: Vec<Attachment>,
    pub counters: Vec<(fi_common::counters::Counter, u64)>,
    pub flows_in_use: u64,
    pub uptime: std::time::Duration,
    pub active_rules: u32,
    pub targets: u32,
    pub cgroup2: Option<PathBuf>,
    /// How the TC programs are attached (None before the first attachment).
    pub tc_mode: Option<crate::dataplane::TcMode>,
}

/// What a watcher selects among completed requests.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Cgroups (relative paths); a request from one of them or below matches.
    pub cgroups: Vec<String>,
    /// A method, compared without case (none: any).
    pub method: Option<String>,
    /// A substring of the Host header.
    pub host: Option<String>,
    pub path_prefix: Option<String>,
}

impl RequestFilter {
    pub fn matches(&self, r: &ObservedRequest) -> bool {
        Targets::is_under(&r.source_cgroup, &self.cgroups)
            && self
                .method
                .as_ref()
                .is_none_or(|m| r.method.as_str().eq_ignore_ascii_case(m))
            && self.host.as_ref().is_none_or(|h| r.host.contains(h))
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|p| r.path.starts_with(p))
    }
}

/// What a watcher asks for.
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    /// Targets to lease for the watch; none: every current target.
    pub targets: Vec<String>,
    pub method: Option<String>,
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    /// Also the newest N requests that already completed (oldest first).
    pub recent: Option<usize>,
}

/// A live watch. Its targets stay targeted while it lives.
#[derive(Debug)]
pub struct Watch {
    pub lease: Lease,
    pub filter: RequestFilter,
    /// Matching requests that completed before the watch began.
    pub past: Vec<Arc<ObservedRequest>>,
    /// Every request completed from now on (filter them with `filter`).
    pub live: broadcast::Receiver<Arc<ObservedRequest>>,
    /// Becomes true when the daemon stops.
    pub stopping: watch::Receiver<bool>,
}

/// Targets held for as long as the lease lives: dropping it gives them back.
#[derive(Debug)]
pub struct Lease {
    control: Arc<Control>,
    infos: Vec<TargetInfo>,
}

impl Lease {
    pub fn targets(&self) -> &[TargetInfo] {
        &self.infos
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Ok(mut targets) = self.control.targets.lock() else {
            return;
        };
        for info in &self.infos {
            if let Err(err) = targets.release(info.cgroup_id) {
                tracing::warn!(%err, "releasing a target");
            }
        }
    }
}

/// The core. See the module's documentation for the lock order.
#[derive(Debug)]
pub struct Control {
    targets: Mutex<Targets>,
    rules: Mutex<Rules>,
    dataplane: Mutex<DataPlane>,
    requests: Arc<Mutex<RequestLog>>,
    /// Names of the captured headers, by slot (fixed at start).
    capture: Vec<String>,
    /// The cgroup2 mount that cgroup paths are relative to (fixed at start).
    mount: PathBuf,
    kernel_release: String,
    /// Becomes true when the daemon begins to stop: streams and explorations end.
    stopping: watch::Sender<bool>,
    /// The delay queue (none when the daemon has no injector).
    delays: Option<Delays>,
    /// Asks the event pump to read the ring buffer now (see [`Control::settle`]); none
    /// before the pump runs. Not one of the ordered locks: held only to clone the sender.
    flush: Mutex<Option<mpsc::Sender<oneshot::Sender<()>>>>,
}

impl Control {
    pub fn new(
        dataplane: DataPlane,
        targets: Targets,
        rules: Rules,
        requests: Arc<Mutex<RequestLog>>,
        capture: Vec<String>,
        delays: Option<Delays>,
    ) -> Self {
        Self {
            mount: targets.mount().to_owned(),
            targets: Mutex::new(targets),
            rules: Mutex::new(rules),
            dataplane: Mutex::new(dataplane),
            requests,
            capture,
            kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            stopping: watch::Sender::new(false),
            delays,
            flush: Mutex::new(None),
        }
    }

    /// The cgroup2 mount every cgroup path is relative to.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    // ---- life ----

    /// Begins to stop: open streams and a running exploration end.
    pub fn begin_stopping(&self) {
        self.stopping.send_replace(true);
    }

    /// Whether the daemon is stopping, and a way to wait for it.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// One beat of the dead-man switch, if the core locks can be taken.
    pub fn heartbeat(&self) -> Result<(), ControlError> {
        let _rules = lock(&self.rules, "rules")?;
        lock(&self.dataplane, "dataplane")?.beat()?;
        Ok(())
    }

    pub fn status(&self) -> Result<Status, ControlError> {
        let (attachments, counters, flows_in_use, uptime, tc_mode) = {
            let dataplane = lock(&self.dataplane, "dataplane")?;
            (
                dataplane.attachments().to_vec(),
                dataplane.counters()?,
                dataplane.flows_in_use()?,
                dataplane.loaded_at().elapsed(),
                dataplane.tc_mode(),
            )
        };
        let active_rules = lock(&self.rules, "rules")?.active_count() as u32;
        let targets = lock(&self.targets, "targets")?.list().len() as u32;
        Ok(Status {
            kernel_release: self.kernel_release.clone(),
            attachments,
            counters,
            flows_in_use,
            uptime,
            active_rules,
            targets,
            cgroup2: crate::cgroup_fs::cgroup2_mount().ok(),
            tc_mode,
        })
    }

    // ---- interfaces ----

    /// Attaches the classifiers to an interface that appeared (once).
    pub fn attach_interface(&self, name: &str) -> Result<bool, ControlError> {
        let mut dataplane = lock(&self.dataplane, "dataplane")?;
        if dataplane.is_attached(name) {
            return Ok(false);
        }
        dataplane.attach_interface(name)?;
        Ok(true)
    }

    /// Forgets an interface that is gone (the kernel destroyed its links with it).
    pub fn forget_interface(&self, name: &str) -> Result<bool, ControlError> {
        let mut dataplane = lock(&self.dataplane, "dataplane")?;
        let attached = dataplane.is_attached(name);
        if attached {
            dataplane.forget_interface(name);
        }
        Ok(attached)
    }

    // ---- targets ----

    /// Resolves a target spec on a blocking thread (container ids walk cgroupfs), under
    /// no lock.
    pub async fn resolve_target(&self, spec: &str) -> Result<TargetInfo, ControlError> {
        text("target", spec)?;
        let (mount, spec) = (self.mount.clone(), spec.to_owned());
        tokio::task::spawn_blocking(move || targets::resolve(&mount, &spec))
            .await
            .map_err(|_| ControlError::Panicked("cgroup resolver"))?
            .map_err(ControlError::Target)
    }

    pub async fn add_target(&self, spec: &str) -> Result<TargetInfo, ControlError> {
        let info = self.resolve_target(spec).await?;
        Ok(lock(&self.targets, "targets")?.pin(info)?)
    }

    pub async fn remove_target(&self, spec: &str) -> Result<TargetInfo, ControlError> {
        // A target whose cgroup is gone is still removed by its spec.
        let resolved = self.resolve_target(spec).await.ok();
        Ok(lock(&self.targets, "targets")?.remove(spec, resolved)?)
    }

    pub fn list_targets(&self) -> Result<Vec<TargetInfo>, ControlError> {
        Ok(lock(&self.targets, "targets")?.list())
    }

    /// Targets every spec for as long as the lease lives; all or nothing.
    pub async fn lease_targets(self: &Arc<Self>, specs: &[String]) -> Result<Lease, ControlError> {
        if specs.len() > MAX_LEASE {
            return Err(ControlError::Invalid {
                field: "targets",
                reason: format!("are {}; at most {MAX_LEASE}", specs.len()),
            });
        }
        let mut resolved = Vec::with_capacity(specs.len());
        for spec in specs {
            resolved.push(self.resolve_target(spec).await?);
        }
        let mut lease = Lease {
            control: Arc::clone(self),
            infos: Vec::new(),
        };
        let mut targets = lock(&self.targets, "targets")?;
        for info in resolved {
            // On an error the lease drops after the guard and gives back what it took.
            let info = targets.lease(info)?;
            lease.infos.push(info);
        }
        drop(targets);
        Ok(lease)
    }

    /// Starts a watch: leases its targets, and subscribes to what completes from now on,
    /// with the newest matching requests that already completed if asked.
    pub async fn watch(self: &Arc<Self>, request: WatchRequest) -> Result<Watch, ControlError> {
        for (field, value) in [
            ("method", &request.method),
            ("host", &request.host),
            ("path_prefix", &request.path_prefix),
        ] {
            if let Some(value) = value {
                text(field, value)?;
            }
        }
        let lease = self.lease_targets(&request.targets).await?;
        let cgroups: Vec<String> = if lease.infos.is_empty() {
            self.list_targets()?.into_iter().map(|t| t.cgroup).collect()
        } else {
            lease.infos.iter().map(|t| t.cgroup.clone()).collect()
        };
        if cgroups.is_empty() {
            return Err(ControlError::NoTargets);
        }
        let filter = RequestFilter {
            cgroups,
            method: request.method,
            host: request.host,
            path_prefix: request.path_prefix,
        };
        let (past, live) = {
            let log = lock(&self.requests, "requests")?;
            let mut past: Vec<_> = match request.recent {
                Some(_) => log
                    .recent()
                    .filter(|r| filter.matches(r))
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            if let Some(keep) = request.recent {
                past.drain(..past.len().saturating_sub(keep));
            }
            (past, log.subscribe())
        };
        Ok(Watch {
            lease,
            filter,
            past,
            live,
            stopping: self.stopping(),
        })
    }

    /// Requests completed from now on.
    pub fn subscribe_requests(
        &self,
    ) -> Result<broadcast::Receiver<Arc<ObservedRequest>>, ControlError> {
        Ok(lock(&self.requests, "requests")?.subscribe())
    }

    /// Requests with an injected fault, from now on; and how many injections were sent
    /// before (see [`Control::settle`]).
    pub fn subscribe_injections(
        &self,
    ) -> Result<(broadcast::Receiver<Arc<ObservedRequest>>, u64), ControlError> {
        Ok(lock(&self.requests, "requests")?.subscribe_injected())
    }

    /// Gives the core the event pump's flush requests (see [`Control::settle`]).
    pub fn attach_pump(&self, flush: mpsc::Sender<oneshot::Sender<()>>) {
        if let Ok(mut slot) = self.flush.lock() {
            *slot = Some(flush);
        }
    }

    /// Makes the request log current: the event pump reads whatever the kernel has
    /// written by now, at once, and applies it. Returns how many injections the log has
    /// sent to its subscribers then: an injection the kernel made before this call is
    /// among them (the kernel writes its event before the client sees the fault).
    pub async fn settle(&self) -> Result<u64, ControlError> {
        let flush = self.flush.lock().ok().and_then(|f| f.clone());
        if let Some(flush) = flush {
            let (done, applied) = oneshot::channel();
            if flush.send(done).await.is_ok() {
                // A pump that does not answer within a second is stuck; the log is then
                // as current as it gets.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), applied).await;
            }
        }
        Ok(lock(&self.requests, "requests")?.injected_sent())
    }

    /// Requests still waiting for their answer.
    pub fn pending_requests(&self) -> Result<Vec<ObservedRequest>, ControlError> {
        Ok(lock(&self.requests, "requests")?.pending_requests())
    }

    pub fn call_graph(&self) -> Result<CallGraph, ControlError> {
        Ok(lock(&self.requests, "requests")?.graph().clone())
    }

    // ---- rules ----

    /// Validates and installs a rule.
    pub async fn create_rule(&self, draft: Draft) -> Result<RuleView, ControlError> {
        // Resolving the container reads cgroupfs: on a blocking thread, under no lock.
        let (mount, capture) = (self.mount.clone(), self.capture.clone());
        let validated =
            tokio::task::spawn_blocking(move || rules::validate(draft, &capture, mount.as_path()))
                .await
                .map_err(|_| ControlError::Panicked("rule validator"))??;
        let mut rules = lock(&self.rules, "rules")?;
        let id = rules.create(validated)?;
        let view = rules.get(id)?;
        tracing::info!(rule = id, fault = ?view.rule.draft.fault, "rule created");
        Ok(view)
    }

    pub fn list_rules(&self) -> Result<Vec<RuleView>, ControlError> {
        Ok(lock(&self.rules, "rules")?.list())
    }

    pub fn get_rule(&self, id: u32) -> Result<RuleView, ControlError> {
        Ok(lock(&self.rules, "rules")?.get(id)?)
    }

    /// Removes a rule, then ends what its faults still do.
    pub async fn delete_rule(self: &Arc<Self>, id: u32) -> Result<Ended, ControlError> {
        lock(&self.rules, "rules")?.delete(id)?;
        let ended = self.end_faults(Some(id)).await;
        tracing::info!(rule = id, ?ended, "rule deleted");
        Ok(ended)
    }

    /// Removes rules that may already be gone (exhausted ones): nothing to do then.
    pub fn forget_rules(&self, ids: impl IntoIterator<Item = u32>) {
        if let Ok(mut rules) = lock(&self.rules, "rules") {
            for id in ids {
                let _ = rules.delete(id);
            }
        }
    }

    /// The kill switch: every rule goes, and everything a fault still holds is let go.
    /// Returns once every delayed request has gone on.
    pub async fn stop_all(self: &Arc<Self>) -> Result<Stopped, ControlError> {
        let removed = lock(&self.rules, "rules")?.stop_all()?;
        let ended = self.end_faults(None).await;
        tracing::warn!(removed, ?ended, "kill switch: every rule removed");
        Ok(Stopped { removed, ended })
    }

    /// Moves expired rules out of the kernel and ends what they still hold.
    pub async fn expire_rules(self: &Arc<Self>) -> Result<Vec<u32>, ControlError> {
        let expired = lock(&self.rules, "rules")?.expire()?;
        for &id in &expired {
            self.end_faults(Some(id)).await;
        }
        if !expired.is_empty() {
            tracing::info!(expired = ?expired, "rules expired");
        }
        Ok(expired)
    }

    /// Ends what the faults of `rule` (of every rule, for `None`) still do once the rule
    /// is gone: held requests go on at once, and connections a timeout left dead are
    /// closed (see [`crate::cut`]). Off the async threads: both wait on the kernel.
    async fn end_faults(self: &Arc<Self>, rule: Option<u32>) -> Ended {
        let control = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let released = control.delays.as_ref().map_or(0, |d| d.release(rule));
            let flows = lock(&control.dataplane, "dataplane")
                .ok()
                .and_then(|d| d.flows().ok());
            let dead = crate::cut::dead_flows(flows.unwrap_or_default().into_iter(), rule);
            let closed = crate::cut::close_clients(&control.mount, &dead);
            Ended { released, closed }
        })
        .await
        .unwrap_or_default()
    }
}

/// Targets one lease may hold.
const MAX_LEASE: usize = 64;

/// A target spec or filter: bounded, and never empty (an empty value is an error that
/// names its field, never "any").
pub(crate) fn text(field: &'static str, value: &str) -> Result<(), ControlError> {
    let reason = if value.is_empty() {
        "is empty".to_owned()
    } else if value.len() > MAX_FIELD {
        format!("is longer than {MAX_FIELD} bytes")
    } else {
        return Ok(());
    };
    Err(ControlError::Invalid { field, reason })
}
