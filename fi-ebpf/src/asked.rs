//! What is asked of the data path now: rules loaded (and the daemon alive to keep them),
//! and whether a flow is watched.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use fi_common::{
    flow::{CGROUP_LEVELS, FlowState, TARGET_WATCH, TARGETS_GENERATION},
    stream,
};

use crate::maps::{FI_RULE_COUNT, FI_TARGETS, daemon_alive};

#[inline(always)]
pub fn rules_loaded() -> bool {
    FI_RULE_COUNT.get(0).is_some_and(|n| *n > 0) && faults_hold()
}

/// The dead-man switch, now: whether the daemon's heartbeat is fresh.
#[inline(always)]
pub fn faults_hold() -> bool {
    // SAFETY: bpf_ktime_get_ns takes no arguments and touches no memory of ours; it is
    // unsafe only as a foreign function.
    daemon_alive(unsafe { bpf_ktime_get_ns() })
}

/// Whether a flow whose cached answer is `cache` (a stream's `watch`) is watched: the
/// cache, while the targets have not changed; else the targets, once, and the answer is
/// cached. One lookup per packet instead of one per level of the owner's cgroup.
#[inline(always)]
pub fn watched(flow: &FlowState, cache: &mut u32) -> bool {
    // SAFETY: `get` is unsafe because user space may change the entry while we hold the
    // reference; the u32 is copied out at once.
    let generation = unsafe { FI_TARGETS.get(&TARGETS_GENERATION) }
        .copied()
        .unwrap_or(0);
    if let Some(answer) = stream::watch(*cache, generation) {
        return answer;
    }
    let answer = targeted(flow);
    *cache = stream::watch_cache(answer, generation);
    answer
}

/// Whether the flow's owner cgroup, or one of its ancestors, is a watch target.
#[inline(always)]
pub fn targeted(flow: &FlowState) -> bool {
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
    // SAFETY: `get` is unsafe because user space may delete the entry while we hold the
    // reference; the kernel frees it only after an RCU grace period, after this program
    // returns, and the u32 is copied out at once.
    unsafe { FI_TARGETS.get(&cgroup_id) }.is_some_and(|flags| flags & TARGET_WATCH != 0)
}
