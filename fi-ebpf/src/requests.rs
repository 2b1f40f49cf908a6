//! The client's side of a flow, at the hook that claimed it: the request stream followed
//! across segments ([`fi_common::stream`]), each completed head recorded, reported, and
//! handed to the rules.
//!
//! One program run goes through up to [`STEPS`] windows of the payload (a window is up to
//! SCAN_LEN bytes stepped by `bpf_loop`, or a body skipped in bulk). Heads no rule can act
//! on are recorded and reported as they complete; the first head completed in a segment
//! while rules are loaded goes back to the program, which hands it to the rules and can
//! act on the segment; the rest of the segment then goes to `fi_req_more` (a tail call,
//! the same code). A head cut by the end of a segment keeps its parser in FI_PARTIAL
//! until the next one.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, tcx_action_base::TCX_NEXT},
    helpers::{bpf_ktime_get_ns, bpf_loop, bpf_skb_load_bytes},
    programs::TcContext,
};
use fi_common::{
    counters::Counter,
    event::{EVENT_HELD, EVENT_REQUEST, HELD_PACKET_LEN, HeldEvent, RequestEvent},
    flow::{FAULT_HOLDING, FlowKey, FlowState, PENDING, claim},
    framing::Stop,
    http::{CaptureConfig, RequestHead, RequestParser, ResponseHead, SCAN_LEN, method_prefix},
    maps::JUMP_REQUEST_MORE,
    rule::Fault,
    stream::{Look, Position, RequestStream, SYNCED, UNSYNCED},
};

use crate::{
    faults,
    http::{fill_header, prefix, report_response, rules_loaded, targeted},
    maps::{FI_CAPTURE, FI_EVENTS, FI_FLOWS, FI_JUMP, FI_PARTIAL, FI_SCRATCH, Scratch, bump},
    packet::Segment,
};

/// Windows (or bulk skips) per program run: `window_step` is verified once, so this costs
/// only the runs it makes.
const STEPS: u32 = 256;

/// How a run over the payload ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Advance {
    /// The payload's end.
    End,
    /// A head completed (the cursor is just past it).
    Head,
    /// The stream stopped for good.
    Stopped,
    /// [`STEPS`] windows went by: the rest is for the next program.
    Budget,
}

/// Client payload at the claimed hook. Returns the verdict.
#[inline(always)]
pub fn on_bytes(
    ctx: &TcContext,
    flow: &mut FlowState,
    segment: &Segment,
    ifindex: u32,
    direction: u32,
) -> i32 {
    if flow.request.stopped().is_some() {
        return TCX_NEXT; // fi does not know what these bytes are, for good.
    }
    let watched = targeted(flow);
    let rules = rules_loaded();
    if !(watched || rules) {
        // Nobody asks: the position is not kept up, and the next segment that begins
        // with a request line picks the connection up again when someone does.
        flow.request.mode = UNSYNCED;
        flow.request.in_head = 0;
        return TCX_NEXT;
    }
    let Some(scratch) = FI_SCRATCH.get_ptr_mut(0) else {
        return TCX_NEXT;
    };
    // SAFETY: the lookup succeeded: this CPU's slot of FI_SCRATCH, touched by nothing else
    // until this program returns (see `Scratch`); integers only, valid until then.
    let scratch = unsafe { &mut *scratch };
    let stream = &mut flow.request;
    let mut from = 0;
    if stream.mode == SYNCED {
        match stream.position(segment.seq, segment.payload_len) {
            Position::From(n) => from = n,
            Position::Old => return TCX_NEXT, // A retransmission: already looked at.
            Position::Gap => {
                lose_position(stream);
                return TCX_NEXT;
            }
        }
    }
    if stream.mode == UNSYNCED {
        if !begins_request(ctx, scratch, segment) {
            return TCX_NEXT;
        }
        stream.sync(segment.seq);
    }
    if stream.in_head != 0 && FI_PARTIAL.get_ptr(&segment.key).is_none() {
        // The cut head's parser was evicted (more heads in flight than FI_PARTIAL holds).
        lose_position(stream);
        return TCX_NEXT;
    }
    let tail = &mut scratch.tail;
    // SAFETY: `segment.key` is a shared and `tail.key` an exclusive reference, both to
    // valid, aligned FlowKeys, so they cannot overlap.
    unsafe { core::ptr::copy_nonoverlapping(&segment.key, &mut tail.key, 1) };
    tail.seq = segment.seq;
    tail.offset = from;
    tail.len = segment.payload_len;
    tail.ifindex = ifindex;
    tail.watched = u32::from(watched);
    tail.direction = direction;
    tail.heads = 0;
    tail.partial = u32::from(stream.in_head != 0);
    tail.verdict = TCX_NEXT;
    tail.rules = u32::from(rules);
    scratch.segment = *segment;
    // The bytes are read by `fi_req_more`: a program of its own, whose stack the parsing
    // loops share with nothing else of this one (the kernel allows 512 bytes in all).
    // SAFETY: tail_call never returns on success, so nothing after it runs; that is sound
    // because nothing live here needs dropping and the scratch map holds the cursor. It
    // passes on the context the kernel gave us; if it fails it returns and we go on.
    unsafe { FI_JUMP.tail_call(ctx, JUMP_REQUEST_MORE) };
    // Without it (the program array not filled yet) the bytes go unread: the position is
    // lost.
    lose_position(&mut flow.request);
    TCX_NEXT
}

/// `fi_req_more`: a segment's request bytes, from the cursor the main program (or a
/// previous run of this one) left.
#[inline(always)]
pub fn more(ctx: &TcContext) -> i32 {
    let (Some(scratch), Some(config)) = (FI_SCRATCH.get_ptr_mut(0), FI_CAPTURE.get_ptr(0)) else {
        return TCX_NEXT;
    };
    // SAFETY: as in `on_bytes`: this CPU's scratch slot and the read-only capture config.
    let (scratch, config) = unsafe { (&mut *scratch, &*config) };
    let Some(flow) = FI_FLOWS.get_ptr_mut(&scratch.tail.key) else {
        return scratch.tail.verdict;
    };
    // SAFETY: the lookup succeeded, so `flow` points to a live element of FI_FLOWS: the
    // kernel frees map elements only after an RCU grace period, so it stays valid until
    // this program returns; FlowState is integers only, valid for any bits.
    let flow = unsafe { &mut *flow };
    let segment: *const Segment = &scratch.segment;
    // SAFETY: `on_bytes` stored the segment in this CPU's scratch value before the tail
    // call; it is read only (parse writes other fields of the scratch value).
    let segment = unsafe { &*segment };
    parse(ctx, flow, segment, scratch, config)
}

/// The payload from the cursor (`scratch.tail`): bodies skipped, heads read, at most one
/// completed head handled, then the rest handed on.
#[inline(always)]
fn parse(
    ctx: &TcContext,
    flow: &mut FlowState,
    segment: &Segment,
    scratch: &mut Scratch,
    config: &CaptureConfig,
) -> i32 {
    let parser: *mut RequestParser = if scratch.tail.partial != 0 {
        match FI_PARTIAL.get_ptr_mut(&scratch.tail.key) {
            Some(p) => p,
            None => {
                lose_position(&mut flow.request);
                return scratch.tail.verdict;
            }
        }
    } else {
        &mut scratch.request
    };
    match advance(ctx, flow, parser, scratch, config, segment) {
        Advance::Head => {
            // SAFETY: `parser` points to this CPU's scratch parser or to this flow's
            // FI_PARTIAL value (looked up above), both valid until this program returns;
            // nothing writes it while this shared borrow lives.
            let parser = unsafe { &*parser };
            let verdict = on_head(ctx, flow, segment, scratch, parser);
            if verdict != GOES_ON {
                return verdict as i32; // The segment is gone (abort, reset, timeout).
            }
            // The next head (if any) starts in the scratch parser.
            scratch.tail.partial = 0;
            if scratch.tail.offset < scratch.tail.len {
                hand_on(ctx, flow, scratch);
            }
        }
        Advance::Budget => hand_on(ctx, flow, scratch),
        Advance::Stopped => {
            // SAFETY: as for the head above; read only.
            let method = unsafe { (*parser).out.method };
            if flow.request.stopped() == Some(Stop::HeadTooLong) {
                bump(Counter::RequestsUnparsed, 1);
            } else if method != 0 {
                // A request that broke the grammar after its method. Bytes that never
                // began like a request (TLS, another protocol) are not an error: the
                // connection is simply not HTTP/1.x.
                bump(Counter::ParseErrors, 1);
            }
        }
        Advance::End => {}
    }
    finish(flow, scratch);
    scratch.tail.verdict
}

/// Tail-calls `fi_req_more` for the rest of the segment. Returns only if that failed (the
/// kernel's limit of 33 tail calls): the stream's position is then lost.
#[inline(always)]
fn hand_on(ctx: &TcContext, flow: &mut FlowState, scratch: &mut Scratch) {
    // A head in progress in the scratch parser waits there for the next program.
    let _ = scratch;
    // SAFETY: tail_call never returns on success, so nothing after it runs; that is sound
    // because nothing live here needs dropping and the scratch map holds the cursor. It
    // passes on the context the kernel gave us; if it fails it returns and we go on.
    unsafe { FI_JUMP.tail_call(ctx, JUMP_REQUEST_MORE) };
    lose_position(&mut flow.request);
}

/// The end of a segment's bytes: where the stream goes on, and a cut head's parser kept.
#[inline(always)]
fn finish(flow: &mut FlowState, scratch: &mut Scratch) {
    let stream = &mut flow.request;
    if stream.mode != SYNCED {
        return;
    }
    stream.next_seq = scratch.tail.seq.wrapping_add(scratch.tail.len);
    if stream.in_head != 0
        && scratch.tail.partial == 0
        && FI_PARTIAL
            .insert(&scratch.tail.key, &scratch.request, 0)
            .is_err()
    {
        lose_position(stream);
    }
}

/// The stream's position is lost (a gap, an evicted head, more framing in one segment
/// than the tail calls reach): fi cannot know what the next bytes are, so it stops
/// reading the connection for good rather than guess. Counted as a request not parsed.
#[inline(always)]
fn lose_position(stream: &mut RequestStream) {
    bump(Counter::RequestsUnparsed, 1);
    stream.stop(Stop::Lost);
}

/// Whether the segment's payload begins with a request line's method.
#[inline(always)]
fn begins_request(ctx: &TcContext, scratch: &mut Scratch, segment: &Segment) -> bool {
    if segment.payload_len < 8 {
        return false;
    }
    // SAFETY: `buf` is SCAN_LEN (>= 8) bytes of map memory.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const c_void,
            segment.payload_offset,
            scratch.buf.as_mut_ptr() as *mut c_void,
            8,
        )
    };
    ret == 0 && method_prefix(&prefix::<8>(&scratch.buf, 0)).is_some()
}

const LOOK_MORE: u32 = 0;
const LOOK_HEAD: u32 = 1;
const LOOK_OPAQUE: u32 = 2;
const LOOK_STOPPED: u32 = 3;

/// One byte of the request stream. The verifier checks this once, not once per byte.
unsafe extern "C" fn stream_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the WindowLoop that `window_step` passed on to bpf_loop (see there
    // for its pointers); `window_step` uses none of them while this callback runs.
    let c = unsafe { &mut *(ctx as *mut WindowLoop) };
    // SAFETY: as above.
    let (stream, parser, config, scratch) =
        unsafe { (&mut *c.stream, &mut *c.parser, &*c.config, &*c.scratch) };
    let b = scratch.buf[index as usize & (SCAN_LEN - 1)];
    let look = match stream.byte(parser, b, config) {
        Look::More => return 0,
        Look::HeadDone => LOOK_HEAD,
        Look::Opaque => LOOK_OPAQUE,
        Look::Stopped => LOOK_STOPPED,
    };
    c.look = look;
    c.used = index as u32 + 1;
    1
}

/// State handed to [`window_step`].
#[repr(C)]
struct WindowLoop {
    skb: *mut aya_ebpf::bindings::__sk_buff,
    flow: *mut FlowState,
    stream: *mut RequestStream,
    parser: *mut RequestParser,
    scratch: *mut Scratch,
    config: *const CaptureConfig,
    payload_offset: u32,
    /// How the run ended (ADVANCE_*), while it goes on ADVANCE_BUDGET.
    outcome: u32,
    /// What stopped the byte loop (LOOK_*).
    look: u32,
    /// Bytes of the window used.
    used: u32,
}

const ADVANCE_END: u32 = 0;
const ADVANCE_HEAD: u32 = 1;
const ADVANCE_STOPPED: u32 = 2;
const ADVANCE_BUDGET: u32 = 3;

/// One window of the payload: a body skipped in bulk, or up to SCAN_LEN bytes loaded and
/// stepped. A callback of its own, so that the verifier checks the byte loop inside it
/// once, whatever the number of windows.
unsafe extern "C" fn window_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the WindowLoop that `advance` passed to bpf_loop; its pointers were
    // made from the program's context and from references to map values (this CPU's
    // scratch slot, the flow entry, the capture config, FI_PARTIAL's value) that outlive
    // the loop, and `advance` uses none of them while bpf_loop runs this callback.
    let w = unsafe { &mut *(ctx as *mut WindowLoop) };
    // SAFETY: as above.
    let (stream, scratch) = unsafe { (&mut *w.stream, &mut *w.scratch) };
    let pos = scratch.tail.offset;
    let end = scratch.tail.len;
    if pos >= end {
        w.outcome = ADVANCE_END;
        return 1;
    }
    let opaque = stream.opaque();
    if opaque > 0 {
        if stream.stopped().is_some() {
            w.outcome = ADVANCE_STOPPED;
            return 1;
        }
        // Body bytes: skipped without a look.
        let n = opaque.min(u64::from(end - pos)) as u32;
        stream.skip(u64::from(n));
        scratch.tail.offset = pos + n;
        return 0;
    }
    let mut count = end - pos;
    if count > SCAN_LEN as u32 {
        count = SCAN_LEN as u32;
    }
    if count == 0 {
        // Not reachable (pos < end), but the verifier does not relate the two.
        w.outcome = ADVANCE_END;
        return 1;
    }
    // SAFETY: `skb` is the context the kernel passed to the program; `buf` is SCAN_LEN
    // bytes of map memory and `count` is in 1..=SCAN_LEN.
    let ret = unsafe {
        bpf_skb_load_bytes(
            w.skb as *const c_void,
            w.payload_offset + pos,
            scratch.buf.as_mut_ptr() as *mut c_void,
            count,
        )
    };
    if ret != 0 {
        lose_position(stream);
        w.outcome = ADVANCE_END;
        return 1;
    }
    w.look = LOOK_MORE;
    w.used = count;
    // SAFETY: the callback only touches what WindowLoop points to (see stream_step); the
    // WindowLoop lives on the caller's stack frame for the whole call, and this frame
    // stays out of the 512 bytes the kernel allows all frames together.
    unsafe { bpf_loop(count, stream_step as *mut c_void, ctx, 0) };
    scratch.tail.offset = pos + w.used.min(count);
    match w.look {
        LOOK_HEAD if scratch.tail.heads == 0 && scratch.tail.rules != 0 => {
            // The rules decide on this one: back to the program, which can act on the
            // segment.
            w.outcome = ADVANCE_HEAD;
            1
        }
        LOOK_HEAD => {
            // Observed only: recorded, reported, and on to the next bytes.
            // SAFETY: as above: the flow entry and the head's parser, valid until the
            // program returns; nothing else uses them while this callback runs.
            let (flow, parser) = unsafe { (&mut *w.flow, &*w.parser) };
            // SAFETY: bpf_ktime_get_ns takes no arguments and touches no memory of ours.
            let now = unsafe { bpf_ktime_get_ns() };
            let index = record(flow, scratch, parser, now);
            if scratch.tail.watched != 0 {
                let ifindex = scratch.tail.ifindex;
                report_request(scratch, flow, ifindex, index, now, 0, 0, &parser.out);
            }
            0
        }
        LOOK_STOPPED => {
            w.outcome = ADVANCE_STOPPED;
            1
        }
        _ => 0,
    }
}

/// Runs the stream over the payload from the cursor until a head completes, the bytes
/// end, the stream stops, or [`STEPS`] windows went by.
#[inline(always)]
fn advance(
    ctx: &TcContext,
    flow: &mut FlowState,
    parser: *mut RequestParser,
    scratch: &mut Scratch,
    config: &CaptureConfig,
    segment: &Segment,
) -> Advance {
    let mut windows = WindowLoop {
        skb: ctx.skb.skb,
        flow: flow as *mut FlowState,
        stream: &mut flow.request as *mut RequestStream,
        parser,
        scratch: scratch as *mut Scratch,
        config: config as *const CaptureConfig,
        payload_offset: segment.payload_offset,
        outcome: ADVANCE_BUDGET,
        look: LOOK_MORE,
        used: 0,
    };
    // SAFETY: the callback only touches what WindowLoop points to (see window_step);
    // WindowLoop lives on this stack frame for the whole call.
    unsafe {
        bpf_loop(
            STEPS,
            window_step as *mut c_void,
            &mut windows as *mut WindowLoop as *mut c_void,
            0,
        );
    }
    match windows.outcome {
        ADVANCE_END => Advance::End,
        ADVANCE_HEAD => Advance::Head,
        ADVANCE_STOPPED => Advance::Stopped,
        _ => Advance::Budget,
    }
}

/// Records a completed head for pairing with its response; returns its index.
#[inline(always)]
fn record(flow: &mut FlowState, scratch: &mut Scratch, parser: &RequestParser, now: u64) -> u32 {
    let index = flow.next_request;
    flow.pending_ts[index as usize % PENDING] = now;
    flow.pending_method[index as usize % PENDING] = parser.out.method;
    flow.next_request = index.wrapping_add(1);
    scratch.tail.heads += 1;
    index
}

/// A completed head the rules may act on (the first completed in this segment, rules
/// loaded): recorded, handed to the rules, reported. Returns the verdict when a fault
/// took the segment for good; a delay's verdict waits in the cursor while the rest of
/// the segment is read. Other heads are recorded and reported by `window_step`.
///
/// A function of its own (a BPF-to-BPF call, not inlined): the rules and the faults need
/// stack that the parsing loops below the program's frame cannot share within the
/// kernel's 512 bytes. Returns the verdict as i64, or [`GOES_ON`].
#[inline(never)]
fn on_head(
    ctx: &TcContext,
    flow: &mut FlowState,
    segment: &Segment,
    scratch: &mut Scratch,
    parser: &RequestParser,
) -> i64 {
    match decide(ctx, flow, segment, scratch, parser) {
        Some(verdict) => i64::from(verdict),
        None => GOES_ON,
    }
}

/// [`on_head`]'s answer when the segment goes on (and the rest of it is read).
const GOES_ON: i64 = i64::MIN;

#[inline(always)]
fn decide(
    ctx: &TcContext,
    flow: &mut FlowState,
    segment: &Segment,
    scratch: &mut Scratch,
    parser: &RequestParser,
) -> Option<i32> {
    // SAFETY: bpf_ktime_get_ns takes no arguments and touches no memory of ours; it is
    // unsafe only as a foreign function.
    let now = unsafe { bpf_ktime_get_ns() };
    let index = record(flow, scratch, parser, now);
    let (ifindex, direction) = (scratch.tail.ifindex, scratch.tail.direction);
    let injected = faults::on_request(
        ctx, flow, segment, scratch, parser, index, ifindex, direction, now,
    );
    let Some(injected) = injected else {
        if scratch.tail.watched != 0 {
            report_request(scratch, flow, ifindex, index, now, 0, 0, &parser.out);
        }
        return None;
    };
    report_request(
        scratch,
        flow,
        ifindex,
        index,
        now,
        injected.rule_id,
        injected.fault,
        &parser.out,
    );
    if injected.fault == Fault::Abort as u8 {
        // The client gets the kernel's response now: pair it here, since the redirected
        // packet may not pass an egress hook again (the response side catches up).
        flow.answered_through = flow.next_request;
        let head = ResponseHead {
            status: injected.status,
            flags: 0,
            version_minor: 1,
            _pad: [0; 3],
            content_length: 0,
            head_len: 0,
        };
        let key: *const FlowKey = &scratch.tail.key;
        // SAFETY: the key is read from the scratch value while the response event, another
        // field of it, is written: they never overlap; the pointer is valid until this
        // program returns.
        let key = unsafe { &*key };
        report_response(scratch, flow, key, ifindex, index, now, 0, head);
    }
    if injected.fault == Fault::Delay as u8 {
        scratch.tail.verdict = hold(
            ctx,
            flow,
            segment,
            injected.delay_ns,
            injected.rule_id,
            direction,
            ifindex,
            now,
        );
        return None;
    }
    if injected.fault == Fault::ResponseLost as u8 {
        return None; // The segment goes on; its response will not.
    }
    Some(injected.verdict)
}

/// Takes a request packet out of the path for a delay: its bytes go to the daemon, which
/// sends them back in through the injector at the release time. Retransmissions of it
/// are dropped until then. The segment that completes the head is held: the server
/// cannot act on the request before it, so the whole request waits, whatever its size.
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
    // SAFETY: `ctx.skb.skb` is the `__sk_buff` the kernel passed to this program: non-null,
    // aligned and readable for the whole invocation; the field is read at its constant
    // offset, as the verifier requires of context accesses.
    event.gso_size = unsafe { (*ctx.skb.skb).gso_size };
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
    faults::set_state(flow, FAULT_HOLDING);
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
    ifindex: u32,
    index: u32,
    now: u64,
    rule_id: u32,
    fault: u8,
    head: &RequestHead,
) {
    bump(Counter::Requests, 1);
    let event: &mut RequestEvent = &mut scratch.request_event;
    let key: &FlowKey = &scratch.tail.key;
    fill_header(&mut event.header, EVENT_REQUEST, ifindex, now, flow, key);
    event.index = index;
    event.rule_id = rule_id;
    event.fault = fault;
    event._pad = [0; 7];
    // SAFETY: `head` is the scratch parser's or a FI_PARTIAL value's head, `event` another
    // field of the scratch value: they never overlap. An explicit copy keeps LLVM from
    // staging 472 bytes on the 512-byte BPF stack.
    unsafe { core::ptr::copy_nonoverlapping(head, &mut event.head, 1) };
    if FI_EVENTS.output::<RequestEvent>(&*event, 0).is_err() {
        bump(Counter::EventsLost, 1);
    }
}
