//! The TC side of "See": finds the flow of a segment, parses request heads on the client's
//! side and response heads on the way back, pairs them, and reports both.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::tcx_action_base::TCX_NEXT,
    helpers::{bpf_ktime_get_ns, bpf_loop, bpf_skb_load_bytes},
    programs::TcContext,
};
use fi_common::{
    counters::Counter,
    event::{EVENT_RESPONSE, EventHeader, REINJECTED_MARK, ResponseEvent},
    flow::{
        CGROUP_LEVELS, FAULT_DROP_CLIENT, FAULT_DROP_SERVER, FAULT_HOLDING, FAULT_LOSE_RESPONSE,
        FlowKey, FlowState, PENDING, SKIP_RESPONSE_BODY, TARGET_WATCH, claim, seq_before,
    },
    http::{
        CaptureConfig, FOLLOWERS, MAX_HEADS_PER_PACKET, ResponseHead, ResponseParser, SCAN_LEN,
        status_prefix,
    },
    maps::JUMP_RESPONSE_FOLLOWERS,
};

use crate::{
    faults,
    maps::{
        FI_CAPTURE, FI_EVENTS, FI_FLOWS, FI_JUMP, FI_RULE_COUNT, FI_SCRATCH, FI_TARGETS, Scratch,
        Tail, bump, daemon_alive,
    },
    packet::{Segment, TCP_ACK, TCP_RST, TCP_SYN, tcp_segment},
    requests,
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
        if segment.payload_len > 0 && flow.next_response != flow.next_request {
            return on_response_bytes(ctx, flow, &segment, key, ifindex);
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
fn faults_hold() -> bool {
    // SAFETY: bpf_ktime_get_ns takes no arguments and touches no memory of ours; it is
    // unsafe only as a foreign function.
    daemon_alive(unsafe { bpf_ktime_get_ns() })
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

/// Copies the first bytes of the payload into the per-CPU buffer; returns how many.
#[inline(always)]
fn load_payload(ctx: &TcContext, scratch: &mut Scratch, segment: &Segment) -> u32 {
    let mut len = segment.payload_len;
    if len > SCAN_LEN as u32 {
        len = SCAN_LEN as u32;
    }
    if len == 0 {
        return 0;
    }
    // SAFETY: `buf` is SCAN_LEN bytes of map memory and `len` is in 1..=SCAN_LEN.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const c_void,
            segment.payload_offset,
            scratch.buf.as_mut_ptr() as *mut c_void,
            len,
        )
    };
    if ret == 0 { len } else { 0 }
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

/// State handed to the `bpf_loop` callbacks.
#[repr(C)]
struct LoopCtx {
    scratch: *mut Scratch,
    config: *const CaptureConfig,
    start: u32,
}

/// The scratch map, the capture config and byte `index` of the loop's range: what every
/// `bpf_loop` callback starts with.
///
/// # Safety
/// `ctx` must be the LoopCtx that run_loop passed to bpf_loop.
#[inline(always)]
unsafe fn loop_byte<'a>(index: u64, ctx: *mut c_void) -> (&'a mut Scratch, &'a CaptureConfig, u8) {
    // SAFETY: by the contract above; both pointers point into map values that outlive the
    // loop.
    let c = unsafe { &mut *(ctx as *mut LoopCtx) };
    // SAFETY: run_loop made these pointers from a `&mut Scratch` and a `&CaptureConfig`
    // (map values, alive for the whole program) and uses neither while bpf_loop runs this
    // callback, so the borrows here are the only ones.
    let (scratch, config) = unsafe { (&mut *c.scratch, &*c.config) };
    let b = scratch.buf[(c.start as usize).wrapping_add(index as usize) & (SCAN_LEN - 1)];
    (scratch, config, b)
}

/// One byte of a response head.
unsafe extern "C" fn response_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the LoopCtx that run_loop passed to bpf_loop.
    let (scratch, config, b) = unsafe { loop_byte(index, ctx) };
    if scratch.response.step(b, config) {
        0
    } else {
        1
    }
}

/// Runs `step` over `count` bytes of the buffer from `start`.
#[inline(always)]
fn run_loop(
    step: unsafe extern "C" fn(u64, *mut c_void) -> i64,
    scratch: &mut Scratch,
    config: &CaptureConfig,
    start: u32,
    count: u32,
) {
    let mut loop_ctx = LoopCtx {
        scratch: scratch as *mut Scratch,
        config: config as *const CaptureConfig,
        start,
    };
    // SAFETY: the callback only reads and writes through LoopCtx, which lives on this stack
    // frame for the whole call.
    unsafe {
        bpf_loop(
            count,
            step as *mut c_void,
            &mut loop_ctx as *mut LoopCtx as *mut c_void,
            0,
        );
    }
}

/// Server payload on the way back to the client: zero or more response heads.
#[inline(always)]
fn on_response_bytes(
    ctx: &TcContext,
    flow: &mut FlowState,
    segment: &Segment,
    key: &FlowKey,
    ifindex: u32,
) -> i32 {
    if flow.skip & SKIP_RESPONSE_BODY != 0 {
        if seq_before(segment.seq, flow.response_body_end) {
            return TCX_NEXT;
        }
        flow.skip &= !SKIP_RESPONSE_BODY;
    }
    if segment.payload_len < 12 {
        return TCX_NEXT;
    }
    let (Some(scratch), Some(config)) = (FI_SCRATCH.get_ptr_mut(0), FI_CAPTURE.get_ptr(0)) else {
        return TCX_NEXT;
    };
    if flow.fault_state & FAULT_LOSE_RESPONSE != 0
        && flow.lose_index == flow.next_response
        && faults_hold()
    {
        // SAFETY: the lookup succeeded: this CPU's slot of FI_SCRATCH, valid until this
        // program returns and touched by nothing else meanwhile (a program runs to
        // completion on its CPU; see `Scratch`); it is integers only, valid for any bits.
        let scratch = unsafe { &mut *scratch };
        // Its response would start here: the client gets a reset instead.
        flow.next_response = flow.next_request;
        return faults::lose_response(ctx, flow, segment, scratch);
    }
    // SAFETY: both lookups succeeded. `scratch` is this CPU's slot of FI_SCRATCH, touched
    // by nothing else until this program returns (see `Scratch`); `config` is FI_CAPTURE's
    // one entry, which the daemon writes only before it loads the programs, so the shared
    // borrow is never written. Both are integers only and stay valid until this program
    // returns.
    let (scratch, config) = unsafe { (&mut *scratch, &*config) };
    let len = load_payload(ctx, scratch, segment);
    let mut offset = 0u32;
    let mut round = 0;
    while round < MAX_HEADS_PER_PACKET && offset + 12 <= len {
        let Some((status, minor)) = status_prefix(&prefix::<12>(&scratch.buf, offset)) else {
            return TCX_NEXT;
        };
        scratch.response = ResponseParser::new(status, minor);
        let start = offset + 12;
        run_loop(response_step, scratch, config, start, len - start);
        scratch.response.finish();
        if scratch.response.head.is_invalid() {
            bump(Counter::ParseErrors, 1);
            return TCX_NEXT;
        }
        let index = flow.next_response;
        let method = flow.pending_method[index as usize % PENDING];
        // An interim response (100 Continue, 103 Early Hints) does not answer the request;
        // 101 Switching Protocols does, and ends HTTP on this flow.
        let is_final = status >= 200 || status == 101;
        if is_final {
            // SAFETY: bpf_ktime_get_ns takes no arguments and touches no memory of ours; it
            // is unsafe only as a foreign function.
            let now = unsafe { bpf_ktime_get_ns() };
            let sent = flow.pending_ts[index as usize % PENDING];
            flow.next_response = index.wrapping_add(1);
            let head = scratch.response.out;
            let latency = now.saturating_sub(sent);
            report_response(scratch, flow, key, ifindex, index, now, latency, head);
        }
        match scratch.response.out.message_len(method) {
            Some(message_len) => {
                let next = offset.saturating_add(message_len);
                if next >= segment.payload_len {
                    flow.response_body_end = segment.seq.wrapping_add(next);
                    flow.skip |= SKIP_RESPONSE_BODY;
                    return TCX_NEXT;
                }
                offset = next;
            }
            None => return TCX_NEXT,
        }
        if flow.next_response == flow.next_request {
            return TCX_NEXT;
        }
        round += 1;
    }
    if offset < len && flow.next_response != flow.next_request {
        hand_over(scratch, key, segment.seq, offset, len, ifindex);
        // SAFETY: tail_call never returns on success, so nothing after it runs; that is
        // sound because nothing live here needs dropping and the scratch map already holds
        // what the followers program reads (`hand_over`). It passes on the context the
        // kernel gave us; with an empty slot it returns and we go on.
        unsafe { FI_JUMP.tail_call(ctx, JUMP_RESPONSE_FOLLOWERS) };
    }
    TCX_NEXT
}

/// Writes what the response followers program needs into the scratch map, field by field.
#[inline(always)]
fn hand_over(scratch: &mut Scratch, key: &FlowKey, seq: u32, offset: u32, len: u32, ifindex: u32) {
    let tail: &mut Tail = &mut scratch.tail;
    // SAFETY: `key` is a shared and `tail` an exclusive reference, both to valid, aligned
    // FlowKeys, so they cannot overlap (`key` may be another field of the same scratch
    // value, never this one).
    unsafe { core::ptr::copy_nonoverlapping(key, &mut tail.key, 1) };
    tail.seq = seq;
    tail.offset = offset;
    tail.len = len;
    tail.ifindex = ifindex;
}

/// One byte of the pipelined response heads behind the first of a segment.
unsafe extern "C" fn response_follower_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the LoopCtx that run_loop passed to bpf_loop.
    let (scratch, config, b) = unsafe { loop_byte(index, ctx) };
    if scratch.response_followers.step(b, config) {
        0
    } else {
        1
    }
}

/// The followers program for responses: pairs the response heads behind the first of the
/// segment with the pending requests, in order.
#[inline(always)]
pub fn response_followers() -> i32 {
    let (Some(scratch), Some(config)) = (FI_SCRATCH.get_ptr_mut(0), FI_CAPTURE.get_ptr(0)) else {
        return TCX_NEXT;
    };
    // SAFETY: both lookups succeeded. `scratch` is this CPU's slot of FI_SCRATCH, touched
    // by nothing else until this program returns (see `Scratch`); `config` is FI_CAPTURE's
    // one entry, which the daemon writes only before it loads the programs, so the shared
    // borrow is never written. Both are integers only and stay valid until this program
    // returns.
    let (scratch, config) = unsafe { (&mut *scratch, &*config) };
    let Some(flow) = FI_FLOWS.get_ptr_mut(&scratch.tail.key) else {
        return TCX_NEXT;
    };
    // SAFETY: the lookup succeeded, so `flow` points to a live element of FI_FLOWS: the
    // kernel frees map elements only after an RCU grace period, so it stays valid until
    // this program returns; FlowState is integers only, valid for any bits.
    let flow = unsafe { &mut *flow };
    let (offset, len) = (scratch.tail.offset, scratch.tail.len);
    if offset >= len || len > SCAN_LEN as u32 {
        return TCX_NEXT;
    }
    let next = flow.next_response as usize;
    let methods = [
        flow.pending_method[next % PENDING],
        flow.pending_method[(next + 1) % PENDING],
        flow.pending_method[(next + 2) % PENDING],
    ];
    scratch.response_followers.reset(methods);
    run_loop(
        response_follower_step,
        scratch,
        config,
        offset,
        len - offset,
    );
    // SAFETY: bpf_ktime_get_ns takes no arguments and touches no memory of ours; it is
    // unsafe only as a foreign function.
    let now = unsafe { bpf_ktime_get_ns() };
    let count = scratch.response_followers.count as usize;
    let ifindex = scratch.tail.ifindex;
    // This small program's stack has room for the key.
    let key = scratch.tail.key;
    let mut i = 0;
    while i < FOLLOWERS && i < count {
        if flow.next_response == flow.next_request {
            break;
        }
        let head = scratch.response_followers.heads[i];
        if head.status >= 200 || head.status == 101 {
            let index = flow.next_response;
            let sent = flow.pending_ts[index as usize % PENDING];
            flow.next_response = index.wrapping_add(1);
            report_response(
                scratch,
                flow,
                &key,
                ifindex,
                index,
                now,
                now.saturating_sub(sent),
                head,
            );
        }
        i += 1;
    }
    if let Some(end) = scratch.response_followers.body_end() {
        flow.response_body_end = scratch.tail.seq.wrapping_add(offset).wrapping_add(end);
        flow.skip |= SKIP_RESPONSE_BODY;
    }
    TCX_NEXT
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
