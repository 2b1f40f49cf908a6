//! The TC side of "See": finds the flow of a segment, parses request heads on the client's
//! side and response heads on the way back, pairs them, and reports both.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, tcx_action_base::TCX_NEXT},
    helpers::{bpf_ktime_get_ns, bpf_loop, bpf_skb_load_bytes},
    programs::TcContext,
};
use fi_common::{
    counters::Counter,
    event::{
        EVENT_HELD, EVENT_REQUEST, EVENT_RESPONSE, EventHeader, HELD_PACKET_LEN, HeldEvent,
        REINJECTED_MARK, RequestEvent, ResponseEvent,
    },
    flow::{
        CGROUP_LEVELS, FAULT_DROP_CLIENT, FAULT_DROP_SERVER, FAULT_HOLDING, FAULT_LOSE_RESPONSE,
        FlowKey, FlowState, PENDING, SKIP_REQUEST_BODY, SKIP_REQUEST_STOPPED, SKIP_RESPONSE_BODY,
        TARGET_WATCH, claim, seq_before,
    },
    http::{
        CaptureConfig, FLAG_CHUNKED, FOLLOWERS, MAX_HEADS_PER_PACKET, ResponseHead, ResponseParser,
        SCAN_LEN, method_prefix, status_prefix,
    },
    maps::{JUMP_REQUEST_FOLLOWERS, JUMP_RESPONSE_FOLLOWERS},
    rule::Fault,
};

use crate::{
    faults,
    maps::{
        FI_CAPTURE, FI_EVENTS, FI_FLOWS, FI_JUMP, FI_RULE_COUNT, FI_SCRATCH, FI_TARGETS, Scratch,
        Tail, bump, daemon_alive,
    },
    packet::{Segment, TCP_ACK, TCP_RST, TCP_SYN, tcp_segment},
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
            unsafe { (*flow).fault_state &= !FAULT_HOLDING };
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
            return on_request_bytes(ctx, flow, &segment, ifindex, direction);
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
        if segment.payload_len > 0 && flow.next_response != flow.next_request {
            return on_response_bytes(ctx, flow, &segment, key, ifindex);
        }
    }
    TCX_NEXT
}

/// Writes an event header field by field: building it by value would put 72 more bytes
/// on the 512-byte stack.
#[inline(always)]
fn fill_header(
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
fn rules_loaded() -> bool {
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
fn targeted(flow: &FlowState) -> bool {
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
fn prefix<const N: usize>(buf: &[u8; SCAN_LEN], offset: u32) -> [u8; N] {
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

/// One byte of a request head. The verifier checks this once, not once per byte.
unsafe extern "C" fn request_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the LoopCtx that run_loop passed to bpf_loop.
    let (scratch, config, b) = unsafe { loop_byte(index, ctx) };
    if scratch.request.step(b, config) {
        0
    } else {
        1
    }
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

/// Client payload on the claimed hook: zero or more request heads (pipelining).
#[inline(always)]
fn on_request_bytes(
    ctx: &TcContext,
    flow: &mut FlowState,
    segment: &Segment,
    ifindex: u32,
    direction: u32,
) -> i32 {
    if flow.skip & SKIP_REQUEST_STOPPED != 0 {
        return TCX_NEXT; // After a chunked body: nothing here is read as a head.
    }
    if flow.skip & SKIP_REQUEST_BODY != 0 {
        if seq_before(segment.seq, flow.request_body_end) {
            return TCX_NEXT; // Body of a request whose head we already saw.
        }
        flow.skip &= !SKIP_REQUEST_BODY;
    }
    let (Some(scratch), Some(config)) = (FI_SCRATCH.get_ptr_mut(0), FI_CAPTURE.get_ptr(0)) else {
        return TCX_NEXT;
    };
    // SAFETY: both lookups succeeded. `scratch` is this CPU's slot of FI_SCRATCH, touched
    // by nothing else until this program returns (see `Scratch`); `config` is FI_CAPTURE's
    // one entry, which the daemon writes only before it loads the programs, so the shared
    // borrow is never written. Both are integers only and stay valid until this program
    // returns.
    let (scratch, config) = unsafe { (&mut *scratch, &*config) };
    // Cheap checks first: most payloads are not the start of a request head.
    let watched = targeted(flow);
    let rules = rules_loaded();
    if segment.payload_len < 8 || !(watched || rules) {
        return TCX_NEXT;
    }
    let len = load_payload(ctx, scratch, segment);
    let mut offset = 0u32;
    let mut round = 0;
    while round < MAX_HEADS_PER_PACKET && offset + 8 <= len {
        let Some((method, prefix_len)) = method_prefix(&prefix::<8>(&scratch.buf, offset)) else {
            return TCX_NEXT;
        };
        scratch.request.reset(method, prefix_len);
        let start = offset + prefix_len as u32;
        run_loop(request_step, scratch, config, start, len - start);
        scratch.request.finish();
        if scratch.request.head.is_invalid() {
            bump(Counter::ParseErrors, 1);
            return TCX_NEXT;
        }
        // SAFETY: bpf_ktime_get_ns takes no arguments and touches no memory of ours; it is
        // unsafe only as a foreign function.
        let now = unsafe { bpf_ktime_get_ns() };
        let index = flow.next_request;
        flow.pending_ts[index as usize % PENDING] = now;
        flow.pending_method[index as usize % PENDING] = method as u8;
        flow.next_request = index.wrapping_add(1);
        let injected = if rules {
            faults::on_request(ctx, flow, segment, scratch, index, ifindex, direction, now)
        } else {
            None
        };
        if let Some(injected) = injected {
            report_request(
                scratch,
                flow,
                &segment.key,
                ifindex,
                index,
                now,
                injected.rule_id,
                injected.fault,
            );
            if injected.fault == Fault::Abort as u8 {
                // The client gets the kernel's response now: pair it here, since the
                // redirected packet may not pass an egress hook again.
                flow.next_response = flow.next_request;
                let head = ResponseHead {
                    status: injected.status,
                    flags: 0,
                    version_minor: 1,
                    _pad: [0; 3],
                    content_length: 0,
                    head_len: 0,
                };
                report_response(scratch, flow, &segment.key, ifindex, index, now, 0, head);
            }
            if injected.fault == Fault::Delay as u8 {
                return hold(
                    ctx,
                    flow,
                    segment,
                    injected.delay_ns,
                    injected.rule_id,
                    direction,
                    ifindex,
                    now,
                );
            }
            return injected.verdict;
        }
        if watched {
            report_request(scratch, flow, &segment.key, ifindex, index, now, 0, 0);
        }

        match scratch.request.out.message_len() {
            Some(message_len) => {
                let next = offset.saturating_add(message_len);
                if next >= segment.payload_len {
                    flow.request_body_end = segment.seq.wrapping_add(next);
                    flow.skip |= SKIP_REQUEST_BODY;
                    return TCX_NEXT;
                }
                offset = next;
            }
            // A chunked body: its data may look like a request, so the connection's
            // requests are not parsed any more. A head longer than the scan: the next
            // request is found by its method at the start of a later segment.
            None => {
                if scratch.request.out.flags & FLAG_CHUNKED != 0 {
                    flow.skip |= SKIP_REQUEST_STOPPED;
                }
                return TCX_NEXT;
            }
        }
        round += 1;
    }
    // More messages in this segment (pipelining): the followers program parses them.
    if offset < len {
        hand_over(
            scratch,
            &segment.key,
            segment.seq,
            offset,
            len,
            ifindex,
            watched,
        );
        // SAFETY: tail_call never returns on success, so nothing after it runs; that is
        // sound because nothing live here needs dropping and the scratch map already holds
        // what the followers program reads (`hand_over`). It passes on the context the
        // kernel gave us; with an empty slot it returns and we go on.
        unsafe { FI_JUMP.tail_call(ctx, JUMP_REQUEST_FOLLOWERS) };
    }
    TCX_NEXT
}

/// Takes a request packet out of the path for a delay: its bytes go to the daemon, which
/// sends them back in through the injector at the release time. Retransmissions of it
/// are dropped until then.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "the packet, its flow and where it was held; a struct would cost stack"
)]
fn hold(
    ctx: &TcContext,
    flow: &mut FlowState,
    segment: &Segment,
    delay_ns: u64,
    rule_id: u32,
    direction: u32,
    ifindex: u32,
    now: u64,
) -> i32 {
    let len = ctx.len();
    if len as usize > HELD_PACKET_LEN {
        bump(Counter::FaultsSkipped, 1);
        return TCX_NEXT;
    }
    let Some(mut entry) = FI_EVENTS.reserve::<HeldEvent>(0) else {
        bump(Counter::EventsLost, 1);
        return TCX_NEXT; // Cannot hold it: let it go undelayed rather than lose it.
    };
    // SAFETY: the reservation is HeldEvent-sized; every field is written below before
    // submit, except the packet bytes past `len`, which the daemon ignores.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(
        &mut event.header,
        EVENT_HELD,
        ifindex,
        now,
        flow,
        &segment.key,
    );
    event.release_ns = now.saturating_add(delay_ns);
    event.claim = claim(ifindex, direction);
    event.len = len;
    event.rule_id = rule_id;
    event._pad = 0;
    let n = len.min(HELD_PACKET_LEN as u32);
    if n == 0 {
        entry.discard(0);
        return TCX_NEXT;
    }
    // SAFETY: `packet` has HELD_PACKET_LEN bytes and n is in 1..=HELD_PACKET_LEN.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const c_void,
            0,
            event.packet.as_mut_ptr() as *mut c_void,
            n,
        )
    };
    if ret != 0 {
        entry.discard(0);
        return TCX_NEXT;
    }
    entry.submit(u64::from(BPF_RB_FORCE_WAKEUP));
    flow.fault_state |= FAULT_HOLDING;
    flow.hold_end = segment.seq.wrapping_add(segment.payload_len);
    // Out of the path, reported as sent (see FI_INJECTOR): the injector discards it.
    faults::vanish()
}

#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "a flat hot path; a struct would be copied"
)]
fn report_request(
    scratch: &mut Scratch,
    flow: &FlowState,
    key: &FlowKey,
    ifindex: u32,
    index: u32,
    now: u64,
    rule_id: u32,
    fault: u8,
) {
    bump(Counter::Requests, 1);
    let event = &mut scratch.request_event;
    fill_header(&mut event.header, EVENT_REQUEST, ifindex, now, flow, key);
    event.index = index;
    event.rule_id = rule_id;
    event.fault = fault;
    event._pad = [0; 7];
    // SAFETY: two distinct fields of the same map value: they never overlap. An explicit
    // copy keeps LLVM from staging 472 bytes on the 512-byte BPF stack.
    unsafe { core::ptr::copy_nonoverlapping(&scratch.request.out, &mut event.head, 1) };
    if FI_EVENTS.output::<RequestEvent>(&*event, 0).is_err() {
        bump(Counter::EventsLost, 1);
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
        hand_over(scratch, key, segment.seq, offset, len, ifindex, true);
        // SAFETY: tail_call never returns on success, so nothing after it runs; that is
        // sound because nothing live here needs dropping and the scratch map already holds
        // what the followers program reads (`hand_over`). It passes on the context the
        // kernel gave us; with an empty slot it returns and we go on.
        unsafe { FI_JUMP.tail_call(ctx, JUMP_RESPONSE_FOLLOWERS) };
    }
    TCX_NEXT
}

/// Writes what a followers program needs into the scratch map, field by field.
#[inline(always)]
fn hand_over(
    scratch: &mut Scratch,
    key: &FlowKey,
    seq: u32,
    offset: u32,
    len: u32,
    ifindex: u32,
    watched: bool,
) {
    let tail: &mut Tail = &mut scratch.tail;
    // SAFETY: `key` is a shared and `tail` an exclusive reference, both to valid, aligned
    // FlowKeys, so they cannot overlap (`key` may be another field of the same scratch
    // value, never this one).
    unsafe { core::ptr::copy_nonoverlapping(key, &mut tail.key, 1) };
    tail.seq = seq;
    tail.offset = offset;
    tail.len = len;
    tail.ifindex = ifindex;
    tail.watched = u32::from(watched);
}

/// One byte of the pipelined request heads behind the first of a segment.
unsafe extern "C" fn request_follower_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the LoopCtx that run_loop passed to bpf_loop.
    let (scratch, config, b) = unsafe { loop_byte(index, ctx) };
    if scratch.request_followers.step(b, config) {
        0
    } else {
        1
    }
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

/// The followers program for requests (tail-called by the main programs): parses the
/// request heads behind the first of the segment, records and reports them. Observed
/// only: faults apply to the first head of a segment.
#[inline(always)]
pub fn request_followers() -> i32 {
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
    scratch.request_followers.reset();
    run_loop(request_follower_step, scratch, config, offset, len - offset);
    // SAFETY: bpf_ktime_get_ns takes no arguments and touches no memory of ours; it is
    // unsafe only as a foreign function.
    let now = unsafe { bpf_ktime_get_ns() };
    let count = scratch.request_followers.count as usize;
    let mut i = 0;
    while i < FOLLOWERS && i < count {
        let index = flow.next_request;
        flow.pending_ts[index as usize % PENDING] = now;
        flow.pending_method[index as usize % PENDING] = scratch.request_followers.heads[i].method;
        flow.next_request = index.wrapping_add(1);
        if scratch.tail.watched != 0 {
            report_follower(scratch, flow, index, now, i);
        }
        i += 1;
    }
    if let Some(end) = scratch.request_followers.body_end() {
        flow.request_body_end = scratch.tail.seq.wrapping_add(offset).wrapping_add(end);
        flow.skip |= SKIP_REQUEST_BODY;
    }
    // The last head found has a chunked body: nothing after it is parsed (see above).
    if scratch.request_followers.chunked != 0 {
        flow.skip |= SKIP_REQUEST_STOPPED;
    }
    TCX_NEXT
}

#[inline(always)]
fn report_follower(scratch: &mut Scratch, flow: &FlowState, index: u32, now: u64, i: usize) {
    bump(Counter::Requests, 1);
    let ifindex = scratch.tail.ifindex;
    let event = &mut scratch.request_event;
    fill_header(
        &mut event.header,
        EVENT_REQUEST,
        ifindex,
        now,
        flow,
        &scratch.tail.key,
    );
    event.index = index;
    event.rule_id = 0;
    event.fault = 0;
    event._pad = [0; 7];
    let head = match i {
        0 => &scratch.request_followers.heads[0],
        1 => &scratch.request_followers.heads[1],
        _ => &scratch.request_followers.heads[2],
    };
    // SAFETY: distinct fields of the same map value; an explicit copy keeps the 472 bytes
    // off the BPF stack.
    unsafe { core::ptr::copy_nonoverlapping(head, &mut event.head, 1) };
    if FI_EVENTS.output::<RequestEvent>(&*event, 0).is_err() {
        bump(Counter::EventsLost, 1);
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
fn report_response(
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
