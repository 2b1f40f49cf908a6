//! The client's side of a flow, at the hook that claimed it: the request stream followed
//! across segments ([`fi_common::stream`]), each completed head recorded, reported, and
//! handed to the rules.
//!
//! One program run walks the payload ([`crate::walk`]: windows of up to SCAN_LEN bytes
//! stepped by `bpf_loop`, or bodies skipped in bulk). Heads no rule can act
//! on are recorded and reported as they complete; the first head completed in a segment
//! while rules are loaded goes back to the program, which hands it to the rules and can
//! act on the segment; the rest of the segment then goes to `fi_req_more` (a tail call,
//! the same code). A head cut by the end of a segment keeps its parser in FI_PARTIAL
//! until the next one.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, tcx_action_base::TCX_NEXT},
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes},
    programs::TcContext,
};
use fi_common::{
    counters::Counter,
    event::{EVENT_HELD, EVENT_REQUEST, HELD_PACKET_LEN, HeldEvent, RequestEvent},
    flow::{FAULT_HOLDING, FlowKey, FlowState, PENDING, claim},
    framing::Stop,
    http::{CaptureConfig, RequestHead, RequestParser, ResponseHead, method_prefix},
    maps::JUMP_REQUEST_MORE,
    rule::Fault,
    stream::{Framing as _, Look, Position, RequestStream, SYNCED, UNSYNCED},
};

use crate::{
    asked::{rules_loaded, watched},
    events::{fill_header, report_response},
    faults,
    maps::{FI_EVENTS, FI_PARTIAL, FI_SCRATCH, Scratch, bump},
    packet::Segment,
    walk::{self, Direction, Outcome, Walk},
};

/// Client payload at the claimed hook. Returns the verdict.
#[inline(always)]
pub fn on_bytes(
    ctx: &TcContext,
    flow: &mut FlowState,
    segment: &Segment,
    ifindex: u32,
    direction: u32,
) -> i32 {
    let stream = &mut flow.request;
    if stream.stopped().is_some() {
        return TCX_NEXT; // fi does not know what these bytes are, for good.
    }
    if walk::all_body(stream, stream.next_seq, stream.mode, segment) {
        // Body data from its first byte to its last: skipped in place.
        stream.next_seq = segment.seq.wrapping_add(segment.payload_len);
        return TCX_NEXT;
    }
    let mut cache = flow.request.watch;
    let watched = watched(flow, &mut cache);
    flow.request.watch = cache;
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
                walk::lose_position(stream);
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
        walk::lose_position(stream);
        return TCX_NEXT;
    }
    let tail = &mut scratch.tail;
    tail.ifindex = ifindex;
    tail.watched = u32::from(watched);
    tail.direction = direction;
    tail.heads = 0;
    tail.partial = u32::from(stream.in_head != 0);
    tail.verdict = TCX_NEXT;
    tail.rules = u32::from(rules);
    // The bytes are read by `fi_req_more`.
    walk::hand_over(ctx, scratch, &segment.key, segment, from, JUMP_REQUEST_MORE);
    // Without it (the program array not filled yet) the bytes go unread: the position is
    // lost.
    walk::lose_position(&mut flow.request);
    TCX_NEXT
}

/// `fi_req_more`: a segment's request bytes, from the cursor the main program (or a
/// previous run of this one) left.
#[inline(always)]
pub fn more(ctx: &TcContext) -> i32 {
    let Some(walk::Resumed {
        scratch,
        config,
        flow,
        segment,
    }) = walk::resume()
    else {
        return TCX_NEXT;
    };
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
                walk::lose_position(&mut flow.request);
                return scratch.tail.verdict;
            }
        }
    } else {
        &mut scratch.request
    };
    match walk::walk::<Requests>(ctx, flow, scratch, config, parser, segment) {
        Outcome::Head => {
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
                hand_on(ctx, flow);
            }
        }
        Outcome::Budget => hand_on(ctx, flow),
        Outcome::Stopped => {
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
        Outcome::End => {}
    }
    finish(flow, scratch);
    scratch.tail.verdict
}

/// Tail-calls `fi_req_more` for the rest of the segment. Returns only if that failed (the
/// kernel's limit of 33 tail calls): the stream's position is then lost.
#[inline(always)]
fn hand_on(ctx: &TcContext, flow: &mut FlowState) {
    walk::go_on(ctx, JUMP_REQUEST_MORE);
    walk::lose_position(&mut flow.request);
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
        walk::lose_position(stream);
    }
}

/// Whether the segment's payload begins with a request line's method.
#[inline(always)]
fn begins_request(ctx: &TcContext, scratch: &mut Scratch, segment: &Segment) -> bool {
    walk::load_prefix::<8>(ctx, scratch, segment)
        && method_prefix(&walk::prefix::<8>(&scratch.buf, 0)).is_some()
}

/// The request direction of a walk.
struct Requests;

impl Direction for Requests {
    type Stream = RequestStream;

    #[inline(always)]
    fn stream(flow: &mut FlowState) -> &mut RequestStream {
        &mut flow.request
    }

    #[inline(always)]
    fn byte(walk: &mut Walk, b: u8) -> Look {
        // SAFETY: the walk's pointers are to the flow entry, a parser and the capture
        // config, valid until the program returns and used by nothing else meanwhile
        // (see walk::stream_step).
        let (flow, parser, config) = unsafe { (&mut *walk.flow, &mut *walk.parser, &*walk.config) };
        flow.request.byte(parser, b, config)
    }

    /// The first head completed in a segment while rules are loaded goes back to the
    /// program, which can act on the segment; the others are recorded, reported, and the
    /// walk goes on.
    #[inline(always)]
    fn head(walk: &mut Walk) -> bool {
        // SAFETY: as in `byte`, and this CPU's scratch value.
        let (flow, scratch, parser) =
            unsafe { (&mut *walk.flow, &mut *walk.scratch, &*walk.parser) };
        if scratch.tail.heads == 0 && scratch.tail.rules != 0 {
            return true;
        }
        // SAFETY: bpf_ktime_get_ns takes no arguments and touches no memory of ours.
        let now = unsafe { bpf_ktime_get_ns() };
        let index = record(flow, scratch, parser, now);
        if scratch.tail.watched != 0 {
            let ifindex = scratch.tail.ifindex;
            report_request(scratch, flow, ifindex, index, now, 0, 0, &parser.out);
        }
        false
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
