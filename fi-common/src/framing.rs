//! HTTP/1.x message bodies on a connection's byte stream (RFC 9112 §6, §7.1): where a body
//! ends, so that no body byte is ever taken for a head, however TCP cuts the stream.
//!
//! A [`Framer`] is a few words of state per direction. A Content-Length body, and chunk
//! data, are skipped in bulk ([`Framer::opaque`], [`Framer::skip`]): a body costs one
//! subtraction, not a step per byte. Only the framing bytes of a chunked body (chunk-size
//! lines with their extensions, the line end after the data, trailers) are stepped
//! ([`Framer::body_step`]). Heads are read by the capture parsers of [`crate::http`], which
//! tell the framer how the body that follows is framed ([`Framer::begin_body`]); the two
//! meet in [`crate::stream`]. Where the framing is not known, the direction stops for good
//! ([`Stop`]): fi never guesses.
//!
//! `no_std`, fixed-size state, no recursion: the kernel keeps a framer per flow and
//! direction and drives this same code.

use crate::http::Body;

/// Longest head read (Node's default limit; nginx's is 8 KiB). A longer one stops the
/// direction: counted, never misread.
pub const MAX_HEAD: u32 = 16 * 1024;

/// Why a direction stopped for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Stop {
    /// A head longer than [`MAX_HEAD`].
    HeadTooLong = 1,
    /// A transfer coding other than chunked on a request, or a bad length.
    UnknownFraming = 2,
    /// Bytes that are not HTTP/1.x where a head must start, or a malformed chunk.
    Malformed = 3,
    /// The connection became something else (an upgrade, CONNECT).
    Upgraded = 4,
    /// A response whose body runs until the connection closes.
    UntilClose = 5,
    /// The position in the stream was lost (bytes fi never saw, or state it could not
    /// keep): what follows cannot be known.
    Lost = 6,
}

// States.
/// Between messages: the next byte starts a head (or is an empty line before one).
const IDLE: u8 = 0;
const BODY: u8 = 2;
const CHUNK_SIZE: u8 = 3;
const CHUNK_EXT: u8 = 4;
const CHUNK_DATA: u8 = 5;
const CHUNK_DATA_END: u8 = 6;
const TRAILERS: u8 = 7;
const STOPPED: u8 = 8;

// Line scanning flags.
const L_START: u16 = 1 << 8;
const L_CR: u16 = 1 << 9;
const L_DIGITS: u16 = 1 << 14;

/// The body framing of one direction: 24 bytes, `Copy`, all integers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framer {
    /// Body or chunk bytes still to skip.
    remaining: u64,
    /// The chunk size being read.
    value: u64,
    /// L_* flags.
    flags: u16,
    state: u8,
    /// Why the direction stopped (a [`Stop`] as u8), 0 while it runs.
    stop: u8,
    _pad: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<Framer>() == 24);

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    pub const fn new() -> Framer {
        Framer {
            remaining: 0,
            value: 0,
            flags: 0,
            state: IDLE,
            stop: 0,
            _pad: [0; 4],
        }
    }

    /// Whether the direction is no longer read.
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

    /// How many of the next bytes are body data that can be skipped without a look.
    pub const fn opaque(&self) -> u64 {
        match self.state {
            BODY | CHUNK_DATA => self.remaining,
            STOPPED => u64::MAX,
            _ => 0,
        }
    }

    /// Skips `n` bytes of body data (at most [`Framer::opaque`]).
    pub fn skip(&mut self, n: u64) {
        match self.state {
            BODY => {
                self.remaining = self.remaining.saturating_sub(n);
                if self.remaining == 0 {
                    self.state = IDLE;
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
    }

    /// Frames the body of a message whose head just ended, as its head says.
    #[inline(always)]
    pub fn begin_body(&mut self, body: Body) {
        match body {
            Body::None => self.state = IDLE,
            Body::Length(n) => {
                self.state = BODY;
                self.remaining = u64::from(n);
            }
            Body::Chunked => {
                self.state = CHUNK_SIZE;
                self.flags = 0;
                self.value = 0;
            }
            Body::Unknown => self.halt(Stop::UnknownFraming),
            Body::UntilClose => self.halt(Stop::UntilClose),
        }
    }

    /// Stops the direction for good.
    #[inline(always)]
    pub fn halt(&mut self, why: Stop) {
        self.state = STOPPED;
        self.stop = why as u8;
    }

    /// Looks at one byte of a chunked body's framing (a chunk-size line, the line end
    /// after chunk data, trailers): the only bytes between heads that are not skipped in
    /// bulk. Elsewhere it does nothing.
    #[inline(always)]
    pub fn body_step(&mut self, b: u8) {
        match self.state {
            CHUNK_SIZE => self.chunk_size_byte(b),
            CHUNK_EXT if b == b'\n' => self.chunk_size_done(),
            CHUNK_DATA_END => {
                // CRLF (or a bare LF) after the chunk's data.
                match b {
                    b'\r' if self.flags & L_CR == 0 => self.flags |= L_CR,
                    b'\n' => {
                        self.state = CHUNK_SIZE;
                        self.flags = 0;
                        self.value = 0;
                    }
                    _ => self.halt(Stop::Malformed),
                }
            }
            TRAILERS => self.trailer_byte(b),
            _ => {}
        }
    }

    fn chunk_size_byte(&mut self, b: u8) {
        let digit = match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        };
        let digits = self.flags & L_DIGITS != 0;
        let cr = self.flags & L_CR != 0;
        match (digit, b) {
            (Some(d), _) if !cr => {
                if self.value >> 60 != 0 {
                    return self.halt(Stop::Malformed);
                }
                self.value = (self.value << 4) | u64::from(d);
                self.flags |= L_DIGITS;
            }
            // An extension (or whitespace before one) runs to the end of the line.
            (None, b';' | b' ' | b'\t') if digits && !cr => self.state = CHUNK_EXT,
            (None, b'\r') if digits && !cr => self.flags |= L_CR,
            (None, b'\n') if digits => self.chunk_size_done(),
            _ => self.halt(Stop::Malformed),
        }
    }

    fn chunk_size_done(&mut self) {
        self.flags = 0;
        if self.value == 0 {
            // The last chunk: trailer fields until an empty line.
            self.state = TRAILERS;
            self.flags = L_START;
            return;
        }
        self.remaining = self.value;
        self.value = 0;
        self.state = CHUNK_DATA;
    }

    fn trailer_byte(&mut self, b: u8) {
        match b {
            b'\n' if self.flags & L_START != 0 => {
                self.state = IDLE;
                self.flags = 0;
            }
            b'\n' => self.flags = L_START,
            b'\r' => {}
            _ => self.flags &= !L_START,
        }
    }
}
