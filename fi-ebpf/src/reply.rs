//! Rewriting a packet in place into the kernel's own answer: a TCP reset, or an HTTP
//! response, with correct lengths and checksums.
//!
//! Checksums are computed in full (pseudo-header, TCP header, payload), which is right
//! whether the receiver verifies them (CHECKSUM_NONE) or trusts a partial one.

use aya_ebpf::{
    bindings::{
        BPF_F_INGRESS,
        tcx_action_base::{TCX_DROP, TCX_REDIRECT},
    },
    helpers::{bpf_csum_diff, bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use fi_common::flow::DIRECTION_EGRESS;

use crate::{
    maps::{CSUM_BUF_LEN, Scratch},
    packet::{ETH_HEADER_LEN, Segment, TCP_ACK},
};

/// What the new segment carries.
pub struct Answer {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// Payload length (a multiple of 4, at most ABORT_RESPONSE_LEN); written by the caller
    /// after `rewrite` made room for it, before `finish`.
    pub payload_len: u32,
}

/// Swaps the Ethernet, IP and TCP addresses, so that the packet goes back where it came
/// from.
#[inline(always)]
pub fn turn_around(ctx: &TcContext, seg: &Segment) -> Result<(), i64> {
    let dst: [u8; 6] = ctx.load(0)?;
    let src: [u8; 6] = ctx.load(6)?;
    ctx.store(0, &src, 0)?;
    ctx.store(6, &dst, 0)?;
    let ip = ETH_HEADER_LEN as usize;
    if seg.ipv6 {
        let s: [u8; 16] = ctx.load(ip + 8)?;
        let d: [u8; 16] = ctx.load(ip + 24)?;
        ctx.store(ip + 8, &d, 0)?;
        ctx.store(ip + 24, &s, 0)?;
    } else {
        let s: [u8; 4] = ctx.load(ip + 12)?;
        let d: [u8; 4] = ctx.load(ip + 16)?;
        ctx.store(ip + 12, &d, 0)?;
        ctx.store(ip + 16, &s, 0)?;
    }
    let l4 = seg.l4_offset as usize;
    let sport: u16 = ctx.load(l4)?;
    let dport: u16 = ctx.load(l4 + 2)?;
    ctx.store(l4, &dport, 0)?;
    ctx.store(l4 + 2, &sport, 0)?;
    Ok(())
}

/// Makes the TCP segment a bare 20-byte header with `answer`'s numbers and room for its
/// payload, and sets the IP length.
#[inline(always)]
pub fn rewrite(ctx: &TcContext, seg: &Segment, answer: &Answer) -> Result<(), i64> {
    let l4 = seg.l4_offset as usize;
    let new_len = seg.l4_offset + 20 + answer.payload_len;
    // SAFETY: bpf_skb_change_tail resizes the packet this program was given and takes no
    // pointers of ours; it invalidates direct packet pointers, and this code holds none (it
    // reads and writes the packet through offset-checked helpers only).
    let ret = unsafe { bpf_skb_change_tail(ctx.skb.skb, new_len, 0) };
    if ret != 0 {
        return Err(ret);
    }
    ctx.store(l4 + 4, &answer.seq.to_be(), 0)?;
    ctx.store(l4 + 8, &answer.ack.to_be(), 0)?;
    // Data offset 5 words (no options), flags, window, checksum (later), urgent.
    let window: u16 = if answer.flags & TCP_ACK != 0 { 502 } else { 0 };
    let header: [u8; 8] = [
        5 << 4,
        answer.flags,
        (window >> 8) as u8,
        window as u8,
        0,
        0,
        0,
        0,
    ];
    ctx.store(l4 + 12, &header, 0)?;
    let ip = ETH_HEADER_LEN as usize;
    let l3_len = seg.l4_offset - ETH_HEADER_LEN;
    if seg.ipv6 {
        let payload = (20 + answer.payload_len) as u16;
        ctx.store(ip + 4, &payload.to_be(), 0)?;
        ctx.store(ip + 7, &64u8, 0)?;
    } else {
        let total = (l3_len + 20 + answer.payload_len) as u16;
        ctx.store(ip + 2, &total.to_be(), 0)?;
        ctx.store(ip + 8, &64u8, 0)?;
    }
    Ok(())
}

/// Copies exactly `len` packet bytes from `offset` into `buf` (aya's `load_bytes` clamps
/// to the packet, which the verifier reads as a possible zero-length read).
#[inline(always)]
fn load_exact(ctx: &TcContext, offset: usize, buf: &mut [u8], len: usize) -> Result<(), i64> {
    if len == 0 || len > buf.len() {
        return Err(-1);
    }
    // SAFETY: `buf` has at least `len` bytes, and `len` is at least 1.
    let ret = unsafe {
        aya_ebpf::helpers::bpf_skb_load_bytes(
            ctx.skb.skb as *const core::ffi::c_void,
            offset as u32,
            buf.as_mut_ptr() as *mut core::ffi::c_void,
            len as u32,
        )
    };
    if ret == 0 { Ok(()) } else { Err(ret) }
}

#[inline(always)]
fn fold(sum: i64) -> u16 {
    let mut s = sum as u64 & 0xffff_ffff;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    let c = !(s as u16);
    if c == 0 { 0xffff } else { c }
}

/// Computes and stores the IPv4 header checksum (IPv6 has none) and the TCP checksum.
#[inline(always)]
pub fn finish(
    ctx: &TcContext,
    seg: &Segment,
    scratch: &mut Scratch,
    payload_len: u32,
) -> Result<(), i64> {
    let ip = ETH_HEADER_LEN as usize;
    let buf = &mut scratch.csum;
    let pseudo_len: u32 = if seg.ipv6 { 40 } else { 12 };
    let tcp_len = 20 + payload_len;
    if !seg.ipv6 {
        let ihl = seg.l4_offset - ETH_HEADER_LEN;
        if !(20..=60).contains(&ihl) || !ihl.is_multiple_of(4) {
            return Err(-1);
        }
        ctx.store(ip + 10, &0u16, 0)?;
        load_exact(ctx, ip, &mut buf[..60], ihl as usize)?;
        // SAFETY: `buf` holds at least `ihl` initialized bytes (ihl is 20..=60, a multiple
        // of 4).
        let sum = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                buf.as_mut_ptr() as *mut u32,
                ihl,
                0,
            )
        };
        ctx.store(ip + 10, &fold(sum).to_ne_bytes(), 0)?;
        // Pseudo-header: source, destination, zero, protocol, TCP length.
        load_exact(ctx, ip + 12, &mut buf[..8], 8)?;
        buf[8] = 0;
        buf[9] = 6;
        buf[10] = (tcp_len >> 8) as u8;
        buf[11] = tcp_len as u8;
    } else {
        load_exact(ctx, ip + 8, &mut buf[..32], 32)?;
        buf[32] = 0;
        buf[33] = 0;
        buf[34] = (tcp_len >> 8) as u8;
        buf[35] = tcp_len as u8;
        buf[36] = 0;
        buf[37] = 0;
        buf[38] = 0;
        buf[39] = 6;
    }
    if tcp_len as usize > CSUM_BUF_LEN - 40 {
        return Err(-1);
    }
    let l4 = seg.l4_offset as usize;
    let start = pseudo_len as usize;
    load_exact(ctx, l4, &mut buf[start..], tcp_len as usize)?;
    let total = pseudo_len + tcp_len;
    // SAFETY: `total` bytes of `buf` were just written; a multiple of 4 by construction.
    let sum = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            buf.as_mut_ptr() as *mut u32,
            total,
            0,
        )
    };
    ctx.store(l4 + 16, &fold(sum).to_ne_bytes(), 0)?;
    Ok(())
}

/// The loopback interface's index, in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// bpf_redirect flags that send a packet back toward the client (see [`send_back`]).
#[inline(always)]
pub fn back_flags(ifindex: u32, direction: u32) -> u64 {
    if direction == DIRECTION_EGRESS && ifindex != LOOPBACK_IFINDEX {
        u64::from(BPF_F_INGRESS)
    } else {
        0
    }
}

/// Sends the packet back toward the client: out of the interface it came in on, or, at
/// an egress hook, into the host's stack through the interface's ingress. On lo the
/// answer goes out lo's egress instead: loopback keeps the packet's route, while one
/// pushed into lo's ingress loses it and is dropped as a martian (127/8 source).
#[inline(always)]
pub fn send_back(ifindex: u32, direction: u32) -> i32 {
    let flags = back_flags(ifindex, direction);
    // SAFETY: bpf_redirect takes an ifindex and flags, no pointers: it only records where
    // the current packet goes, and the TCX_REDIRECT it returns is this program's verdict (a
    // bad ifindex makes the kernel drop the packet, nothing worse).
    let ret = unsafe { bpf_redirect(ifindex, flags) };
    if ret == i64::from(TCX_REDIRECT) {
        TCX_REDIRECT
    } else {
        // A redirect that cannot be done: drop rather than let a rewritten packet reach
        // the server.
        TCX_DROP
    }
}
