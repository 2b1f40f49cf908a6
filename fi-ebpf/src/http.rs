//! The TC side of "See": finds the flow of a segment, parses request heads on the client's
//! side and response heads on the way back, pairs them, and reports both.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_loop, bpf_skb_load_bytes},
    programs::TcContext,
};
use fi_common::{
    counters::Counter,
    event::{EVENT_REQUEST, EVENT_RESPONSE, EventHeader, RequestEvent, ResponseEvent},
    flow::{
        CGROUP_LEVELS, FlowKey, FlowState, PENDING, SKIP_REQUEST_BODY, SKIP_RESPONSE_BODY,
        TARGET_WATCH, claim, seq_before,
    },
    http::{
        CaptureConfig, MAX_HEADS_PER_PACKET, RequestParser, ResponseParser, SCAN_LEN,
        method_prefix, status_prefix,
    },
};

use crate::{
    maps::{FI_CAPTURE, FI_EVENTS, FI_FLOWS, FI_SCRATCH, FI_TARGETS, Scratch, bump},
    packet::{Segment, tcp_segment},
};

/// Looks at one packet at a TC hook. Never changes it: the caller passes it on.
#[inline(always)]
pub fn observe(ctx: &TcContext, direction: u32) {
    let Some(segment) = tcp_segment(ctx) else {
        return;
    };
    // SAFETY: reading a field of the context the kernel gave us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let here = claim(ifindex, direction);

    if let Some(flow) = FI_FLOWS.get_ptr_mut(&segment.key) {
        // SAFETY: a pointer from a successful lookup, valid during this invocation.
        let flow = unsafe { &mut *flow };
        if flow.claim == 0 {
            // The first hook that sees the client's packets parses its requests.
            flow.claim = here;
        }
        if flow.claim == here && segment.payload_len > 0 {
            on_request_bytes(ctx, flow, &segment, ifindex);
        }
        return;
    }
    let key = segment.key.reversed();
    if let Some(flow) = FI_FLOWS.get_ptr_mut(&key) {
        // SAFETY: as above.
        let flow = unsafe { &mut *flow };
        if flow.claim == claim(ifindex, direction ^ 1)
            && segment.payload_len > 0
            && flow.next_response != flow.next_request
        {
            on_response_bytes(ctx, flow, &segment, &key, ifindex);
        }
    }
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
    // SAFETY: the value is a plain u32 read once.
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

/// One byte of a request head. The verifier checks this once, not once per byte.
unsafe extern "C" fn request_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the LoopCtx that on_request_bytes passed to bpf_loop.
    let c = unsafe { &mut *(ctx as *mut LoopCtx) };
    // SAFETY: both point into map values that outlive the loop.
    let (scratch, config) = unsafe { (&mut *c.scratch, &*c.config) };
    let b = scratch.buf[(c.start as usize).wrapping_add(index as usize) & (SCAN_LEN - 1)];
    if scratch.request.step(b, config) {
        0
    } else {
        1
    }
}

/// One byte of a response head.
unsafe extern "C" fn response_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: as in request_step.
    let c = unsafe { &mut *(ctx as *mut LoopCtx) };
    // SAFETY: as in request_step.
    let (scratch, config) = unsafe { (&mut *c.scratch, &*c.config) };
    let b = scratch.buf[(c.start as usize).wrapping_add(index as usize) & (SCAN_LEN - 1)];
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
    // SAFETY: the callback only reads and writes through LoopCtx, which lives on this
    // stack frame for the whole call.
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
fn on_request_bytes(ctx: &TcContext, flow: &mut FlowState, segment: &Segment, ifindex: u32) {
    if flow.skip & SKIP_REQUEST_BODY != 0 {
        if seq_before(segment.seq, flow.request_body_end) {
            return; // Body of a request whose head we already saw.
        }
        flow.skip &= !SKIP_REQUEST_BODY;
    }
    let (Some(scratch), Some(config)) = (FI_SCRATCH.get_ptr_mut(0), FI_CAPTURE.get_ptr(0)) else {
        return;
    };
    // SAFETY: pointers from successful lookups, valid during this invocation.
    let (scratch, config) = unsafe { (&mut *scratch, &*config) };
    // Cheap checks first: most payloads are not the start of a request head.
    if segment.payload_len < 8 || !targeted(flow) {
        return;
    }
    let len = load_payload(ctx, scratch, segment);
    let mut offset = 0u32;
    let mut round = 0;
    while round < MAX_HEADS_PER_PACKET && offset + 8 <= len {
        let Some((method, prefix_len)) = method_prefix(&prefix::<8>(&scratch.buf, offset)) else {
            return;
        };
        scratch.request = RequestParser::new(method, prefix_len);
        let start = offset + prefix_len as u32;
        run_loop(request_step, scratch, config, start, len - start);
        scratch.request.finish();
        if scratch.request.head.is_invalid() {
            bump(Counter::ParseErrors, 1);
            return;
        }
        // SAFETY: no arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        let index = flow.next_request;
        flow.pending_ts[index as usize % PENDING] = now;
        flow.pending_method[index as usize % PENDING] = method as u8;
        flow.next_request = index.wrapping_add(1);
        report_request(scratch, flow, &segment.key, ifindex, index, now);

        match scratch.request.out.message_len() {
            Some(message_len) => {
                let next = offset.saturating_add(message_len);
                if next >= segment.payload_len {
                    flow.request_body_end = segment.seq.wrapping_add(next);
                    flow.skip |= SKIP_REQUEST_BODY;
                    return;
                }
                offset = next;
            }
            // Chunked body or head longer than the scan: the next request is found by
            // its method at the start of a later segment.
            None => return,
        }
        round += 1;
    }
}

#[inline(always)]
fn report_request(
    scratch: &mut Scratch,
    flow: &FlowState,
    key: &FlowKey,
    ifindex: u32,
    index: u32,
    now: u64,
) {
    bump(Counter::Requests, 1);
    let event = &mut scratch.request_event;
    event.header = EventHeader {
        kind: EVENT_REQUEST,
        ifindex,
        ts_ns: now,
        cookie: flow.cookie,
        cgroup_id: flow.cgroup_id,
        key: *key,
    };
    event.index = index;
    event._pad = 0;
    event.head = scratch.request.out;
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
) {
    if flow.skip & SKIP_RESPONSE_BODY != 0 {
        if seq_before(segment.seq, flow.response_body_end) {
            return;
        }
        flow.skip &= !SKIP_RESPONSE_BODY;
    }
    if segment.payload_len < 12 {
        return;
    }
    let (Some(scratch), Some(config)) = (FI_SCRATCH.get_ptr_mut(0), FI_CAPTURE.get_ptr(0)) else {
        return;
    };
    // SAFETY: pointers from successful lookups, valid during this invocation.
    let (scratch, config) = unsafe { (&mut *scratch, &*config) };
    let len = load_payload(ctx, scratch, segment);
    let mut offset = 0u32;
    let mut round = 0;
    while round < MAX_HEADS_PER_PACKET && offset + 12 <= len {
        let Some((status, minor)) = status_prefix(&prefix::<12>(&scratch.buf, offset)) else {
            return;
        };
        scratch.response = ResponseParser::new(status, minor);
        let start = offset + 12;
        run_loop(response_step, scratch, config, start, len - start);
        scratch.response.finish();
        if scratch.response.head.is_invalid() {
            bump(Counter::ParseErrors, 1);
            return;
        }
        let index = flow.next_response;
        let method = flow.pending_method[index as usize % PENDING];
        // An interim response (100 Continue, 103 Early Hints) does not answer the request;
        // 101 Switching Protocols does, and ends HTTP on this flow.
        let is_final = status >= 200 || status == 101;
        if is_final {
            // SAFETY: no arguments.
            let now = unsafe { bpf_ktime_get_ns() };
            let sent = flow.pending_ts[index as usize % PENDING];
            flow.next_response = index.wrapping_add(1);
            report_response(
                scratch,
                flow,
                key,
                ifindex,
                index,
                now,
                now.saturating_sub(sent),
            );
        }
        match scratch.response.out.message_len(method) {
            Some(message_len) => {
                let next = offset.saturating_add(message_len);
                if next >= segment.payload_len {
                    flow.response_body_end = segment.seq.wrapping_add(next);
                    flow.skip |= SKIP_RESPONSE_BODY;
                    return;
                }
                offset = next;
            }
            None => return,
        }
        if flow.next_response == flow.next_request {
            return;
        }
        round += 1;
    }
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
) {
    bump(Counter::Responses, 1);
    let event = &mut scratch.response_event;
    event.header = EventHeader {
        kind: EVENT_RESPONSE,
        ifindex,
        ts_ns: now,
        cookie: flow.cookie,
        cgroup_id: flow.cgroup_id,
        key: *key,
    };
    event.index = index;
    event._pad = 0;
    event.latency_ns = latency_ns;
    event.head = scratch.response.out;
    if FI_EVENTS.output::<ResponseEvent>(&*event, 0).is_err() {
        bump(Counter::EventsLost, 1);
    }
}
