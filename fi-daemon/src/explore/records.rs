//! The store of explorations behind its lock, shared by the explorer and the exploration
//! that runs (which records each execution as it ends).

use std::sync::{Mutex, MutexGuard};

use fi_explore::model::{Execution, GraphSnapshot};

use super::handle::ExploreError;
use crate::store::Store;

#[derive(Debug)]
pub(super) struct Records(Mutex<Store>);

impl Records {
    pub(super) fn new(store: Store) -> Records {
        Records(Mutex::new(store))
    }

    pub(super) fn store(&self) -> Result<MutexGuard<'_, Store>, ExploreError> {
        self.0.lock().map_err(|_| ExploreError::Poisoned("store"))
    }

    /// Records an execution; a failure is logged (the exploration goes on).
    pub(super) fn save_execution(&self, id: i64, execution: &Execution) {
        let saved = self
            .store()
            .and_then(|s| Ok(s.save_execution(id, execution)?));
        if let Err(e) = saved {
            tracing::error!("storing execution {}: {e}", execution.number);
        }
    }

    /// Records the reference run's call graph; a failure is logged.
    pub(super) fn save_graph(&self, id: i64, graph: &GraphSnapshot) {
        let saved = self.store().and_then(|s| Ok(s.save_graph(id, graph)?));
        if let Err(e) = saved {
            tracing::warn!("saving the call graph: {e}");
        }
    }
}
