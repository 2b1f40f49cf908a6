//! The daemon's services, as the transports see them: the core ([`Control`]: data plane,
//! targets, rules, requests) and the explorer built on it. Built once at start-up; the
//! transports hold it and call its methods, nothing else.

use std::sync::Arc;

use crate::{control::Control, explore::Explorer};

#[derive(Debug)]
pub struct Daemon {
    control: Arc<Control>,
    explorer: Arc<Explorer>,
}

impl Daemon {
    pub fn new(control: Arc<Control>, explorer: Explorer) -> Self {
        Self {
            control,
            explorer: Arc::new(explorer),
        }
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    pub fn explorer(&self) -> &Arc<Explorer> {
        &self.explorer
    }
}
