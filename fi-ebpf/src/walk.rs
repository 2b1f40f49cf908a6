//! Walking a segment's payload, for either direction: a `bpf_loop` over windows, whose
//! callback skips a body in bulk or loads up to SCAN_LEN bytes and runs a `bpf_loop` over
//! them. The verifier checks each callback once, whatever the number of windows or bytes
//! (a Rust loop around the byte loop made it check the byte callback once per window,
//! past its budget).
//!
//! The cursor is `Scratch::tail` (offset and length of the payload): a walk starts where
//! the last one, or the main program, left it. What differs by direction (which stream,
//! what a completed head means) is a [`Direction`].

use core::ffi::c_void;

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_loop, bpf_skb_load_bytes},
    programs::TcContext,
};
use fi_common::{
    counters::Counter,
    flow::{FlowKey, FlowState},
    framing::Stop,
    http::{CaptureConfig, RequestParser, SCAN_LEN},
    stream::{Framing, Look},
};

use crate::{
    maps::{FI_CAPTURE, FI_FLOWS, FI_JUMP, FI_SCRATCH, Scratch, bump},
    packet::Segment,
};

/// Puts the cursor at `from` in the segment's payload (the segment and the flow's key,
/// oriented from the client, go with it) and tail-calls the program in `slot` to walk
/// it: a program of its own, whose stack the walking loops share with nothing of the
/// main program's (the kernel allows 512 bytes to all frames together). Returns only if
/// the tail call failed (the program array not filled yet, or the kernel's limit of 33
/// tail calls).
#[inline(always)]
pub fn hand_over(
    ctx: &TcContext,
    scratch: &mut Scratch,
    key: &FlowKey,
    segment: &Segment,
    from: u32,
    slot: u32,
) {
    let tail = &mut scratch.tail;
    // SAFETY: `key` is a shared and `tail.key` an exclusive reference, both to valid,
    // aligned FlowKeys (`key` is never this field), so they cannot overlap.
    unsafe { core::ptr::copy_nonoverlapping(key, &mut tail.key, 1) };
    tail.seq = segment.seq;
    tail.offset = from;
    tail.len = segment.payload_len;
    scratch.segment = *segment;
    go_on(ctx, slot);
}

/// Tail-calls the walking program in `slot`, from the cursor where it is. Returns only if
/// the tail call failed.
#[inline(always)]
pub fn go_on(ctx: &TcContext, slot: u32) {
    // SAFETY: tail_call never returns on success, so nothing after it runs; that is sound
    // because nothing live here needs dropping and the scratch map holds the cursor. It
    // passes on the context the kernel gave us; if it fails it returns and we go on.
    unsafe { FI_JUMP.tail_call(ctx, slot) };
}

/// What a walking program starts from: this CPU's scratch value (with the cursor and the
/// segment the main program left), the capture config, and the flow.
pub struct Resumed {
    pub scratch: &'static mut Scratch,
    pub config: &'static CaptureConfig,
    pub flow: &'static mut FlowState,
    pub segment: &'static Segment,
}

/// The start of a walking program (`fi_req_more`, `fi_resp_more`).
#[inline(always)]
pub fn resume() -> Option<Resumed> {
    let (scratch, config) = (FI_SCRATCH.get_ptr_mut(0)?, FI_CAPTURE.get_ptr(0)?);
    // SAFETY: both lookups succeeded. `scratch` is this CPU's slot of FI_SCRATCH, touched
    // by nothing else until this program returns (see `Scratch`); `config` is FI_CAPTURE's
    // one entry, which the daemon writes only before it loads the programs. Both are map
    // values, integers only, valid until this program returns (the 'static lifetimes do
    // not outlive it: nothing keeps them).
    let (scratch, config) = unsafe { (&mut *scratch, &*config) };
    let flow = FI_FLOWS.get_ptr_mut(&scratch.tail.key)?;
    // SAFETY: the lookup succeeded, so `flow` points to a live element of FI_FLOWS: the
    // kernel frees map elements only after an RCU grace period, so it stays valid until
    // this program returns; FlowState is integers only, valid for any bits.
    let flow = unsafe { &mut *flow };
    let segment: *const Segment = &scratch.segment;
    // SAFETY: the main program stored the segment in this CPU's scratch value before the
    // tail call; it is only read (the walk writes other fields of the scratch value).
    let segment = unsafe { &*segment };
    Some(Resumed {
        scratch,
        config,
        flow,
        segment,
    })
}

/// Windows (or bulk skips) per walk: the window callback is verified once, so this costs
/// only the windows a segment has.
const STEPS: u32 = 256;

/// How a walk ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The payload's end.
    End,
    /// A head completed that the program decides on (the cursor is just past it).
    Head,
    /// The stream stopped for good.
    Stopped,
    /// [`STEPS`] windows went by: the rest is for the next program run.
    Budget,
}

const OUTCOME_END: u32 = 0;
const OUTCOME_HEAD: u32 = 1;
const OUTCOME_STOPPED: u32 = 2;
const OUTCOME_BUDGET: u32 = 3;

/// What stopped a window's byte loop.
const LOOK_MORE: u32 = 0;
const LOOK_HEAD: u32 = 1;
const LOOK_STOPPED: u32 = 2;
/// Body data follows: back to the window loop, which skips it in bulk.
const LOOK_OPAQUE: u32 = 3;

/// State of the window and byte loops (on the stack of the program that walks: a
/// `bpf_loop` context must be).
#[repr(C)]
pub struct Walk {
    skb: *mut __sk_buff,
    pub flow: *mut FlowState,
    pub scratch: *mut Scratch,
    pub config: *const CaptureConfig,
    /// Requests: the parser of the head in progress (this CPU's scratch parser, or the
    /// flow's FI_PARTIAL value). Responses: null (their parser is in the flow).
    pub parser: *mut RequestParser,
    payload_offset: u32,
    outcome: u32,
    look: u32,
    used: u32,
}

/// What a direction does with its bytes and heads.
pub trait Direction {
    type Stream: Framing;
    /// The flow's stream of this direction.
    fn stream(flow: &mut FlowState) -> &mut Self::Stream;
    /// One byte the stream must look at.
    fn byte(walk: &mut Walk, b: u8) -> Look;
    /// A head completed; true when the walk stops for the program to decide on it.
    fn head(walk: &mut Walk) -> bool;
}

/// The stream's position is lost (a gap, an evicted cut head, a failed load, more
/// framing in one segment than the walks reach): fi cannot know what the next bytes are,
/// so it stops reading that direction for good rather than guess. Counted as a request
/// not parsed.
#[inline(always)]
pub fn lose_position<S: Framing>(stream: &mut S) {
    bump(Counter::RequestsUnparsed, 1);
    stream.stop(Stop::Lost);
}

/// Whether the segment is body data from its first byte to its last, right where the
/// stream is (the common case of an upload or a download); if so it is skipped here, in
/// the main program: no walk, no tail call, no lookup beyond the flow's. The caller
/// moves the stream's position past it.
#[inline(always)]
pub fn all_body<S: Framing>(stream: &mut S, next_seq: u32, mode: u8, segment: &Segment) -> bool {
    let len = u64::from(segment.payload_len);
    if mode != fi_common::stream::SYNCED || segment.seq != next_seq || stream.opaque() < len {
        return false;
    }
    stream.skip(len);
    true
}

/// `N` bytes of the buffer from `offset` (wrapping inside it, as the verifier needs).
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

/// The first `N` bytes of the segment's payload (to tell whether it begins a message), in
/// `scratch.buf`; false when it has fewer or they cannot be read.
#[inline(always)]
pub fn load_prefix<const N: usize>(
    ctx: &TcContext,
    scratch: &mut Scratch,
    segment: &Segment,
) -> bool {
    if (segment.payload_len as usize) < N {
        return false;
    }
    // SAFETY: `buf` is SCAN_LEN bytes of map memory and N is at most 12, far below.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const c_void,
            segment.payload_offset,
            scratch.buf.as_mut_ptr() as *mut c_void,
            N as u32,
        )
    };
    ret == 0
}

/// Walks the payload from the cursor until the bytes end, the stream stops, a head the
/// program decides on completes, or [`STEPS`] windows went by.
#[inline(always)]
pub fn walk<D: Direction>(
    ctx: &TcContext,
    flow: &mut FlowState,
    scratch: &mut Scratch,
    config: &CaptureConfig,
    parser: *mut RequestParser,
    segment: &Segment,
) -> Outcome {
    let mut walk = Walk {
        skb: ctx.skb.skb,
        flow: flow as *mut FlowState,
        scratch: scratch as *mut Scratch,
        config: config as *const CaptureConfig,
        parser,
        payload_offset: segment.payload_offset,
        outcome: OUTCOME_BUDGET,
        look: LOOK_MORE,
        used: 0,
    };
    // SAFETY: the callback only touches what Walk points to (see window_step); Walk lives
    // on this stack frame for the whole call.
    unsafe {
        bpf_loop(
            STEPS,
            window_step::<D> as *mut c_void,
            &mut walk as *mut Walk as *mut c_void,
            0,
        );
    }
    match walk.outcome {
        OUTCOME_END => Outcome::End,
        OUTCOME_HEAD => Outcome::Head,
        OUTCOME_STOPPED => Outcome::Stopped,
        _ => Outcome::Budget,
    }
}

/// One byte of the stream.
unsafe extern "C" fn stream_step<D: Direction>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the Walk that `window_step` passed on to bpf_loop. Its pointers
    // were made from the program's context and from references to map values (the flow
    // entry, this CPU's scratch value, the capture config, a parser) that outlive the
    // walk, and `window_step` uses none of them while this callback runs.
    let w = unsafe { &mut *(ctx as *mut Walk) };
    // SAFETY: as above.
    let scratch = unsafe { &*w.scratch };
    let b = scratch.buf[index as usize & (SCAN_LEN - 1)];
    let look = match D::byte(w, b) {
        Look::More => return 0,
        Look::HeadDone => LOOK_HEAD,
        Look::Opaque => LOOK_OPAQUE,
        Look::Stopped => LOOK_STOPPED,
    };
    w.look = look;
    w.used = index as u32 + 1;
    1
}

/// One window of the payload: a body skipped in bulk, or up to SCAN_LEN bytes stepped.
unsafe extern "C" fn window_step<D: Direction>(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the Walk that `walk` passed to bpf_loop (see stream_step for its
    // pointers); `walk` uses none of them while this callback runs.
    let w = unsafe { &mut *(ctx as *mut Walk) };
    // SAFETY: as above.
    let (flow, scratch) = unsafe { (&mut *w.flow, &mut *w.scratch) };
    let pos = scratch.tail.offset;
    let end = scratch.tail.len;
    if pos >= end {
        w.outcome = OUTCOME_END;
        return 1;
    }
    let stream = D::stream(flow);
    let opaque = stream.opaque();
    if opaque > 0 {
        if stream.stopped().is_some() {
            w.outcome = OUTCOME_STOPPED;
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
        w.outcome = OUTCOME_END;
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
        lose_position(D::stream(flow));
        w.outcome = OUTCOME_STOPPED;
        return 1;
    }
    w.look = LOOK_MORE;
    w.used = count;
    // SAFETY: the callback only touches what Walk points to (see stream_step); Walk lives
    // on the walking program's stack frame for the whole call, and this frame stays
    // small, within the 512 bytes the kernel allows all frames together.
    unsafe { bpf_loop(count, stream_step::<D> as *mut c_void, ctx, 0) };
    scratch.tail.offset = pos + w.used.min(count);
    match w.look {
        LOOK_HEAD => {
            if D::head(w) {
                w.outcome = OUTCOME_HEAD;
                return 1;
            }
            0
        }
        LOOK_STOPPED => {
            w.outcome = OUTCOME_STOPPED;
            1
        }
        _ => 0,
    }
}
