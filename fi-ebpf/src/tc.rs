//! The TC hooks' entry: finds the flow of a segment, applies what a fault left on it
//! (dropped packets, held requests), refuses connections, and hands client bytes to
//! `requests` and server bytes to `responses`.

use aya_ebpf::{
    bindings::tcx_action_base::TCX_NEXT, helpers::bpf_ktime_get_ns, programs::TcContext,
};
use fi_common::{
    counters::Counter,
    event::REINJECTED_MARK,
    flow::{FAULT_DROP_CLIENT, FAULT_DROP_SERVER, FAULT_HOLDING, claim, seq_before},
};

use crate::{
    asked::{faults_hold, rules_loaded},
    faults,
    maps::{FI_FLOWS, FI_SCRATCH, bump, maybe_tracked},
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
        if segment.payload_len > 0 {
            // Responses fi gave itself (aborts) are not waited for.
            flow.next_response = flow.answered();
            return responses::on_bytes(ctx, flow, &segment, key, ifindex);
        }
    }
    TCX_NEXT
}
