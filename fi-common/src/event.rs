//! Events from the kernel to the daemon, through the ring buffer [`EVENTS_MAP`].
//! Every event starts with a `u32` kind.

use crate::{
    flow::FlowKey,
    http::{RequestHead, ResponseHead},
};

/// The ring buffer.
pub const EVENTS_MAP: &str = "FI_EVENTS";
/// Its size in bytes (power of two, multiple of the page size): about 7,000 requests.
pub const EVENTS_BYTES: u32 = 4 << 20;
/// The one-entry array holding the [`crate::http::CaptureConfig`].
pub const CAPTURE_MAP: &str = "FI_CAPTURE";

pub const EVENT_REQUEST: u32 = 1;
pub const EVENT_RESPONSE: u32 = 2;
pub const EVENT_FLOW_CLOSED: u32 = 3;

/// Fields every event carries.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    /// Interface where it was seen (0 for sock_ops events).
    pub ifindex: u32,
    /// CLOCK_MONOTONIC, ns.
    pub ts_ns: u64,
    pub cookie: u64,
    pub cgroup_id: u64,
    pub key: FlowKey,
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 72);

/// A request head left the client.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestEvent {
    pub header: EventHeader,
    /// Index of this request on its flow (0, 1, ... for keep-alive and pipelining).
    pub index: u32,
    pub _pad: u32,
    pub head: RequestHead,
}
const _: () = assert!(core::mem::size_of::<RequestEvent>() == 72 + 8 + 472);

/// A response head reached the client.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseEvent {
    pub header: EventHeader,
    /// Index of the request it answers.
    pub index: u32,
    pub _pad: u32,
    /// From the request's send to the response's first byte, as seen at the hook.
    pub latency_ns: u64,
    pub head: ResponseHead,
}
const _: () = assert!(core::mem::size_of::<ResponseEvent>() == 72 + 16 + 16);

/// A flow closed; requests without a response got none.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowClosedEvent {
    pub header: EventHeader,
    pub requests: u32,
    pub responses: u32,
}
const _: () = assert!(core::mem::size_of::<FlowClosedEvent>() == 80);
