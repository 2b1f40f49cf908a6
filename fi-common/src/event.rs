//! Events from the kernel to the daemon, through the ring buffer [`crate::maps::FI_EVENTS`].
//! Every event starts with a `u32` kind.

use crate::{
    flow::FlowKey,
    http::{RequestHead, ResponseHead},
};

/// Its size in bytes (power of two, multiple of the page size): about 7,000 requests.
pub const EVENTS_BYTES: u32 = 4 << 20;

pub const EVENT_REQUEST: u32 = 1;
pub const EVENT_RESPONSE: u32 = 2;
pub const EVENT_FLOW_CLOSED: u32 = 3;
pub const EVENT_HELD: u32 = 4;

/// Longest packet a delay can hold: a GSO packet of lo (64 KiB) with its headers, so that
/// the segment completing a head is held whatever its size (over a veth it is one MSS).
/// Only a delay reserves this much of the ring, for the moment it takes the daemon to
/// read it.
pub const HELD_PACKET_LEN: usize = 65_536 + 128;

/// A request packet the kernel took out of the path for a delay: the daemon sends it
/// back in at `release_ns` through the injector interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldEvent {
    pub header: EventHeader,
    /// CLOCK_MONOTONIC ns at which to let it go.
    pub release_ns: u64,
    /// Where to send it back in: `claim` of the hook that held it.
    pub claim: u32,
    /// Bytes of `packet` in use (the whole frame, from the Ethernet header).
    pub len: u32,
    /// The rule whose delay holds it: removing or expiring that rule lets it go at once.
    pub rule_id: u32,
    /// The segment size of a GSO packet (several TCP segments in one, as TSO makes them
    /// over a veth), 0 for a plain packet: it goes back in as GSO again.
    pub gso_size: u32,
    pub packet: [u8; HELD_PACKET_LEN],
}
const _: () = assert!(core::mem::size_of::<HeldEvent>() == 72 + 24 + HELD_PACKET_LEN);

/// skb->mark of a packet the daemon sends to the injector: `INJECT_MARK | claim`.
pub const INJECT_MARK: u32 = 0xf100_0000;
pub const INJECT_MARK_MASK: u32 = 0xff00_0000;
/// skb->mark of a packet the injector put back: the TC hooks let it pass, once.
pub const REINJECTED_MARK: u32 = 0xf200_0000;

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
    /// The rule that injected a fault into it (0: none).
    pub rule_id: u32,
    /// The fault injected ([`crate::rule::Fault`] as u8; 0: none).
    pub fault: u8,
    pub _pad: [u8; 7],
    pub head: RequestHead,
}
const _: () = assert!(core::mem::size_of::<RequestEvent>() == 72 + 16 + 472);

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
