//! Choosing a rule for a request (or a SYN) and doing what it says.

use core::{arch::asm, ffi::c_void};

use aya_ebpf::{
    bindings::tcx_action_base::{TCX_DROP, TCX_NEXT},
    helpers::{bpf_get_prandom_u32, bpf_loop, bpf_redirect},
    programs::TcContext,
};
use fi_common::{
    counters::Counter,
    flow::{FAULT_DROP_CLIENT, FAULT_DROP_SERVER, FAULT_LOSE_RESPONSE, FlowKey, FlowState},
    http::RequestParser,
    rule::{Fault, MAX_RULES, Rule, gates_open, matches_connection, matches_request},
};

use crate::{
    maps::{
        FI_INJECTOR, FI_RESPONSES, FI_RULE_COUNT, FI_RULE_STATS, FI_RULES, Scratch, bump,
        daemon_alive,
    },
    packet::{Segment, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN},
    reply::{Answer, back_flags, finish, rewrite, send_back, turn_around},
};

#[repr(C)]
struct EvalCtx {
    flow: *const FlowState,
    key: *const FlowKey,
    /// The request being decided; null when deciding a connection (refusals only).
    parser: *const RequestParser,
    now: u64,
    /// Slot of the rule that fires, or MAX_RULES for none.
    winner: u32,
}

/// One rule slot; the verifier checks this once, whatever the number of rules.
unsafe extern "C" fn rule_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the EvalCtx that `choose` passed to bpf_loop.
    let c = unsafe { &mut *(ctx as *mut EvalCtx) };
    let Some(rule) = FI_RULES.get(index as u32) else {
        return 1;
    };
    // The phase is the parser's presence: the verifier may merge call sites, so the
    // pointer itself is tested before any use.
    let request_phase = !c.parser.is_null();
    let refuse = rule.fault == Fault::Refuse as u8;
    if request_phase == refuse {
        return 0;
    }
    // SAFETY: `choose`, this callback's only caller (through bpf_loop), made them from a
    // `&FlowState` and a `&FlowKey` that outlive its bpf_loop call; they are only read.
    let (flow, key) = unsafe { (&*c.flow, &*c.key) };
    if !matches_connection(rule, flow, key, c.now) {
        return 0;
    }
    if request_phase {
        // SAFETY: checked non-null above; `choose` made it from a `&RequestParser` (in this
        // CPU's scratch slot) that outlives its bpf_loop call; it is only read.
        let parser = unsafe { &*c.parser };
        if !matches_request(
            rule,
            parser.out.method,
            &parser.out.header_lens,
            &parser.digest,
        ) {
            return 0;
        }
    }
    let Some(stats) = FI_RULE_STATS.get_ptr_mut(rule.id) else {
        return 0;
    };
    // SAFETY: the lookup succeeded, so `stats` points to a live, 8-aligned RuleStats in
    // FI_RULE_STATS, valid until this program returns. `&raw mut` makes pointers to its
    // fields without creating a reference, so other CPUs updating them at the same time
    // (only with atomic instructions, `fetch_add`) do not conflict with it.
    let (matched, injected) = unsafe { (&raw mut (*stats).matched, &raw mut (*stats).injected) };
    let occurrence = fetch_add(matched, 1) + 1;
    // SAFETY: bpf_get_prandom_u32 takes no arguments and touches no memory of ours; it is
    // unsafe only as a foreign function.
    let random = unsafe { bpf_get_prandom_u32() } % 1_000_000;
    if !gates_open(rule, occurrence, random) {
        return 0;
    }
    let before = fetch_add(injected, 1);
    if rule.max_injections != 0 && before >= u64::from(rule.max_injections) {
        // Over budget: undo, so the counter stays exact.
        fetch_add(injected, u64::MAX);
        return 0;
    }
    c.winner = index as u32;
    1
}

/// Atomically adds `value` to `*counter` and returns the old value: the BPF
/// `atomic_fetch_add` instruction (cpu v3). Written out because the BPF target has no
/// atomic types, and LLVM lowers the core intrinsic to the add without fetch, whose
/// register then holds the operand, not the old value.
#[inline(always)]
fn fetch_add(counter: *mut u64, value: u64) -> u64 {
    let mut v = value;
    // SAFETY: `counter` points to an 8-aligned u64 in a map value (the caller's lookup).
    unsafe {
        asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            v = inout(reg) v,
            p = in(reg) counter,
            options(nostack),
        );
    }
    v
}

/// Sets `bits` of the flow's `fault_state` atomically: both hooks write it, maybe on two
/// CPUs at once, and a plain read-modify-write could lose the other's bits.
#[inline(always)]
pub fn set_state(flow: &mut FlowState, bits: u32) {
    let word = &raw mut flow.fault_state;
    // SAFETY: `word` points to the u32 of a live flow entry (the caller's lookup),
    // 4-aligned; the BPF `atomic_or` instruction (cpu v3) updates it in place.
    unsafe {
        asm!(
            "lock *(u32 *)({p} + 0) |= {v}",
            p = in(reg) word,
            v = in(wreg) bits,
            options(nostack),
        );
    }
}

/// Adds `delta` to a u32 of map memory atomically (BPF `lock` add, cpu v3): sock_ops
/// may run on several CPUs at once.
#[inline(always)]
pub fn atomic_add(word: *mut u32, delta: u32) {
    // SAFETY: `word` points to a 4-aligned u32 in a map value (the caller's lookup).
    unsafe {
        asm!(
            "lock *(u32 *)({p} + 0) += {v}",
            p = in(reg) word,
            v = in(wreg) delta,
            options(nostack),
        );
    }
}

/// Clears `bits` of the flow's `fault_state` atomically (see [`set_state`]).
#[inline(always)]
pub fn clear_state(flow: &mut FlowState, bits: u32) {
    let word = &raw mut flow.fault_state;
    // SAFETY: as in `set_state`, with `atomic_and`.
    unsafe {
        asm!(
            "lock *(u32 *)({p} + 0) &= {v}",
            p = in(reg) word,
            v = in(wreg) !bits,
            options(nostack),
        );
    }
}

/// The rule that fires for this request or connection, with its slot, if any.
#[inline(always)]
fn choose(
    flow: &FlowState,
    key: &FlowKey,
    parser: Option<&RequestParser>,
    now: u64,
) -> Option<(u32, &'static Rule)> {
    let count = FI_RULE_COUNT.get(0).copied().unwrap_or(0).min(MAX_RULES);
    if count == 0 || !daemon_alive(now) {
        return None;
    }
    let mut ctx = EvalCtx {
        flow: flow as *const FlowState,
        key: key as *const FlowKey,
        parser: parser.map_or(core::ptr::null(), |p| p as *const RequestParser),
        now,
        winner: MAX_RULES,
    };
    // SAFETY: the callback only touches EvalCtx, which outlives the call.
    unsafe {
        bpf_loop(
            count,
            rule_step as *mut c_void,
            &mut ctx as *mut EvalCtx as *mut c_void,
            0,
        );
    }
    let slot = ctx.winner;
    FI_RULES.get(slot).map(|rule| (slot, rule))
}

/// A SYN of a new flow, at the hook that claimed it: refuse it if a rule says so.
/// Returns the verdict, or None to let the packet go on.
#[inline(always)]
pub fn on_syn(
    ctx: &TcContext,
    flow: &mut FlowState,
    seg: &Segment,
    scratch: &mut Scratch,
    ifindex: u32,
    direction: u32,
    now: u64,
) -> Option<i32> {
    let (_, rule) = choose(flow, &seg.key, None, now)?;
    let answer = Answer {
        seq: 0,
        ack: seg.seq.wrapping_add(1),
        flags: TCP_RST | TCP_ACK,
        payload_len: 0,
    };
    set_state(flow, FAULT_DROP_CLIENT);
    flow.fault_rule = rule.id;
    bump(Counter::FaultsInjected, 1);
    Some(answer_client(
        ctx, seg, scratch, &answer, None, ifindex, direction,
    ))
}

/// Takes the packet out of the path as a network would lose it: redirected to the
/// daemon's injector, which discards it. A plain drop at an egress hook (lo) is reported
/// to the sending TCP as a local failure, which then retries every 500 ms and gives up
/// with ETIMEDOUT after about 8 s, where a real lost packet leaves the client's own
/// timeout to fire.
#[inline(always)]
pub fn vanish() -> i32 {
    let injector = FI_INJECTOR.get(0).copied().unwrap_or(0);
    if injector == 0 {
        return TCX_DROP;
    }
    // SAFETY: bpf_redirect takes an ifindex and flags, no pointers: it only records where
    // the current packet goes, and the TCX_REDIRECT it returns is this program's verdict (a
    // bad ifindex makes the kernel drop the packet, nothing worse).
    unsafe { bpf_redirect(injector, 0) as i32 }
}

/// What happened to a request a rule chose.
pub struct Injected {
    pub rule_id: u32,
    pub fault: u8,
    /// The verdict for the packet.
    pub verdict: i32,
    /// Abort: the status the client gets.
    pub status: u16,
    /// Delay: how long to hold the request.
    pub delay_ns: u64,
}

/// A parsed request head at the claimed hook: inject a fault if a rule says so.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "a flat hot path; a struct would be copied"
)]
pub fn on_request(
    ctx: &TcContext,
    flow: &mut FlowState,
    seg: &Segment,
    scratch: &mut Scratch,
    parser: &RequestParser,
    request_index: u32,
    ifindex: u32,
    direction: u32,
    now: u64,
) -> Option<Injected> {
    // A GSO super-packet is answered too: shrinking it to the answer (bpf_skb_change_tail)
    // makes it one plain packet again.
    let (slot, rule) = choose(flow, &seg.key, Some(parser), now)?;
    let fault = Fault::from_u8(rule.fault)?;
    flow.fault_rule = rule.id;
    bump(Counter::FaultsInjected, 1);
    let mut status = 0;
    let verdict = match fault {
        Fault::Blackhole => {
            set_state(flow, FAULT_DROP_CLIENT);
            vanish()
        }
        Fault::Reset => {
            set_state(flow, FAULT_DROP_CLIENT);
            let answer = Answer {
                seq: seg.ack,
                ack: seg.seq.wrapping_add(seg.payload_len),
                flags: TCP_RST | TCP_ACK,
                payload_len: 0,
            };
            answer_client(ctx, seg, scratch, &answer, None, ifindex, direction)
        }
        Fault::Abort => {
            set_state(flow, FAULT_DROP_CLIENT);
            status = rule.abort_status;
            let response = FI_RESPONSES.get(slot)?;
            let answer = Answer {
                seq: seg.ack,
                ack: seg.seq.wrapping_add(seg.payload_len),
                // The response says `connection: close`, and closes: a client that
                // reads to the end of the connection gets its end at once.
                flags: TCP_PSH | TCP_ACK | TCP_FIN,
                payload_len: response.len,
            };
            answer_client(
                ctx,
                seg,
                scratch,
                &answer,
                Some(&response.bytes),
                ifindex,
                direction,
            )
        }
        Fault::ResponseLost => {
            flow.lose_index = request_index;
            set_state(flow, FAULT_LOSE_RESPONSE);
            TCX_NEXT
        }
        // Delay is held by the caller (it needs the packet and the event ring); refusals
        // are decided on the SYN.
        Fault::Delay | Fault::Refuse => TCX_NEXT,
    };
    Some(Injected {
        rule_id: rule.id,
        fault: rule.fault,
        verdict,
        status,
        delay_ns: rule.delay_ns,
    })
}

/// A response head of the request whose response is to be lost: turn it into a reset
/// that goes on to the client, and drop what the server sends after it.
#[inline(always)]
pub fn lose_response(
    ctx: &TcContext,
    flow: &mut FlowState,
    seg: &Segment,
    scratch: &mut Scratch,
) -> i32 {
    clear_state(flow, FAULT_LOSE_RESPONSE);
    set_state(flow, FAULT_DROP_SERVER);
    let answer = Answer {
        seq: seg.seq,
        ack: seg.ack,
        flags: TCP_RST | TCP_ACK,
        payload_len: 0,
    };
    let done = rewrite(ctx, seg, &answer).and_then(|()| finish(ctx, seg, scratch, 0));
    if done.is_err() {
        return TCX_DROP;
    }
    TCX_NEXT
}

/// Rewrites the client's packet into the kernel's answer and sends it back.
#[inline(always)]
fn answer_client(
    ctx: &TcContext,
    seg: &Segment,
    scratch: &mut Scratch,
    answer: &Answer,
    payload: Option<&[u8; fi_common::rule::ABORT_RESPONSE_LEN]>,
    ifindex: u32,
    direction: u32,
) -> i32 {
    let done = turn_around(ctx, seg)
        .and_then(|()| rewrite(ctx, seg, answer))
        .and_then(|()| match payload {
            Some(bytes) => write_payload(ctx, seg, bytes, answer.payload_len),
            None => Ok(()),
        })
        .and_then(|()| finish(ctx, seg, scratch, answer.payload_len));
    if done.is_err() {
        // Never let a half-rewritten packet go anywhere.
        return TCX_DROP;
    }
    if seg.flags & TCP_SYN != 0 {
        // A refused connection: the server never heard of it.
        return send_back(ifindex, direction);
    }
    // The client's answer goes back as a copy, and the packet itself becomes a reset to
    // the server: it never saw the request, and would otherwise keep its half of the
    // connection open (and meet the next connection that reuses the port with it).
    if ctx
        .clone_redirect(ifindex, back_flags(ifindex, direction))
        .is_err()
    {
        return TCX_DROP;
    }
    let to_server = Answer {
        seq: seg.seq,
        ack: seg.ack,
        flags: TCP_RST | TCP_ACK,
        payload_len: 0,
    };
    let done = turn_around(ctx, seg)
        .and_then(|()| rewrite(ctx, seg, &to_server))
        .and_then(|()| finish(ctx, seg, scratch, 0));
    if done.is_err() {
        // The client has its answer; the server times out instead.
        return TCX_DROP;
    }
    TCX_NEXT
}

#[inline(always)]
fn write_payload(
    ctx: &TcContext,
    seg: &Segment,
    bytes: &[u8; fi_common::rule::ABORT_RESPONSE_LEN],
    len: u32,
) -> Result<(), i64> {
    let len = len as usize;
    if len == 0 || len > bytes.len() {
        return Err(-1);
    }
    // SAFETY: `len` bytes of `bytes` are readable; the packet has room (rewrite made it).
    let ret = unsafe {
        aya_ebpf::helpers::bpf_skb_store_bytes(
            ctx.skb.skb,
            seg.l4_offset + 20,
            bytes.as_ptr() as *const c_void,
            len as u32,
            0,
        )
    };
    if ret == 0 { Ok(()) } else { Err(ret) }
}
