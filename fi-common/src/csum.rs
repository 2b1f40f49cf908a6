//! Internet checksums (RFC 1071) of IPv4 headers and TCP segments, for user space: a
//! packet the kernel copied out may carry a partial checksum (offloaded), which must be
//! completed before the packet is sent again from a socket.

fn sum16(bytes: &[u8], mut acc: u32) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Recomputes the IPv4 header checksum and the TCP checksum of an Ethernet frame carrying
/// IPv4 or IPv6 TCP, in place. Returns false if the frame is not that.
pub fn fix_tcp_frame(frame: &mut [u8]) -> bool {
    const ETH: usize = 14;
    if frame.len() < ETH + 20 {
        return false;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let (l4, pseudo) = match ethertype {
        0x0800 => {
            let ihl = usize::from(frame[ETH] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([frame[ETH + 2], frame[ETH + 3]]));
            if ihl < 20 || frame[ETH + 9] != 6 || frame.len() < ETH + total || total < ihl + 20 {
                return false;
            }
            frame[ETH + 10] = 0;
            frame[ETH + 11] = 0;
            let c = fold(sum16(&frame[ETH..ETH + ihl], 0));
            frame[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
            let tcp_len = total - ihl;
            let mut acc = sum16(&frame[ETH + 12..ETH + 20], 0);
            acc += 6 + tcp_len as u32;
            (ETH + ihl..ETH + total, acc)
        }
        0x86dd => {
            let payload = usize::from(u16::from_be_bytes([frame[ETH + 4], frame[ETH + 5]]));
            if frame[ETH + 6] != 6 || frame.len() < ETH + 40 + payload || payload < 20 {
                return false;
            }
            let mut acc = sum16(&frame[ETH + 8..ETH + 40], 0);
            acc += 6 + payload as u32;
            (ETH + 40..ETH + 40 + payload, acc)
        }
        _ => return false,
    };
    let segment = &mut frame[l4];
    segment[16] = 0;
    segment[17] = 0;
    let mut c = fold(sum16(segment, pseudo));
    if c == 0 {
        c = 0xffff;
    }
    segment[16..18].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071: summing a correct header or segment (checksum included) gives all ones,
    /// so its folded complement is zero.
    #[test]
    fn a_fixed_frame_verifies() {
        let mut frame = vec![0u8; 14 + 20 + 20 + 4];
        frame[12] = 0x08;
        frame[14] = 0x45;
        frame[14 + 2..14 + 4].copy_from_slice(&(20u16 + 24).to_be_bytes());
        frame[14 + 8] = 64;
        frame[14 + 9] = 6;
        frame[14 + 12..14 + 16].copy_from_slice(&[10, 0, 0, 1]);
        frame[14 + 16..14 + 20].copy_from_slice(&[10, 0, 0, 2]);
        let tcp = 34;
        frame[tcp..tcp + 2].copy_from_slice(&12345u16.to_be_bytes());
        frame[tcp + 2..tcp + 4].copy_from_slice(&80u16.to_be_bytes());
        frame[tcp + 12] = 5 << 4;
        frame[tcp + 13] = 0x18;
        frame[tcp + 20..].copy_from_slice(b"GET ");
        frame[tcp + 16] = 0xab; // a stale partial checksum
        assert!(fix_tcp_frame(&mut frame));
        assert_eq!(fold(sum16(&frame[14..34], 0)), 0, "IPv4 header verifies");
        let mut pseudo = sum16(&frame[26..34], 0);
        pseudo += 6 + 24;
        assert_eq!(fold(sum16(&frame[34..], pseudo)), 0, "TCP segment verifies");
    }

    #[test]
    fn non_tcp_frames_are_refused() {
        assert!(!fix_tcp_frame(&mut [0u8; 10]));
        let mut arp = vec![0u8; 60];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert!(!fix_tcp_frame(&mut arp));
    }
}
