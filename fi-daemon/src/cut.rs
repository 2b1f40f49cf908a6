//! Ending the connections a blackholing fault left dead, when its rule goes (the kill
//! switch, `rules rm`, expiry).
//!
//! A timeout drops every later client packet of its connection, so the connection stays
//! dead after the rule is gone; and should the flow be forgotten, the client's kernel,
//! still retransmitting, would deliver the "timed out" request to the server seconds
//! later. So the client's socket is closed here, through the kernel's SOCK_DESTROY
//! (sock_diag) in the client's network namespace: the client's pending call fails at once
//! with ECONNABORTED, and its kernel sends a reset toward the server, which fi's hook lets
//! pass (a reset carries no request). The server answers that reset, whose sequence number
//! lies past the dropped bytes, with a challenge ACK; the client's kernel, with no socket
//! left, answers it with a reset at exactly the server's `rcv_nxt`, which ends the
//! server's half (RFC 5961). The dropped request never reaches the server.

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use fi_common::flow::{FAULT_DROP_CLIENT, FlowKey, FlowState};

/// A flow whose client packets a fault drops.
#[derive(Debug, Clone, Copy)]
pub struct Dead {
    pub key: FlowKey,
    pub cookie: u64,
    pub cgroup_id: u64,
}

/// The flows of `flows` that a fault of `rule` (of any rule, for `None`) left dead.
pub fn dead_flows(
    flows: impl Iterator<Item = (FlowKey, FlowState)>,
    rule: Option<u32>,
) -> Vec<Dead> {
    flows
        .filter(|(_, f)| f.fault_state & FAULT_DROP_CLIENT != 0)
        .filter(|(_, f)| rule.is_none_or(|id| f.fault_rule == id))
        .map(|(key, f)| Dead {
            key,
            cookie: f.cookie,
            cgroup_id: f.cgroup_id,
        })
        .collect()
}

/// Closes the client sockets of `dead`, each in its own network namespace (found from a
/// process of its cgroup). Returns how many were closed; a socket already gone counts
/// as none.
pub fn close_clients(mount: &Path, dead: &[Dead]) -> usize {
    if dead.is_empty() {
        return 0;
    }
    let mut index = crate::cgroup_fs::CgroupIndex::new(mount.to_owned());
    let mut closed = 0;
    for d in dead {
        let relative = index.path_of(d.cgroup_id);
        let cgroup = mount.join(relative.trim_start_matches('/'));
        let result = netns_of(&cgroup).and_then(|netns| destroy_socket(&netns, d));
        match result {
            Ok(()) => closed += 1,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(%err, cgroup = %cgroup.display(), "closing a blackholed client socket")
            }
        }
    }
    closed
}

/// The network namespace of the first process found in `cgroup` or below it.
fn netns_of(cgroup: &Path) -> io::Result<File> {
    let mut stack: Vec<PathBuf> = vec![cgroup.to_owned()];
    while let Some(dir) = stack.pop() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            if let Ok(netns) = File::open(format!("/proc/{pid}/ns/net")) {
                return Ok(netns);
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no process left in {}", cgroup.display()),
    ))
}

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;

/// SOCK_DESTROY of the client's socket, by its address, ports and cookie, from a thread
/// that enters `netns` (only that thread changes namespace).
fn destroy_socket(netns: &File, d: &Dead) -> io::Result<()> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns(2) with a namespace fd we hold; it affects this thread only.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                let v4 = d.key.client[..12] == fi_common::flow::v4_mapped([0; 4])[..12];
                // An IPv4 address may belong to an AF_INET socket or to a dual-stack one.
                let families: &[u8] = if v4 {
                    &[libc::AF_INET as u8, libc::AF_INET6 as u8]
                } else {
                    &[libc::AF_INET6 as u8]
                };
                let mut last = io::Error::from(io::ErrorKind::NotFound);
                for family in families {
                    match destroy_in_current_netns(*family, d) {
                        Ok(()) => return Ok(()),
                        Err(err) => last = err,
                    }
                }
                Err(last)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the sock_diag thread panicked")))
    })
}

fn destroy_in_current_netns(family: u8, d: &Dead) -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just created and nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let message = destroy_request(family, d);
    // SAFETY: send(2) of a buffer we own, on our socket (the kernel is the default peer).
    if unsafe {
        libc::send(
            socket.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            0,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    let mut answer = [0u8; 256];
    // SAFETY: recv(2) into a buffer we own.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            answer.as_mut_ptr().cast(),
            answer.len(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    ack_result(&answer[..n as usize])
}

/// nlmsghdr + inet_diag_req_v2 asking to destroy one TCP socket.
fn destroy_request(family: u8, d: &Dead) -> Vec<u8> {
    let mut m = Vec::with_capacity(72);
    m.extend_from_slice(&72u32.to_ne_bytes()); // nlmsg_len
    m.extend_from_slice(&SOCK_DESTROY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    m.push(family);
    m.push(libc::IPPROTO_TCP as u8);
    m.push(0); // idiag_ext
    m.push(0);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: any
    // inet_diag_sockid: from the socket's own side (the client).
    m.extend_from_slice(&d.key.client_port.to_be_bytes());
    m.extend_from_slice(&d.key.server_port.to_be_bytes());
    for addr in [d.key.client, d.key.server] {
        if family == libc::AF_INET as u8 {
            m.extend_from_slice(&addr[12..]);
            m.extend_from_slice(&[0; 12]);
        } else {
            m.extend_from_slice(&addr);
        }
    }
    m.extend_from_slice(&0u32.to_ne_bytes()); // idiag_if
    m.extend_from_slice(&(d.cookie as u32).to_ne_bytes());
    m.extend_from_slice(&((d.cookie >> 32) as u32).to_ne_bytes());
    m
}

/// The error code of a netlink ACK (0: done).
fn ack_result(answer: &[u8]) -> io::Result<()> {
    let field = |at: usize| answer.get(at..at + 4).map(|b| [b[0], b[1], b[2], b[3]]);
    let kind = answer.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    match (kind, field(16).map(i32::from_ne_bytes)) {
        (Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (Some(NLMSG_ERROR), Some(errno)) => Err(io::Error::from_raw_os_error(-errno)),
        _ => Err(io::Error::other("unexpected sock_diag answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fi_common::flow::v4_mapped;

    #[test]
    fn a_destroy_request_names_the_clients_socket() {
        let d = Dead {
            key: FlowKey {
                client: v4_mapped([10, 77, 0, 1]),
                server: v4_mapped([10, 77, 0, 2]),
                client_port: 40_000,
                server_port: 8080,
                _pad: 0,
            },
            cookie: 0x1122_3344_5566_7788,
            cgroup_id: 9,
        };
        let m = destroy_request(libc::AF_INET as u8, &d);
        assert_eq!(m.len(), 72);
        assert_eq!(&m[24..28], &[0x9c, 0x40, 0x1f, 0x90], "ports, big-endian");
        assert_eq!(&m[28..32], &[10, 77, 0, 1]);
        assert_eq!(&m[44..48], &[10, 77, 0, 2]);
        assert_eq!(
            u32::from_ne_bytes([m[64], m[65], m[66], m[67]]),
            0x5566_7788
        );
        assert_eq!(
            u32::from_ne_bytes([m[68], m[69], m[70], m[71]]),
            0x1122_3344
        );
    }

    #[test]
    fn only_flows_a_fault_left_dead_are_chosen() {
        let key = FlowKey {
            client: [0; 16],
            server: [0; 16],
            client_port: 1,
            server_port: 2,
            _pad: 0,
        };
        let mut dead = FlowState::new(1, 2, [0; fi_common::flow::CGROUP_LEVELS]);
        dead.fault_state = FAULT_DROP_CLIENT;
        dead.fault_rule = 7;
        let alive = FlowState::new(3, 4, [0; fi_common::flow::CGROUP_LEVELS]);
        let flows = || [(key, dead), (key, alive)].into_iter();
        assert_eq!(dead_flows(flows(), None).len(), 1);
        assert_eq!(dead_flows(flows(), Some(7)).len(), 1);
        assert_eq!(dead_flows(flows(), Some(8)).len(), 0);
    }
}
