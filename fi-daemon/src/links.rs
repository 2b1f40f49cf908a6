//! Watching network interfaces through rtnetlink, so that host-side veths of containers
//! started after the daemon get the TC programs too.

use std::{io, thread};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::sync::mpsc;

/// A change of the interface list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// An interface exists (first seen at start-up, or created since).
    Present {
        name: String,
        index: u32,
        veth: bool,
    },
    /// An interface went away.
    Gone { name: String, index: u32 },
}

const RTMGRP_LINK: u32 = 1;

/// Starts a thread that reports every interface that exists now, then every change.
/// It subscribes before it dumps, so nothing created in between is missed.
pub fn watch() -> io::Result<mpsc::UnboundedReceiver<LinkEvent>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
    request_dump(&socket)?;
    let (tx, rx) = mpsc::unbounded_channel();
    thread::Builder::new()
        .name("fi-links".into())
        .spawn(move || read_loop(&socket, &tx))?;
    Ok(rx)
}

/// The names of the interfaces of this thread's network namespace, from one rtnetlink
/// dump (not /sys/class/net, which shows the namespace /sys was mounted in).
pub fn names() -> io::Result<Vec<String>> {
    let socket = Socket::new(NETLINK_ROUTE)?;
    request_dump(&socket)?;
    let mut names = Vec::new();
    loop {
        let (buf, _) = socket.recv_from_full()?;
        let mut rest = &buf[..];
        while !rest.is_empty() {
            let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest) else {
                return Ok(names);
            };
            match message.payload {
                NetlinkPayload::Done(_) | NetlinkPayload::Error(_) => return Ok(names),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    names.extend(name_of(&link));
                }
                _ => {}
            }
            let advance = (message.header.length as usize + 3) & !3;
            if advance == 0 || advance > rest.len() {
                break;
            }
            rest = &rest[advance..];
        }
    }
}

fn request_dump(socket: &Socket) -> io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(LinkMessage::default())),
    );
    message.finalize();
    let mut buf = vec![0u8; message.buffer_len()];
    message.serialize(&mut buf);
    socket.send_to(&buf, &SocketAddr::new(0, 0), 0)?;
    Ok(())
}

fn read_loop(socket: &Socket, tx: &mpsc::UnboundedSender<LinkEvent>) {
    loop {
        let Ok((buf, _)) = socket.recv_from_full() else {
            // The socket is broken; the daemon keeps the interfaces it has.
            tracing::warn!("rtnetlink socket failed; new interfaces will not be attached");
            return;
        };
        for event in parse(&buf) {
            if tx.send(event).is_err() {
                return; // The daemon is shutting down.
            }
        }
    }
}

/// Interface events in a buffer of netlink messages. Unknown messages are skipped.
pub fn parse(mut buf: &[u8]) -> Vec<LinkEvent> {
    let mut events = Vec::new();
    while !buf.is_empty() {
        let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf) else {
            break;
        };
        let len = message.header.length as usize;
        if let NetlinkPayload::InnerMessage(inner) = message.payload {
            match inner {
                RouteNetlinkMessage::NewLink(link) => {
                    if let Some(name) = name_of(&link) {
                        events.push(LinkEvent::Present {
                            name,
                            index: link.header.index,
                            veth: is_veth(&link),
                        });
                    }
                }
                RouteNetlinkMessage::DelLink(link) => {
                    if let Some(name) = name_of(&link) {
                        events.push(LinkEvent::Gone {
                            name,
                            index: link.header.index,
                        });
                    }
                }
                _ => {}
            }
        }
        // Messages are 4-byte aligned.
        let advance = (len + 3) & !3;
        if advance == 0 || advance > buf.len() {
            break;
        }
        buf = &buf[advance..];
    }
    events
}

fn name_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

fn is_veth(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::LinkHeader;

    use super::*;

    fn new_link(name: &str, index: u32, veth: bool) -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.header = LinkHeader {
            index,
            ..LinkHeader::default()
        };
        link.attributes.push(LinkAttribute::IfName(name.into()));
        if veth {
            link.attributes
                .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                    InfoKind::Veth,
                )]));
        }
        let mut message = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)),
        );
        message.finalize();
        let mut buf = vec![0u8; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    #[test]
    fn several_messages_in_one_buffer_are_all_read() {
        let mut buf = new_link("veth1a2b", 7, true);
        buf.extend(new_link("eth0", 2, false));
        assert_eq!(
            parse(&buf),
            vec![
                LinkEvent::Present {
                    name: "veth1a2b".into(),
                    index: 7,
                    veth: true
                },
                LinkEvent::Present {
                    name: "eth0".into(),
                    index: 2,
                    veth: false
                },
            ]
        );
    }

    #[test]
    fn garbage_is_skipped() {
        assert!(parse(&[1, 2, 3]).is_empty());
        assert!(parse(&[]).is_empty());
    }
}
