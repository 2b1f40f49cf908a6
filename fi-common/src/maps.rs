//! The names of the maps in fi's eBPF object and the slots of its program array, defined
//! here once for the programs (fi-ebpf) and the daemon (fi-daemon's `dataplane`).
//!
//! aya-ebpf's `#[map]` attribute takes a map's name from the static's identifier (or from a
//! string literal), never from a constant. So fi-ebpf names each map static exactly as the
//! constant here and checks at compile time that the identifier equals the constant's
//! value and that it lists as many maps as [`ALL`]; the tier-2 test
//! `object_maps_are_the_shared_list` (tests/tests/prog_test_run.rs) loads the built object
//! and checks its maps against [`ALL`] both ways.

/// Per-CPU array of u64 counters, indexed by [`crate::counters::Counter`].
pub const FI_COUNTERS: &str = "FI_COUNTERS";
/// LRU hash map [`crate::flow::FlowKey`] -> [`crate::flow::FlowState`].
pub const FI_FLOWS: &str = "FI_FLOWS";
/// Hash map of watched cgroups: cgroup id (u64) -> flags (u32).
pub const FI_TARGETS: &str = "FI_TARGETS";
/// One-entry array of [`crate::http::CaptureConfig`].
pub const FI_CAPTURE: &str = "FI_CAPTURE";
/// Array of [`crate::rule::Rule`], in precedence order.
pub const FI_RULES: &str = "FI_RULES";
/// One-entry array: how many leading slots of [`FI_RULES`] are in use.
pub const FI_RULE_COUNT: &str = "FI_RULE_COUNT";
/// Hash map rule id (u32) -> [`crate::rule::RuleStats`].
pub const FI_RULE_STATS: &str = "FI_RULE_STATS";
/// Array of [`crate::rule::AbortResponse`], by rule slot.
pub const FI_RESPONSES: &str = "FI_RESPONSES";
/// One-entry array: CLOCK_MONOTONIC ns of the daemon's last heartbeat.
pub const FI_HEARTBEAT: &str = "FI_HEARTBEAT";
/// One-entry array: ifindex (u32) of the daemon's injector interface.
pub const FI_INJECTOR: &str = "FI_INJECTOR";
/// Ring buffer of events ([`crate::event`]).
pub const FI_EVENTS: &str = "FI_EVENTS";
/// Program array of the tail calls; its slots are the `JUMP_*` constants below.
pub const FI_JUMP: &str = "FI_JUMP";
/// Per-CPU working memory of the programs (kernel only; the daemon never opens it).
pub const FI_SCRATCH: &str = "FI_SCRATCH";
/// Request heads cut by the end of a segment, by flow, until their next segment
/// completes them (kernel only).
pub const FI_PARTIAL: &str = "FI_PARTIAL";
/// Tracked flows by client port (kernel only): a packet neither of whose ports is a
/// tracked client's leaves before any flow lookup.
pub const FI_CLIENT_PORTS: &str = "FI_CLIENT_PORTS";

/// Every map of the object, each once.
pub const ALL: [&str; 15] = [
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
];

/// Slot of [`FI_JUMP`] holding `fi_req_more` (the rest of a segment's request bytes, after
/// a head, pipelined heads included).
pub const JUMP_REQUEST_MORE: u32 = 0;
/// Slot of [`FI_JUMP`] holding `fi_resp_more` (a segment's response bytes).
pub const JUMP_RESPONSE_MORE: u32 = 1;
/// Entries of [`FI_JUMP`]: one more than the highest slot.
pub const JUMP_SLOTS: u32 = 2;

const _: () = assert!(JUMP_REQUEST_MORE < JUMP_SLOTS && JUMP_RESPONSE_MORE < JUMP_SLOTS);
const _: () = assert!(JUMP_REQUEST_MORE != JUMP_RESPONSE_MORE);

/// Longest map name the kernel keeps (`BPF_OBJ_NAME_LEN` is 16 with the NUL): a longer one
/// is cut short in `bpftool map` and the kernel's view, where tests look maps up by name.
pub const MAX_NAME_LEN: usize = 15;

/// Whether two strings are equal, usable in constants (`==` on `str` is not `const`).
pub const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A name the kernel accepts whole: 1..=[`MAX_NAME_LEN`] bytes of ASCII letters, digits
/// and '_' (the kernel also allows '.', which is kept for the compiler's own sections).
const fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > MAX_NAME_LEN {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if !(b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

/// Every name is valid and none is listed twice.
const fn list_is_sound(all: &[&str]) -> bool {
    let mut i = 0;
    while i < all.len() {
        if !valid_name(all[i]) {
            return false;
        }
        let mut j = i + 1;
        while j < all.len() {
            if same_name(all[i], all[j]) {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}
const _: () = assert!(
    list_is_sound(&ALL),
    "a map name is listed twice, too long or not [A-Za-z0-9_]"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_by_content() {
        assert!(same_name(FI_FLOWS, "FI_FLOWS"));
        assert!(!same_name(FI_FLOWS, "FI_FLOW"));
        assert!(!same_name(FI_RULES, FI_RULE_COUNT));
    }

    #[test]
    fn the_list_rejects_duplicates_and_bad_names() {
        assert!(list_is_sound(&ALL));
        assert!(!list_is_sound(&[FI_FLOWS, FI_RULES, FI_FLOWS]));
        assert!(!list_is_sound(&["FI_A_NAME_TOO_LONG"]));
        assert!(!list_is_sound(&["FI-DASH"]));
        assert!(!list_is_sound(&[""]));
    }
}
