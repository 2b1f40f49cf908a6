//! fi's eBPF programs.
//!
//! - `fi_sockops` (cgroup sock_ops, attached at a cgroup, usually the cgroup2 root): records
//!   each outgoing TCP connection with its owner cgroup (flows.rs).
//! - `fi_tc_egress` / `fi_tc_ingress` (TCX classifiers): count packets, and on flows of
//!   targeted cgroups parse HTTP request and response heads (http.rs). They never claim
//!   traffic: the verdict is always `TCX_NEXT`, so other programs on the hook still run.
#![no_std]
#![no_main]

mod flows;
mod http;
mod maps;
mod packet;

use aya_ebpf::{
    bindings::tcx_action_base::TCX_NEXT,
    macros::{classifier, sock_ops},
    programs::{SockOpsContext, TcContext},
};
use fi_common::{
    counters::Counter,
    flow::{DIRECTION_EGRESS, DIRECTION_INGRESS},
};

use crate::maps::bump;

#[classifier]
pub fn fi_tc_egress(ctx: TcContext) -> i32 {
    bump(Counter::EgressPackets, 1);
    bump(Counter::EgressBytes, u64::from(ctx.len()));
    http::observe(&ctx, DIRECTION_EGRESS);
    TCX_NEXT
}

#[classifier]
pub fn fi_tc_ingress(ctx: TcContext) -> i32 {
    bump(Counter::IngressPackets, 1);
    bump(Counter::IngressBytes, u64::from(ctx.len()));
    http::observe(&ctx, DIRECTION_INGRESS);
    TCX_NEXT
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
