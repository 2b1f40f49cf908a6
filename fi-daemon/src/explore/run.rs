//! One exploration from start to end: its resources (the test cgroup, the target lease,
//! the faults file), the search loop (or the one replayed plan), and the progress it
//! records and publishes after each execution.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use fi_explore::{
    model::{Execution, ExploreConfig, GraphEdge, GraphSnapshot, Outcome, SiteCall, Status},
    search::{Next, Search, SearchConfig},
};

use super::{
    execution::{self, Setting},
    handle::{ExploreError, Mode, Progress, Running},
    netns,
    records::Records,
};
use crate::{
    control::{Control, Lease},
    targets::TargetInfo,
};

/// What an exploration runs on: the core, the store, and where it makes its files and
/// its test cgroup.
#[derive(Debug)]
pub(super) struct Ground {
    pub control: Arc<Control>,
    pub records: Arc<Records>,
    /// Where FI_INJECTED_FAULTS files live.
    pub runtime_dir: PathBuf,
    /// The daemon's socket (FI_SOCKET for the test).
    pub socket: PathBuf,
    /// Where test cgroups are made (absolute).
    pub cgroup_parent: PathBuf,
}

/// An exploration's resources and tallies.
pub(super) struct Run {
    control: Arc<Control>,
    records: Arc<Records>,
    running: Arc<Running>,
    config: ExploreConfig,
    /// (cgroup relative path, label), the test's first.
    sources: Vec<(String, String)>,
    /// The test cgroup and the targets, targeted while the run lives.
    _lease: Lease,
    test_cgroup: PathBuf,
    faults_file: PathBuf,
    /// The daemon's socket (FI_SOCKET for the test).
    socket: PathBuf,
    started: Instant,
    /// Addresses of the targets' containers -> their labels, for the report.
    names: BTreeMap<String, String>,
    run_durations: Vec<Duration>,
    failures: u32,
    done: u32,
}

impl Run {
    pub(super) async fn new(
        ground: Ground,
        running: &Arc<Running>,
        config: ExploreConfig,
    ) -> Result<Run, ExploreError> {
        let id = running.id;
        let control = &ground.control;
        let mount = control.mount().to_owned();
        // Below the sock_ops cgroup, so that the test's connections are attributed.
        let test_cgroup = crate::instance::test_cgroup(&ground.cgroup_parent, id);
        let rel = test_cgroup
            .strip_prefix(&mount)
            .map(|p| format!("/{}", p.display()))
            .unwrap_or_else(|_| test_cgroup.display().to_string());
        let setup = |path: &PathBuf| {
            std::fs::create_dir_all(path).map_err(|source| ExploreError::Setup {
                path: path.clone(),
                source,
            })
        };
        setup(&test_cgroup)?;
        let dir = crate::instance::runtime_dir(&ground.runtime_dir, id);
        setup(&dir)?;
        let specs: Vec<String> = std::iter::once(rel)
            .chain(config.targets.iter().cloned())
            .collect();
        let lease = control
            .lease_targets(&specs)
            .await
            .map_err(|e| ExploreError::Invalid {
                field: "targets",
                reason: e.to_string(),
            })?;
        let leased: &[TargetInfo] = lease.targets();
        // The test's cgroup as the registry spells cgroup paths, then the targets'.
        let mut sources = Vec::new();
        let mut names = BTreeMap::new();
        for (i, info) in leased.iter().enumerate() {
            if i == 0 {
                sources.push((
                    info.cgroup.clone(),
                    fi_explore::model::TEST_SOURCE.to_owned(),
                ));
                continue;
            }
            let name = label(&config.targets[i - 1]);
            sources.push((info.cgroup.clone(), name.clone()));
            let dir = mount.join(info.cgroup.trim_start_matches('/'));
            // Its addresses, and what it listens on (services that share an address, as
            // on 127.0.0.1, differ by port).
            let (addresses, listening) = tokio::task::spawn_blocking(move || {
                (netns::container_addresses(&dir), netns::listening(&dir))
            })
            .await
            .unwrap_or_default();
            for ip in addresses {
                names.insert(ip.to_string(), name.clone());
            }
            for addr in listening {
                names.insert(addr.to_string(), name.clone());
            }
        }
        Ok(Run {
            control: Arc::clone(&ground.control),
            records: ground.records,
            running: Arc::clone(running),
            config,
            sources,
            _lease: lease,
            test_cgroup,
            faults_file: dir.join("injected-faults.jsonl"),
            socket: ground.socket,
            started: Instant::now(),
            names,
            run_durations: Vec::new(),
            failures: 0,
            done: 0,
        })
    }

    /// What one execution needs of this run.
    fn setting(&self) -> Setting<'_> {
        Setting {
            control: &self.control,
            running: &self.running,
            config: &self.config,
            sources: &self.sources,
            faults_file: &self.faults_file,
            socket: &self.socket,
            test_cgroup: &self.test_cgroup,
            names: &self.names,
        }
    }

    /// Gives back what the run took: its processes, its cgroup, its files. The lease goes
    /// with the run.
    pub(super) async fn teardown(self) {
        super::spawn::remove_cgroup(&self.test_cgroup).await;
        if let Some(dir) = self.faults_file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    pub(super) fn cancelled(&self) -> bool {
        self.running.is_cancelled() || *self.control.stopping().borrow()
    }

    /// Runs the search (or the replay) to its end: the final status.
    pub(super) async fn go(&mut self, mode: Mode) -> (Status, Option<String>) {
        match mode {
            Mode::Replay(plan) => {
                let execution = execution::execute(&self.setting(), &plan, 1).await;
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
                    let mut e = execution::execute(&self.setting(), &plan, number).await;
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
                    pruned: Some(pruned),
                    outcome: Outcome::Pruned,
                    ..execution::empty(number, plan)
                },
            };
            let reference_failed = number == 0 && execution.outcome != Outcome::Passed;
            if reference_failed {
                execution
                    .notes
                    .push("the test must pass without faults before fi can explore".into());
            }
            let described = execution.outcome.describe();
            self.finish_execution(execution, search.pending() as u32);
            number += 1;
            if reference_failed {
                return (
                    Status::Failed,
                    Some(format!(
                        "the reference run (no fault) did not pass ({described}): fix the \
                         test or the services first; its output is in execution 0"
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
        if *self.control.stopping().borrow() {
            (
                Status::Interrupted,
                Some("the daemon stopped while it ran".into()),
            )
        } else {
            (Status::Cancelled, Some("cancelled".into()))
        }
    }

    fn snapshot_graph(&self, calls: &[SiteCall]) {
        let graph = GraphSnapshot {
            edges: calls
                .iter()
                .map(|c| GraphEdge {
                    source: c.site.source.clone(),
                    destination: c.site.destination,
                    method: c.site.method.clone(),
                    path: c.site.path.clone(),
                    response: c.response,
                })
                .collect(),
            names: self.names.clone(),
        };
        self.records.save_graph(self.running.id, &graph);
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
        self.records.save_execution(self.running.id, &execution);
        let mean = if self.run_durations.is_empty() {
            Duration::ZERO
        } else {
            self.run_durations.iter().sum::<Duration>() / self.run_durations.len() as u32
        };
        self.running.publish(Progress {
            id: self.running.id,
            status: Status::Running,
            done: self.done,
            known: self.done + pending,
            failures: self.failures,
            elapsed: self.started.elapsed(),
            remaining: mean * pending,
            last: Some(execution),
            error: None,
        });
    }
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
