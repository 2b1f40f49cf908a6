//! Slots of the per-CPU counter array (`FI_COUNTERS`) that every program bumps.
//!
//! The array is indexed by [`Counter`]; user space sums the per-CPU values.

/// One slot of the counter array. The discriminant is the array index.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Packets seen by the TC egress program.
    EgressPackets = 0,
    /// Bytes (`skb->len`) seen by the TC egress program.
    EgressBytes = 1,
    /// Packets seen by the TC ingress program.
    IngressPackets = 2,
    /// Bytes (`skb->len`) seen by the TC ingress program.
    IngressBytes = 3,
    /// TCP connections opened by a process (sock_ops active established).
    FlowsActive = 4,
    /// TCP connections accepted by a process (sock_ops passive established).
    FlowsPassive = 5,
    /// Request heads parsed and reported.
    Requests = 6,
    /// Response heads parsed and paired with their request.
    Responses = 7,
    /// Events dropped because the ring buffer was full (a slow reader).
    EventsLost = 8,
    /// Payloads that started like an HTTP head and then broke its grammar.
    ParseErrors = 9,
    /// Flows recorded at connect() (entries written to the flow map).
    FlowsTracked = 10,
    /// Faults injected (all rules).
    FaultsInjected = 11,
    /// Requests a fault could not be applied to (larger than one segment).
    FaultsSkipped = 12,
    /// Packets dropped because a fault closed their flow (timeouts, retransmissions).
    FaultDrops = 13,
    /// Delayed requests put back into the path.
    Reinjected = 14,
    /// Requests fi could not read: a head longer than 16 KiB, or a connection whose
    /// position in the stream was lost (a gap, an evicted cut head, more framing in one
    /// segment than the programs reach). Never misread: the connection is not parsed
    /// any further.
    RequestsUnparsed = 15,
}
// The discriminant is the u32 key of the array.
const _: () = assert!(core::mem::size_of::<Counter>() == 4);

/// Number of slots in the counter array.
pub const COUNTER_SLOTS: u32 = Counter::ALL.len() as u32;

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 16] = [
        Counter::EgressPackets,
        Counter::EgressBytes,
        Counter::IngressPackets,
        Counter::IngressBytes,
        Counter::FlowsActive,
        Counter::FlowsPassive,
        Counter::Requests,
        Counter::Responses,
        Counter::EventsLost,
        Counter::ParseErrors,
        Counter::FlowsTracked,
        Counter::FaultsInjected,
        Counter::FaultsSkipped,
        Counter::FaultDrops,
        Counter::Reinjected,
        Counter::RequestsUnparsed,
    ];

    /// Stable snake_case name, used in logs, the API and tests.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::EgressPackets => "egress_packets",
            Counter::EgressBytes => "egress_bytes",
            Counter::IngressPackets => "ingress_packets",
            Counter::IngressBytes => "ingress_bytes",
            Counter::FlowsActive => "flows_active",
            Counter::FlowsPassive => "flows_passive",
            Counter::Requests => "requests",
            Counter::Responses => "responses",
            Counter::EventsLost => "events_lost",
            Counter::ParseErrors => "parse_errors",
            Counter::FlowsTracked => "flows_tracked",
            Counter::FaultsInjected => "faults_injected",
            Counter::FaultsSkipped => "faults_skipped",
            Counter::FaultDrops => "fault_drops",
            Counter::Reinjected => "reinjected",
            Counter::RequestsUnparsed => "requests_unparsed",
        }
    }

    /// Index of this counter in the array.
    pub const fn index(self) -> u32 {
        self as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i, "{c:?} is out of place");
        }
        assert_eq!(COUNTER_SLOTS as usize, Counter::ALL.len());
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
    }
}
