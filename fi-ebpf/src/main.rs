//! fi's eBPF programs.
//!
//! - `fi_sockops` (cgroup sock_ops, attached at a cgroup, usually the cgroup2 root): sees
//!   every TCP connection of the processes below it.
//! - `fi_tc_egress` / `fi_tc_ingress` (TCX classifiers): see every packet on the interfaces
//!   they are attached to. They never claim traffic that is not theirs: the verdict for
//!   anything they do not act on is `TCX_NEXT`, so other programs on the hook still run.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        tcx_action_base::TCX_NEXT,
    },
    macros::{classifier, map, sock_ops},
    maps::PerCpuArray,
    programs::{SockOpsContext, TcContext},
};
use fi_common::counters::{COUNTER_SLOTS, Counter};

#[map(name = "FI_COUNTERS")]
static FI_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Adds `by` to a per-CPU counter. Per-CPU slots need no atomics: a program runs to
/// completion on one CPU without preemption by another instance on that CPU.
#[inline(always)]
fn bump(counter: Counter, by: u64) {
    if let Some(slot) = FI_COUNTERS.get_ptr_mut(counter.index()) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU array and stays
        // valid for the life of this program invocation.
        unsafe { *slot += by };
    }
}

#[classifier]
pub fn fi_tc_egress(ctx: TcContext) -> i32 {
    bump(Counter::EgressPackets, 1);
    bump(Counter::EgressBytes, u64::from(ctx.len()));
    TCX_NEXT
}

#[classifier]
pub fn fi_tc_ingress(ctx: TcContext) -> i32 {
    bump(Counter::IngressPackets, 1);
    bump(Counter::IngressBytes, u64::from(ctx.len()));
    TCX_NEXT
}

#[sock_ops]
pub fn fi_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => bump(Counter::FlowsActive, 1),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => bump(Counter::FlowsPassive, 1),
        _ => {}
    }
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
