//! The server's side of a flow, on its way back to the client: the response stream
//! followed across segments ([`fi_common::stream::ResponseStream`]), each final response
//! paired with the oldest request waiting for it and reported.
//!
//! As for requests, the main program places the segment and tail-calls `fi_resp_more`,
//! which walks the payload ([`crate::walk`]); a response's head is small, so a head cut by a segment's end waits in the flow
//! entry itself. A response lost by a fault is turned into a reset at the segment where
//! it starts, before any of its bytes are read.

use aya_ebpf::{
    bindings::tcx_action_base::TCX_NEXT, helpers::bpf_ktime_get_ns, programs::TcContext,
};
use fi_common::{
    counters::Counter,
    flow::{FAULT_LOSE_RESPONSE, FlowKey, FlowState, PENDING},
    framing::Stop,
    http::status_prefix,
    maps::JUMP_RESPONSE_MORE,
    stream::{Framing as _, Look, METHOD_UNKNOWN, Position, ResponseStream, SYNCED, UNSYNCED},
};

use crate::{
    asked::{faults_hold, rules_loaded, watched},
    events::report_response,
    faults,
    maps::{FI_SCRATCH, Scratch, bump},
    packet::Segment,
    walk::{self, Direction, Outcome, Walk},
};

/// Server payload on its way back to the client. `key` is the flow's key (oriented from
/// the client). Returns the verdict.
#[inline(always)]
pub fn on_bytes(
    ctx: &TcContext,
    flow: &mut FlowState,
    segment: &Segment,
    key: &FlowKey,
    ifindex: u32,
) -> i32 {
    let stream = &mut flow.response;
    if stream.stopped().is_some() {
        return TCX_NEXT;
    }
    if walk::all_body(stream, stream.next_seq, stream.mode, segment) {
        // Body data from its first byte to its last (a download): skipped in place.
        stream.next_seq = segment.seq.wrapping_add(segment.payload_len);
        return TCX_NEXT;
    }
    let mut cache = flow.response.watch;
    let watched = watched(flow, &mut cache);
    flow.response.watch = cache;
    if !(watched || rules_loaded()) {
        // Nobody asks: see requests::on_bytes.
        flow.response.mode = UNSYNCED;
        flow.response.in_head = 0;
        return TCX_NEXT;
    }
    let Some(scratch) = FI_SCRATCH.get_ptr_mut(0) else {
        return TCX_NEXT;
    };
    // SAFETY: the lookup succeeded: this CPU's slot of FI_SCRATCH, touched by nothing else
    // until this program returns (see `Scratch`); integers only, valid until then.
    let scratch = unsafe { &mut *scratch };
    let stream = &mut flow.response;
    let mut from = 0;
    if stream.mode == SYNCED {
        match stream.position(segment.seq, segment.payload_len) {
            Position::From(n) => from = n,
            Position::Old => return TCX_NEXT,
            Position::Gap => {
                walk::lose_position(stream);
                return TCX_NEXT;
            }
        }
    }
    if stream.mode == UNSYNCED {
        if !begins_response(ctx, scratch, segment) {
            return TCX_NEXT;
        }
        stream.sync(segment.seq);
    }
    if flow.fault_state & FAULT_LOSE_RESPONSE != 0
        && from == 0
        && flow.response.at_boundary()
        && flow.lose_index == flow.next_response
        && faults_hold()
    {
        // The response to lose starts here: the client gets a reset instead, and the
        // connection is over for it.
        flow.next_response = flow.next_request;
        flow.response.stop(Stop::Lost);
        return faults::lose_response(ctx, flow, segment, scratch);
    }
    scratch.tail.ifindex = ifindex;
    scratch.tail.watched = u32::from(watched);
    walk::hand_over(ctx, scratch, key, segment, from, JUMP_RESPONSE_MORE);
    walk::lose_position(&mut flow.response);
    TCX_NEXT
}

/// `fi_resp_more`: a segment's response bytes, from the cursor the main program (or a
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
    match walk::walk::<Responses>(ctx, flow, scratch, config, core::ptr::null_mut(), segment) {
        Outcome::Budget => {
            walk::go_on(ctx, JUMP_RESPONSE_MORE);
            walk::lose_position(&mut flow.response);
        }
        Outcome::Stopped if flow.response.stopped() == Some(Stop::HeadTooLong) => {
            bump(Counter::RequestsUnparsed, 1);
        }
        _ => {}
    }
    let stream = &mut flow.response;
    if stream.mode == SYNCED && stream.stopped().is_none() {
        stream.next_seq = scratch.tail.seq.wrapping_add(scratch.tail.len);
    }
    TCX_NEXT
}

/// Whether the segment's payload begins with a status line ("HTTP/1.x NNN").
#[inline(always)]
fn begins_response(ctx: &TcContext, scratch: &mut Scratch, segment: &Segment) -> bool {
    walk::load_prefix::<12>(ctx, scratch, segment)
        && status_prefix(&walk::prefix::<12>(&scratch.buf, 0)).is_some()
}

/// The response direction of a walk.
struct Responses;

impl Direction for Responses {
    type Stream = ResponseStream;

    #[inline(always)]
    fn stream(flow: &mut FlowState) -> &mut ResponseStream {
        &mut flow.response
    }

    #[inline(always)]
    fn byte(walk: &mut Walk, b: u8) -> Look {
        // SAFETY: the walk's pointers are to the flow entry and the capture config, valid
        // until the program returns and used by nothing else meanwhile (see
        // walk::stream_step).
        let (flow, config) = unsafe { (&mut *walk.flow, &*walk.config) };
        // The method of the request this response answers (a HEAD's has no body), if fi
        // still keeps it.
        let method = if flow.next_request.wrapping_sub(flow.next_response) as usize > PENDING {
            METHOD_UNKNOWN
        } else {
            flow.pending_method[flow.next_response as usize % PENDING]
        };
        flow.response.byte(b, method, config)
    }

    /// Every final response is paired and reported as it completes; the walk goes on.
    #[inline(always)]
    fn head(walk: &mut Walk) -> bool {
        // SAFETY: as in `byte`, and this CPU's scratch value.
        let (flow, scratch) = unsafe { (&mut *walk.flow, &mut *walk.scratch) };
        answer(flow, scratch);
        false
    }
}

/// A final response completed: it answers the oldest request waiting, if any (a server
/// may say 408 to nothing).
#[inline(always)]
fn answer(flow: &mut FlowState, scratch: &mut Scratch) {
    let index = flow.next_response;
    if index == flow.next_request {
        return;
    }
    // SAFETY: bpf_ktime_get_ns takes no arguments and touches no memory of ours.
    let now = unsafe { bpf_ktime_get_ns() };
    let sent = flow.pending_ts[index as usize % PENDING];
    flow.next_response = index.wrapping_add(1);
    // Reported whatever the watch: a faulted request of a flow nobody watches is
    // reported, and its response completes it.
    let head = flow.response.parser.out;
    let ifindex = scratch.tail.ifindex;
    let key: *const FlowKey = &scratch.tail.key;
    // SAFETY: the key is read from the scratch value while the response event, another
    // field of it, is written: they never overlap; valid until the program returns.
    let key = unsafe { &*key };
    report_response(
        scratch,
        flow,
        key,
        ifindex,
        index,
        now,
        now.saturating_sub(sent),
        head,
    );
}
