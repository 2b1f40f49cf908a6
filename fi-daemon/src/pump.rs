//! The event pump: reads the kernel's ring buffer as events arrive and feeds the request
//! log. The kernel never waits for it: when it falls behind, the ring fills and the
//! programs count the events they could not write (`events_lost`).

use std::sync::{Arc, Mutex};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracing::warn;

use crate::{events, requests::RequestLog};

pub async fn run(
    ring: RingBuf<MapData>,
    log: Arc<Mutex<RequestLog>>,
    delays: Option<crate::delay::Delays>,
) -> std::io::Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as it
    // lives, and the AsyncFd owns the RingBuf.
    let mut fd = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        // Decode outside the lock, then apply in one batch.
        let mut batch = Vec::new();
        while let Some(item) = ring.next() {
            batch.push(events::decode(&item));
        }
        guard.clear_ready();
        let Ok(mut log) = log.lock() else {
            return Ok(());
        };
        for event in batch {
            match event {
                Ok(events::KernelEvent::Held(held)) => match &delays {
                    Some(delays) => delays.hold(held),
                    None => warn!("a delayed request was held but the daemon has no injector"),
                },
                Ok(event) => log.on_event(&event),
                Err(err) => {
                    log.count_decode_error();
                    warn!(%err, "undecodable event from the kernel");
                }
            }
        }
    }
}
