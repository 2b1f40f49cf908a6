//! The addresses a container has, read from the network namespace of a process in its
//! cgroup (or below), so that reports name servers rather than print addresses.

use std::{net::IpAddr, path::Path};

/// The container's own addresses: IPv4 host-local ones but loopback, global IPv6 ones.
pub fn container_addresses(cgroup: &Path) -> Vec<IpAddr> {
    let Some(pid) = first_pid(cgroup) else {
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

/// A process of the cgroup or of the first of its descendants that has one.
fn first_pid(cgroup: &Path) -> Option<String> {
    let mut dirs = vec![cgroup.to_owned()];
    while let Some(dir) = dirs.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs"))
            && let Some(first) = procs.lines().next()
        {
            return Some(first.trim().to_owned());
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
    None
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
    fn global_v6_addresses_only() {
        let table = "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000000000000000001 02 40 20 80     eth0\nfd000000000000000000000000000003 02 40 00 80     eth0\n";
        assert_eq!(
            global_v6(table),
            ["fd00::3".parse::<std::net::Ipv6Addr>().unwrap()]
        );
    }
}
