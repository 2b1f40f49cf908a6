//! The dead-man switch's heartbeat: the map `fi_common::maps::FI_HEARTBEAT`, written through
//! `DataPlane::beat` (see `fi_common::rule::HEARTBEAT_BOUND_NS`).
//!
//! It beats from a thread of its own, every 100 ms, while the daemon is alive: the `beat`
//! closure takes the locks every control call takes, and the async runtime has ticked
//! within [`RUNTIME_STALL`]. A daemon that dies or is stopped beats no more, and its
//! programs stop injecting within a second; a deadlock on a core lock stops it the same
//! way; a runtime that makes no progress at all, within [`RUNTIME_STALL`] and a second.
//!
//! A thread of its own, because a runtime busy for a moment (an fsync of the store, a
//! blocking call in async code, a loaded machine) must not stop the faults of a running
//! exploration: that exploration would then report passes that are not.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use fi_common::rule::HEARTBEAT_INTERVAL_NS;

use crate::clock::monotonic_now;

/// How long the async runtime may go without a tick before the heartbeat stops.
pub const RUNTIME_STALL: Duration = Duration::from_secs(5);

/// When the async runtime last ticked (CLOCK_MONOTONIC ns).
#[derive(Debug, Default)]
pub struct Liveness(AtomicU64);

impl Liveness {
    /// Called by a task of the runtime: it made progress now.
    pub fn tick(&self) {
        self.0
            .store(monotonic_now().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Whether the runtime ticked within [`RUNTIME_STALL`] of `now`.
    fn fresh(&self, now: Duration) -> bool {
        let last = Duration::from_nanos(self.0.load(Ordering::Relaxed));
        now.saturating_sub(last) <= RUNTIME_STALL
    }
}

/// Starts the heartbeat thread. `beat` writes the heartbeat (taking the daemon's core
/// locks); it is called every 100 ms while the runtime is live.
pub fn start(
    liveness: Arc<Liveness>,
    beat: impl Fn() + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    liveness.tick();
    std::thread::Builder::new()
        .name("fi-heartbeat".into())
        .spawn(move || {
            let interval = Duration::from_nanos(HEARTBEAT_INTERVAL_NS);
            let mut warned = false;
            loop {
                if liveness.fresh(monotonic_now()) {
                    beat();
                    warned = false;
                } else if !warned {
                    tracing::error!(
                        "the daemon's runtime made no progress for {RUNTIME_STALL:?}: \
                         heartbeat stopped, faults stop within a second"
                    );
                    warned = true;
                }
                std::thread::sleep(interval);
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_that_ticked_lately_is_live() {
        let l = Liveness::default();
        l.tick();
        let now = monotonic_now();
        assert!(l.fresh(now));
        assert!(l.fresh(now + RUNTIME_STALL - Duration::from_millis(1)));
        assert!(!l.fresh(now + RUNTIME_STALL + Duration::from_secs(1)));
    }
}
