//! fi's netlink (clsact) filters: where TCX is missing, the classifiers are attached as
//! cls_bpf filters, which outlive the process that made them. Each daemon's filters carry
//! fi's own priority and its pid as their handle, so that a daemon finds the filters a
//! dead daemon left, and only those: a filter is fi's when it is a bpf filter at
//! [`PRIORITY`] running one of fi's classifiers; it is stale when no fi-daemon of its pid
//! lives. Filters that are not fi's are never touched.

use std::io;

use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{TcAttribute, TcHandle, TcMessage, TcOption},
};

use crate::{instance, links};

/// fi's priority for its netlink filters (lower runs first; tc's default is 49152).
pub const PRIORITY: u16 = 0xf1;
/// The names of fi's classifiers (the programs' names).
const PROGRAMS: [&str; 2] = ["fi_tc_egress", "fi_tc_ingress"];
/// clsact's ingress and egress parents (TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_{IN,E}GRESS)).
const PARENTS: [u32; 2] = [0xffff_fff2, 0xffff_fff3];
/// TCA_BPF_NAME, in a cls_bpf filter's options.
const TCA_BPF_NAME: u16 = 7;

/// One of fi's filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub interface: String,
    pub ifindex: u32,
    pub parent: u32,
    /// The handle: the pid of the daemon that made it.
    pub handle: u32,
    /// priority << 16 | protocol, as the kernel reported it.
    pub info: u32,
    pub program: String,
}

/// The handle a daemon gives its filters: its pid.
pub fn own_handle() -> u32 {
    std::process::id()
}

/// fi's filters on every interface of this network namespace.
pub fn list() -> io::Result<Vec<Filter>> {
    let mut found = Vec::new();
    for interface in links::names()? {
        // An interface may go while it is listed.
        let Ok(ifindex) = links::index_of(&interface) else {
            continue;
        };
        for parent in PARENTS {
            // No clsact qdisc: nothing to list there.
            let Ok(filters) = dump(ifindex, parent) else {
                continue;
            };
            found.extend(
                filters
                    .iter()
                    .filter_map(|m| fi_filter(m, &interface, ifindex, parent)),
            );
        }
    }
    Ok(found)
}

/// Removes the filters of daemons that are gone; returns how many.
pub fn sweep_dead() -> io::Result<usize> {
    let mut removed = 0;
    for filter in list()? {
        let alive = instance::daemon_alive(filter.handle);
        if !alive && filter.handle != own_handle() {
            delete(&filter)?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn dump(ifindex: u32, parent: u32) -> io::Result<Vec<TcMessage>> {
    let mut request = TcMessage::default();
    request.header.index = ifindex as i32;
    request.header.parent = TcHandle::from(parent);
    links::exchange_with(
        RouteNetlinkMessage::GetTrafficFilter(request),
        NLM_F_DUMP,
        |m| match m {
            RouteNetlinkMessage::NewTrafficFilter(filter) => Some(filter),
            _ => None,
        },
    )
}

fn delete(filter: &Filter) -> io::Result<()> {
    let mut request = TcMessage::default();
    request.header.index = filter.ifindex as i32;
    request.header.parent = TcHandle::from(filter.parent);
    request.header.handle = TcHandle::from(filter.handle);
    request.header.info = filter.info;
    request.attributes.push(TcAttribute::Kind("bpf".into()));
    links::exchange_with(RouteNetlinkMessage::DelTrafficFilter(request), 0, |_| {
        None::<()>
    })
    .map(drop)
}

/// The filter, if it is one of fi's.
fn fi_filter(m: &TcMessage, interface: &str, ifindex: u32, parent: u32) -> Option<Filter> {
    let priority = (m.header.info >> 16) as u16;
    let handle = u32::from(m.header.handle);
    let is_bpf = m
        .attributes
        .iter()
        .any(|a| matches!(a, TcAttribute::Kind(k) if k == "bpf"));
    if !is_bpf || priority != PRIORITY || handle == 0 {
        return None;
    }
    let program = m.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(options) => options.iter().find_map(bpf_name),
        _ => None,
    })?;
    PROGRAMS.contains(&program.as_str()).then(|| Filter {
        interface: interface.to_owned(),
        ifindex,
        parent,
        handle,
        info: m.header.info,
        program,
    })
}

/// TCA_BPF_NAME among a cls_bpf filter's options (netlink-packet-route does not parse
/// them: they come as one attribute of nested ones, or one by one).
fn bpf_name(option: &TcOption) -> Option<String> {
    use netlink_packet_core::Nla as _;
    let TcOption::Other(nla) = option else {
        return None;
    };
    let mut value = vec![0u8; nla.value_len()];
    nla.emit_value(&mut value);
    if nla.kind() == TCA_BPF_NAME {
        return Some(c_string(&value));
    }
    nested_name(&value)
}

/// TCA_BPF_NAME in a buffer of nested attributes.
fn nested_name(mut buf: &[u8]) -> Option<String> {
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        if kind == TCA_BPF_NAME {
            return Some(c_string(&buf[4..len]));
        }
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    None
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_name_is_found_among_nested_attributes() {
        // TCA_BPF_FD (6) then TCA_BPF_NAME (7) "fi_tc_egress\0", each padded to 4.
        let mut buf = vec![8, 0, 6, 0, 1, 0, 0, 0];
        let name = b"fi_tc_egress\0";
        buf.extend_from_slice(&((4 + name.len()) as u16).to_ne_bytes());
        buf.extend_from_slice(&TCA_BPF_NAME.to_ne_bytes());
        buf.extend_from_slice(name);
        buf.resize(buf.len().next_multiple_of(4), 0);
        assert_eq!(nested_name(&buf).as_deref(), Some("fi_tc_egress"));
        assert_eq!(nested_name(&[1, 0]), None);
        assert_eq!(nested_name(&[2, 0, 7, 0]), None);
    }
}
