//! fi's eBPF programs.
//!
//! - `fi_sockops` (cgroup sock_ops, attached at a cgroup, usually the cgroup2 root): records
//!   each outgoing TCP connection with its owner cgroup (flows.rs).
//! - `fi_tc_egress` / `fi_tc_ingress` (TCX classifiers): count packets, parse HTTP request
//!   and response heads of tracked flows (requests.rs, responses.rs), and inject the faults
//!   rules select (faults.rs, reply.rs). Traffic they do not act on gets `TCX_NEXT`, so other programs
//!   on the hook still run.
#![no_std]
#![no_main]
// Atomic fetch-add on map memory (rule counters) is written in BPF assembly (faults.rs).
#![feature(asm_experimental_arch)]

mod asked;
mod events;
mod faults;
mod flows;
mod maps;
mod packet;
mod reply;
mod requests;
mod responses;
mod tc;
mod walk;

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, tcx_action_base::TCX_DROP},
    helpers::bpf_redirect,
    macros::{classifier, sock_ops},
    programs::{SockOpsContext, TcContext},
};
use fi_common::{
    counters::Counter,
    event::{INJECT_MARK, INJECT_MARK_MASK, REINJECTED_MARK},
    flow::{DIRECTION_EGRESS, DIRECTION_INGRESS},
};

use crate::maps::bump;

#[classifier]
pub fn fi_tc_egress(ctx: TcContext) -> i32 {
    bump(Counter::EgressPackets, 1);
    bump(Counter::EgressBytes, u64::from(ctx.len()));
    tc::observe(&ctx, DIRECTION_EGRESS)
}

#[classifier]
pub fn fi_tc_ingress(ctx: TcContext) -> i32 {
    bump(Counter::IngressPackets, 1);
    bump(Counter::IngressBytes, u64::from(ctx.len()));
    tc::observe(&ctx, DIRECTION_INGRESS)
}

/// The rest of a segment's request bytes after a head (tail-called, never attached).
#[classifier]
pub fn fi_req_more(ctx: TcContext) -> i32 {
    requests::more(&ctx)
}

/// A segment's response bytes (tail-called, never attached).
#[classifier]
pub fn fi_resp_more(ctx: TcContext) -> i32 {
    responses::more(&ctx)
}

/// On the daemon's injector interface: a delayed request the daemon sends back in carries
/// `INJECT_MARK | claim`; it goes to the hook that held it (ingress of the client's
/// interface, or egress of lo), marked so that the hook lets it pass once.
#[classifier]
pub fn fi_reinject(ctx: TcContext) -> i32 {
    // SAFETY: `ctx.skb.skb` is the `__sk_buff` the kernel passed to this program: non-null,
    // aligned and readable for the whole invocation; the field is read at its constant
    // offset, as the verifier requires of context accesses.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & INJECT_MARK_MASK != INJECT_MARK {
        // Nothing else belongs on this interface.
        return TCX_DROP;
    }
    let claim = mark & !INJECT_MARK_MASK;
    let flags = if claim & 1 == DIRECTION_INGRESS {
        u64::from(BPF_F_INGRESS)
    } else {
        0
    };
    ctx.skb.set_mark(REINJECTED_MARK);
    // SAFETY: bpf_redirect takes an ifindex and flags, no pointers: it only records where
    // the current packet goes, and the TCX_REDIRECT it returns is this program's verdict (a
    // bad ifindex makes the kernel drop the packet, nothing worse).
    unsafe { bpf_redirect(claim >> 1, flags) as i32 }
}

#[sock_ops]
pub fn fi_sockops(ctx: SockOpsContext) -> u32 {
    flows::on_sock_op(&ctx);
    // sock_ops programs return 1 to let the kernel go on; they never block a socket.
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // A reachable panic makes the verifier reject the program (infinite loop), so it is
    // caught at load time, never at run time.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
