//! A running exploration as the rest of the explorer sees it: its handle (cancel,
//! progress, injected faults), what it runs, and what can go wrong.

use std::{net::SocketAddr, path::PathBuf, sync::Mutex, time::Duration};

use fi_common::fault::Fault;
use fi_explore::model::{Execution, Plan, Status};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::{control::ControlError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ExploreError {
    #[error("exploration {0} is running: wait for it or cancel it (fictl explore cancel {0})")]
    Busy(i64),
    #[error("exploration {id} is not running (it is {status})")]
    NotRunning { id: i64, status: &'static str },
    #[error("no exploration is running")]
    NoneRunning,
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("execution {1} of exploration {0} does not exist")]
    NoExecution(i64, u32),
    #[error("creating {path:?}: {source}")]
    Setup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("explorer state ({0}) is poisoned by an earlier panic")]
    Poisoned(&'static str),
}

pub(super) fn invalid(field: &'static str, reason: impl Into<String>) -> ExploreError {
    ExploreError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A fault injected during the running execution (a line of FI_INJECTED_FAULTS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InjectedFault {
    pub execution: u32,
    pub rule: u32,
    pub source: String,
    pub destination: SocketAddr,
    pub method: String,
    pub path: String,
    /// The target the destination belongs to, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// In fi's fault grammar (`abort:503`), as a test reads it.
    #[serde(serialize_with = "as_text")]
    pub fault: Fault,
}

fn as_text<S: serde::Serializer>(fault: &Fault, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(fault)
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
    progress: broadcast::Sender<Progress>,
    current: Mutex<Progress>,
    injected: Mutex<(u32, Vec<InjectedFault>)>,
    /// Injections of the request log the running execution has taken in (noted or not
    /// its own), counted as the log counts them: when it reaches what the log sent, the
    /// list above is complete (see `Explorer::injected_now`).
    injections_seen: std::sync::atomic::AtomicU64,
}

impl Running {
    pub(super) fn new(id: i64) -> Running {
        Running {
            id,
            cancel: tokio::sync::watch::Sender::new(false),
            progress: broadcast::channel(1024).0,
            current: Mutex::new(Progress {
                id,
                status: Status::Running,
                done: 0,
                known: 1,
                failures: 0,
                elapsed: Duration::ZERO,
                remaining: Duration::ZERO,
                last: None,
                error: None,
            }),
            injected: Mutex::new((0, Vec::new())),
            injections_seen: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The execution that runs now, with the faults injected in it so far.
    pub(super) fn injected(&self) -> (u32, Vec<InjectedFault>) {
        self.injected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn cancel(&self) {
        // send_replace: stored even when nobody waits yet (between executions).
        self.cancel.send_replace(true);
    }

    pub(super) fn cancelled(&self) -> tokio::sync::watch::Receiver<bool> {
        self.cancel.subscribe()
    }

    pub(super) fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Where it is now, and every update from now on (the last one has a final status).
    pub fn follow(&self) -> (Progress, broadcast::Receiver<Progress>) {
        let updates = self.progress.subscribe();
        let now = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (now, updates)
    }

    pub(super) fn publish(&self, progress: Progress) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = progress.clone();
        let _ = self.progress.send(progress);
    }

    pub(super) fn begin_execution(&self, number: u32) {
        *self.injected.lock().unwrap_or_else(|p| p.into_inner()) = (number, Vec::new());
    }

    /// The execution subscribed to the log's injections when it had sent `sent`.
    pub(super) fn injections_from(&self, sent: u64) {
        self.injections_seen
            .store(sent, std::sync::atomic::Ordering::SeqCst);
    }

    /// The execution took in `n` more injections (after noting them).
    pub(super) fn injections_taken(&self, n: u64) {
        self.injections_seen
            .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    }

    pub(super) fn injections_seen(&self) -> u64 {
        self.injections_seen
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(super) fn note_injected(&self, fault: InjectedFault) {
        self.injected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .push(fault);
    }
}

/// What to run: a search, or one plan again.
#[derive(Debug, Clone)]
pub enum Mode {
    Explore,
    Replay(Plan),
}
