//! Ethernet / IPv4 / IPv6 / TCP headers of a packet at a TC hook.

use aya_ebpf::programs::TcContext;
use fi_common::flow::{FlowKey, v4_mapped};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;

/// What the TC programs need of a TCP segment.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Segment {
    /// Oriented as on the wire: `client` = source, `server` = destination.
    pub key: FlowKey,
    /// Offset of the TCP payload from the start of the packet.
    pub payload_offset: u32,
    pub payload_len: u32,
    pub seq: u32,
    pub ack: u32,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub flags: u8,
    pub ipv6: bool,
    /// Offset of the TCP header.
    pub l4_offset: u32,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const ETH_HEADER_LEN: u32 = ETH_HLEN as u32;

/// Parses the headers of a TCP segment; `None` for anything else (not ours: pass it).
/// IPv6 extension headers and IPv4 fragments are not followed (`None`).
#[inline(always)]
pub fn tcp_segment(ctx: &TcContext) -> Option<Segment> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    // End of the IP packet: Ethernet padding of short frames is not payload.
    let mut ip_end = ctx.len();
    let (mut key, l4) = match ethertype {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(ETH_HLEN).ok()?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return None;
            }
            let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
            let frag: u16 = u16::from_be(ctx.load(ETH_HLEN + 6).ok()?);
            if proto != IPPROTO_TCP || frag & 0x1fff != 0 {
                return None;
            }
            let total = u32::from(u16::from_be(ctx.load(ETH_HLEN + 2).ok()?));
            // 0 is what big GSO packets carry: then the skb's length is the truth.
            if total != 0 {
                ip_end = ip_end.min(ETH_HLEN as u32 + total);
            }
            let src: [u8; 4] = ctx.load(ETH_HLEN + 12).ok()?;
            let dst: [u8; 4] = ctx.load(ETH_HLEN + 16).ok()?;
            let key = FlowKey {
                client: v4_mapped(src),
                server: v4_mapped(dst),
                client_port: 0,
                server_port: 0,
                _pad: 0,
            };
            (key, ETH_HLEN + ihl)
        }
        ETH_P_IPV6 => {
            let next: u8 = ctx.load(ETH_HLEN + 6).ok()?;
            if next != IPPROTO_TCP {
                return None;
            }
            let payload = u32::from(u16::from_be(ctx.load(ETH_HLEN + 4).ok()?));
            if payload != 0 {
                ip_end = ip_end.min(ETH_HLEN as u32 + 40 + payload);
            }
            let key = FlowKey {
                client: ctx.load(ETH_HLEN + 8).ok()?,
                server: ctx.load(ETH_HLEN + 24).ok()?,
                client_port: 0,
                server_port: 0,
                _pad: 0,
            };
            (key, ETH_HLEN + 40)
        }
        _ => return None,
    };
    key.client_port = u16::from_be(ctx.load(l4).ok()?);
    key.server_port = u16::from_be(ctx.load(l4 + 2).ok()?);
    let seq = u32::from_be(ctx.load(l4 + 4).ok()?);
    let ack = u32::from_be(ctx.load(l4 + 8).ok()?);
    let doff: u8 = ctx.load(l4 + 12).ok()?;
    let flags: u8 = ctx.load(l4 + 13).ok()?;
    let payload_offset = (l4 + usize::from(doff >> 4) * 4) as u32;
    let payload_len = ip_end.saturating_sub(payload_offset);
    Some(Segment {
        key,
        payload_offset,
        payload_len,
        seq,
        ack,
        flags,
        ipv6: ethertype == ETH_P_IPV6,
        l4_offset: l4 as u32,
    })
}
