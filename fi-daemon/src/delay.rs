//! Delays: the kernel takes a delayed request packet out of the path and hands its bytes
//! over (a `Held` event); this queue sends each back at its release time through the
//! injector, a veth pair the daemon owns, whose `fi_reinject` program puts it back where
//! it was held.
//!
//! Precision: the release time is computed in the kernel from the moment it held the
//! packet, so the ring buffer's latency does not add to the delay; what remains is this
//! thread's wake-up (with no timer slack) and the send. `cargo xtask bench` measures it.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::mpsc,
    thread,
    time::Duration,
};

use fi_common::{
    csum::fix_tcp_frame,
    event::{HeldEvent, INJECT_MARK, REINJECTED_MARK},
};
use tracing::warn;

use crate::{clock::monotonic_now, instance::INJECTOR_PREFIX, links};

/// The daemon's injector: a veth pair (`<name>a`, `<name>b`); packets are sent on the
/// `a` side, where fi_reinject redirects them. Dropping it closes its sockets and removes
/// the pair.
#[derive(Debug)]
pub struct Injector {
    /// The interface packets are sent on.
    pub send_side: String,
    ifindex: u32,
    socket: OwnedFd,
    /// Raw IP sockets (IPv4, IPv6) for packets held on lo: they must be routed again.
    raw4: OwnedFd,
    raw6: OwnedFd,
}

/// lo's index in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// A new socket(2), owned (closed on drop), close-on-exec.
fn socket(domain: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2), no pointers.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor socket(2) just returned, open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A raw IP socket of `domain`; IPPROTO_RAW implies that we give the IP header.
fn socket_raw(domain: libc::c_int) -> io::Result<OwnedFd> {
    socket(domain, libc::IPPROTO_RAW)
}

/// Makes a packet socket take a `virtio_net_hdr` before each frame: a held GSO packet (a
/// TSO burst from a container, up to 64 KiB) goes back in as GSO, to be cut into segments
/// on its way, instead of being refused for exceeding the MTU.
fn set_vnet_header(socket: &OwnedFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with an int option value on an open socket.
    if unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as u32,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `virtio_net_hdr` (10 bytes, little-endian) of a frame: GSO over TCP when the held
/// packet was GSO (the kernel then checks its headers and fills in the checksums of the
/// segments it cuts), none otherwise.
fn vnet_header(frame: &[u8], gso_size: u32) -> [u8; 10] {
    const GSO_TCPV4: u8 = 1;
    const GSO_TCPV6: u8 = 4;
    let mut header = [0u8; 10];
    let Ok(gso_size) = u16::try_from(gso_size) else {
        return header;
    };
    if gso_size == 0 || frame.len() < 14 + 20 {
        return header;
    }
    let (gso_type, l4) = match frame[14] >> 4 {
        4 => (GSO_TCPV4, 14 + usize::from(frame[14] & 0x0f) * 4),
        6 => (GSO_TCPV6, 14 + 40),
        _ => return header,
    };
    let Some(offset) = frame.get(l4 + 12) else {
        return header;
    };
    let headers = l4 + usize::from(offset >> 4) * 4;
    if frame.len() <= headers + usize::from(gso_size) {
        return header; // One segment's worth: not GSO.
    }
    header[1] = gso_type;
    header[2..4].copy_from_slice(&(headers as u16).to_le_bytes());
    header[4..6].copy_from_slice(&gso_size.to_le_bytes());
    header
}

/// Sets SO_MARK on a socket.
fn set_mark(socket: &OwnedFd, mark: u32) -> io::Result<()> {
    // SAFETY: setsockopt with a u32 option value on an open socket.
    if unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&raw const mark).cast(),
            size_of::<u32>() as u32,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Injector {
    /// The ifindex of the interface packets are sent on.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Creates the veth pair `<base>a`/`<base>b` (replacing a stale one left by a daemon
    /// that was killed) and an AF_PACKET socket to send on it.
    pub fn create(base: &str) -> io::Result<Self> {
        sweep_stale();
        let send_side = format!("{base}a");
        let peer = format!("{base}b");
        let _ = links::delete(&send_side);
        links::create_veth(&send_side, &peer)?;
        // From here on the pair is ours: a failure removes it.
        Self::configure(send_side.clone(), &peer).inspect_err(|_| {
            let _ = links::delete(&send_side);
        })
    }

    /// Brings up a new pair and opens the sockets.
    fn configure(send_side: String, peer: &str) -> io::Result<Self> {
        for side in [send_side.as_str(), peer] {
            // No addresses, no IPv6 chatter: nothing but re-injected packets here.
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{side}/disable_ipv6"), "1");
            links::set_up(side)?;
        }
        let ifindex = links::index_of(&send_side)?;
        let socket = socket(libc::AF_PACKET, 0)?;
        set_vnet_header(&socket)?;
        let raw4 = socket_raw(libc::AF_INET)?;
        let raw6 = socket_raw(libc::AF_INET6)?;
        set_mark(&socket, INJECT_MARK)?;
        set_mark(&raw4, REINJECTED_MARK)?;
        set_mark(&raw6, REINJECTED_MARK)?;
        Ok(Self {
            send_side,
            ifindex,
            socket,
            raw4,
            raw6,
        })
    }

    /// Sends a held packet back to where it was held, with its checksums completed (it
    /// may have been copied with an offloaded, partial one).
    pub fn send(&self, held: &HeldEvent) -> io::Result<()> {
        let len = (held.len as usize).min(held.packet.len());
        let mut frame = held.packet[..len].to_vec();
        if !fix_tcp_frame(&mut frame) {
            return Err(io::Error::other("held packet is not TCP over IP"));
        }
        if held.claim >> 1 == LOOPBACK_IFINDEX {
            return self.send_routed(&frame);
        }
        set_mark(&self.socket, INJECT_MARK | held.claim)?;
        let mut frame_with_header = vnet_header(&frame, held.gso_size).to_vec();
        frame_with_header.extend_from_slice(&frame);
        let frame = frame_with_header;
        // SAFETY: a zeroed sockaddr_ll is valid; sendto with a valid buffer and that
        // sockaddr, naming our interface, on an open socket.
        let sent = unsafe {
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = self.ifindex as i32;
            addr.sll_halen = 6;
            libc::sendto(
                self.socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Injector {
    /// lo: the packet goes out through a raw IP socket and is routed like any local
    /// packet (so it carries a route, which loopback keeps); its mark lets lo's egress
    /// hook pass it.
    fn send_routed(&self, frame: &[u8]) -> io::Result<()> {
        let ip = &frame[14..];
        // SAFETY: sendto with a valid buffer and a sockaddr of the right family and size,
        // on open sockets.
        let sent = unsafe {
            if ip[0] >> 4 == 4 {
                let mut addr: libc::sockaddr_in = std::mem::zeroed();
                addr.sin_family = libc::AF_INET as u16;
                addr.sin_addr.s_addr = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
                libc::sendto(
                    self.raw4.as_raw_fd(),
                    ip.as_ptr().cast(),
                    ip.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                )
            } else {
                let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
                addr.sin6_family = libc::AF_INET6 as u16;
                addr.sin6_addr.s6_addr.copy_from_slice(&ip[24..40]);
                libc::sendto(
                    self.raw6.as_raw_fd(),
                    ip.as_ptr().cast(),
                    ip.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_in6>() as u32,
                )
            }
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Injector {
    /// The sockets close when their fields drop, right after this.
    fn drop(&mut self) {
        let _ = links::delete(&self.send_side);
    }
}

/// Removes injector pairs of daemons that died without cleaning up (SIGKILL): a pair is
/// named after its daemon's pid. Without programs they carry nothing; this is tidiness.
/// The names come from rtnetlink, so a daemon in a network namespace sees that
/// namespace's interfaces.
fn sweep_stale() {
    let names = links::names().unwrap_or_default();
    for name in names {
        if injector_pid(&name).is_some_and(|pid| !crate::instance::daemon_alive(pid)) {
            let _ = links::delete(&name);
        }
    }
}

/// The pid of the daemon whose injector's send side is called `name`, if it is one
/// (`<INJECTOR_PREFIX><pid>a`).
fn injector_pid(name: &str) -> Option<u32> {
    name.strip_prefix(INJECTOR_PREFIX)
        .and_then(|rest| rest.strip_suffix('a'))
        .and_then(|pid| pid.parse::<u32>().ok())
}

struct Due(Duration, Box<HeldEvent>);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// What the release thread is asked to do.
#[derive(Debug)]
enum Message {
    /// A packet the kernel held: send it back at its release time.
    Hold(Box<HeldEvent>),
    /// Send back now what `rule` holds (every rule's, for `None`: the kill switch), and
    /// answer how many packets went.
    Release {
        rule: Option<u32>,
        done: mpsc::Sender<usize>,
    },
}

/// The handle to the release thread.
#[derive(Debug, Clone)]
pub struct Delays {
    tx: mpsc::Sender<Message>,
}

impl Delays {
    /// Queues a held packet for its release time.
    pub fn hold(&self, held: Box<HeldEvent>) {
        let _ = self.tx.send(Message::Hold(held));
    }

    /// Sends back at once what `rule` holds (all, for `None`), and returns when they are
    /// sent: how many. A removed or expired rule, or the kill switch, holds nothing more.
    /// Blocks for as long as the sends take (microseconds a packet).
    pub fn release(&self, rule: Option<u32>) -> usize {
        let (done, answer) = mpsc::channel();
        if self.tx.send(Message::Release { rule, done }).is_err() {
            return 0;
        }
        answer.recv_timeout(Duration::from_secs(2)).unwrap_or(0)
    }
}

/// Starts the release thread.
pub fn start(injector: Injector) -> io::Result<Delays> {
    let (tx, rx) = mpsc::channel::<Message>();
    thread::Builder::new()
        .name("fi-delay".into())
        .spawn(move || {
            let mut queue: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
            let send = |held: &HeldEvent| {
                if let Err(err) = injector.send(held) {
                    warn!(%err, "could not put a delayed request back");
                }
            };
            // Timer slack would add up to 50 µs to every wake-up of this thread.
            // SAFETY: prctl(PR_SET_TIMERSLACK) on the calling thread, no pointers.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
            loop {
                // Send everything due.
                let now = monotonic_now();
                while queue.peek().is_some_and(|Reverse(d)| d.0 <= now) {
                    if let Some(Reverse(Due(_, held))) = queue.pop() {
                        send(&held);
                    }
                }
                let next = match queue.peek() {
                    Some(Reverse(d)) => rx.recv_timeout(d.0.saturating_sub(monotonic_now())),
                    None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                };
                match next {
                    Ok(Message::Hold(held)) => {
                        queue.push(Reverse(Due(Duration::from_nanos(held.release_ns), held)))
                    }
                    Ok(Message::Release { rule, done }) => {
                        // In release order, as they would have gone.
                        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut queue)
                            .into_sorted_vec()
                            .into_iter()
                            .rev()
                            .partition(|Reverse(d)| rule.is_none_or(|id| d.1.rule_id == id));
                        for Reverse(Due(_, held)) in &now {
                            send(held);
                        }
                        queue.extend(later);
                        let _ = done.send(now.len());
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
    Ok(Delays { tx })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gso_packet_goes_back_with_its_segment_size_and_a_plain_one_without() {
        // Ethernet, IPv4 (20), TCP (32: data offset 8), 3,000 bytes of payload.
        let mut frame = vec![0u8; 14 + 20 + 32 + 3000];
        frame[14] = 0x45;
        frame[14 + 20 + 12] = 8 << 4;
        let header = vnet_header(&frame, 1448);
        assert_eq!(header[1], 1, "TCPv4");
        assert_eq!(u16::from_le_bytes([header[2], header[3]]), 14 + 20 + 32);
        assert_eq!(u16::from_le_bytes([header[4], header[5]]), 1448);
        assert_eq!(vnet_header(&frame, 0), [0; 10], "not GSO");
        assert_eq!(vnet_header(&frame, 4000), [0; 10], "one segment's worth");
        frame[14] = 0x60;
        frame[14 + 40 + 12] = 5 << 4;
        assert_eq!(vnet_header(&frame, 1400)[1], 4, "TCPv6");
    }

    #[test]
    fn only_injector_send_sides_name_a_daemon() {
        assert_eq!(injector_pid("fii1234a"), Some(1234));
        assert_eq!(
            injector_pid("fii1234b"),
            None,
            "the peer goes with its pair"
        );
        assert_eq!(injector_pid("fiixa"), None);
        assert_eq!(injector_pid("veth1234a"), None);
        assert_eq!(injector_pid("fiia"), None);
    }
}
