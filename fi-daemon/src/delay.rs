//! Delays: the kernel takes a delayed request packet out of the path and hands its bytes
//! over (a `Held` event); this queue sends each back at its release time through the
//! injector, a veth pair the daemon owns, whose `fi_reinject` program puts it back where
//! it was held.
//!
//! Precision: the release time is computed in the kernel from the moment it held the
//! packet, so the ring buffer's latency does not add to the delay; what remains is this
//! thread's wake-up (with no timer slack) and the send. `cargo xtask bench` measures it.

use std::{
    cmp::Reverse, collections::BinaryHeap, io, process::Command, sync::mpsc, thread, time::Duration,
};

use fi_common::{
    csum::fix_tcp_frame,
    event::{HeldEvent, INJECT_MARK, REINJECTED_MARK},
};
use tracing::warn;

use crate::rules::monotonic_now;

/// The daemon's injector: a veth pair (`<name>a`, `<name>b`); packets are sent on the
/// `a` side, where fi_reinject redirects them.
#[derive(Debug)]
pub struct Injector {
    /// The interface packets are sent on.
    pub send_side: String,
    ifindex: i32,
    socket: i32,
    /// Raw IP sockets (IPv4, IPv6) for packets held on lo: they must be routed again.
    raw4: i32,
    raw6: i32,
}

/// lo's index in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Injector {
    /// The ifindex of the interface packets are sent on.
    pub fn ifindex(&self) -> u32 {
        self.ifindex as u32
    }

    /// Creates the veth pair `<base>a`/`<base>b` (replacing a stale one left by a daemon
    /// that was killed) and an AF_PACKET socket to send on it.
    pub fn create(base: &str) -> io::Result<Self> {
        sweep_stale();
        let send_side = format!("{base}a");
        let peer = format!("{base}b");
        let _ = ip(&["link", "del", &send_side]);
        ip(&[
            "link", "add", &send_side, "type", "veth", "peer", "name", &peer,
        ])?;
        for side in [&send_side, &peer] {
            // No addresses, no IPv6 chatter: nothing but re-injected packets here.
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{side}/disable_ipv6"), "1");
            ip(&["link", "set", side, "up"])?;
        }
        let name = std::ffi::CString::new(send_side.clone()).map_err(io::Error::other)?;
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        // SAFETY: plain socket(2); the fd is owned by the Injector and closed on drop.
        let socket =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        // SAFETY: as above; IPPROTO_RAW implies that we give the IP header.
        let raw4 = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        // SAFETY: as above.
        let raw6 = unsafe {
            libc::socket(
                libc::AF_INET6,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        if ifindex == 0 || socket < 0 || raw4 < 0 || raw6 < 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in [socket, raw4, raw6] {
            let mark: u32 = if fd == socket {
                INJECT_MARK
            } else {
                REINJECTED_MARK
            };
            // SAFETY: setsockopt with a u32 value on our own socket.
            if unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_MARK,
                    (&raw const mark).cast(),
                    size_of::<u32>() as u32,
                )
            } != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
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
        let mark: u32 = INJECT_MARK | held.claim;
        // SAFETY: setsockopt with a u32 option value; sendto with a valid buffer and a
        // zeroed sockaddr_ll naming our interface.
        unsafe {
            if libc::setsockopt(
                self.socket,
                libc::SOL_SOCKET,
                libc::SO_MARK,
                (&raw const mark).cast(),
                size_of::<u32>() as u32,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = self.ifindex;
            addr.sll_halen = 6;
            let sent = libc::sendto(
                self.socket,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
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
        // SAFETY: sendto with a valid buffer and a sockaddr of the right family and size.
        let sent = unsafe {
            if ip[0] >> 4 == 4 {
                let mut addr: libc::sockaddr_in = std::mem::zeroed();
                addr.sin_family = libc::AF_INET as u16;
                addr.sin_addr.s_addr = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
                libc::sendto(
                    self.raw4,
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
                    self.raw6,
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
    fn drop(&mut self) {
        // SAFETY: our own fds.
        unsafe {
            libc::close(self.socket);
            libc::close(self.raw4);
            libc::close(self.raw6);
        }
        let _ = ip(&["link", "del", &self.send_side]);
    }
}

/// Removes injector pairs of daemons that died without cleaning up (SIGKILL): a pair is
/// named after its daemon's pid. Without programs they carry nothing; this is tidiness.
/// The names come from rtnetlink, so a daemon in a network namespace sees that
/// namespace's interfaces.
fn sweep_stale() {
    let names = crate::links::names().unwrap_or_default();
    for name in names {
        let pid = name
            .strip_prefix(crate::interfaces::INJECTOR_PREFIX)
            .and_then(|rest| rest.strip_suffix('a'))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !crate::instance::daemon_alive(pid)
        {
            let _ = ip(&["link", "del", &name]);
        }
    }
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
