//! Fault rules as the kernel holds them, and the pure logic that decides whether a rule
//! selects a request. The daemon validates rules and writes them in precedence order into
//! [`crate::maps::FI_RULES`]; the TC programs evaluate the first [`crate::maps::FI_RULE_COUNT`] slots for each
//! request head (and each SYN, for refusals): the first rule that matches and whose gates
//! (skip, n-th, probability, budget) open injects; only one fault per request.
//!
//! String matchers compare 64-bit FNV-1a hashes computed while the head is parsed (see
//! [`RequestDigest`]), so a rule costs a few integer compares whatever its strings.

use crate::flow::{CGROUP_LEVELS, FlowKey, FlowState};

pub const MAX_RULES: u32 = 256;

/// How old a heartbeat may be before the programs stop injecting.
pub const HEARTBEAT_BOUND_NS: u64 = 1_000_000_000;
/// How often the daemon beats: ten times within the bound.
pub const HEARTBEAT_INTERVAL_NS: u64 = HEARTBEAT_BOUND_NS / 10;

/// Whether a heartbeat written at `beat` still holds at `now` (both CLOCK_MONOTONIC ns).
#[inline(always)]
pub const fn heartbeat_fresh(beat: u64, now: u64) -> bool {
    beat != 0 && now.saturating_sub(beat) <= HEARTBEAT_BOUND_NS
}

/// Faults. The discriminant is what the kernel stores.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Drop the request and everything after it on the connection: the client times out.
    Blackhole = 1,
    /// Answer the request with a TCP reset: ECONNRESET.
    Reset = 2,
    /// Answer the SYN with a reset: ECONNREFUSED on connect.
    Refuse = 3,
    /// Answer with an HTTP response of the rule's status; the server never sees it.
    Abort = 4,
    /// Let the request through, then turn its response into a reset.
    ResponseLost = 5,
    /// Hold the request for the rule's delay, then let it go.
    Delay = 6,
}

impl Fault {
    pub const fn from_u8(value: u8) -> Option<Fault> {
        match value {
            1 => Some(Fault::Blackhole),
            2 => Some(Fault::Reset),
            3 => Some(Fault::Refuse),
            4 => Some(Fault::Abort),
            5 => Some(Fault::ResponseLost),
            6 => Some(Fault::Delay),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Fault::Blackhole => "timeout",
            Fault::Reset => "reset",
            Fault::Refuse => "refuse",
            Fault::Abort => "abort",
            Fault::ResponseLost => "response-lost",
            Fault::Delay => "delay",
        }
    }
}

/// Rule flags: which matchers are set, and whether the slot is live.
pub const RULE_ACTIVE: u32 = 1 << 0;
pub const MATCH_CGROUP: u32 = 1 << 1;
pub const MATCH_DST: u32 = 1 << 2;
pub const MATCH_PORT: u32 = 1 << 3;
pub const MATCH_METHOD: u32 = 1 << 4;
pub const MATCH_HOST: u32 = 1 << 5;
/// With MATCH_HOST: the host is the domain or any name below it.
pub const MATCH_HOST_SUFFIX: u32 = 1 << 6;
pub const MATCH_PATH: u32 = 1 << 7;
/// With MATCH_PATH: the path starts with the rule's path.
pub const MATCH_PATH_PREFIX: u32 = 1 << 8;
pub const MATCH_HEADER: u32 = 1 << 9;
/// Matchers that need a parsed request head (a refusal happens before there is one).
pub const REQUEST_MATCHERS: u32 = MATCH_METHOD | MATCH_HOST | MATCH_PATH | MATCH_HEADER;

/// One rule, as the kernel holds it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The daemon's id (stats and events are keyed by it).
    pub id: u32,
    pub flags: u32,
    /// MATCH_CGROUP: the sending process is in this cgroup or below it.
    pub cgroup_id: u64,
    /// MATCH_DST: server address (IPv4-mapped for IPv4) and prefix length in bits.
    pub dst_addr: [u8; 16],
    pub dst_prefix: u8,
    /// [`Fault`] as u8.
    pub fault: u8,
    /// MATCH_HEADER: the capture slot of the header.
    pub header_slot: u8,
    pub _pad0: u8,
    /// MATCH_PORT: server port.
    pub dst_port: u16,
    /// MATCH_METHOD: bit `1 << method` per accepted method.
    pub method_mask: u16,
    /// MATCH_PATH: length of the rule's path (bytes).
    pub path_len: u32,
    /// Abort: the status (for the event; the bytes are in FI_RESPONSES).
    pub abort_status: u16,
    pub _pad1: u16,
    pub host_hash: u64,
    pub path_hash: u64,
    pub header_hash: u64,
    /// Chance to inject when matched, in parts per million (1,000,000 = always).
    pub probability_ppm: u32,
    /// Do not inject on the first N matches.
    pub skip_first: u32,
    /// Inject at most N times (0 = no limit).
    pub max_injections: u32,
    /// Inject only on the N-th match (0 = any).
    pub nth: u32,
    /// CLOCK_MONOTONIC ns after which the rule matches nothing (0 = never).
    pub expires_ns: u64,
    /// Delay: how long to hold the request.
    pub delay_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Rule>() == 104);

impl Rule {
    pub const EMPTY: Rule = Rule {
        id: 0,
        flags: 0,
        cgroup_id: 0,
        dst_addr: [0; 16],
        dst_prefix: 0,
        fault: 0,
        header_slot: 0,
        _pad0: 0,
        dst_port: 0,
        method_mask: 0,
        path_len: 0,
        abort_status: 0,
        _pad1: 0,
        host_hash: 0,
        path_hash: 0,
        header_hash: 0,
        probability_ppm: 0,
        skip_first: 0,
        max_injections: 0,
        nth: 0,
        expires_ns: 0,
        delay_ns: 0,
    };
}

/// Per-rule counters (global, not per CPU: the count gates need one sequence).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// Requests (or connections, for refuse) the rule's matchers selected.
    pub matched: u64,
    /// Faults injected.
    pub injected: u64,
}
const _: () = assert!(core::mem::size_of::<RuleStats>() == 16);

/// Longest abort response (status line, headers, body).
pub const ABORT_RESPONSE_LEN: usize = 256;

/// The bytes an abort rule answers with; `len` is a multiple of 4 (checksum helper).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortResponse {
    pub len: u32,
    pub _pad: u32,
    pub bytes: [u8; ABORT_RESPONSE_LEN],
}
const _: () = assert!(core::mem::size_of::<AbortResponse>() == 8 + ABORT_RESPONSE_LEN);

// The hashes rules match against are computed while a head is parsed (`crate::digest`).
pub use crate::digest::{FNV_BASIS, HOST_LABELS, RequestDigest, fnv, fnv_step};

/// Whether `addr` is inside `net/prefix` (bits, 0..=128).
#[inline(always)]
pub fn in_prefix(addr: &[u8; 16], net: &[u8; 16], prefix: u8) -> bool {
    let mut i = 0;
    while i < 16 {
        let start = (i * 8) as u32;
        let prefix = prefix as u32;
        let bits = if prefix >= start + 8 {
            8
        } else {
            prefix.saturating_sub(start)
        };
        let mask: u8 = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
        if addr[i] & mask != net[i] & mask {
            return false;
        }
        i += 1;
    }
    true
}

/// The connection-level matchers: who sends, to where. `now_ns` is CLOCK_MONOTONIC.
#[inline(always)]
pub fn matches_connection(rule: &Rule, flow: &FlowState, key: &FlowKey, now_ns: u64) -> bool {
    if rule.flags & RULE_ACTIVE == 0 || (rule.expires_ns != 0 && now_ns >= rule.expires_ns) {
        return false;
    }
    if rule.flags & MATCH_CGROUP != 0 {
        let mut hit = flow.cgroup_id == rule.cgroup_id;
        let mut i = 0;
        while i < CGROUP_LEVELS {
            hit |= flow.ancestors[i] == rule.cgroup_id;
            i += 1;
        }
        if !hit {
            return false;
        }
    }
    if rule.flags & MATCH_PORT != 0 && key.server_port != rule.dst_port {
        return false;
    }
    if rule.flags & MATCH_DST != 0 && !in_prefix(&key.server, &rule.dst_addr, rule.dst_prefix) {
        return false;
    }
    true
}

/// The request-level matchers: method, host, path, header.
#[inline(always)]
pub fn matches_request(
    rule: &Rule,
    method: u8,
    header_lens: &[u8; crate::limits::CAPTURE_SLOTS],
    d: &RequestDigest,
) -> bool {
    let f = rule.flags;
    if f & MATCH_METHOD != 0 && rule.method_mask & (1u16 << (method & 15)) == 0 {
        return false;
    }
    if f & MATCH_HOST != 0 {
        if d.host_labels == 0 {
            return false;
        }
        let hit = if f & MATCH_HOST_SUFFIX != 0 {
            let mut any = false;
            let mut i = 0;
            while i < HOST_LABELS {
                any |= i < d.host_labels as usize && d.host_suffix[i] == rule.host_hash;
                i += 1;
            }
            any
        } else {
            d.host_suffix[0] == rule.host_hash
        };
        if !hit {
            return false;
        }
    }
    if f & MATCH_PATH != 0 {
        let hit = if f & MATCH_PATH_PREFIX != 0 {
            let len = rule.path_len as usize;
            len <= d.path_len as usize
                && len <= crate::limits::PATH_LEN
                && d.path_prefix[len] == rule.path_hash
        } else {
            rule.path_len == d.path_len && d.path_hash == rule.path_hash
        };
        if !hit {
            return false;
        }
    }
    if f & MATCH_HEADER != 0 {
        let slot = rule.header_slot as usize & (crate::limits::CAPTURE_SLOTS - 1);
        if header_lens[slot] == 0 || d.header_hash[slot] != rule.header_hash {
            return false;
        }
    }
    true
}

/// The gates of a matched rule, given that this is its `occurrence`-th match (1-based)
/// and a uniform random number in 0..1,000,000. The injection budget is checked by the
/// caller with an atomic counter.
#[inline(always)]
pub fn gates_open(rule: &Rule, occurrence: u64, random_ppm: u32) -> bool {
    if occurrence <= u64::from(rule.skip_first) {
        return false;
    }
    if rule.nth != 0 && occurrence != u64::from(rule.nth) {
        return false;
    }
    random_ppm < rule.probability_ppm
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod heartbeat_tests {
    use super::*;

    #[test]
    fn a_heartbeat_holds_for_its_bound_only() {
        assert!(!heartbeat_fresh(0, 5), "no heartbeat yet");
        assert!(heartbeat_fresh(10, 10));
        assert!(heartbeat_fresh(10, 10 + HEARTBEAT_BOUND_NS));
        assert!(!heartbeat_fresh(10, 11 + HEARTBEAT_BOUND_NS));
        // A beat written just after `now` was read (on another CPU) still holds.
        assert!(heartbeat_fresh(20, 10));
    }
}
