//! Every map of fi's programs.
//!
//! `#[map]` makes a static's identifier its name in the object, and it takes no constant,
//! so each static is named exactly as its constant in `fi_common::maps`;
//! `shared_names!` below checks that at compile time, and a tier-2 test checks the built
//! object against `fi_common::maps::ALL` both ways.

use crate::packet::Segment;
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use fi_common::{
    counters::{COUNTER_SLOTS, Counter},
    event::{EVENTS_BYTES, RequestEvent, ResponseEvent},
    flow::{FlowKey, FlowState, MAX_FLOWS, MAX_TARGETS},
    http::{CaptureConfig, RequestParser, SCAN_LEN},
    maps::JUMP_SLOTS,
    rule::{AbortResponse, MAX_RULES, Rule, RuleStats, heartbeat_fresh},
};

#[map]
pub static FI_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map]
pub static FI_FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

#[map]
// One more entry than targets: the generation (`fi_common::flow::TARGETS_GENERATION`).
pub static FI_TARGETS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_TARGETS + 1, 0);

#[map]
pub static FI_CAPTURE: Array<CaptureConfig> = Array::with_max_entries(1, 0);

#[map]
pub static FI_RULES: Array<Rule> = Array::with_max_entries(MAX_RULES, 0);

#[map]
pub static FI_RULE_COUNT: Array<u32> = Array::with_max_entries(1, 0);

#[map]
pub static FI_RULE_STATS: HashMap<u32, RuleStats> = HashMap::with_max_entries(MAX_RULES, 0);

#[map]
pub static FI_RESPONSES: Array<AbortResponse> = Array::with_max_entries(MAX_RULES, 0);

/// The dead-man switch (see `fi_common::rule::HEARTBEAT_BOUND_NS`).
#[map]
pub static FI_HEARTBEAT: Array<u64> = Array::with_max_entries(1, 0);

/// The dead-man switch: whether the daemon's heartbeat is fresh at `now`. Faults act only
/// while it is; rules and flow fault states of a dead or hung daemon are ignored.
#[inline(always)]
pub fn daemon_alive(now: u64) -> bool {
    FI_HEARTBEAT
        .get(0)
        .is_some_and(|beat| heartbeat_fresh(*beat, now))
}

#[map]
pub static FI_INJECTOR: Array<u32> = Array::with_max_entries(1, 0);

#[map]
pub static FI_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Room for the pseudo-header (IPv6: 40), the TCP header (20) and an abort response.
pub const CSUM_BUF_LEN: usize = 40 + 20 + fi_common::rule::ABORT_RESPONSE_LEN;

/// Per-CPU working memory: too large for the 512-byte BPF stack. A program runs to
/// completion on its CPU, so one slot per CPU is never shared.
#[repr(C)]
pub struct Scratch {
    /// A window of the payload being walked.
    pub buf: [u8; SCAN_LEN],
    pub request: RequestParser,
    pub request_event: RequestEvent,
    pub response_event: ResponseEvent,
    /// Pseudo-header and segment, for checksums of rewritten packets.
    pub csum: [u8; CSUM_BUF_LEN],
    /// The flow key of a server's packet, turned around to look up its flow.
    pub reversed_key: FlowKey,
    /// What a main program hands to the program it tail-calls.
    pub tail: Tail,
    /// The segment `fi_req_more` goes on with (kept here: its stack has no room for it).
    pub segment: Segment,
    /// A flow entry being built by sock_ops at connect() (too large for its stack).
    pub new_flow: FlowState,
}

/// Where a tail-called program goes on in the segment.
#[repr(C)]
pub struct Tail {
    /// The flow, oriented from the client.
    pub key: FlowKey,
    /// TCP sequence number of the segment's first payload byte.
    pub seq: u32,
    /// Requests: the payload offset of the next byte to look at. Responses: the offset
    /// of the first follower in `buf`.
    pub offset: u32,
    /// Requests: bytes of the payload. Responses: bytes in `buf`.
    pub len: u32,
    pub ifindex: u32,
    pub watched: u32,
    /// Requests: the hook's direction.
    pub direction: u32,
    /// Requests: heads completed in this segment so far (a fault acts only on the first).
    pub heads: u32,
    /// Requests: the head in progress is in FI_PARTIAL (1), not in `Scratch::request`.
    pub partial: u32,
    /// Requests: the verdict so far (a delay took the segment), TCX_NEXT by default.
    pub verdict: i32,
    /// Requests: rules are loaded (and the daemon alive) for this segment.
    pub rules: u32,
}

/// The walking programs (`fi_req_more`, `fi_resp_more`), tail-called: verified on their
/// own, and with a stack of their own for the parsing loops. Slots: `fi_common::maps::JUMP_*`.
#[map]
pub static FI_JUMP: ProgramArray = ProgramArray::with_max_entries(JUMP_SLOTS, 0);

#[map]
pub static FI_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

// The kernel refuses a per-CPU map whose value is larger than 32 KiB (PCPU_MIN_UNIT_SIZE):
// the object would fail to load, at start-up, on every machine. Fail the build instead.
const _: () = assert!(core::mem::size_of::<Scratch>() <= 32 * 1024);
const _: () = assert!(core::mem::size_of::<Tail>() == 40 + 10 * 4);

/// Request heads cut by the end of a segment: the parser, by flow, until the segment that
/// completes the head. LRU: more heads in flight than this evict the oldest, whose
/// request is then counted as unparsed (`requests_unparsed`), never misread.
#[map]
pub static FI_PARTIAL: LruHashMap<FlowKey, RequestParser> =
    LruHashMap::with_max_entries(MAX_PARTIAL, 0);

/// Heads in flight across segments at once.
pub const MAX_PARTIAL: u32 = 1024;

/// How many tracked flows have each client port (sock_ops counts them up at connect and
/// down at close, atomically). A packet neither of whose ports counts is not of a tracked
/// flow: it leaves after two array reads instead of two hash lookups. A flow evicted from
/// FI_FLOWS without a close leaves its count up, which only costs that port the lookups.
#[map]
pub static FI_CLIENT_PORTS: Array<u32> = Array::with_max_entries(65_536, 0);

/// Whether a packet with these ports may be of a tracked flow (its client's port counts).
#[inline(always)]
pub fn maybe_tracked(source_port: u16, destination_port: u16) -> bool {
    let counted = |port: u16| {
        FI_CLIENT_PORTS
            .get(u32::from(port))
            .is_some_and(|n| *n != 0)
    };
    counted(source_port) || counted(destination_port)
}

/// Checks at compile time that each map static is named as its constant in
/// `fi_common::maps`, and that there are as many as `fi_common::maps::ALL` lists.
macro_rules! shared_names {
    ($($map:ident),* $(,)?) => {
        $(
            const _: () = assert!(
                fi_common::maps::same_name(stringify!($map), fi_common::maps::$map),
                concat!(
                    "map static ",
                    stringify!($map),
                    " is not named as its constant in fi_common::maps"
                )
            );
        )*
        const _: () = assert!(
            [$(stringify!($map)),*].len() == fi_common::maps::ALL.len(),
            "fi_common::maps::ALL and the maps here differ"
        );
    };
}

shared_names!(
    FI_COUNTERS,
    FI_FLOWS,
    FI_TARGETS,
    FI_CAPTURE,
    FI_RULES,
    FI_RULE_COUNT,
    FI_RULE_STATS,
    FI_RESPONSES,
    FI_HEARTBEAT,
    FI_INJECTOR,
    FI_EVENTS,
    FI_JUMP,
    FI_SCRATCH,
    FI_PARTIAL,
    FI_CLIENT_PORTS,
);

/// Adds `by` to a per-CPU counter. Per-CPU slots need no atomics: a program runs to
/// completion on one CPU without preemption by another instance on that CPU.
#[inline(always)]
pub fn bump(counter: Counter, by: u64) {
    if let Some(slot) = FI_COUNTERS.get_ptr_mut(counter.index()) {
        // SAFETY: the lookup succeeded: `slot` points to this CPU's u64 of FI_COUNTERS,
        // 8-aligned and valid until this program returns; only programs running on this
        // CPU write it (see above), so the read-modify-write touches nothing else.
        unsafe { *slot += by };
    }
}
