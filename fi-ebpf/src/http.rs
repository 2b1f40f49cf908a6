//! The TC side of "See": finds the flow of a segment, parses request heads on the client's
//! side and response heads on the way back, pairs them, and reports both.

use aya_ebpf::{
    bindings::tcx_action_base::TCX_NEXT, helpers::bpf_ktime_get_ns, programs::TcContext,
};
use fi_common::{
    counters::Counter,
    event::{EVENT_RESPONSE, EventHeader, REINJECTED_MARK, ResponseEvent},
    flow::{
        CGROUP_LEVELS, FAULT_DROP_CLIENT, FAULT_DROP_SERVER, FAULT_HOLDING, FlowKey, FlowState,
        TARGET_WATCH, TARGETS_GENERATION, claim, seq_before,
    },
    http::{ResponseHead, SCAN_LEN},
    stream,
};

use crate::{
    faults,
    maps::{
        FI_EVENTS, FI_FLOWS, FI_RULE_COUNT, FI_SCRATCH, FI_TARGETS, Scratch, bump, daemon_alive,
        maybe_tracked,
    },
    packet::{TCP_ACK, TCP_RST, TCP_SYN, tcp_segment},
    requests, responses,
};

/// Looks at one packet at a TC hook; returns the verdict (TCX_NEXT unless a fault acts).
#[inline(always)]
pub fn observe(ctx: &TcContext, direction: u32) -> i32 {
    // SAFETY: `ctx.skb.skb` is the `__sk_buff` the kernel passed to this program: non-null,
    // aligned and readable for the whole invocation; each field is read at its constant
    // offset, as the verifier requires of context accesses.
    let (ifindex, mark) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).mark) };
    if mark == REINJECTED_MARK {
        // A delayed request the daemon put back: let it go, once.
        ctx.skb.set_mark(0);
        bump(Counter::Reinjected, 1);
        if let Some(segment) = tcp_segment(ctx)
            && let Some(flow) = FI_FLOWS.get_ptr_mut(&segment.key)
        {
            // SAFETY: the lookup succeeded, so `flow` points to a live element of FI_FLOWS:
            // the kernel frees map elements only after an RCU grace period, so it stays
            // valid until this program returns, even if user space deletes the entry
            // meanwhile; FlowState is integers only, valid for any bits. It may be written
            // in place.
            faults::clear_state(unsafe { &mut *flow }, FAULT_HOLDING);
        }
        return TCX_NEXT;
    }
    let Some(segment) = tcp_segment(ctx) else {
        return TCX_NEXT;
    };
    if !maybe_tracked(segment.key.client_port, segment.key.server_port) {
        return TCX_NEXT; // Not a flow fi tracks: no lookup.
    }
    let here = claim(ifindex, direction);

    if let Some(flow) = FI_FLOWS.get_ptr_mut(&segment.key) {
        // SAFETY: the lookup succeeded, so `flow` points to a live element of FI_FLOWS: the
        // kernel frees map elements only after an RCU grace period, so it stays valid until
        // this program returns, even if user space deletes the entry meanwhile; FlowState
        // is integers only, valid for any bits.
        let flow = unsafe { &mut *flow };
        if flow.claim == 0 {
            // The first hook that sees the client's packets parses its requests.
            flow.claim = here;
        }
        if flow.claim != here {
            return TCX_NEXT;
        }
        if flow.fault_state & (FAULT_DROP_CLIENT | FAULT_HOLDING) != 0 && faults_hold() {
            if flow.fault_state & FAULT_DROP_CLIENT != 0 {
                // A reset from the client carries no request: it may end the server's
                // half (the kill switch closes a blackholed client socket to send one).
                if segment.flags & TCP_RST != 0 {
                    return TCX_NEXT;
                }
                bump(Counter::FaultDrops, 1);
                return faults::vanish();
            }
            if seq_before(segment.seq, flow.hold_end) {
                // A retransmission of the held request: the original goes in later.
                bump(Counter::FaultDrops, 1);
                return faults::vanish();
            }
        }
        if segment.flags & (TCP_SYN | TCP_ACK) == TCP_SYN && rules_loaded() {
            let Some(scratch) = FI_SCRATCH.get_ptr_mut(0) else {
                return TCX_NEXT;
            };
            // SAFETY: the lookup succeeded: this CPU's slot of FI_SCRATCH, valid until this
            // program returns and touched by nothing else meanwhile (a program runs to
            // completion on its CPU; see `Scratch`); it is integers only, valid for any
            // bits.
            let scratch = unsafe { &mut *scratch };
            // SAFETY: bpf_ktime_get_ns takes no arguments and touches no memory of ours; it
            // is unsafe only as a foreign function.
            let now = unsafe { bpf_ktime_get_ns() };
            if let Some(verdict) =
                faults::on_syn(ctx, flow, &segment, scratch, ifindex, direction, now)
            {
                return verdict;
            }
        }
        if segment.payload_len > 0 {
            return requests::on_bytes(ctx, flow, &segment, ifindex, direction);
        }
        return TCX_NEXT;
    }
    // The reversed key lives in the scratch map, not on the stack.
    let Some(scratch) = FI_SCRATCH.get_ptr_mut(0) else {
        return TCX_NEXT;
    };
    // SAFETY: the lookup succeeded: this CPU's slot of FI_SCRATCH, valid until this program
    // returns and touched by nothing else meanwhile (a program runs to completion on its
    // CPU; see `Scratch`); it is integers only, valid for any bits.
    let key = unsafe { &mut (*scratch).reversed_key };
    *key = segment.key.reversed();
    if let Some(flow) = FI_FLOWS.get_ptr_mut(&*key) {
        // SAFETY: as for the flow above: an element of FI_FLOWS from a successful lookup,
        // valid until this program returns.
        let flow = unsafe { &mut *flow };
        if flow.claim != claim(ifindex, direction ^ 1) {
            return TCX_NEXT;
        }
        if flow.fault_state & FAULT_DROP_SERVER != 0 && faults_hold() {
            bump(Counter::FaultDrops, 1);
            return faults::vanish();
        }
        // Responses fi gave itself (aborts) are not waited for.
        flow.next_response = flow.answered();
        if segment.payload_len > 0 {
            return responses::on_bytes(ctx, flow, &segment, key, ifindex);
        }
    }
    TCX_NEXT
}

/// Writes an event header field by field: building it by value would put 72 more bytes
/// on the 512-byte stack.
#[inline(always)]
pub fn fill_header(
    header: &mut EventHeader,
    kind: u32,
    ifindex: u32,
    now: u64,
    flow: &FlowState,
    key: &FlowKey,
) {
    header.kind = kind;
    header.ifindex = ifindex;
    header.ts_ns = now;
    header.cookie = flow.cookie;
    header.cgroup_id = flow.cgroup_id;
    // SAFETY: `key` is a shared and `header` an exclusive reference, so both are valid,
    // aligned FlowKeys and cannot overlap (Rust never lets a & and a &mut alias).
    unsafe { core::ptr::copy_nonoverlapping(key, &mut header.key, 1) };
}

#[inline(always)]
pub fn rules_loaded() -> bool {
    FI_RULE_COUNT.get(0).is_some_and(|n| *n > 0) && faults_hold()
}

/// The dead-man switch, now: whether the daemon's heartbeat is fresh.
#[inline(always)]
pub fn faults_hold() -> bool {
    // SAFETY: bpf_ktime_get_ns takes no arguments and touches no memory of ours; it is
    // unsafe only as a foreign function.
    daemon_alive(unsafe { bpf_ktime_get_ns() })
}

/// Whether a flow whose cached answer is `cache` (a stream's `watch`) is watched: the
/// cache, while the targets have not changed; else the targets, once, and the answer is
/// cached. One lookup per packet instead of one per level of the owner's cgroup.
#[inline(always)]
pub fn watched(flow: &FlowState, cache: &mut u32) -> bool {
    // SAFETY: `get` is unsafe because user space may change the entry while we hold the
    // reference; the u32 is copied out at once.
    let generation = unsafe { FI_TARGETS.get(&TARGETS_GENERATION) }
        .copied()
        .unwrap_or(0);
    if let Some(answer) = stream::watch(*cache, generation) {
        return answer;
    }
    let answer = targeted(flow);
    *cache = stream::watch_cache(answer, generation);
    answer
}

/// Whether the flow's owner cgroup, or one of its ancestors, is a watch target.
#[inline(always)]
pub fn targeted(flow: &FlowState) -> bool {
    if is_target(flow.cgroup_id) {
        return true;
    }
    let mut level = 0;
    while level < CGROUP_LEVELS {
        let id = flow.ancestors[level];
        if id != 0 && is_target(id) {
            return true;
        }
        level += 1;
    }
    false
}

#[inline(always)]
fn is_target(cgroup_id: u64) -> bool {
    // SAFETY: `get` is unsafe because user space may delete the entry while we hold the
    // reference; the kernel frees it only after an RCU grace period, after this program
    // returns, and the u32 is copied out at once.
    unsafe { FI_TARGETS.get(&cgroup_id) }.is_some_and(|flags| flags & TARGET_WATCH != 0)
}

#[inline(always)]
pub fn prefix<const N: usize>(buf: &[u8; SCAN_LEN], offset: u32) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = buf[(offset as usize + i) & (SCAN_LEN - 1)];
        i += 1;
    }
    out
}

#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "a flat hot path; a struct would be copied"
)]
pub fn report_response(
    scratch: &mut Scratch,
    flow: &FlowState,
    key: &FlowKey,
    ifindex: u32,
    index: u32,
    now: u64,
    latency_ns: u64,
    head: ResponseHead,
) {
    bump(Counter::Responses, 1);
    let event = &mut scratch.response_event;
    fill_header(&mut event.header, EVENT_RESPONSE, ifindex, now, flow, key);
    event.index = index;
    event._pad = 0;
    event.latency_ns = latency_ns;
    event.head = head;
    if FI_EVENTS.output::<ResponseEvent>(&*event, 0).is_err() {
        bump(Counter::EventsLost, 1);
    }
}
