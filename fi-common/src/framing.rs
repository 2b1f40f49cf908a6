//! HTTP/1.x message framing on a connection's byte stream, in both directions
//! (RFC 9112 §6): where each head starts, which byte completes it, and where its message
//! ends, however TCP cuts the stream. No body byte is ever taken for a head.
//!
//! One [`Framer`] per direction, a few words of state, fed byte by byte inside heads and
//! chunk-size lines ([`Framer::step`]) and skipping body data in bulk ([`Framer::opaque`],
//! [`Framer::skip`]): a body costs one subtraction, not a step per byte. The two directions
//! meet in [`Connection`]: a response's framing depends on its request (HEAD, CONNECT),
//! and an upgrade (101) ends parsing in both directions for good. Where the framing is not
//! known (a transfer coding other than chunked, a head over [`MAX_HEAD`] bytes, a malformed
//! length), the direction stops for good: fi never guesses.
//!
//! `no_std`, fixed-size state, no recursion: the kernel can keep a [`Framer`] per flow and
//! direction and drive the same code.

/// Longest head framed (Node's default limit; nginx's is 8 KiB). A longer one stops the
/// direction: counted, never misread.
pub const MAX_HEAD: u32 = 16 * 1024;

/// What a byte did to the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing to report.
    None,
    /// The first byte of a head.
    HeadStart,
    /// The byte that completes a head. The message's body (if any) follows.
    HeadEnd,
    /// The byte that completes a head that has no body: the message ends here too.
    HeadEndMessageEnd,
    /// The last byte of a body: the message ends here.
    MessageEnd,
    /// From this byte on the direction is not parsed any more (see [`Stop`]).
    Stopped(Stop),
}

/// Why a direction stopped for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Stop {
    /// A head longer than [`MAX_HEAD`].
    HeadTooLong = 1,
    /// A request with a transfer coding other than chunked, or conflicting lengths.
    UnknownFraming = 2,
    /// Bytes that are not HTTP/1.x where a head must start, or a malformed chunk.
    Malformed = 3,
    /// The connection became something else (101 Switching Protocols, CONNECT 2xx).
    Upgraded = 4,
    /// A response whose body runs until the connection closes.
    UntilClose = 5,
    /// The position in the stream was lost (bytes fi never saw, or state it could not
    /// keep): what follows cannot be known.
    Lost = 6,
}

/// The method of a request, as far as framing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MethodKind {
    Other = 0,
    /// Its response has no body.
    Head = 1,
    /// A 2xx response turns the connection into a tunnel.
    Connect = 2,
}

/// Which direction a framer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Side {
    Request = 0,
    Response = 1,
}

// States.
const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BODY: u8 = 2;
const CHUNK_SIZE: u8 = 3;
const CHUNK_EXT: u8 = 4;
const CHUNK_DATA: u8 = 5;
const CHUNK_DATA_END: u8 = 6;
const TRAILERS: u8 = 7;
const STOPPED: u8 = 8;

// Header fields the framer reads (lower case), by bit.
const NAMES: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"upgrade"];
const F_CONTENT_LENGTH: u8 = 1 << 0;
const F_TRANSFER_ENCODING: u8 = 1 << 1;
const F_UPGRADE: u8 = 1 << 2;

// What the head said (flags).
const H_LENGTH: u16 = 1 << 0;
const H_CHUNKED_LAST: u16 = 1 << 1;
const H_CODING: u16 = 1 << 2;
const H_BAD_LENGTH: u16 = 1 << 3;
const H_UPGRADE: u16 = 1 << 4;
// Line scanning.
const L_START: u16 = 1 << 8;
const L_CR: u16 = 1 << 9;
const L_IN_VALUE: u16 = 1 << 10;
const L_FIRST_LINE: u16 = 1 << 11;
const L_TOKEN_CHUNKED: u16 = 1 << 12;
const L_TOKEN_STARTED: u16 = 1 << 13;
const L_DIGITS: u16 = 1 << 14;

/// One direction of a connection. 32 bytes, `Copy`, all integers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framer {
    /// Body or chunk bytes still to skip; the Content-Length being read.
    remaining: u64,
    /// The current value (Content-Length digits, chunk size) while it is read.
    value: u64,
    /// Bytes of the current head so far.
    head_len: u32,
    /// Column in the current line (saturating), for names and the first line.
    col: u16,
    /// H_* and L_* flags.
    flags: u16,
    state: u8,
    side: u8,
    /// Which of [`NAMES`] the current header name still matches (bits), then which one
    /// is being read (its bit) once the colon is seen.
    names: u8,
    /// Requests: the method kind. Responses: the first two status digits' state.
    method: u8,
    /// Responses: the status code being read, then read.
    status: u16,
    /// Why the direction stopped (a [`Stop`] as u8), 0 while it runs.
    stop: u8,
    /// The first line's check: requests, how the method matches (M_*); responses, 3 when
    /// the status line is malformed.
    mark: u8,
}

// First-line marks.
const M_MATCHING: u8 = 0;
const M_OTHER: u8 = 1;
const M_MATCHED: u8 = 2;
const M_MALFORMED: u8 = 3;
/// The end of a request line: " HTTP/1." and a digit.
const VERSION: &[u8] = b" HTTP/1.";

const _: () = assert!(core::mem::size_of::<Framer>() == 32);

impl Framer {
    pub const fn new(side: Side) -> Framer {
        Framer {
            remaining: 0,
            value: 0,
            head_len: 0,
            col: 0,
            flags: 0,
            state: IDLE,
            side: side as u8,
            names: 0,
            method: 0,
            status: 0,
            stop: 0,
            mark: 0,
        }
    }

    /// Whether the direction is no longer parsed.
    pub const fn stopped(&self) -> Option<Stop> {
        match self.stop {
            1 => Some(Stop::HeadTooLong),
            2 => Some(Stop::UnknownFraming),
            3 => Some(Stop::Malformed),
            4 => Some(Stop::Upgraded),
            5 => Some(Stop::UntilClose),
            6 => Some(Stop::Lost),
            _ => None,
        }
    }

    /// Whether the next byte starts a message (or is an empty line before one).
    pub const fn idle(&self) -> bool {
        self.state == IDLE
    }

    /// Frames the body of a message whose head another parser read ([`crate::stream`]
    /// reads heads with the capture parsers, which know their framing headers).
    #[inline(always)]
    pub fn begin_body(&mut self, body: crate::http::Body) -> Event {
        match body {
            crate::http::Body::None => {
                self.state = IDLE;
                Event::HeadEndMessageEnd
            }
            crate::http::Body::Length(n) => {
                self.state = BODY;
                self.remaining = u64::from(n);
                Event::HeadEnd
            }
            crate::http::Body::Chunked => self.begin_chunked(),
            crate::http::Body::Unknown => self.stop(Stop::UnknownFraming),
            crate::http::Body::UntilClose => self.stop(Stop::UntilClose),
        }
    }

    /// Stops the direction for good.
    #[inline(always)]
    pub fn halt(&mut self, why: Stop) -> Event {
        self.stop(why)
    }

    /// Whether a head is being read (started, not complete).
    pub const fn in_head(&self) -> bool {
        self.state == HEAD
    }

    /// How many of the next bytes are body data that can be skipped without a look.
    pub const fn opaque(&self) -> u64 {
        match self.state {
            BODY | CHUNK_DATA => self.remaining,
            STOPPED => u64::MAX,
            _ => 0,
        }
    }

    /// Skips `n` bytes of body data (at most [`Framer::opaque`]). Returns
    /// [`Event::MessageEnd`] when they end the message.
    pub fn skip(&mut self, n: u64) -> Event {
        match self.state {
            BODY => {
                self.remaining = self.remaining.saturating_sub(n);
                if self.remaining == 0 {
                    self.state = IDLE;
                    return Event::MessageEnd;
                }
            }
            CHUNK_DATA => {
                self.remaining = self.remaining.saturating_sub(n);
                if self.remaining == 0 {
                    self.state = CHUNK_DATA_END;
                    self.flags = 0;
                }
            }
            _ => {}
        }
        Event::None
    }

    /// The method kind of the request whose head just ended (requests only).
    pub const fn method(&self) -> MethodKind {
        match self.method {
            1 => MethodKind::Head,
            2 => MethodKind::Connect,
            _ => MethodKind::Other,
        }
    }

    /// The status of the response whose head just ended (responses only).
    pub const fn status(&self) -> u16 {
        self.status
    }

    /// Whether the request whose head just ended asks to upgrade the connection.
    pub const fn wants_upgrade(&self) -> bool {
        self.flags & H_UPGRADE != 0
    }

    fn stop(&mut self, why: Stop) -> Event {
        self.state = STOPPED;
        self.stop = why as u8;
        Event::Stopped(why)
    }

    /// Looks at one byte that [`Framer::opaque`] does not cover. A response's head end
    /// needs its request's method: see [`Framer::finish_response_head`] (the
    /// [`Connection`] does it).
    pub fn step(&mut self, b: u8) -> Event {
        match self.state {
            IDLE => {
                // Empty lines before a message are ignored (RFC 9112 §2.2).
                if b == b'\r' || b == b'\n' {
                    return Event::None;
                }
                self.state = HEAD;
                self.head_len = 0;
                self.col = 0;
                self.flags = L_FIRST_LINE;
                self.names = 0;
                self.method = 0;
                self.mark = M_MATCHING;
                self.status = 0;
                self.value = 0;
                self.remaining = 0;
                match self.head_byte(b) {
                    Event::None => Event::HeadStart,
                    other => other,
                }
            }
            HEAD => self.head_byte(b),
            _ => self.body_step(b),
        }
    }

    /// Looks at one byte of a chunked body's framing (a chunk-size line, the CRLF after
    /// chunk data, trailers), the only bytes between heads that are not skipped in bulk.
    /// Elsewhere it does nothing: heads are read by [`Framer::step`] or another parser.
    #[inline(always)]
    pub fn body_step(&mut self, b: u8) -> Event {
        match self.state {
            CHUNK_SIZE => self.chunk_size_byte(b),
            CHUNK_EXT => {
                if b == b'\n' {
                    self.chunk_size_done()
                } else {
                    Event::None
                }
            }
            CHUNK_DATA_END => {
                // CRLF (or a bare LF) after the chunk's data.
                match b {
                    b'\r' if self.flags & L_CR == 0 => {
                        self.flags |= L_CR;
                        Event::None
                    }
                    b'\n' => {
                        self.state = CHUNK_SIZE;
                        self.flags = 0;
                        self.value = 0;
                        Event::None
                    }
                    _ => self.stop(Stop::Malformed),
                }
            }
            TRAILERS => self.trailer_byte(b),
            _ => Event::None,
        }
    }

    fn head_byte(&mut self, b: u8) -> Event {
        self.head_len += 1;
        if self.head_len > MAX_HEAD {
            return self.stop(Stop::HeadTooLong);
        }
        if b == b'\n' {
            if self.flags & L_START != 0 {
                // An empty line: the head is complete.
                return self.end_of_head();
            }
            if self.flags & L_FIRST_LINE != 0 && !self.first_line_ok() {
                return self.stop(Stop::Malformed);
            }
            self.end_of_field();
            self.flags = (self.flags & 0x00ff) | L_START;
            self.col = 0;
            self.names = 0;
            return Event::None;
        }
        if b == b'\r' {
            // Only before LF; a CR elsewhere is part of a value (servers refuse it, fi does
            // not need to).
            self.flags |= L_CR;
            return Event::None;
        }
        let at_start = self.flags & L_START != 0;
        self.flags &= !(L_START | L_CR);
        if self.flags & L_FIRST_LINE != 0 {
            self.first_line_byte(b);
        } else if at_start && (b == b' ' || b == b'\t') {
            // Obsolete line folding: the previous field goes on; fi reads it as ended.
            self.names = 0;
        } else if self.flags & L_IN_VALUE != 0 {
            self.value_byte(b);
        } else if b == b':' {
            self.names &= self.complete_names();
            if self.names != 0 {
                self.flags |= L_IN_VALUE;
                self.flags &= !(L_TOKEN_CHUNKED | L_TOKEN_STARTED | L_DIGITS);
                self.value = 0;
                if self.names & F_TRANSFER_ENCODING != 0 {
                    self.flags |= H_CODING;
                }
                if self.names & F_UPGRADE != 0 && self.side == Side::Request as u8 {
                    self.flags |= H_UPGRADE;
                }
            }
        } else {
            self.name_byte(b, at_start);
        }
        self.col = self.col.saturating_add(1);
        Event::None
    }

    /// The request line's method and version, or the status line's code.
    fn first_line_byte(&mut self, b: u8) {
        let col = self.col as usize;
        if self.side == Side::Request as u8 {
            self.method_byte(col, b);
            // The version at the end of the line, matched as the line goes: `value` counts
            // the bytes of " HTTP/1.d" seen in a row (a space restarts it).
            let k = self.value as usize;
            let next = (k < VERSION.len() && VERSION[k] == b)
                || (k == VERSION.len() && b.is_ascii_digit());
            self.value = if next {
                k as u64 + 1
            } else if b == b' ' {
                1
            } else {
                0
            };
        } else {
            // "HTTP/1.x NNN": the digits are columns 9..=11.
            const PREFIX: &[u8] = b"HTTP/1.";
            let ok = match col {
                0..=6 => PREFIX[col] == b,
                7 => b.is_ascii_digit(),
                8 => b == b' ',
                9..=11 => {
                    self.status = self.status * 10 + u16::from(b.wrapping_sub(b'0'));
                    b.is_ascii_digit()
                }
                _ => true,
            };
            if !ok {
                self.mark = M_MALFORMED;
            }
        }
    }

    /// The method token: letters up to the first space; HEAD and CONNECT matched in place.
    fn method_byte(&mut self, col: usize, b: u8) {
        const HEAD_: &[u8] = b"HEAD ";
        const CONNECT_: &[u8] = b"CONNECT ";
        if self.mark == M_MALFORMED || self.mark == M_MATCHED {
            return;
        }
        if col == 0 {
            self.method = match b {
                b'H' => MethodKind::Head as u8,
                b'C' => MethodKind::Connect as u8,
                _ => MethodKind::Other as u8,
            };
            self.mark = if self.method == 0 {
                M_OTHER
            } else {
                M_MATCHING
            };
        } else if self.mark == M_MATCHING {
            let expected = match self.method {
                1 => HEAD_.get(col),
                _ => CONNECT_.get(col),
            };
            if expected != Some(&b) {
                self.mark = M_OTHER;
                self.method = 0;
            } else if b == b' ' {
                self.mark = M_MATCHED;
                return;
            }
        }
        if b == b' ' {
            // The method ended (another one).
            self.mark = if col == 0 { M_MALFORMED } else { M_MATCHED };
            self.method = if self.mark == M_MATCHED {
                0
            } else {
                self.method
            };
        } else if !b.is_ascii_alphabetic() && b != b'-' && b != b'_' {
            self.mark = M_MALFORMED;
        }
    }

    fn first_line_ok(&mut self) -> bool {
        self.flags &= !L_FIRST_LINE;
        if self.side == Side::Request as u8 {
            let ok = self.mark == M_MATCHED && self.value as usize == VERSION.len() + 1;
            self.value = 0;
            ok
        } else {
            self.mark != M_MALFORMED && self.col >= 12 && (100..=999).contains(&self.status)
        }
    }

    fn name_byte(&mut self, b: u8, at_start: bool) {
        if at_start {
            self.names = (1 << NAMES.len()) - 1;
            self.col = 0;
        }
        let col = self.col as usize;
        let lower = b.to_ascii_lowercase();
        let mut i = 0;
        while i < NAMES.len() {
            let bit = 1 << i;
            if self.names & bit != 0 && NAMES[i].get(col) != Some(&lower) {
                self.names &= !bit;
            }
            i += 1;
        }
    }

    /// The names fully matched at the colon.
    fn complete_names(&self) -> u8 {
        let mut complete = 0;
        let mut i = 0;
        while i < NAMES.len() {
            if NAMES[i].len() == self.col as usize {
                complete |= 1 << i;
            }
            i += 1;
        }
        complete
    }

    fn value_byte(&mut self, b: u8) {
        if self.names & F_CONTENT_LENGTH != 0 {
            match b {
                b'0'..=b'9' => {
                    if self.flags & L_TOKEN_STARTED != 0 && self.flags & L_DIGITS == 0 {
                        // Digits after a gap ("1 2"): not a length.
                        self.flags |= H_BAD_LENGTH;
                    }
                    self.flags |= L_DIGITS | L_TOKEN_STARTED;
                    self.value = match self
                        .value
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(b - b'0')))
                    {
                        Some(v) => v,
                        None => {
                            self.flags |= H_BAD_LENGTH;
                            0
                        }
                    };
                }
                b' ' | b'\t' => {
                    if self.flags & L_DIGITS != 0 {
                        self.flags &= !L_DIGITS;
                    }
                }
                _ => self.flags |= H_BAD_LENGTH,
            }
        } else if self.names & F_TRANSFER_ENCODING != 0 {
            // Is the last coding of the list "chunked"? Match each token in place.
            match b {
                b',' => self.flags &= !(L_TOKEN_STARTED | L_TOKEN_CHUNKED),
                b' ' | b'\t' => {
                    if self.flags & L_TOKEN_STARTED != 0 {
                        // After a token: its end (parameters are not chunked's).
                        self.flags |= L_DIGITS;
                    }
                }
                _ => {
                    let col = if self.flags & L_TOKEN_STARTED == 0 {
                        self.flags |= L_TOKEN_STARTED | L_TOKEN_CHUNKED;
                        self.flags &= !L_DIGITS;
                        self.value = 0;
                        0
                    } else {
                        self.value as usize
                    };
                    if self.flags & L_DIGITS != 0
                        || b"chunked".get(col) != Some(&b.to_ascii_lowercase())
                    {
                        self.flags &= !L_TOKEN_CHUNKED;
                    }
                    self.value = col as u64 + 1;
                }
            }
        }
    }

    /// A header field's line ended: take what it said.
    fn end_of_field(&mut self) {
        if self.flags & L_IN_VALUE == 0 {
            return;
        }
        if self.names & F_CONTENT_LENGTH != 0 {
            if self.flags & L_TOKEN_STARTED == 0 {
                self.flags |= H_BAD_LENGTH;
            } else if self.flags & H_LENGTH != 0 && self.remaining != self.value {
                // Two lengths that differ.
                self.flags |= H_BAD_LENGTH;
            }
            self.flags |= H_LENGTH;
            self.remaining = self.value;
        }
        if self.names & F_TRANSFER_ENCODING != 0 {
            let chunked = self.flags & L_TOKEN_CHUNKED != 0 && self.value == 7;
            if chunked {
                self.flags |= H_CHUNKED_LAST;
            } else if self.flags & L_TOKEN_STARTED != 0 {
                self.flags &= !H_CHUNKED_LAST;
            }
        }
        self.flags &= !(L_IN_VALUE | L_TOKEN_STARTED | L_TOKEN_CHUNKED | L_DIGITS);
        self.names = 0;
    }

    fn end_of_head(&mut self) -> Event {
        if self.side == Side::Request as u8 {
            self.finish_request_head()
        } else {
            // The connection decides with the request's method.
            Event::HeadEnd
        }
    }

    fn finish_request_head(&mut self) -> Event {
        if self.flags & H_CODING != 0 {
            // RFC 9112 §6.3: a request whose last coding is not chunked cannot be framed.
            if self.flags & H_CHUNKED_LAST == 0 {
                return self.stop(Stop::UnknownFraming);
            }
            return self.begin_chunked();
        }
        if self.flags & H_BAD_LENGTH != 0 {
            return self.stop(Stop::UnknownFraming);
        }
        if self.flags & H_LENGTH != 0 && self.remaining > 0 {
            self.state = BODY;
            return Event::HeadEnd;
        }
        self.state = IDLE;
        Event::HeadEndMessageEnd
    }

    /// Frames the body of a response whose head just ended ([`Event::HeadEnd`] from
    /// [`Framer::step`]), given its request's method. Returns the event that replaces it.
    pub fn finish_response_head(&mut self, request: MethodKind) -> Event {
        let status = self.status;
        if status == 101 || (request == MethodKind::Connect && (200..300).contains(&status)) {
            self.stop = Stop::Upgraded as u8;
            self.state = STOPPED;
            return Event::HeadEndMessageEnd;
        }
        if (100..200).contains(&status)
            || status == 204
            || status == 304
            || request == MethodKind::Head
        {
            self.state = IDLE;
            return Event::HeadEndMessageEnd;
        }
        if self.flags & H_CODING != 0 {
            if self.flags & H_CHUNKED_LAST != 0 {
                return self.begin_chunked();
            }
            // Another coding: the body runs until the connection closes.
            self.stop = Stop::UntilClose as u8;
            self.state = STOPPED;
            return Event::HeadEnd;
        }
        if self.flags & H_BAD_LENGTH != 0 {
            return self.stop(Stop::UnknownFraming);
        }
        if self.flags & H_LENGTH != 0 {
            if self.remaining == 0 {
                self.state = IDLE;
                return Event::HeadEndMessageEnd;
            }
            self.state = BODY;
            return Event::HeadEnd;
        }
        self.stop = Stop::UntilClose as u8;
        self.state = STOPPED;
        Event::HeadEnd
    }

    fn begin_chunked(&mut self) -> Event {
        self.state = CHUNK_SIZE;
        self.flags = 0;
        self.value = 0;
        Event::HeadEnd
    }

    fn chunk_size_byte(&mut self, b: u8) -> Event {
        let digit = match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        };
        match (digit, b) {
            (Some(d), _) if self.flags & L_CR == 0 => {
                if self.value >> 60 != 0 {
                    return self.stop(Stop::Malformed);
                }
                self.value = (self.value << 4) | u64::from(d);
                self.flags |= L_DIGITS;
                Event::None
            }
            (None, b';' | b' ' | b'\t') if self.flags & L_DIGITS != 0 && self.flags & L_CR == 0 => {
                self.state = CHUNK_EXT;
                Event::None
            }
            (None, b'\r') if self.flags & L_DIGITS != 0 && self.flags & L_CR == 0 => {
                self.flags |= L_CR;
                Event::None
            }
            (None, b'\n') if self.flags & L_DIGITS != 0 => self.chunk_size_done(),
            _ => self.stop(Stop::Malformed),
        }
    }

    fn chunk_size_done(&mut self) -> Event {
        self.flags = 0;
        if self.value == 0 {
            // The last chunk: trailer fields until an empty line.
            self.state = TRAILERS;
            self.flags = L_START;
            return Event::None;
        }
        self.remaining = self.value;
        self.value = 0;
        self.state = CHUNK_DATA;
        Event::None
    }

    fn trailer_byte(&mut self, b: u8) -> Event {
        match b {
            b'\n' if self.flags & L_START != 0 => {
                self.state = IDLE;
                self.flags = 0;
                Event::MessageEnd
            }
            b'\n' => {
                self.flags = L_START;
                Event::None
            }
            b'\r' => Event::None,
            _ => {
                self.flags &= !L_START;
                Event::None
            }
        }
    }
}

/// How many requests may wait for their responses on one connection (pipelining depth
/// fi follows; deeper pipelines stop the response direction).
pub const PENDING: usize = 8;

/// Both directions of one connection, with the methods of requests still waiting for
/// their responses. The kernel keeps the same fields in its flow state; each has one
/// writer (the request side writes `pending` at `sent`, the response side moves `answered`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    pub request: Framer,
    pub response: Framer,
    pending: [u8; PENDING],
    /// Requests whose heads ended (request side only writes it).
    sent: u32,
    /// Final responses whose heads ended (response side only writes it).
    answered: u32,
    /// The request side waits for an upgrade's answer (its bytes are not parsed until
    /// the response side says how it went).
    upgrade_asked: u32,
    _pad: u32,
}

const _: () = assert!(core::mem::size_of::<Connection>() == 88);

/// A message boundary, as [`Connection::feed`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Boundary {
    pub side: Side,
    /// Offset in the direction's stream.
    pub offset: u64,
    pub event: Event,
}

impl Default for Connection {
    fn default() -> Self {
        Self::new()
    }
}

impl Connection {
    pub const fn new() -> Connection {
        Connection {
            request: Framer::new(Side::Request),
            response: Framer::new(Side::Response),
            pending: [0; PENDING],
            sent: 0,
            answered: 0,
            upgrade_asked: 0,
            _pad: 0,
        }
    }

    /// Whether the request side waits for the response to an upgrade (a byte sent before
    /// it stops the request side for good).
    pub const fn request_waits(&self) -> bool {
        self.upgrade_asked != 0
    }

    /// One byte of the request stream (not covered by [`Framer::opaque`]).
    pub fn request_byte(&mut self, b: u8) -> Event {
        if self.request_waits() {
            // Bytes sent before the answer to an upgrade: whether they are HTTP depends on
            // that answer. Never guess.
            if self.request.stopped().is_none() {
                return self.request.stop(Stop::UnknownFraming);
            }
            return Event::None;
        }
        let event = self.request.step(b);
        if matches!(event, Event::HeadEnd | Event::HeadEndMessageEnd) {
            let slot = self.sent as usize % PENDING;
            self.pending[slot] = self.request.method() as u8;
            self.sent = self.sent.wrapping_add(1);
            if self.request.wants_upgrade() || self.request.method() == MethodKind::Connect {
                self.upgrade_asked = 1;
            }
        }
        event
    }

    /// One byte of the response stream (not covered by [`Framer::opaque`]).
    pub fn response_byte(&mut self, b: u8) -> Event {
        let event = self.response.step(b);
        if event != Event::HeadEnd || self.response.stopped().is_some() {
            return event;
        }
        let status = self.response.status();
        let interim = (100..200).contains(&status) && status != 101;
        let outstanding = self.sent.wrapping_sub(self.answered);
        if !interim && (outstanding == 0 || outstanding as usize > PENDING) {
            // A response to nothing fi saw, or deeper than it follows: stop.
            return self.response.stop(Stop::Malformed);
        }
        let slot = self.answered as usize % PENDING;
        let method = match self.pending[slot] {
            1 => MethodKind::Head,
            2 => MethodKind::Connect,
            _ => MethodKind::Other,
        };
        let event = self.response.finish_response_head(method);
        if !interim {
            self.answered = self.answered.wrapping_add(1);
            if self.upgrade_asked != 0 && self.answered == self.sent {
                if self.response.stopped() == Some(Stop::Upgraded) {
                    self.request.state = STOPPED;
                    self.request.stop = Stop::Upgraded as u8;
                }
                self.upgrade_asked = 0;
            }
        }
        event
    }

    /// Feeds a segment of one direction, calling `on` for every boundary in it. Body
    /// data is skipped in bulk.
    pub fn feed(&mut self, side: Side, start: u64, bytes: &[u8], mut on: impl FnMut(Boundary)) {
        let mut i = 0usize;
        while i < bytes.len() {
            let framer = match side {
                Side::Request => &mut self.request,
                Side::Response => &mut self.response,
            };
            let opaque = framer.opaque();
            if opaque > 0 {
                let n = opaque.min((bytes.len() - i) as u64);
                let event = framer.skip(n);
                i += n as usize;
                if event != Event::None {
                    on(Boundary {
                        side,
                        offset: start + i as u64 - 1,
                        event,
                    });
                }
                continue;
            }
            let event = match side {
                Side::Request => self.request_byte(bytes[i]),
                Side::Response => self.response_byte(bytes[i]),
            };
            if event != Event::None {
                on(Boundary {
                    side,
                    offset: start + i as u64,
                    event,
                });
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests;
