//! sock_ops: records each outgoing TCP connection with the cgroup of the process that
//! opened it, and forgets it when it closes.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
    },
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_socket_cookie,
        bpf_ktime_get_ns,
    },
    programs::SockOpsContext,
};
use fi_common::{
    counters::Counter,
    event::{EVENT_FLOW_CLOSED, EventHeader, FlowClosedEvent},
    flow::{CGROUP_LEVELS, FlowKey, v4_mapped},
};

use crate::{
    faults,
    maps::{FI_CLIENT_PORTS, FI_EVENTS, FI_FLOWS, FI_SCRATCH, bump},
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const TCP_CLOSE: u32 = 7;

pub fn on_sock_op(ctx: &SockOpsContext) {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => on_connect(ctx),
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_established(ctx),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => bump(Counter::FlowsPassive, 1),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == TCP_CLOSE => on_close(ctx),
        _ => {}
    }
}

/// The flow key of a socket, oriented from this (the connecting) side.
#[inline(always)]
fn flow_key(ctx: &SockOpsContext) -> Option<FlowKey> {
    let (client, server) = match ctx.family() {
        AF_INET => (
            v4_mapped(ctx.local_ip4().to_ne_bytes()),
            v4_mapped(ctx.remote_ip4().to_ne_bytes()),
        ),
        AF_INET6 => {
            // SAFETY: `ctx.ops` is the `bpf_sock_ops` the kernel passed to this program:
            // non-null, aligned and readable for the whole invocation. Each field is then
            // read on its own at its constant offset (`read_word`), as the verifier
            // requires of context accesses.
            let ops = unsafe { &*ctx.ops };
            (
                ip6_bytes([
                    read_word(&ops.local_ip6[0]),
                    read_word(&ops.local_ip6[1]),
                    read_word(&ops.local_ip6[2]),
                    read_word(&ops.local_ip6[3]),
                ]),
                ip6_bytes([
                    read_word(&ops.remote_ip6[0]),
                    read_word(&ops.remote_ip6[1]),
                    read_word(&ops.remote_ip6[2]),
                    read_word(&ops.remote_ip6[3]),
                ]),
            )
        }
        _ => return None,
    };
    Some(FlowKey {
        client,
        server,
        client_port: ctx.local_port() as u16,
        server_port: remote_port(ctx.remote_port()),
        _pad: 0,
    })
}

/// A 32-bit context field, read exactly once where it is.
#[inline(always)]
fn read_word(field: &u32) -> u32 {
    // SAFETY: `field` is a shared reference to a u32, so it is non-null, aligned and
    // readable; volatile only keeps the compiler from merging or moving the load (the
    // verifier accepts only the field's own 4-byte load on this context).
    unsafe { core::ptr::read_volatile(field) }
}

/// `remote_port` is the network-order port shifted left by 16 on little-endian kernels
/// (so that `ntohl` gives the port); older kernels left it unshifted. Accept both.
#[inline(always)]
fn remote_port(raw: u32) -> u16 {
    if raw & 0xffff == 0 {
        u32::from_be(raw) as u16
    } else {
        u16::from_be(raw as u16)
    }
}

/// An IPv6 address as the kernel stores it (four network-order words) to bytes.
#[inline(always)]
fn ip6_bytes(words: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = words[i].to_ne_bytes();
        out[i * 4] = b[0];
        out[i * 4 + 1] = b[1];
        out[i * 4 + 2] = b[2];
        out[i * 4 + 3] = b[3];
        i += 1;
    }
    out
}

/// connect(): runs in the context of the calling process, so the current cgroup is the
/// owner's. The SYN has not been sent yet, so the flow is known before its first packet.
fn on_connect(ctx: &SockOpsContext) {
    let Some(key) = flow_key(ctx) else { return };
    // SAFETY: bpf_get_socket_cookie only reads the socket behind the context pointer the
    // kernel gave this program, and bpf_get_current_cgroup_id takes nothing; neither writes
    // memory of ours.
    let (cookie, cgroup_id) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_current_cgroup_id(),
        )
    };
    // The entry is built in this CPU's scratch value: it is too large for the stack. Only
    // connect() writes this field, and it runs in process context, so no other program
    // on this CPU (an interrupting TC program) touches it.
    let Some(scratch) = FI_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the lookup succeeded: this CPU's slot of FI_SCRATCH, valid until this
    // program returns; `new_flow` is written by this function only (see above).
    let flow = unsafe { &mut (*scratch).new_flow };
    flow.reset(cookie, cgroup_id);
    let mut level = 0;
    while level < CGROUP_LEVELS {
        // SAFETY: the helper takes an integer level and reads only kernel state; a level
        // past the cgroup's depth gives 0.
        flow.ancestors[level] = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32 + 1) };
        level += 1;
    }
    if FI_FLOWS.insert(&key, flow, 0).is_ok() {
        bump(Counter::FlowsTracked, 1);
        count_client_port(key.client_port, 1);
    }
    // Ask for state changes, to forget the flow when it closes.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
}

/// The handshake is done: the request stream starts at the first byte after the client's
/// SYN and the response stream after the server's, so fi follows both from their very
/// first bytes, however the first messages are cut.
fn on_established(ctx: &SockOpsContext) {
    bump(Counter::FlowsActive, 1);
    let Some(key) = flow_key(ctx) else { return };
    let Some(flow) = FI_FLOWS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: `ctx.ops` is the `bpf_sock_ops` the kernel passed to this program: non-null,
    // aligned and readable for the whole invocation; the field is read at its constant
    // offset (`read_word`), as the verifier requires of context accesses.
    let (snd_nxt, rcv_nxt) = unsafe {
        (
            read_word(&(*ctx.ops).snd_nxt),
            read_word(&(*ctx.ops).rcv_nxt),
        )
    };
    // SAFETY: the lookup succeeded, so `flow` points to a live element of FI_FLOWS, valid
    // until this program returns; FlowState is integers only. No TC program writes the
    // streams yet: no payload has been sent either way.
    unsafe {
        (*flow).request.sync(snd_nxt);
        (*flow).response.sync(rcv_nxt);
    }
}

fn on_close(ctx: &SockOpsContext) {
    let Some(key) = flow_key(ctx) else { return };
    let Some(flow) = FI_FLOWS.get_ptr(&key) else {
        return;
    };
    // SAFETY: the lookup succeeded, so `flow` points to a live element of FI_FLOWS; the
    // kernel frees map elements only after an RCU grace period, so it stays valid until
    // this program returns, and FlowState is integers only, valid for any bits. It is only
    // read.
    let flow = unsafe { &*flow };
    // SAFETY: bpf_get_socket_cookie only reads the socket behind the context pointer the
    // kernel gave this program; it writes no memory of ours.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if flow.cookie != cookie {
        // The same addresses and ports, but another connection (made after this one's
        // port was free again): its flow is not ours to forget.
        return;
    }
    if flow.next_request != flow.answered() {
        // Requests that got no answer: tell the daemon they never will on this flow.
        let event = FlowClosedEvent {
            header: EventHeader {
                kind: EVENT_FLOW_CLOSED,
                ifindex: 0,
                // SAFETY: bpf_ktime_get_ns takes no arguments and touches no memory of
                // ours; it is unsafe only as a foreign function.
                ts_ns: unsafe { bpf_ktime_get_ns() },
                cookie: flow.cookie,
                cgroup_id: flow.cgroup_id,
                key,
            },
            requests: flow.next_request,
            responses: flow.answered(),
        };
        if FI_EVENTS.output::<FlowClosedEvent>(&event, 0).is_err() {
            bump(Counter::EventsLost, 1);
        }
    }
    if FI_FLOWS.remove(&key).is_ok() {
        count_client_port(key.client_port, u32::MAX); // -1
    }
}

/// Adds `delta` (wrapping) to the count of tracked flows with this client port.
#[inline(always)]
fn count_client_port(port: u16, delta: u32) {
    if let Some(count) = FI_CLIENT_PORTS.get_ptr_mut(u32::from(port)) {
        faults::atomic_add(count, delta);
    }
}
