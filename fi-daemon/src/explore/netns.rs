//! What a container answers on, read from /proc for the processes of its cgroup (or
//! below): its own addresses, and the TCP sockets it listens on. Reports then name
//! servers rather than print addresses, also where services share an address (every
//! service on 127.0.0.1, each on its own port).

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

/// The container's own addresses: IPv4 host-local ones but loopback, global IPv6 ones.
pub fn container_addresses(cgroup: &Path) -> Vec<IpAddr> {
    // Any process of the cgroup (or below) is in the container's network namespace.
    let Some(pid) = all_pids(cgroup).into_iter().next() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if let Ok(trie) = std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie")) {
        found.extend(local_v4(&trie).into_iter().map(IpAddr::V4));
    }
    if let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/if_inet6")) {
        found.extend(global_v6(&table).into_iter().map(IpAddr::V6));
    }
    found
}

/// The addresses the cgroup's processes listen on for TCP, as callers dial them: a
/// wildcard listener (0.0.0.0, ::) also answers on the loopback addresses.
pub fn listening(cgroup: &Path) -> Vec<SocketAddr> {
    let pids = all_pids(cgroup);
    // The sockets the cgroup's processes hold, by inode.
    let mut inodes = HashSet::new();
    for pid in &pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Some(inode) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse::<u64>().ok())
            {
                inodes.insert(inode);
            }
        }
    }
    // One table per network namespace the processes are in.
    let mut namespaces = HashSet::new();
    let mut found = Vec::new();
    for pid in &pids {
        let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if !namespaces.insert(ns) {
            continue;
        }
        for table in ["tcp", "tcp6"] {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
                continue;
            };
            for (addr, inode) in listeners(&text) {
                if inodes.contains(&inode) {
                    found.extend(dialed(addr));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// The addresses a caller dials to reach a listener.
fn dialed(addr: SocketAddr) -> Vec<SocketAddr> {
    let port = addr.port();
    match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)]
        }
        ip if ip.is_unspecified() => vec![
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        ],
        _ => vec![addr],
    }
}

/// LISTEN entries of a /proc/PID/net/tcp or tcp6 table: (local address, socket inode).
fn listeners(table: &str) -> Vec<(SocketAddr, u64)> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&LISTEN) {
                return None;
            }
            let (ip, port) = fields.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let inode = fields.get(9)?.parse().ok()?;
            Some((SocketAddr::new(kernel_ip(ip)?, port), inode))
        })
        .collect()
}

/// An address as /proc prints it: 32-bit words in hex, each in the machine's order.
fn kernel_ip(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<u32>> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect();
    let bytes: Vec<u8> = words?.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => {
            let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
        }
        _ => None,
    }
}

/// Every process of the cgroup and its descendants.
fn all_pids(cgroup: &Path) -> Vec<String> {
    let mut dirs: Vec<PathBuf> = vec![cgroup.to_owned()];
    let mut pids = Vec::new();
    while let Some(dir) = dirs.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().map(|l| l.trim().to_owned()));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path()),
            );
        }
    }
    pids
}

/// `/32 host LOCAL` entries of the FIB trie (`/proc/PID/net/fib_trie`), but loopback.
fn local_v4(trie: &str) -> Vec<std::net::Ipv4Addr> {
    let mut found = Vec::new();
    let mut last = "";
    for line in trie.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr;
        } else if line.starts_with("/32 host LOCAL")
            && let Ok(ip) = last.parse::<std::net::Ipv4Addr>()
            && !ip.is_loopback()
            && !found.contains(&ip)
        {
            found.push(ip);
        }
    }
    found
}

/// Global addresses of `/proc/PID/net/if_inet6` (no loopback, no link-local).
fn global_v6(table: &str) -> Vec<std::net::Ipv6Addr> {
    table
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .map(std::net::Ipv6Addr::from)
        .filter(|ip| !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_come_from_the_fib_trie() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.77.0.3\n        /32 host LOCAL\n     |-- 10.77.0.255\n        /32 link BROADCAST\n     |-- 127.0.0.1\n        /32 host LOCAL\nLocal:\n     |-- 10.77.0.3\n        /32 host LOCAL\n";
        assert_eq!(
            local_v4(trie),
            ["10.77.0.3".parse::<std::net::Ipv4Addr>().unwrap()]
        );
    }

    #[test]
    fn listeners_are_read_with_their_inodes() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1389 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n\
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0\n\
   2: 0100007F:1389 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0\n";
        let found = listeners(table);
        assert_eq!(
            found,
            [
                ("127.0.0.1:5001".parse().unwrap(), 4242),
                ("0.0.0.0:8080".parse().unwrap(), 4343)
            ]
        );
        assert_eq!(
            dialed("0.0.0.0:8080".parse().unwrap()),
            ["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
        let v6 = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0\n";
        let found = listeners(v6);
        assert_eq!(found[0].0, "[::]:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(dialed(found[0].0).len(), 2);
    }

    #[test]
    fn global_v6_addresses_only() {
        let table = "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000000000000000001 02 40 20 80     eth0\nfd000000000000000000000000000003 02 40 00 80     eth0\n";
        assert_eq!(
            global_v6(table),
            ["fd00::3".parse::<std::net::Ipv6Addr>().unwrap()]
        );
    }
}
