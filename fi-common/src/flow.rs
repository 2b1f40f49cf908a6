//! Flow attribution: which cgroup opened a TCP connection, and where its HTTP exchange is.
//!
//! sock_ops records every outgoing TCP connection (at `connect()`, in the process's
//! context, so the cgroup is the caller's) under its 4-tuple. The TC programs find the
//! owner through this map, because a packet that crossed a veth has lost its socket.

use crate::stream::{RequestStream, ResponseStream};

/// Entries of [`crate::maps::FI_FLOWS`]. LRU: a burst of connections can evict old entries, never fail.
pub const MAX_FLOWS: u32 = 65_536;
pub const MAX_TARGETS: u32 = 4096;
/// Requests of flows owned by this cgroup, or by one below it, are reported.
pub const TARGET_WATCH: u32 = 1;
/// The key of [`crate::maps::FI_TARGETS`] that holds, instead of a target, the generation
/// of the targets: bumped on every change, so that each flow can keep whether it is
/// watched and look at the targets again only when they changed (cgroup ids are inode
/// numbers, never 0).
pub const TARGETS_GENERATION: u64 = 0;
/// Ancestor levels of the owner cgroup kept per flow (level 1 = a child of the root).
pub const CGROUP_LEVELS: usize = 8;
/// Requests in flight per flow whose timestamps are kept (pipelining depth).
pub const PENDING: usize = 8;

/// A TCP connection, oriented from the client (the side that called `connect()`).
/// Addresses are IPv6; IPv4 ones are IPv4-mapped (`::ffff:a.b.c.d`), so that a dual-stack
/// socket and the IPv4 packets it sends give the same key. Ports in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub client: [u8; 16],
    pub server: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

/// `::ffff:a.b.c.d` for an IPv4 address in network byte order.
#[inline(always)]
pub const fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// The IPv4 address inside an IPv4-mapped IPv6 address.
pub fn as_v4(addr: &[u8; 16]) -> Option<[u8; 4]> {
    (addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff)
        .then(|| [addr[12], addr[13], addr[14], addr[15]])
}

impl FlowKey {
    /// The key of the same connection seen from the other side.
    #[inline(always)]
    pub const fn reversed(&self) -> FlowKey {
        FlowKey {
            client: self.server,
            server: self.client,
            client_port: self.server_port,
            server_port: self.client_port,
            _pad: 0,
        }
    }
}

/// Where the client's packets of a flow were first seen: `ifindex << 1 | direction`.
/// Requests are parsed only there, responses only at the opposite direction of the same
/// interface, so a request that crosses two attached interfaces is seen once.
pub const DIRECTION_EGRESS: u32 = 0;
pub const DIRECTION_INGRESS: u32 = 1;

#[inline(always)]
pub const fn claim(ifindex: u32, direction: u32) -> u32 {
    (ifindex << 1) | (direction & 1)
}

/// What the kernel knows of one flow.
///
/// Each field has one writer, so that the two hooks, which may run on two CPUs at once,
/// never lose each other's updates: sock_ops writes the identity (`cookie`, `cgroup_id`,
/// `ancestors`) and starts `request` and `response`; the request side's hook (`claim`) writes `claim`,
/// `next_request`, `request`, `pending_*`, `answered_through`, `lose_index`, `hold_end`
/// and `fault_rule`; the response side writes `next_response` and `response`. `fault_state`
/// is written by both, with atomic and/or only (see the kernel's `faults::set_state`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowState {
    /// Socket cookie: unique for the life of the machine.
    pub cookie: u64,
    /// cgroup id (inode of the cgroup2 directory) of the process that connected.
    pub cgroup_id: u64,
    /// Its ancestors: `ancestors[i]` is the cgroup at level `i + 1`, 0 past its depth.
    pub ancestors: [u64; CGROUP_LEVELS],
    /// [`claim`] of the hook that parses this flow's requests; 0 until the first packet.
    pub claim: u32,
    /// Index the next request will get (requests seen so far).
    pub next_request: u32,
    /// Index of the request the next response answers.
    pub next_response: u32,
    /// Requests before this index were answered by fi itself (an abort): the response
    /// side moves `next_response` up to it (the request side writes only this).
    pub answered_through: u32,
    /// The request direction, followed across segments (heads, bodies, chunks).
    pub request: RequestStream,
    /// The response direction, likewise.
    pub response: ResponseStream,
    /// Send time (ns, CLOCK_MONOTONIC) of request `i`, at `i % PENDING`.
    pub pending_ts: [u64; PENDING],
    /// Method of request `i`, at `i % PENDING` (a HEAD response has no body).
    pub pending_method: [u8; PENDING],
    /// FAULT_* bits: what a fault did to this flow.
    pub fault_state: u32,
    /// With FAULT_LOSE_RESPONSE: the index of the request whose response is lost.
    pub lose_index: u32,
    /// With FAULT_HOLDING: client payload before this sequence number is a
    /// retransmission of the held request, dropped until the request is let go.
    pub hold_end: u32,
    /// The rule whose fault set `fault_state` (0: none): removing that rule ends what it
    /// left of this flow (see the daemon's `cut`).
    pub fault_rule: u32,
}
const _: () = assert!(core::mem::size_of::<FlowState>() == 8 + 8 + 64 + 16 + 40 + 72 + 64 + 8 + 16);

/// The client's packets of this flow are dropped (timeout, or after a reset, refusal or
/// abort the kernel answered itself: the server must never see them).
pub const FAULT_DROP_CLIENT: u32 = 1 << 0;
/// The server's packets of this flow are dropped (after its response was lost).
pub const FAULT_DROP_SERVER: u32 = 1 << 1;
/// The response to request `lose_index` is to be lost.
pub const FAULT_LOSE_RESPONSE: u32 = 1 << 2;
/// A delayed request is held in user space.
pub const FAULT_HOLDING: u32 = 1 << 3;

impl FlowState {
    /// Makes this entry a new flow's, in place (the kernel builds it in a map value: it is
    /// too large for the BPF stack). Ancestors are zeroed; the caller fills them in.
    #[inline(always)]
    pub fn reset(&mut self, cookie: u64, cgroup_id: u64) {
        self.cookie = cookie;
        self.cgroup_id = cgroup_id;
        self.ancestors = [0; CGROUP_LEVELS];
        self.claim = 0;
        self.next_request = 0;
        self.next_response = 0;
        self.answered_through = 0;
        self.request = RequestStream::new();
        self.response = ResponseStream::new();
        self.pending_ts = [0; PENDING];
        self.pending_method = [0; PENDING];
        self.fault_state = 0;
        self.lose_index = 0;
        self.hold_end = 0;
        self.fault_rule = 0;
    }

    pub const fn new(cookie: u64, cgroup_id: u64, ancestors: [u64; CGROUP_LEVELS]) -> FlowState {
        FlowState {
            cookie,
            cgroup_id,
            ancestors,
            claim: 0,
            next_request: 0,
            next_response: 0,
            answered_through: 0,
            request: RequestStream::new(),
            response: ResponseStream::new(),
            pending_ts: [0; PENDING],
            pending_method: [0; PENDING],
            fault_state: 0,
            lose_index: 0,
            hold_end: 0,
            fault_rule: 0,
        }
    }
}

impl FlowState {
    /// Index of the request the next response answers, counting those fi answered itself.
    #[inline(always)]
    pub const fn answered(&self) -> u32 {
        if seq_before(self.next_response, self.answered_through) {
            self.answered_through
        } else {
            self.next_response
        }
    }
}

/// `a` comes before `b` in TCP sequence space (wrapping).
#[inline(always)]
pub const fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversing_twice_is_identity() {
        let k = FlowKey {
            client: v4_mapped([10, 0, 0, 1]),
            server: v4_mapped([10, 0, 0, 2]),
            client_port: 40000,
            server_port: 80,
            _pad: 0,
        };
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.reversed().client_port, 80);
    }

    #[test]
    fn v4_mapping_round_trips() {
        assert_eq!(as_v4(&v4_mapped([127, 0, 0, 1])), Some([127, 0, 0, 1]));
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(as_v4(&v6), None);
    }

    #[test]
    fn sequence_comparison_wraps() {
        assert!(seq_before(1, 2));
        assert!(!seq_before(2, 2));
        assert!(seq_before(u32::MAX - 5, 10));
        assert!(!seq_before(10, u32::MAX - 5));
    }

    #[test]
    fn claims_keep_direction_apart() {
        assert_ne!(claim(3, DIRECTION_EGRESS), claim(3, DIRECTION_INGRESS));
        assert_ne!(
            claim(1, DIRECTION_EGRESS),
            0,
            "a claim is never the unclaimed value"
        );
    }
}
