//! Every map of fi's programs. Names are the ones fi-common exports for user space.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use fi_common::{
    counters::{COUNTER_SLOTS, Counter},
    event::{EVENTS_BYTES, RequestEvent, ResponseEvent},
    flow::{FlowKey, FlowState, MAX_FLOWS, MAX_TARGETS},
    http::{
        CaptureConfig, RequestFollowers, RequestParser, ResponseFollowers, ResponseParser, SCAN_LEN,
    },
    rule::{AbortResponse, MAX_RULES, Rule, RuleStats, heartbeat_fresh},
};

#[map(name = "FI_COUNTERS")]
pub static FI_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map(name = "FI_FLOWS")]
pub static FI_FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

#[map(name = "FI_TARGETS")]
pub static FI_TARGETS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

#[map(name = "FI_CAPTURE")]
pub static FI_CAPTURE: Array<CaptureConfig> = Array::with_max_entries(1, 0);

#[map(name = "FI_RULES")]
pub static FI_RULES: Array<Rule> = Array::with_max_entries(MAX_RULES, 0);

#[map(name = "FI_RULE_COUNT")]
pub static FI_RULE_COUNT: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "FI_RULE_STATS")]
pub static FI_RULE_STATS: HashMap<u32, RuleStats> = HashMap::with_max_entries(MAX_RULES, 0);

#[map(name = "FI_RESPONSES")]
pub static FI_RESPONSES: Array<AbortResponse> = Array::with_max_entries(MAX_RULES, 0);

/// fi_common::rule::HEARTBEAT_MAP.
#[map(name = "FI_HEARTBEAT")]
pub static FI_HEARTBEAT: Array<u64> = Array::with_max_entries(1, 0);

/// The dead-man switch: whether the daemon's heartbeat is fresh at `now`. Faults act only
/// while it is; rules and flow fault states of a dead or hung daemon are ignored.
#[inline(always)]
pub fn daemon_alive(now: u64) -> bool {
    FI_HEARTBEAT
        .get(0)
        .is_some_and(|beat| heartbeat_fresh(*beat, now))
}

#[map(name = "FI_INJECTOR")]
pub static FI_INJECTOR: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "FI_EVENTS")]
pub static FI_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Per-CPU working memory: too large for the 512-byte BPF stack. A program runs to
/// completion on its CPU, so one slot per CPU is never shared.
#[repr(C)]
pub struct Scratch {
    /// The first bytes of the payload.
    pub buf: [u8; SCAN_LEN],
    pub request: RequestParser,
    pub response: ResponseParser,
    pub request_event: RequestEvent,
    pub response_event: ResponseEvent,
    /// Pseudo-header and segment, for checksums of rewritten packets.
    pub csum: [u8; crate::reply::CSUM_BUF_LEN],
    /// The flow key of a server's packet, turned around to look up its flow.
    pub reversed_key: FlowKey,
    /// What a main program hands to a followers program it tail-calls.
    pub tail: Tail,
    pub request_followers: RequestFollowers,
    pub response_followers: ResponseFollowers,
}

/// Where the followers of a segment start (after its first message).
#[repr(C)]
pub struct Tail {
    /// The flow, oriented from the client.
    pub key: FlowKey,
    /// TCP sequence number of the segment's first payload byte.
    pub seq: u32,
    pub offset: u32,
    /// Bytes of the payload in `buf`.
    pub len: u32,
    pub ifindex: u32,
    pub watched: u32,
    pub _pad: u32,
}

/// Slots of FI_JUMP.
pub const JUMP_REQUEST_FOLLOWERS: u32 = 0;
pub const JUMP_RESPONSE_FOLLOWERS: u32 = 1;

/// The followers programs, tail-called: verified on their own, so their parsing does not
/// multiply the states of the main programs.
#[map(name = "FI_JUMP")]
pub static FI_JUMP: ProgramArray = ProgramArray::with_max_entries(2, 0);

#[map(name = "FI_SCRATCH")]
pub static FI_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

// The kernel refuses a per-CPU map whose value is larger than 32 KiB (PCPU_MIN_UNIT_SIZE):
// the object would fail to load, at start-up, on every machine. Fail the build instead.
const _: () = assert!(core::mem::size_of::<Scratch>() <= 32 * 1024);
const _: () = assert!(core::mem::size_of::<Tail>() == 40 + 6 * 4);

/// Adds `by` to a per-CPU counter. Per-CPU slots need no atomics: a program runs to
/// completion on one CPU without preemption by another instance on that CPU.
#[inline(always)]
pub fn bump(counter: Counter, by: u64) {
    if let Some(slot) = FI_COUNTERS.get_ptr_mut(counter.index()) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU array and stays
        // valid for the life of this program invocation.
        unsafe { *slot += by };
    }
}
