//! Watching network interfaces through rtnetlink, so that host-side veths of containers
//! started after the daemon get the TC programs too; and making, raising and removing the
//! daemon's own interfaces (the delay injector's veth pair) the same way.

use std::{io, thread};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
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

/// Creates the veth pair `name`/`peer` in this thread's network namespace, both ends down
/// (`ip link add NAME type veth peer name PEER`). Fails if either name is taken.
pub fn create_veth(name: &str, peer: &str) -> io::Result<()> {
    let mut peer_link = LinkMessage::default();
    peer_link
        .attributes
        .push(LinkAttribute::IfName(peer.to_owned()));
    let mut link = named(name);
    link.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_link))),
    ]));
    exchange(
        RouteNetlinkMessage::NewLink(link),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .map(drop)
    .map_err(|err| context(err, format_args!("creating the veth pair {name}/{peer}")))
}

/// Removes the interface `name` (`ip link del NAME`); a veth takes its peer with it.
pub fn delete(name: &str) -> io::Result<()> {
    exchange(RouteNetlinkMessage::DelLink(named(name)), 0)
        .map(drop)
        .map_err(|err| context(err, format_args!("removing interface {name}")))
}

/// Brings the interface `name` up (`ip link set NAME up`).
pub fn set_up(name: &str) -> io::Result<()> {
    let mut link = named(name);
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    exchange(RouteNetlinkMessage::SetLink(link), 0)
        .map(drop)
        .map_err(|err| context(err, format_args!("bringing interface {name} up")))
}

/// The index of the interface `name` in this thread's network namespace.
pub fn index_of(name: &str) -> io::Result<u32> {
    exchange(RouteNetlinkMessage::GetLink(named(name)), 0)
        .and_then(|links| {
            links
                .iter()
                .find(|link| name_of(link).as_deref() == Some(name))
                .map(|link| link.header.index)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
        })
        .map_err(|err| context(err, format_args!("looking up interface {name}")))
}

/// A link message that names its interface (the kernel looks it up by name when the
/// index is 0).
fn named(name: &str) -> LinkMessage {
    let mut link = LinkMessage::default();
    link.attributes.push(LinkAttribute::IfName(name.to_owned()));
    link
}

fn context(err: io::Error, what: std::fmt::Arguments<'_>) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// Sends one request, acknowledgement asked, on a socket of its own, and waits for the
/// kernel's answer: the links it sent back before its acknowledgement, or its error.
fn exchange(message: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<LinkMessage>> {
    exchange_with(message, flags, |m| match m {
        RouteNetlinkMessage::NewLink(link) => Some(link),
        _ => None,
    })
}

/// Sends one rtnetlink request, acknowledgement asked, on a socket of its own, and waits
/// for the kernel's answer: what `pick` takes of the messages it sent back before its
/// acknowledgement (or the end of a dump), or its error.
pub(crate) fn exchange_with<T>(
    message: RouteNetlinkMessage,
    flags: u16,
    pick: impl Fn(RouteNetlinkMessage) -> Option<T>,
) -> io::Result<Vec<T>> {
    let socket = Socket::new(NETLINK_ROUTE)?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    header.sequence_number = 1;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    message.finalize();
    let mut buf = vec![0u8; message.buffer_len()];
    message.serialize(&mut buf);
    socket.send_to(&buf, &SocketAddr::new(0, 0), 0)?;
    let mut picked = Vec::new();
    loop {
        let (buf, _) = socket.recv_from_full()?;
        let mut rest = &buf[..];
        while !rest.is_empty() {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err.to_string()))?;
            let advance = (message.header.length as usize + 3) & !3;
            match message.payload {
                NetlinkPayload::Error(error) => {
                    return match error.code {
                        None => Ok(picked),
                        Some(_) => Err(error.to_io()),
                    };
                }
                NetlinkPayload::Done(_) => return Ok(picked),
                NetlinkPayload::InnerMessage(inner) => picked.extend(pick(inner)),
                _ => {}
            }
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

    /// Runs `f` on a thread of its own in a new, empty network namespace (the test's
    /// other threads stay where they are); `None` without the privilege to make one.
    fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        thread::spawn(move || {
            // SAFETY: unshare(2) with a flag, no pointers; it moves this thread only.
            (unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0).then(f)
        })
        .join()
        .expect("the netns thread")
    }

    #[test]
    fn a_veth_pair_is_made_raised_and_removed_over_rtnetlink() {
        let outcome = in_new_netns(|| -> io::Result<()> {
            create_veth("fitesta", "fitestb")?;
            let present = names()?;
            assert!(present.contains(&"fitesta".to_owned()), "{present:?}");
            assert!(present.contains(&"fitestb".to_owned()), "{present:?}");
            let err = create_veth("fitesta", "fitestc").unwrap_err();
            assert_eq!(
                err.raw_os_error(),
                None,
                "the error says what failed: {err}"
            );
            assert!(err.to_string().contains("fitesta/fitestc"), "{err}");
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
            let index = index_of("fitesta")?;
            assert!(index > 1, "lo is 1");
            let is_up = |name: &str| -> io::Result<bool> {
                let links = exchange(RouteNetlinkMessage::GetLink(named(name)), 0)?;
                Ok(links[0].header.flags.contains(LinkFlags::Up))
            };
            assert!(!is_up("fitesta")?, "a new pair is down");
            set_up("fitesta")?;
            set_up("fitestb")?;
            assert!(is_up("fitesta")? && is_up("fitestb")?);
            delete("fitesta")?;
            let left = names()?;
            assert!(
                !left.iter().any(|n| n.starts_with("fitest")),
                "the peer goes with its pair: {left:?}"
            );
            assert!(delete("fitesta").is_err(), "nothing left to remove");
            assert!(index_of("fitesta").is_err());
            Ok(())
        });
        match outcome {
            Some(result) => result.expect("rtnetlink"),
            None => eprintln!("skipped: no privilege to make a network namespace"),
        }
    }

    #[test]
    fn garbage_is_skipped() {
        assert!(parse(&[1, 2, 3]).is_empty());
        assert!(parse(&[]).is_empty());
    }
}
