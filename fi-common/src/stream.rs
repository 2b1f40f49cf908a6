//! The request side of a connection, followed across segments: where each request head
//! starts and ends, and which bytes are body, however TCP cuts the stream.
//!
//! The kernel keeps a [`RequestStream`] in each flow entry and drives it with the same
//! [`RequestStream::byte`] and [`Framing::skip`] that [`RequestStream::feed`] uses
//! on the host. Heads are read by the capture parser ([`RequestParser`]: method, target,
//! host, captured headers, and the framing headers), bodies by the [`Framer`]: a
//! Content-Length body is skipped in bulk, a chunked one chunk by chunk (sizes,
//! extensions, trailers), so no body byte is ever read as a head. Where fi cannot know
//! what follows (a head over [`MAX_HEAD`], an unknown transfer coding, an upgrade or
//! CONNECT, bytes that are not a request where one must start), the stream stops for
//! good: fi never guesses.

use crate::{
    framing::{Framer, MAX_HEAD, Stop},
    http::{CaptureConfig, FLAG_UPGRADE, Method, RequestParser, ResponseParser},
};

/// The stream's position is not known: the next segment that begins with a request line
/// starts it (a connection fi did not follow from its start).
pub const UNSYNCED: u8 = 0;
/// `next_seq` is the next byte of the stream, and the framer knows what it is.
pub const SYNCED: u8 = 1;

/// What one byte did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Look {
    /// Go on with the next byte.
    More,
    /// The byte completed a request head (the parser holds it).
    HeadDone,
    /// Body data follows: [`Framing::opaque`] bytes can be skipped.
    Opaque,
    /// The stream stopped for good at this byte.
    Stopped,
}

/// A flow's cached answer to "is it watched?" for targets generation `generation`:
/// `Some(watched)` when `cache` holds it, `None` when the targets changed since (or it was
/// never asked). 0 is "never asked".
#[inline(always)]
pub const fn watch(cache: u32, generation: u32) -> Option<bool> {
    if cache >> 1 == generation.wrapping_add(1) & (u32::MAX >> 1) {
        Some(cache & 1 != 0)
    } else {
        None
    }
}

/// The cache value of [`watch`] for `watched` as of `generation`.
#[inline(always)]
pub const fn watch_cache(watched: bool, generation: u32) -> u32 {
    ((generation.wrapping_add(1) & (u32::MAX >> 1)) << 1) | watched as u32
}

/// What a walk over a segment needs of either stream: its bulk skips and its stop.
pub trait Framing {
    /// Body bytes that can be skipped without a look (`u64::MAX` once stopped).
    fn opaque(&self) -> u64;
    /// Skips `n` body bytes (at most [`Framing::opaque`]).
    fn skip(&mut self, n: u64);
    /// Why the stream stopped for good, if it did.
    fn stopped(&self) -> Option<Stop>;
    /// Stops the stream for good.
    fn stop(&mut self, why: Stop);
}

macro_rules! framing_of {
    ($stream:ty) => {
        impl Framing for $stream {
            #[inline(always)]
            fn opaque(&self) -> u64 {
                if self.in_head != 0 {
                    return 0;
                }
                self.framer.opaque()
            }

            #[inline(always)]
            fn skip(&mut self, n: u64) {
                self.framer.skip(n);
            }

            #[inline(always)]
            fn stopped(&self) -> Option<Stop> {
                self.framer.stopped()
            }

            #[inline(always)]
            fn stop(&mut self, why: Stop) {
                self.in_head = 0;
                self.framer.halt(why);
            }
        }
    };
}

framing_of!(RequestStream);
framing_of!(ResponseStream);

/// The request direction of one flow: 40 bytes, integers only. Written by the request
/// side's hook alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestStream {
    /// Framing between heads.
    pub framer: Framer,
    /// TCP sequence number of the next byte not yet looked at (SYNCED).
    pub next_seq: u32,
    /// UNSYNCED or SYNCED.
    pub mode: u8,
    /// A head is in progress; between segments its parser is kept in the partial-head
    /// map (kernel) or by the caller (host).
    pub in_head: u8,
    pub _pad: [u8; 2],
    pub _pad1: u32,
    /// Whether the flow is watched, as of a generation of the targets: see [`watch`].
    pub watch: u32,
}
const _: () = assert!(core::mem::size_of::<RequestStream>() == 40);

impl Default for RequestStream {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestStream {
    pub const fn new() -> RequestStream {
        RequestStream {
            framer: Framer::new(),
            next_seq: 0,
            mode: UNSYNCED,
            in_head: 0,
            _pad: [0; 2],
            _pad1: 0,
            watch: 0,
        }
    }

    /// Starts following the stream at `seq`, where a request head begins.
    #[inline(always)]
    pub fn sync(&mut self, seq: u32) {
        self.framer = Framer::new();
        self.next_seq = seq;
        self.mode = SYNCED;
        self.in_head = 0;
    }

    /// Looks at one byte that [`Framing::opaque`] does not cover. `parser` holds
    /// the head in progress (`in_head`), and is started here when a head begins.
    #[inline(always)]
    pub fn byte(&mut self, parser: &mut RequestParser, b: u8, config: &CaptureConfig) -> Look {
        if self.in_head == 0 {
            if !self.framer.idle() {
                // A chunk-size line, the CRLF after chunk data, or trailers.
                self.framer.body_step(b);
                if self.framer.stopped().is_some() {
                    return Look::Stopped;
                }
                return if self.framer.opaque() > 0 {
                    Look::Opaque
                } else {
                    Look::More
                };
            }
            // Empty lines before a request are ignored (RFC 9112 §2.2).
            if b == b'\r' || b == b'\n' {
                return Look::More;
            }
            parser.start();
            self.in_head = 1;
        }
        if parser.step(b, config) {
            if parser.consumed() >= MAX_HEAD {
                self.stop(Stop::HeadTooLong);
                return Look::Stopped;
            }
            return Look::More;
        }
        self.in_head = 0;
        if parser.head.is_invalid() {
            self.stop(Stop::Malformed);
            return Look::Stopped;
        }
        if parser.out.method == Method::Connect as u8 || parser.out.flags & FLAG_UPGRADE != 0 {
            // What follows depends on the answer (101, CONNECT 2xx): fi does not guess.
            self.framer.halt(Stop::Upgraded);
        } else {
            self.framer.begin_body(parser.out.body());
        }
        Look::HeadDone
    }
}

/// The method of a request whose response is awaited deeper in a pipeline than the
/// kernel keeps methods for (`fi_common::flow::PENDING`).
pub const METHOD_UNKNOWN: u8 = 0xff;

/// The response direction of one flow: 72 bytes, integers only, written by the response
/// side's hook alone. The parser of a response head lives here (it is small), so a head
/// cut by a segment's end needs no other map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseStream {
    /// Framing between heads.
    pub framer: Framer,
    /// The head in progress.
    pub parser: ResponseParser,
    /// TCP sequence number of the next byte not yet looked at (SYNCED).
    pub next_seq: u32,
    /// UNSYNCED or SYNCED.
    pub mode: u8,
    /// A head is in progress in `parser`.
    pub in_head: u8,
    pub _pad: [u8; 2],
    /// Final responses completed on this stream (the host's `feed` pairs them with
    /// `methods` by it; the kernel pairs by the flow's `next_response`).
    pub heads: u32,
    /// Whether the flow is watched, as of a generation of the targets: see [`watch`].
    pub watch: u32,
}
const _: () = assert!(core::mem::size_of::<ResponseStream>() == 72);

impl Default for ResponseStream {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseStream {
    pub const fn new() -> ResponseStream {
        ResponseStream {
            framer: Framer::new(),
            parser: ResponseParser::new(0, 0),
            next_seq: 0,
            mode: UNSYNCED,
            in_head: 0,
            _pad: [0; 2],
            heads: 0,
            watch: 0,
        }
    }

    /// Starts following the stream at `seq`, where a response head begins.
    #[inline(always)]
    pub fn sync(&mut self, seq: u32) {
        self.framer = Framer::new();
        self.next_seq = seq;
        self.mode = SYNCED;
        self.in_head = 0;
    }

    /// Whether the next byte starts a message (no head or body in progress).
    #[inline(always)]
    pub fn at_boundary(&self) -> bool {
        self.in_head == 0 && self.framer.idle()
    }

    /// Where `seq` (a segment of `len` payload bytes) falls relative to the stream.
    #[inline(always)]
    pub fn position(&self, seq: u32, len: u32) -> Position {
        position(self.next_seq, seq, len)
    }

    /// Looks at one byte that [`Framing::opaque`] does not cover. `request_method`
    /// is the method of the request the head in progress answers (a HEAD's response has
    /// no body; a CONNECT's 2xx turns the connection into a tunnel).
    #[inline(always)]
    pub fn byte(&mut self, b: u8, request_method: u8, config: &CaptureConfig) -> Look {
        if self.in_head == 0 {
            if !self.framer.idle() {
                self.framer.body_step(b);
                if self.framer.stopped().is_some() {
                    return Look::Stopped;
                }
                return if self.framer.opaque() > 0 {
                    Look::Opaque
                } else {
                    Look::More
                };
            }
            if b == b'\r' || b == b'\n' {
                return Look::More;
            }
            self.parser.start();
            self.in_head = 1;
        }
        if self.parser.step(b, config) {
            if self.parser.head.consumed >= MAX_HEAD {
                self.stop(Stop::HeadTooLong);
                return Look::Stopped;
            }
            return Look::More;
        }
        self.in_head = 0;
        if self.parser.head.is_invalid() {
            self.stop(Stop::Malformed);
            return Look::Stopped;
        }
        let status = self.parser.out.status;
        let interim = (100..200).contains(&status) && status != 101;
        if request_method == METHOD_UNKNOWN && !interim {
            // Deeper pipelining than fi keeps methods for: whether this response has a
            // body (HEAD) is not known. It is reported; nothing after it is read.
            self.framer.halt(Stop::Lost);
        } else if status == 101
            || (request_method == Method::Connect as u8 && (200..300).contains(&status))
        {
            // The connection became something else.
            self.framer.halt(Stop::Upgraded);
        } else {
            self.framer.begin_body(self.parser.out.body(request_method));
        }
        if interim {
            // An interim response (100 Continue, 103 Early Hints): the final one follows.
            return Look::More;
        }
        self.heads = self.heads.wrapping_add(1);
        Look::HeadDone
    }
}

/// Where `seq` (a segment of `len` payload bytes) falls for a stream whose next byte is
/// `next_seq`.
#[inline(always)]
fn position(next_seq: u32, seq: u32, len: u32) -> Position {
    let ahead = seq.wrapping_sub(next_seq) as i32;
    if ahead > 0 {
        return Position::Gap;
    }
    let behind = ahead.unsigned_abs();
    if behind >= len {
        Position::Old
    } else {
        Position::From(behind)
    }
}

/// A segment's verdict on the stream's position, before its bytes are looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// Look at the bytes from this offset of the payload (past a retransmitted part).
    From(u32),
    /// A retransmission of bytes already looked at: nothing new.
    Old,
    /// Bytes before this segment were never seen (a gap): the position is lost, and the
    /// stream stops for good.
    Gap,
}

impl RequestStream {
    /// Where `seq` (a segment of `len` payload bytes) falls relative to the stream.
    #[inline(always)]
    pub fn position(&self, seq: u32, len: u32) -> Position {
        position(self.next_seq, seq, len)
    }
}

/// What [`RequestStream::feed`] found in a segment.
#[cfg(not(target_arch = "bpf"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Payload offset of the byte that completed each head, with the head.
    pub heads: Vec<(usize, crate::http::RequestHead)>,
}

#[cfg(not(target_arch = "bpf"))]
impl RequestStream {
    /// The host side of what the kernel does with one segment: position, resync at a
    /// request line, heads and bodies. `parser` must be kept by the caller between
    /// segments (the kernel's partial-head map).
    pub fn feed(
        &mut self,
        seq: u32,
        bytes: &[u8],
        parser: &mut RequestParser,
        config: &CaptureConfig,
    ) -> Found {
        let mut found = Found { heads: Vec::new() };
        let len = bytes.len() as u32;
        if self.stopped().is_some() || len == 0 {
            return found;
        }
        let mut i = match self.mode {
            UNSYNCED => {
                if !crate::http::begins_request(bytes) {
                    return found;
                }
                self.sync(seq);
                0
            }
            _ => match self.position(seq, len) {
                Position::From(n) => n as usize,
                Position::Old => return found,
                Position::Gap => {
                    self.stop(Stop::Lost);
                    return found;
                }
            },
        };
        while i < bytes.len() {
            let opaque = self.opaque();
            if opaque > 0 {
                if self.stopped().is_some() {
                    break;
                }
                let n = opaque.min((bytes.len() - i) as u64);
                self.skip(n);
                i += n as usize;
                continue;
            }
            match self.byte(parser, bytes[i], config) {
                Look::HeadDone => found.heads.push((i, parser.out)),
                Look::Stopped => break,
                Look::More | Look::Opaque => {}
            }
            i += 1;
        }
        self.next_seq = seq.wrapping_add(len);
        found
    }
}

/// A response head as [`ResponseStream::feed`] found it.
#[cfg(not(target_arch = "bpf"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundResponse {
    /// Payload offset of the byte that completed the head.
    pub end: usize,
    pub head: crate::http::ResponseHead,
}

#[cfg(not(target_arch = "bpf"))]
impl ResponseStream {
    /// The host side of what the kernel does with one segment of the server's stream.
    /// `methods` gives the method of the request each final response answers, in order
    /// (`answered` is how many were answered before this segment).
    pub fn feed(
        &mut self,
        seq: u32,
        bytes: &[u8],
        methods: &[u8],
        config: &CaptureConfig,
    ) -> Vec<FoundResponse> {
        let mut found = Vec::new();
        let len = bytes.len() as u32;
        if self.stopped().is_some() || len == 0 || self.mode != SYNCED {
            return found;
        }
        let mut i = match self.position(seq, len) {
            Position::From(n) => n as usize,
            Position::Old => return found,
            Position::Gap => {
                self.stop(Stop::Lost);
                return found;
            }
        };
        while i < bytes.len() {
            let opaque = self.opaque();
            if opaque > 0 {
                if self.stopped().is_some() {
                    break;
                }
                let n = opaque.min((bytes.len() - i) as u64);
                self.skip(n);
                i += n as usize;
                continue;
            }
            let method = methods.get(self.heads as usize).copied().unwrap_or(0);
            match self.byte(bytes[i], method, config) {
                Look::HeadDone => found.push(FoundResponse {
                    end: i,
                    head: self.parser.out,
                }),
                Look::Stopped => break,
                Look::More | Look::Opaque => {}
            }
            i += 1;
        }
        self.next_seq = seq.wrapping_add(len);
        found
    }
}

#[cfg(test)]
mod tests;
