//! Crafted packets for BPF_PROG_TEST_RUN: Ethernet + IPv4/IPv6 + TCP + payload.

/// TCP flags.
pub const TCP_SYN: u8 = 0x02;
pub const TCP_PSH_ACK: u8 = 0x18;

/// An Ethernet frame carrying an IPv4 TCP segment with `payload` (sequence number 1000).
pub fn tcp4(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    tcp4_seq(src, dst, sport, dport, flags, 1000, payload)
}

/// [`tcp4`] with the segment's sequence number: a stream cut into segments.
pub fn tcp4_seq(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut p = ethernet(0x0800);
    let total = u16::try_from(20 + 20 + payload.len()).expect("packet too long");
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]); // id, DF, ttl, TCP, checksum (unused here)
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    tcp(&mut p, sport, dport, flags, seq, payload);
    p
}

/// An Ethernet frame carrying an IPv6 TCP segment with `payload`.
pub fn tcp6(
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut p = ethernet(0x86dd);
    let len = u16::try_from(20 + payload.len()).expect("packet too long");
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[6, 64]); // next header TCP, hop limit
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    tcp(&mut p, sport, dport, flags, 1000, payload);
    p
}

fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(128);
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]); // dst MAC
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]); // src MAC
    p.extend_from_slice(&ethertype.to_be_bytes());
    p
}

fn tcp(p: &mut Vec<u8>, sport: u16, dport: u16, flags: u8, seq: u32, payload: &[u8]) {
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&2000u32.to_be_bytes()); // ack
    p.extend_from_slice(&[5 << 4, flags]);
    p.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
    p.extend_from_slice(payload);
}
