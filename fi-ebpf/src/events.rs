//! Events to the daemon: what a request or response event holds, written in place in the
//! scratch map (the 512-byte stack has no room for them).

use fi_common::{
    counters::Counter,
    event::{EVENT_RESPONSE, EventHeader, ResponseEvent},
    flow::{FlowKey, FlowState},
    http::ResponseHead,
};

use crate::maps::{FI_EVENTS, Scratch, bump};

/// Writes an event header field by field: building it by value would put 72 more bytes
/// on the 512-byte stack.
#[inline(always)]
pub fn fill_header(
    header: &mut EventHeader,
    kind: u32,
    ifindex: u32,
    now: u64,
    flow: &FlowState,
    key: &FlowKey,
) {
    header.kind = kind;
    header.ifindex = ifindex;
    header.ts_ns = now;
    header.cookie = flow.cookie;
    header.cgroup_id = flow.cgroup_id;
    // SAFETY: `key` is a shared and `header` an exclusive reference, so both are valid,
    // aligned FlowKeys and cannot overlap (Rust never lets a & and a &mut alias).
    unsafe { core::ptr::copy_nonoverlapping(key, &mut header.key, 1) };
}

#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "a flat hot path; a struct would be copied"
)]
pub fn report_response(
    scratch: &mut Scratch,
    flow: &FlowState,
    key: &FlowKey,
    ifindex: u32,
    index: u32,
    now: u64,
    latency_ns: u64,
    head: ResponseHead,
) {
    bump(Counter::Responses, 1);
    let event = &mut scratch.response_event;
    fill_header(&mut event.header, EVENT_RESPONSE, ifindex, now, flow, key);
    event.index = index;
    event._pad = 0;
    event.latency_ns = latency_ns;
    event.head = head;
    if FI_EVENTS.output::<ResponseEvent>(&*event, 0).is_err() {
        bump(Counter::EventsLost, 1);
    }
}
