//! HTTP/1.x request and response heads, parsed one byte at a time.
//!
//! The parser is a state machine whose step function ([`RequestParser::step`],
//! [`ResponseParser::step`]) looks at one byte. On the host a plain loop drives it
//! ([`parse_request`], [`parse_response`]); in the kernel `bpf_loop` does, so the verifier
//! checks the step once instead of unrolling a loop over every byte. Both run this code.
//!
//! Bounds: the target is kept up to [`PATH_LEN`] bytes (longer ones are flagged
//! [`FLAG_PATH_TRUNCATED`], never misparsed), the Host value up to [`HOST_LEN`], each
//! captured header up to [`HEADER_VALUE_LEN`]; a head is looked at up to [`SCAN_LEN`] bytes.
//! Every index into a fixed array is masked or checked against a constant, which is what
//! lets the verifier accept it.

use crate::rule::RequestDigest;

/// Bytes of a packet's payload that the kernel copies out and scans (power of two).
pub const SCAN_LEN: usize = 2048;
pub use crate::limits::{CAPTURE_SLOTS, PATH_LEN};
/// Bytes of the Host header value kept (power of two).
pub const HOST_LEN: usize = 64;
/// Bytes of each captured header value kept (power of two).
pub const HEADER_VALUE_LEN: usize = 64;
/// Longest configurable header name (power of two).
pub const HEADER_NAME_LEN: usize = 32;
/// Heads parsed by the main TC programs from one segment: the first; pipelined heads
/// behind it are parsed by the followers programs (see [`RequestFollowers`]).
pub const MAX_HEADS_PER_PACKET: usize = 1;

/// The target was longer than [`PATH_LEN`]; `path` holds its first bytes.
pub const FLAG_PATH_TRUNCATED: u16 = 1 << 0;
/// The Host value was longer than [`HOST_LEN`].
pub const FLAG_HOST_TRUNCATED: u16 = 1 << 1;
/// A Content-Length header was present (`content_length` is valid).
pub const FLAG_CONTENT_LENGTH: u16 = 1 << 2;
/// `Transfer-Encoding: chunked`: the body's end is not known from the head.
pub const FLAG_CHUNKED: u16 = 1 << 3;
/// The head did not end within the bytes scanned (headers are partial).
pub const FLAG_HEAD_INCOMPLETE: u16 = 1 << 4;
/// The target is in absolute form (`http://host/path`); `path` holds it whole.
pub const FLAG_ABSOLUTE_FORM: u16 = 1 << 5;
/// A captured header value was longer than [`HEADER_VALUE_LEN`].
pub const FLAG_HEADER_TRUNCATED: u16 = 1 << 6;

/// Request methods (RFC 9110 and PATCH). 0 is "not a request".
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get = 1,
    Head = 2,
    Post = 3,
    Put = 4,
    Delete = 5,
    Connect = 6,
    Options = 7,
    Trace = 8,
    Patch = 9,
}

impl Method {
    pub const ALL: [Method; 9] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Connect,
        Method::Options,
        Method::Trace,
        Method::Patch,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
        }
    }

    pub const fn from_u8(value: u8) -> Option<Method> {
        match value {
            1 => Some(Method::Get),
            2 => Some(Method::Head),
            3 => Some(Method::Post),
            4 => Some(Method::Put),
            5 => Some(Method::Delete),
            6 => Some(Method::Connect),
            7 => Some(Method::Options),
            8 => Some(Method::Trace),
            9 => Some(Method::Patch),
            _ => None,
        }
    }
}

/// Recognizes the method token and its space at the start of `prefix` (the first 8 bytes
/// of a payload, zero-padded). Returns the method and the length of "METHOD ".
/// Constant work: this is how non-HTTP traffic is passed with almost no cost.
#[inline(always)]
pub fn method_prefix(prefix: &[u8; 8]) -> Option<(Method, usize)> {
    let p = prefix;
    let m = match p[0] {
        b'G' if p[1] == b'E' && p[2] == b'T' && p[3] == b' ' => (Method::Get, 4),
        b'H' if p[1] == b'E' && p[2] == b'A' && p[3] == b'D' && p[4] == b' ' => (Method::Head, 5),
        b'P' if p[1] == b'O' && p[2] == b'S' && p[3] == b'T' && p[4] == b' ' => (Method::Post, 5),
        b'P' if p[1] == b'U' && p[2] == b'T' && p[3] == b' ' => (Method::Put, 4),
        b'P' if p[1] == b'A' && p[2] == b'T' && p[3] == b'C' && p[4] == b'H' && p[5] == b' ' => {
            (Method::Patch, 6)
        }
        b'D' if p[1] == b'E'
            && p[2] == b'L'
            && p[3] == b'E'
            && p[4] == b'T'
            && p[5] == b'E'
            && p[6] == b' ' =>
        {
            (Method::Delete, 7)
        }
        b'C' if p[1] == b'O'
            && p[2] == b'N'
            && p[3] == b'N'
            && p[4] == b'E'
            && p[5] == b'C'
            && p[6] == b'T'
            && p[7] == b' ' =>
        {
            (Method::Connect, 8)
        }
        b'O' if p[1] == b'P'
            && p[2] == b'T'
            && p[3] == b'I'
            && p[4] == b'O'
            && p[5] == b'N'
            && p[6] == b'S'
            && p[7] == b' ' =>
        {
            (Method::Options, 8)
        }
        b'T' if p[1] == b'R' && p[2] == b'A' && p[3] == b'C' && p[4] == b'E' && p[5] == b' ' => {
            (Method::Trace, 6)
        }
        _ => return None,
    };
    Some(m)
}

/// Recognizes "HTTP/1.x NNN" at the start of a response (`prefix` = its first 12 bytes).
/// Returns the status code and the minor version.
#[inline(always)]
pub fn status_prefix(prefix: &[u8; 12]) -> Option<(u16, u8)> {
    let p = prefix;
    if !(p[0] == b'H'
        && p[1] == b'T'
        && p[2] == b'T'
        && p[3] == b'P'
        && p[4] == b'/'
        && p[5] == b'1'
        && p[6] == b'.'
        && (p[7] == b'0' || p[7] == b'1')
        && p[8] == b' ')
    {
        return None;
    }
    let (a, b, c) = (p[9], p[10], p[11]);
    if !(a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit()) || a == b'0' {
        return None;
    }
    let status = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    Some((status, p[7] - b'0'))
}

/// Names of the headers captured into the [`CAPTURE_SLOTS`] slots, lower-case ASCII.
/// A slot with `len == 0` is unused. Configured by the daemon (a one-entry map).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    pub names: [[u8; HEADER_NAME_LEN]; CAPTURE_SLOTS],
    pub lens: [u8; CAPTURE_SLOTS],
    pub _pad: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<CaptureConfig>() == 136);

impl CaptureConfig {
    pub const EMPTY: CaptureConfig = CaptureConfig {
        names: [[0; HEADER_NAME_LEN]; CAPTURE_SLOTS],
        lens: [0; CAPTURE_SLOTS],
        _pad: [0; 4],
    };

    /// Builds a config from header names. Names are lower-cased; errors name the culprit.
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<CaptureConfig, CaptureConfigError> {
        let mut config = CaptureConfig::EMPTY;
        for (slot, name) in names.into_iter().enumerate() {
            if slot >= CAPTURE_SLOTS {
                return Err(CaptureConfigError::TooMany);
            }
            let bytes = name.as_bytes();
            if bytes.is_empty() || bytes.len() > HEADER_NAME_LEN {
                return Err(CaptureConfigError::BadLength(slot));
            }
            if !bytes.iter().all(|b| is_token_char(*b)) {
                return Err(CaptureConfigError::BadChar(slot));
            }
            for (i, b) in bytes.iter().enumerate() {
                config.names[slot][i] = b.to_ascii_lowercase();
            }
            config.lens[slot] = bytes.len() as u8;
        }
        Ok(config)
    }
}

/// Why a capture configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureConfigError {
    /// More than [`CAPTURE_SLOTS`] names.
    TooMany,
    /// The name in this slot is empty or longer than [`HEADER_NAME_LEN`].
    BadLength(usize),
    /// The name in this slot has a character not allowed in a header name.
    BadChar(usize),
}

/// RFC 9110 token characters (header names).
pub const fn is_token_char(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
        | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// What a request head says, as the kernel reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// [`Method`] as u8.
    pub method: u8,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// FLAG_* bits.
    pub flags: u16,
    /// Length of the whole target (may exceed [`PATH_LEN`]; see the flag).
    pub path_len: u16,
    /// Bytes of the Host value kept.
    pub host_len: u8,
    pub _pad0: u8,
    /// Bytes of each captured header value kept; 0 = absent.
    pub header_lens: [u8; CAPTURE_SLOTS],
    /// Content-Length, if FLAG_CONTENT_LENGTH.
    pub content_length: u32,
    /// Length of the head (request line, headers, blank line), if complete.
    pub head_len: u32,
    pub _pad1: u32,
    pub path: [u8; PATH_LEN],
    pub host: [u8; HOST_LEN],
    pub headers: [[u8; HEADER_VALUE_LEN]; CAPTURE_SLOTS],
}
const _: () = assert!(core::mem::size_of::<RequestHead>() == 24 + PATH_LEN + HOST_LEN + 256);

impl RequestHead {
    pub const EMPTY: RequestHead = RequestHead {
        method: 0,
        version_minor: 0,
        flags: 0,
        path_len: 0,
        host_len: 0,
        _pad0: 0,
        header_lens: [0; CAPTURE_SLOTS],
        content_length: 0,
        head_len: 0,
        _pad1: 0,
        path: [0; PATH_LEN],
        host: [0; HOST_LEN],
        headers: [[0; HEADER_VALUE_LEN]; CAPTURE_SLOTS],
    };

    /// The kept bytes of the target.
    pub fn path_bytes(&self) -> &[u8] {
        let len = (self.path_len as usize).min(PATH_LEN);
        &self.path[..len]
    }

    pub fn host_bytes(&self) -> &[u8] {
        &self.host[..(self.host_len as usize).min(HOST_LEN)]
    }

    /// The kept bytes of captured header `slot`, if it was present.
    pub fn header_bytes(&self, slot: usize) -> Option<&[u8]> {
        let len = *self.header_lens.get(slot)? as usize;
        (len > 0).then(|| &self.headers[slot][..len.min(HEADER_VALUE_LEN)])
    }

    /// Bytes from the head's start to the end of its body, when the head tells
    /// (Content-Length, or no body); `None` for chunked bodies or incomplete heads.
    pub fn message_len(&self) -> Option<u32> {
        if self.flags & (FLAG_HEAD_INCOMPLETE | FLAG_CHUNKED) != 0 {
            return None;
        }
        let body = if self.flags & FLAG_CONTENT_LENGTH != 0 {
            self.content_length
        } else {
            0
        };
        Some(self.head_len.saturating_add(body))
    }
}

/// Parser states.
const S_TARGET: u8 = 0;
const S_VERSION: u8 = 1;
const S_LINE_START: u8 = 2;
const S_NAME: u8 = 3;
const S_VALUE_WS: u8 = 4;
const S_VALUE: u8 = 5;
const S_VALUE_LF: u8 = 6;
const S_END_LF: u8 = 7;
const S_STATUS_LINE: u8 = 8;
const S_DONE: u8 = 9;
const S_INVALID: u8 = 10;

/// Header names every parser looks for, as candidate bits after the capture slots.
const CAND_HOST: u8 = 1 << CAPTURE_SLOTS;
const CAND_CONTENT_LENGTH: u8 = 1 << (CAPTURE_SLOTS + 1);
const CAND_TRANSFER_ENCODING: u8 = 1 << (CAPTURE_SLOTS + 2);
const HOST_NAME: &[u8; 4] = b"host";
const CONTENT_LENGTH_NAME: &[u8; 14] = b"content-length";
const TRANSFER_ENCODING_NAME: &[u8; 17] = b"transfer-encoding";

/// Which field the current header value goes to.
const F_NONE: u8 = 0xff;
const F_HOST: u8 = 0xfe;
const F_CONTENT_LENGTH: u8 = 0xfd;
const F_TRANSFER_ENCODING: u8 = 0xfc;

/// The byte-level state shared by the request and response parsers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadState {
    pub state: u8,
    /// Candidate header names still matching the current name (bit per candidate).
    pub candidates: u8,
    /// Field receiving the current value (slot index or F_*).
    pub field: u8,
    /// Bytes of "HTTP/1.x\r" matched so far (request line).
    pub version_pos: u8,
    /// Length of the current header name so far.
    pub name_len: u16,
    /// Length of the current header value so far.
    pub value_len: u16,
    /// Bytes consumed so far (offset of the next byte, relative to the head's start).
    pub consumed: u32,
    /// "chunked" matched so far in Transfer-Encoding (0..=7), for FLAG_CHUNKED.
    pub chunked_pos: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<HeadState>() == 16);

impl HeadState {
    const fn new(state: u8, consumed: u32) -> HeadState {
        HeadState {
            state,
            candidates: 0,
            field: F_NONE,
            version_pos: 0,
            name_len: 0,
            value_len: 0,
            consumed,
            chunked_pos: 0,
            _pad: [0; 3],
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == S_DONE
    }

    pub fn is_invalid(&self) -> bool {
        self.state == S_INVALID
    }

    /// Steps over the header section (shared by requests and responses). Returns the
    /// field and value byte to store, if any, so that the caller stores it in its own
    /// output struct.
    #[inline(always)]
    fn header_step(
        &mut self,
        b: u8,
        config: &CaptureConfig,
        flags: &mut u16,
        content_length: &mut u32,
    ) -> Option<(u8, u16, u8)> {
        let mut store = None;
        match self.state {
            S_LINE_START => {
                if b == b'\r' {
                    self.state = S_END_LF;
                } else if b == b'\n' {
                    // A bare LF ends the head too (lenient, as most servers are).
                    self.state = S_DONE;
                } else if is_token_char(b) {
                    self.state = S_NAME;
                    self.name_len = 0;
                    self.candidates = CAND_HOST | CAND_CONTENT_LENGTH | CAND_TRANSFER_ENCODING;
                    let mut slot = 0;
                    while slot < CAPTURE_SLOTS {
                        if config.lens[slot] > 0 {
                            self.candidates |= 1 << slot;
                        }
                        slot += 1;
                    }
                    self.match_name_byte(b, config);
                } else {
                    self.state = S_INVALID;
                }
            }
            S_NAME => {
                if b == b':' {
                    self.field = self.matched_field(config);
                    self.value_len = 0;
                    self.chunked_pos = 0;
                    self.state = S_VALUE_WS;
                    if self.field == F_CONTENT_LENGTH {
                        *flags |= FLAG_CONTENT_LENGTH;
                        *content_length = 0;
                    }
                } else if is_token_char(b) {
                    self.match_name_byte(b, config);
                } else {
                    self.state = S_INVALID;
                }
            }
            S_VALUE_WS | S_VALUE => {
                if b == b'\r' {
                    self.state = S_VALUE_LF;
                } else if b == b'\n' {
                    self.state = S_LINE_START;
                } else if self.state == S_VALUE_WS && (b == b' ' || b == b'\t') {
                    // Leading whitespace is not part of the value.
                } else {
                    self.state = S_VALUE;
                    match self.field {
                        F_NONE => {}
                        F_CONTENT_LENGTH => {
                            if b.is_ascii_digit() {
                                *content_length = content_length
                                    .saturating_mul(10)
                                    .saturating_add(u32::from(b - b'0'));
                            } else if b != b' ' && b != b'\t' {
                                // Not a number: the body's end is unknown.
                                *flags &= !FLAG_CONTENT_LENGTH;
                                *flags |= FLAG_CHUNKED;
                            }
                        }
                        F_TRANSFER_ENCODING => {
                            const CHUNKED: &[u8; 7] = b"chunked";
                            let pos = self.chunked_pos as usize;
                            if pos < CHUNKED.len() && b.to_ascii_lowercase() == CHUNKED[pos] {
                                self.chunked_pos += 1;
                                if self.chunked_pos as usize == CHUNKED.len() {
                                    *flags |= FLAG_CHUNKED;
                                }
                            } else {
                                self.chunked_pos = 0;
                            }
                        }
                        field => {
                            store = Some((field, self.value_len, b));
                            self.value_len = self.value_len.saturating_add(1);
                        }
                    }
                }
            }
            S_VALUE_LF => {
                self.state = if b == b'\n' { S_LINE_START } else { S_INVALID };
            }
            S_END_LF => {
                self.state = if b == b'\n' { S_DONE } else { S_INVALID };
            }
            _ => {}
        }
        store
    }

    #[inline(always)]
    fn match_name_byte(&mut self, b: u8, config: &CaptureConfig) {
        let lower = b.to_ascii_lowercase();
        let i = self.name_len as usize;
        // The byte is read through the mask before the bound is tested: if the test came
        // first, LLVM would drop the mask as redundant and the verifier, which does not
        // relate the two, would see an unbounded offset.
        let masked = i & (HEADER_NAME_LEN - 1);
        let mut slot = 0;
        while slot < CAPTURE_SLOTS {
            let bit = 1u8 << slot;
            let expected = config.names[slot][masked];
            if self.candidates & bit != 0
                && (i >= HEADER_NAME_LEN || i >= config.lens[slot] as usize || expected != lower)
            {
                self.candidates &= !bit;
            }
            slot += 1;
        }
        if self.candidates & CAND_HOST != 0 && (i >= HOST_NAME.len() || HOST_NAME[i] != lower) {
            self.candidates &= !CAND_HOST;
        }
        if self.candidates & CAND_CONTENT_LENGTH != 0
            && (i >= CONTENT_LENGTH_NAME.len() || CONTENT_LENGTH_NAME[i] != lower)
        {
            self.candidates &= !CAND_CONTENT_LENGTH;
        }
        if self.candidates & CAND_TRANSFER_ENCODING != 0
            && (i >= TRANSFER_ENCODING_NAME.len() || TRANSFER_ENCODING_NAME[i] != lower)
        {
            self.candidates &= !CAND_TRANSFER_ENCODING;
        }
        self.name_len = self.name_len.saturating_add(1);
    }

    /// The field of a complete name: a candidate whose full length was matched.
    #[inline(always)]
    fn matched_field(&self, config: &CaptureConfig) -> u8 {
        let len = self.name_len as usize;
        let mut slot = 0;
        while slot < CAPTURE_SLOTS {
            if self.candidates & (1 << slot) != 0 && config.lens[slot] as usize == len {
                return slot as u8;
            }
            slot += 1;
        }
        if self.candidates & CAND_HOST != 0 && len == HOST_NAME.len() {
            F_HOST
        } else if self.candidates & CAND_CONTENT_LENGTH != 0 && len == CONTENT_LENGTH_NAME.len() {
            F_CONTENT_LENGTH
        } else if self.candidates & CAND_TRANSFER_ENCODING != 0
            && len == TRANSFER_ENCODING_NAME.len()
        {
            F_TRANSFER_ENCODING
        } else {
            F_NONE
        }
    }
}

/// Parses a request head after its method (see [`method_prefix`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestParser {
    pub head: HeadState,
    pub out: RequestHead,
    /// Hashes for rule matching, computed on the way.
    pub digest: RequestDigest,
}
// The head state, the head, the digest; no padding (the digest is 8-aligned at 488).
const _: () = assert!(core::mem::size_of::<RequestParser>() == 16 + 472 + 1144);

impl RequestParser {
    /// A parser for a request whose "METHOD " prefix (`prefix_len` bytes) was recognized.
    pub const fn new(method: Method, prefix_len: usize) -> RequestParser {
        let mut out = RequestHead::EMPTY;
        out.method = method as u8;
        RequestParser {
            head: HeadState::new(S_TARGET, prefix_len as u32),
            out,
            digest: RequestDigest::new(),
        }
    }

    /// Makes this parser ready for a new head, in place: the kernel keeps the parser in a
    /// map because it is too large for the BPF stack, so it must never be built by value.
    #[inline(always)]
    pub fn reset(&mut self, method: Method, prefix_len: usize) {
        self.head = HeadState::new(S_TARGET, prefix_len as u32);
        let out = &mut self.out;
        out.method = method as u8;
        out.version_minor = 0;
        out.flags = 0;
        out.path_len = 0;
        out.host_len = 0;
        out.header_lens = [0; CAPTURE_SLOTS];
        out.content_length = 0;
        out.head_len = 0;
        self.digest.reset();
    }

    /// Consumes one byte. Returns false when the head is complete or invalid.
    #[inline(always)]
    pub fn step(&mut self, b: u8, config: &CaptureConfig) -> bool {
        let h = &mut self.head;
        let out = &mut self.out;
        match h.state {
            S_TARGET => {
                if b == b' ' {
                    if out.path_len == 0 {
                        h.state = S_INVALID;
                    } else {
                        h.state = S_VERSION;
                        h.version_pos = 0;
                    }
                } else if b <= b' ' || b == 0x7f {
                    h.state = S_INVALID;
                } else {
                    let len = out.path_len as usize;
                    if len < PATH_LEN {
                        out.path[len & (PATH_LEN - 1)] = b;
                    } else {
                        out.flags |= FLAG_PATH_TRUNCATED;
                    }
                    if len == 0 && b != b'/' && b != b'*' {
                        out.flags |= FLAG_ABSOLUTE_FORM;
                    }
                    self.digest.target_byte(b);
                    out.path_len = out.path_len.saturating_add(1);
                }
            }
            S_VERSION => {
                const VERSION: &[u8; 9] = b"HTTP/1.x\r";
                let pos = h.version_pos as usize;
                let ok = match pos {
                    7 => b == b'0' || b == b'1',
                    9 => b == b'\n',
                    p if p < VERSION.len() => b == VERSION[p],
                    _ => false,
                };
                if !ok {
                    h.state = S_INVALID;
                } else {
                    if pos == 7 {
                        out.version_minor = b - b'0';
                    }
                    if pos == 9 {
                        h.state = S_LINE_START;
                    }
                    h.version_pos += 1;
                }
            }
            _ => {
                if let Some((field, index, value)) =
                    h.header_step(b, config, &mut out.flags, &mut out.content_length)
                {
                    store_request_value(out, &mut self.digest, field, index, value);
                }
            }
        }
        h.consumed = h.consumed.wrapping_add(1);
        if h.state == S_DONE {
            out.head_len = h.consumed;
            out.flags &= !FLAG_HEAD_INCOMPLETE;
        }
        h.state != S_DONE && h.state != S_INVALID
    }

    /// Marks the head incomplete when the bytes ran out before its end.
    pub fn finish(&mut self) {
        if self.head.state != S_DONE && self.head.state != S_INVALID {
            self.out.flags |= FLAG_HEAD_INCOMPLETE;
        }
    }
}

#[inline(always)]
fn store_request_value(
    out: &mut RequestHead,
    digest: &mut RequestDigest,
    field: u8,
    index: u16,
    value: u8,
) {
    let i = index as usize;
    if field == F_HOST {
        digest.host_byte(index, value);
        if i < HOST_LEN {
            out.host[i & (HOST_LEN - 1)] = value;
            out.host_len = (i + 1) as u8;
        } else {
            out.flags |= FLAG_HOST_TRUNCATED;
        }
    } else if (field as usize) < CAPTURE_SLOTS {
        digest.header_byte(field as usize, index, value);
        // Constant indices (see RequestDigest::header_byte).
        let (bytes, len) = match field {
            0 => (&mut out.headers[0], &mut out.header_lens[0]),
            1 => (&mut out.headers[1], &mut out.header_lens[1]),
            2 => (&mut out.headers[2], &mut out.header_lens[2]),
            3 => (&mut out.headers[3], &mut out.header_lens[3]),
            _ => return,
        };
        if i < HEADER_VALUE_LEN {
            bytes[i & (HEADER_VALUE_LEN - 1)] = value;
            *len = (i + 1) as u8;
        } else {
            out.flags |= FLAG_HEADER_TRUNCATED;
        }
    }
}

/// What a response head says.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub flags: u16,
    pub version_minor: u8,
    pub _pad: [u8; 3],
    pub content_length: u32,
    pub head_len: u32,
}
const _: () = assert!(core::mem::size_of::<ResponseHead>() == 16);

impl ResponseHead {
    /// Bytes from the head's start to the end of the body, when known. `request_method` is
    /// the method of the request it answers (HEAD responses have no body).
    pub fn message_len(&self, request_method: u8) -> Option<u32> {
        if self.flags & FLAG_HEAD_INCOMPLETE != 0 {
            return None;
        }
        let no_body = request_method == Method::Head as u8
            || self.status < 200
            || self.status == 204
            || self.status == 304;
        if no_body {
            return Some(self.head_len);
        }
        if self.flags & FLAG_CHUNKED != 0 || self.flags & FLAG_CONTENT_LENGTH == 0 {
            // Chunked or delimited by close: the end is not in the head.
            return None;
        }
        Some(self.head_len.saturating_add(self.content_length))
    }
}

/// Parses a response head after its 12-byte "HTTP/1.x NNN" prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseParser {
    pub head: HeadState,
    pub out: ResponseHead,
}
const _: () = assert!(core::mem::size_of::<ResponseParser>() == 16 + 16);

impl ResponseParser {
    pub const fn new(status: u16, version_minor: u8) -> ResponseParser {
        ResponseParser {
            head: HeadState::new(S_STATUS_LINE, 12),
            out: ResponseHead {
                status,
                flags: 0,
                version_minor,
                _pad: [0; 3],
                content_length: 0,
                head_len: 0,
            },
        }
    }

    /// Consumes one byte. Returns false when the head is complete or invalid.
    #[inline(always)]
    pub fn step(&mut self, b: u8, config: &CaptureConfig) -> bool {
        let h = &mut self.head;
        if h.state == S_STATUS_LINE {
            // The reason phrase: anything up to the end of the line.
            if b == b'\n' {
                h.state = S_LINE_START;
            }
        } else {
            // Response header values are not captured; only the body's length matters.
            let _ = h.header_step(b, config, &mut self.out.flags, &mut self.out.content_length);
        }
        h.consumed = h.consumed.wrapping_add(1);
        if h.state == S_DONE {
            self.out.head_len = h.consumed;
        }
        h.state != S_DONE && h.state != S_INVALID
    }

    pub fn finish(&mut self) {
        if self.head.state != S_DONE && self.head.state != S_INVALID {
            self.out.flags |= FLAG_HEAD_INCOMPLETE;
        }
    }
}

/// Heads kept from one segment after its first (pipelining).
pub const FOLLOWERS: usize = 3;

const FS_START: u8 = 0;
const FS_HEAD: u8 = 1;
const FS_BODY: u8 = 2;
const FS_STOP: u8 = 3;

/// The method whose token is packed big-endian in `word` (at most 7 letters).
#[inline(always)]
fn method_of_word(word: u64) -> Option<Method> {
    const fn pack(s: &[u8]) -> u64 {
        let mut w = 0u64;
        let mut i = 0;
        while i < s.len() {
            w = (w << 8) | s[i] as u64;
            i += 1;
        }
        w
    }
    let m = match word {
        w if w == pack(b"GET") => Method::Get,
        w if w == pack(b"HEAD") => Method::Head,
        w if w == pack(b"POST") => Method::Post,
        w if w == pack(b"PUT") => Method::Put,
        w if w == pack(b"DELETE") => Method::Delete,
        w if w == pack(b"CONNECT") => Method::Connect,
        w if w == pack(b"OPTIONS") => Method::Options,
        w if w == pack(b"TRACE") => Method::Trace,
        w if w == pack(b"PATCH") => Method::Patch,
        _ => return None,
    };
    Some(m)
}

/// Parses the request heads that follow the first one in a segment (pipelining): method,
/// head, body skipped by its Content-Length, and again, up to [`FOLLOWERS`] heads. They
/// are observed only: rules apply to the first head of a segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestFollowers {
    pub state: u8,
    /// Heads completed, in `heads`.
    pub count: u8,
    pub method_len: u8,
    /// 1 once a head with a chunked body ended the parse: its body cannot be skipped.
    pub chunked: u8,
    /// Body bytes still to skip.
    pub body_left: u32,
    /// The method token so far, packed big-endian.
    pub method_word: u64,
    /// Bytes stepped over.
    pub consumed: u32,
    pub _pad1: u32,
    pub parser: RequestParser,
    pub heads: [RequestHead; FOLLOWERS],
}
// 24 bytes of state, the parser, the heads; no padding.
const _: () = assert!(core::mem::size_of::<RequestFollowers>() == 24 + 1632 + FOLLOWERS * 472);

impl RequestFollowers {
    /// Ready for the bytes after the first message, in place (too large to build by value
    /// on the BPF stack).
    #[inline(always)]
    pub fn reset(&mut self) {
        self.state = FS_START;
        self.count = 0;
        self.method_len = 0;
        self.chunked = 0;
        self.body_left = 0;
        self.method_word = 0;
        self.consumed = 0;
    }

    /// Where the body being skipped ends, relative to where the followers started, if the
    /// bytes ran out inside one.
    pub fn body_end(&self) -> Option<u32> {
        (self.state == FS_BODY).then(|| self.consumed.saturating_add(self.body_left))
    }

    /// Consumes one byte; false when nothing more can be parsed.
    #[inline(always)]
    pub fn step(&mut self, b: u8, config: &CaptureConfig) -> bool {
        self.consumed = self.consumed.wrapping_add(1);
        match self.state {
            FS_START => {
                if b == b' ' && self.method_len > 0 {
                    match method_of_word(self.method_word) {
                        Some(method) => {
                            self.parser.reset(method, self.method_len as usize + 1);
                            self.state = FS_HEAD;
                        }
                        None => self.state = FS_STOP,
                    }
                } else if b.is_ascii_uppercase() && self.method_len < 7 {
                    self.method_word = (self.method_word << 8) | u64::from(b);
                    self.method_len += 1;
                } else {
                    self.state = FS_STOP;
                }
            }
            FS_HEAD => {
                if self.parser.step(b, config) {
                    return true;
                }
                if !self.parser.head.is_done() {
                    self.state = FS_STOP;
                    return false;
                }
                let slot = self.count as usize;
                if slot < FOLLOWERS {
                    // SAFETY: `self.parser.out` and `self.heads[slot]` (slot < FOLLOWERS,
                    // checked above) are distinct fields of `self`: both valid, aligned
                    // RequestHeads that never overlap. An explicit copy keeps LLVM from
                    // staging 472 bytes on the BPF stack.
                    unsafe {
                        core::ptr::copy_nonoverlapping(&self.parser.out, &mut self.heads[slot], 1)
                    };
                    self.count += 1;
                }
                let body = self
                    .parser
                    .out
                    .message_len()
                    .map(|m| m - self.parser.out.head_len);
                match body {
                    Some(0) if (self.count as usize) < FOLLOWERS => self.start_next(),
                    Some(n) => {
                        self.body_left = n;
                        self.state = FS_BODY;
                        if self.count as usize >= FOLLOWERS {
                            return false;
                        }
                    }
                    None => {
                        if self.parser.out.flags & FLAG_CHUNKED != 0 {
                            self.chunked = 1;
                        }
                        self.state = FS_STOP;
                    }
                }
            }
            FS_BODY => {
                self.body_left = self.body_left.saturating_sub(1);
                if self.body_left == 0 {
                    self.start_next();
                }
            }
            _ => {}
        }
        self.state != FS_STOP
    }

    #[inline(always)]
    fn start_next(&mut self) {
        self.state = FS_START;
        self.method_len = 0;
        self.method_word = 0;
    }
}

/// The response heads that follow the first one in a segment, like
/// [`RequestFollowers`]. `methods[i]` is the method of the request the i-th one answers
/// (a HEAD response has no body).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseFollowers {
    pub state: u8,
    pub count: u8,
    pub prefix_len: u8,
    pub _pad: u8,
    pub body_left: u32,
    pub consumed: u32,
    pub _pad1: u32,
    pub prefix: [u8; 12],
    pub methods: [u8; FOLLOWERS],
    pub _pad2: u8,
    pub parser: ResponseParser,
    pub heads: [ResponseHead; FOLLOWERS],
}
// 32 bytes of state (with the prefix and methods), the parser, the heads; no padding.
const _: () = assert!(core::mem::size_of::<ResponseFollowers>() == 32 + 32 + FOLLOWERS * 16);

impl ResponseFollowers {
    #[inline(always)]
    pub fn reset(&mut self, methods: [u8; FOLLOWERS]) {
        self.state = FS_START;
        self.count = 0;
        self.prefix_len = 0;
        self.body_left = 0;
        self.consumed = 0;
        self.methods = methods;
    }

    pub fn body_end(&self) -> Option<u32> {
        (self.state == FS_BODY).then(|| self.consumed.saturating_add(self.body_left))
    }

    #[inline(always)]
    pub fn step(&mut self, b: u8, config: &CaptureConfig) -> bool {
        self.consumed = self.consumed.wrapping_add(1);
        match self.state {
            FS_START => {
                let i = self.prefix_len as usize;
                if i < 12 {
                    self.prefix[i] = b;
                    self.prefix_len += 1;
                }
                if self.prefix_len == 12 {
                    match status_prefix(&self.prefix) {
                        Some((status, minor)) => {
                            self.parser = ResponseParser::new(status, minor);
                            self.state = FS_HEAD;
                        }
                        None => self.state = FS_STOP,
                    }
                }
            }
            FS_HEAD => {
                if self.parser.step(b, config) {
                    return true;
                }
                if !self.parser.head.is_done() {
                    self.state = FS_STOP;
                    return false;
                }
                let slot = self.count as usize;
                let method = if slot < FOLLOWERS {
                    self.methods[slot]
                } else {
                    0
                };
                if slot < FOLLOWERS {
                    self.heads[slot] = self.parser.out;
                    self.count += 1;
                }
                let body = self
                    .parser
                    .out
                    .message_len(method)
                    .map(|m| m - self.parser.out.head_len);
                match body {
                    Some(0) if (self.count as usize) < FOLLOWERS => {
                        self.state = FS_START;
                        self.prefix_len = 0;
                    }
                    Some(n) => {
                        self.body_left = n;
                        self.state = FS_BODY;
                        if self.count as usize >= FOLLOWERS {
                            return false;
                        }
                    }
                    None => self.state = FS_STOP,
                }
            }
            FS_BODY => {
                self.body_left = self.body_left.saturating_sub(1);
                if self.body_left == 0 {
                    self.state = FS_START;
                    self.prefix_len = 0;
                }
            }
            _ => {}
        }
        self.state != FS_STOP
    }
}

/// Why bytes are not a request or response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Does not start like an HTTP/1.x message.
    NotHttp,
    /// Started like one, then broke the grammar.
    Invalid,
}

fn prefix<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut p = [0u8; N];
    let n = bytes.len().min(N);
    p[..n].copy_from_slice(&bytes[..n]);
    p
}

/// Parses the request head at the start of `bytes` (at most [`SCAN_LEN`] are looked at).
pub fn parse_request(bytes: &[u8], config: &CaptureConfig) -> Result<RequestHead, ParseError> {
    parse_request_with_digest(bytes, config).map(|(head, _)| head)
}

/// [`parse_request`], with the hashes rules match against.
pub fn parse_request_with_digest(
    bytes: &[u8],
    config: &CaptureConfig,
) -> Result<(RequestHead, RequestDigest), ParseError> {
    let (method, start) = method_prefix(&prefix::<8>(bytes)).ok_or(ParseError::NotHttp)?;
    let mut parser = RequestParser::new(method, start);
    for &b in bytes.iter().take(SCAN_LEN).skip(start) {
        if !parser.step(b, config) {
            break;
        }
    }
    parser.finish();
    if parser.head.is_invalid() {
        return Err(ParseError::Invalid);
    }
    Ok((parser.out, parser.digest))
}

/// Parses the response head at the start of `bytes`.
pub fn parse_response(bytes: &[u8], config: &CaptureConfig) -> Result<ResponseHead, ParseError> {
    let (status, minor) = status_prefix(&prefix::<12>(bytes)).ok_or(ParseError::NotHttp)?;
    let mut parser = ResponseParser::new(status, minor);
    for &b in bytes.iter().take(SCAN_LEN).skip(12) {
        if !parser.step(b, config) {
            break;
        }
    }
    parser.finish();
    if parser.head.is_invalid() {
        return Err(ParseError::Invalid);
    }
    Ok(parser.out)
}

/// The request heads after the first message of `bytes`, and where a body that runs past
/// them ends (the host side of what the kernel does with [`RequestFollowers`]).
#[cfg(not(target_arch = "bpf"))]
pub fn parse_followers(bytes: &[u8], config: &CaptureConfig) -> (Vec<RequestHead>, Option<u32>) {
    let mut f = RequestFollowers {
        state: FS_START,
        count: 0,
        method_len: 0,
        chunked: 0,
        body_left: 0,
        method_word: 0,
        consumed: 0,
        _pad1: 0,
        parser: RequestParser::new(Method::Get, 4),
        heads: [RequestHead::EMPTY; FOLLOWERS],
    };
    f.reset();
    for &b in bytes {
        if !f.step(b, config) {
            break;
        }
    }
    (f.heads[..f.count as usize].to_vec(), f.body_end())
}

#[cfg(test)]
mod tests;
