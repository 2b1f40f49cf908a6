//! The event pump: reads the kernel's ring buffer as events arrive and feeds the request
//! log. The kernel never waits for it: when it falls behind, the ring fills and the
//! programs count the events they could not write (`events_lost`).
//!
//! Naming the cgroup a request came from may walk the whole cgroup tree (a cgroup made a
//! moment ago, such as an exploration's test cgroup, is not known yet). The pump does it
//! for a whole batch before it takes the log's lock, which every gRPC call that reads the
//! log waits on, and on a blocking thread, never on the async workers. The log only
//! receives names.

use std::sync::{Arc, Mutex};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, oneshot},
};
use tracing::warn;

use crate::{
    cgroup_fs::{CgroupIndex, CgroupPaths},
    events::{self, DecodeError, KernelEvent},
    requests::RequestLog,
};

/// A batch this large means traffic is heavy: pause before the next read.
const BUSY_BATCH: usize = 32;
/// How long events may gather under load.
const BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

pub async fn run(
    ring: RingBuf<MapData>,
    log: Arc<Mutex<RequestLog>>,
    mut cgroups: CgroupIndex,
    delays: Option<crate::delay::Delays>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
) -> std::io::Result<()> {
    let mount = cgroups.mount().to_owned();
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as it
    // lives; AsyncFd owns the RingBuf, so the fd stays valid while it is registered.
    let mut fd = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
    loop {
        let mut batch = Vec::new();
        // A flush (Control::settle) reads the ring at once, without waiting to be woken.
        let mut flushed = None;
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &delays, &mut batch);
                guard.clear_ready();
            }
            Some(done) = flushes.recv() => {
                drain(fd.get_mut(), &delays, &mut batch);
                flushed = Some(done);
            }
        }
        let busy = batch.len() >= BUSY_BATCH;
        let (mut named, unknown) = name_from_cache(&batch, &cgroups);
        if !unknown.is_empty() {
            let mut index = std::mem::replace(&mut cgroups, CgroupIndex::new(mount.clone()));
            let scan = tokio::task::spawn_blocking(move || {
                let names: Vec<(u64, String)> = unknown
                    .into_iter()
                    .map(|id| (id, index.path_of(id)))
                    .collect();
                (index, names)
            });
            match scan.await {
                Ok((index, names)) => {
                    cgroups = index;
                    named.extend(names);
                }
                Err(err) => warn!(%err, "naming cgroups failed"),
            }
        }
        {
            let Ok(mut log) = log.lock() else {
                return Ok(());
            };
            for event in batch {
                match event {
                    Ok(event) => log.on_event(&event, &named),
                    Err(err) => {
                        log.count_decode_error();
                        warn!(%err, "undecodable event from the kernel");
                    }
                }
            }
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        } else if busy {
            // Under load, let events gather for a moment: the kernel wakes the reader
            // only when it has caught up (the ring's adaptive notification), so each pause
            // turns a wake-up per event into one per batch, on CPUs that the traffic
            // needs. Watchers lag by this much at most; nothing is dropped for it, and a
            // flush does not wait for it.
            tokio::time::sleep(BUSY_PAUSE).await;
        }
    }
}

/// Reads every record the ring holds: held packets go to the delay queue at once, the
/// rest into `batch`.
fn drain(
    ring: &mut RingBuf<MapData>,
    delays: &Option<crate::delay::Delays>,
    batch: &mut Vec<Result<KernelEvent, DecodeError>>,
) {
    while let Some(item) = ring.next() {
        match events::decode(&item) {
            Ok(KernelEvent::Held(held)) => match delays {
                Some(delays) => delays.hold(held),
                None => warn!("a delayed request was held but the daemon has no injector"),
            },
            event => batch.push(event),
        }
    }
}

fn name_from_cache(
    batch: &[Result<KernelEvent, DecodeError>],
    index: &CgroupIndex,
) -> (CgroupPaths, Vec<u64>) {
    let mut named = CgroupPaths::new();
    let mut unknown = Vec::new();
    for event in batch {
        let Ok(KernelEvent::Request(request)) = event else {
            continue;
        };
        let id = request.header.cgroup_id;
        if named.contains_key(&id) || unknown.contains(&id) {
            continue;
        }
        match index.cached(id) {
            Some(path) => {
                named.insert(id, path);
            }
            None => unknown.push(id),
        }
    }
    (named, unknown)
}

#[cfg(test)]
mod tests {
    use fi_common::{
        event::{EVENT_FLOW_CLOSED, EVENT_REQUEST, EventHeader, FlowClosedEvent, RequestEvent},
        http::{CaptureConfig, parse_request},
    };

    use super::*;
    use crate::cgroup_fs::cgroup_id;

    fn header(kind: u32, cgroup_id: u64) -> EventHeader {
        EventHeader {
            kind,
            ifindex: 1,
            ts_ns: 1,
            cookie: 1,
            cgroup_id,
            key: Default::default(),
        }
    }

    fn request(cgroup_id: u64) -> Result<KernelEvent, DecodeError> {
        Ok(KernelEvent::Request(RequestEvent {
            header: header(EVENT_REQUEST, cgroup_id),
            index: 0,
            rule_id: 0,
            fault: 0,
            _pad: [0; 7],
            head: parse_request(b"GET / HTTP/1.1\r\n\r\n", &CaptureConfig::EMPTY).unwrap(),
        }))
    }

    #[test]
    fn only_requests_of_cgroups_the_cache_cannot_name_are_left_to_a_scan() {
        let root = std::env::temp_dir().join(format!("fi-pump-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("known")).unwrap();
        let mut index = CgroupIndex::new(root.clone());
        let known = cgroup_id(&root.join("known")).unwrap();
        assert_eq!(index.path_of(known), "/known");
        std::fs::create_dir(root.join("new")).unwrap();
        let new = cgroup_id(&root.join("new")).unwrap();
        let batch = vec![
            request(new),
            request(known),
            Err(DecodeError::UnknownKind(9)),
            Ok(KernelEvent::FlowClosed(FlowClosedEvent {
                header: header(EVENT_FLOW_CLOSED, 77),
                requests: 1,
                responses: 0,
            })),
            request(new),
            request(u64::MAX),
        ];
        let (named, unknown) = name_from_cache(&batch, &index);
        assert_eq!(named, CgroupPaths::from([(known, "/known".to_owned())]));
        assert_eq!(
            unknown,
            vec![new, u64::MAX],
            "each once, and only requests' cgroups"
        );
        // What the blocking section does with them: the new cgroup is named.
        assert_eq!(index.path_of(new), "/new");
        assert_eq!(index.path_of(u64::MAX), format!("cgroup:{}", u64::MAX));
        let (named, unknown) = name_from_cache(&batch, &index);
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(named.get(&new).map(String::as_str), Some("/new"));
        assert_eq!(named.get(&u64::MAX), Some(&format!("cgroup:{}", u64::MAX)));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
