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

use crate::digest::RequestDigest;

/// Bytes of a packet's payload that the kernel copies out and scans (power of two).
pub const SCAN_LEN: usize = 2048;
pub use crate::limits::{CAPTURE_SLOTS, PATH_LEN};
/// Bytes of the Host header value kept (power of two).
pub const HOST_LEN: usize = 64;
/// Bytes of each captured header value kept (power of two).
pub const HEADER_VALUE_LEN: usize = 64;
/// Longest configurable header name (power of two).
pub const HEADER_NAME_LEN: usize = 32;

/// The target was longer than [`PATH_LEN`]; `path` holds its first bytes.
pub const FLAG_PATH_TRUNCATED: u16 = 1 << 0;
/// The Host value was longer than [`HOST_LEN`].
pub const FLAG_HOST_TRUNCATED: u16 = 1 << 1;
/// A Content-Length header was present (`content_length` is valid).
pub const FLAG_CONTENT_LENGTH: u16 = 1 << 2;
/// The last transfer coding is `chunked` (RFC 9112 §6.3).
pub const FLAG_CHUNKED: u16 = 1 << 3;
/// The head did not end within the bytes scanned (headers are partial).
pub const FLAG_HEAD_INCOMPLETE: u16 = 1 << 4;
/// The target is in absolute form (`http://host/path`): `path` holds its path and `host`
/// its authority (a Host header is then ignored, RFC 9112 §3.2.2). A target that is
/// neither origin- nor absolute-form (authority-form) is kept whole in `path`.
pub const FLAG_ABSOLUTE_FORM: u16 = 1 << 5;
/// A captured header value was longer than [`HEADER_VALUE_LEN`].
pub const FLAG_HEADER_TRUNCATED: u16 = 1 << 6;
/// A Transfer-Encoding header was present.
pub const FLAG_TRANSFER_CODING: u16 = 1 << 7;
/// A Content-Length that is not one decimal number (or two that differ).
pub const FLAG_BAD_LENGTH: u16 = 1 << 8;
/// An Upgrade header: what follows the head may not be HTTP/1.x.
pub const FLAG_UPGRADE: u16 = 1 << 9;

/// How a request's body is framed, from its head (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body: the next byte starts the next request.
    None,
    /// This many bytes.
    Length(u32),
    /// Chunked.
    Chunked,
    /// A transfer coding other than chunked last, or a bad length: the end cannot be
    /// known, and fi stops reading the connection rather than guess.
    Unknown,
    /// A response body that runs until the connection closes: nothing after it is HTTP.
    UntilClose,
}

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

/// Whether `bytes` (a segment's payload) begins with a request line's method and space:
/// where fi starts following a connection it did not see from its start.
pub fn begins_request(bytes: &[u8]) -> bool {
    let mut p = [0u8; 8];
    let n = bytes.len().min(8);
    p[..n].copy_from_slice(&bytes[..n]);
    method_prefix(&p).is_some_and(|(_, len)| len <= n)
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

    /// How the body of this (complete) request head is framed.
    #[inline(always)]
    pub fn body(&self) -> Body {
        if self.flags & FLAG_TRANSFER_CODING != 0 {
            // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3, 3).
            return if self.flags & FLAG_CHUNKED != 0 {
                Body::Chunked
            } else {
                Body::Unknown
            };
        }
        if self.flags & FLAG_BAD_LENGTH != 0 {
            return Body::Unknown;
        }
        if self.flags & FLAG_CONTENT_LENGTH != 0 && self.content_length > 0 {
            return Body::Length(self.content_length);
        }
        Body::None
    }

    /// Bytes from the head's start to the end of its body, when the head tells
    /// (Content-Length, or no body); `None` for chunked bodies or incomplete heads.
    pub fn message_len(&self) -> Option<u32> {
        if self.flags & FLAG_HEAD_INCOMPLETE != 0 {
            return None;
        }
        match self.body() {
            Body::None => Some(self.head_len),
            Body::Length(n) => Some(self.head_len.saturating_add(n)),
            Body::Chunked | Body::Unknown | Body::UntilClose => None,
        }
    }
}

/// Parser states.
const S_TARGET: u8 = 0;
/// [`Method::ALL`]'s names, zero-padded to 8 bytes, and their lengths: fixed-size rows the
/// kernel can index with a masked column.
const METHOD_NAMES: [[u8; 8]; 9] = {
    let mut names = [[0u8; 8]; 9];
    let mut i = 0;
    while i < 9 {
        let name = Method::ALL[i].as_str().as_bytes();
        let mut j = 0;
        while j < name.len() {
            names[i][j] = name[j];
            j += 1;
        }
        i += 1;
    }
    names
};
const METHOD_LENS: [u8; 9] = {
    let mut lens = [0u8; 9];
    let mut i = 0;
    while i < 9 {
        lens[i] = Method::ALL[i].as_str().len() as u8;
        i += 1;
    }
    lens
};
/// The method token, before the target (a head started by [`RequestParser::start`]).
const S_METHOD: u8 = 11;
/// "HTTP/1.x NNN" byte by byte (a head started by [`ResponseParser::start`]).
const S_STATUS_PREFIX: u8 = 12;
/// `version_pos` in the reason phrase after a CR: only an LF may follow.
const REASON_CR: u8 = 0xff;
// Where a byte of the target is (in `HeadState::chunked_pos` while the target is read).
const T_PATH: u8 = 0;
const T_SCHEME: u8 = 1;
const T_SLASH1: u8 = 2;
const T_SLASH2: u8 = 3;
const T_AUTHORITY: u8 = 4;
const T_OPAQUE: u8 = 5;
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
const CAND_UPGRADE: u8 = 1 << (CAPTURE_SLOTS + 3);
const UPGRADE_NAME: &[u8; 7] = b"upgrade";
const HOST_NAME: &[u8; 4] = b"host";
const CONTENT_LENGTH_NAME: &[u8; 14] = b"content-length";
const TRANSFER_ENCODING_NAME: &[u8; 17] = b"transfer-encoding";

/// Which field the current header value goes to.
const F_NONE: u8 = 0xff;
const F_HOST: u8 = 0xfe;
const F_CONTENT_LENGTH: u8 = 0xfd;
const F_TRANSFER_ENCODING: u8 = 0xfc;
const F_UPGRADE: u8 = 0xfb;

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
    /// The field whose value just ended (F_NONE otherwise): its trailing whitespace,
    /// `trail` bytes, is not part of it (RFC 9110 §5.5), and the caller drops it.
    pub ended: u8,
    /// Whitespace bytes at the end of the current value so far.
    pub trail: u16,
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
            ended: F_NONE,
            trail: 0,
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
                    self.candidates =
                        CAND_HOST | CAND_CONTENT_LENGTH | CAND_TRANSFER_ENCODING | CAND_UPGRADE;
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
                    self.trail = 0;
                    self.state = S_VALUE_WS;
                    if self.field == F_CONTENT_LENGTH {
                        if *flags & FLAG_CONTENT_LENGTH != 0 {
                            // A second Content-Length: fi does not compare them.
                            *flags |= FLAG_BAD_LENGTH;
                        }
                        *flags |= FLAG_CONTENT_LENGTH;
                        *content_length = 0;
                    }
                    if self.field == F_TRANSFER_ENCODING {
                        *flags |= FLAG_TRANSFER_CODING;
                    }
                    if self.field == F_UPGRADE {
                        *flags |= FLAG_UPGRADE;
                    }
                } else if is_token_char(b) {
                    self.match_name_byte(b, config);
                } else {
                    self.state = S_INVALID;
                }
            }
            S_VALUE_WS | S_VALUE => {
                if b == b'\r' {
                    self.end_value(flags);
                    self.state = S_VALUE_LF;
                } else if b == b'\n' {
                    self.end_value(flags);
                    self.state = S_LINE_START;
                } else if self.state == S_VALUE_WS && (b == b' ' || b == b'\t') {
                    // Leading whitespace is not part of the value.
                } else if (b < b' ' && b != b'\t') || b == 0x7f {
                    // A control character: not a field value (RFC 9110 §5.5).
                    self.state = S_INVALID;
                } else {
                    self.state = S_VALUE;
                    self.trail = if b == b' ' || b == b'\t' {
                        self.trail.saturating_add(1)
                    } else {
                        0
                    };
                    match self.field {
                        F_NONE => {}
                        F_CONTENT_LENGTH => {
                            // `chunked_pos` here: 0 before the digits, 1 in them, 2 after.
                            if b.is_ascii_digit() && self.chunked_pos < 2 {
                                self.chunked_pos = 1;
                                match content_length
                                    .checked_mul(10)
                                    .and_then(|v| v.checked_add(u32::from(b - b'0')))
                                {
                                    Some(v) => *content_length = v,
                                    None => *flags |= FLAG_BAD_LENGTH,
                                }
                            } else if (b == b' ' || b == b'\t') && self.chunked_pos == 1 {
                                self.chunked_pos = 2;
                            } else if b != b' ' && b != b'\t' {
                                // Not one number ("1 2", "5, 5", "x"): the end is unknown.
                                *flags |= FLAG_BAD_LENGTH;
                            }
                        }
                        F_TRANSFER_ENCODING => {
                            // Whether the last coding of the list is "chunked": the
                            // current token's match in `chunked_pos` (0..=7, 8: another).
                            const CHUNKED: &[u8; 7] = b"chunked";
                            let pos = self.chunked_pos as usize;
                            if b == b',' {
                                self.chunked_pos = 0;
                            } else if b == b' ' || b == b'\t' {
                                if pos > 0 && pos < CHUNKED.len() {
                                    self.chunked_pos = 8;
                                }
                            } else if pos < CHUNKED.len() && b.to_ascii_lowercase() == CHUNKED[pos]
                            {
                                self.chunked_pos += 1;
                            } else {
                                self.chunked_pos = 8;
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

    /// A header value ended: what Content-Length and Transfer-Encoding said.
    #[inline(always)]
    fn end_value(&mut self, flags: &mut u16) {
        if self.field == F_CONTENT_LENGTH && self.chunked_pos == 0 {
            *flags |= FLAG_BAD_LENGTH; // An empty length.
        }
        if self.field == F_TRANSFER_ENCODING {
            // Each Transfer-Encoding field adds codings: the last field's last one counts.
            if self.chunked_pos == 7 {
                *flags |= FLAG_CHUNKED;
            } else {
                *flags &= !FLAG_CHUNKED;
            }
        }
        self.ended = self.field;
        self.field = F_NONE;
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
        if self.candidates & CAND_UPGRADE != 0
            && (i >= UPGRADE_NAME.len() || UPGRADE_NAME[i] != lower)
        {
            self.candidates &= !CAND_UPGRADE;
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
        } else if self.candidates & CAND_UPGRADE != 0 && len == UPGRADE_NAME.len() {
            F_UPGRADE
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
const _: () = assert!(core::mem::size_of::<RequestParser>() == 16 + 472 + 1152);

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

    /// Makes this parser ready for a head whose first byte comes next (the method is
    /// read byte by byte, so a head may be cut anywhere), in place.
    #[inline(always)]
    pub fn start(&mut self) {
        self.reset(Method::Get, 0);
        self.out.method = 0;
        self.head.state = S_METHOD;
        // While the method is read: `name_len` has a bit per candidate of Method::ALL,
        // `version_pos` the column.
        self.head.name_len = (1 << Method::ALL.len()) - 1;
        self.head.version_pos = 0;
    }

    /// Bytes of the head so far.
    #[inline(always)]
    pub fn consumed(&self) -> u32 {
        self.head.consumed
    }

    /// A byte of the method token.
    #[inline(always)]
    fn method_step(&mut self, b: u8) {
        let h = &mut self.head;
        let col = h.version_pos as usize;
        if b == b' ' {
            let mut i = 0;
            while i < Method::ALL.len() {
                if h.name_len & (1 << i) != 0 && METHOD_LENS[i] as usize == col {
                    self.out.method = Method::ALL[i] as u8;
                    h.state = S_TARGET;
                    return;
                }
                i += 1;
            }
            h.state = S_INVALID;
            return;
        }
        let mut i = 0;
        while i < Method::ALL.len() {
            if col >= METHOD_LENS[i] as usize || METHOD_NAMES[i][col & 7] != b {
                h.name_len &= !(1 << i);
            }
            i += 1;
        }
        if h.name_len == 0 {
            h.state = S_INVALID;
        }
        h.version_pos = h.version_pos.saturating_add(1);
    }

    /// Consumes one byte. Returns false when the head is complete or invalid.
    #[inline(always)]
    pub fn step(&mut self, b: u8, config: &CaptureConfig) -> bool {
        match self.head.state {
            S_METHOD => self.method_step(b),
            S_TARGET => self.target_step(b),
            S_VERSION => {
                const VERSION: &[u8; 9] = b"HTTP/1.x\r";
                let h = &mut self.head;
                let pos = h.version_pos as usize;
                let ok = match pos {
                    7 => b == b'0' || b == b'1',
                    // A bare LF ends the line too (RFC 9112 §2.2 lets a recipient accept it).
                    8 => b == b'\r' || b == b'\n',
                    9 => b == b'\n',
                    p if p < VERSION.len() => b == VERSION[p],
                    _ => false,
                };
                if !ok {
                    h.state = S_INVALID;
                } else {
                    if pos == 7 {
                        self.out.version_minor = b - b'0';
                    }
                    if b == b'\n' {
                        h.state = S_LINE_START;
                    }
                    h.version_pos += 1;
                }
            }
            _ => {
                let out = &mut self.out;
                if let Some((field, index, value)) =
                    self.head
                        .header_step(b, config, &mut out.flags, &mut out.content_length)
                {
                    // With an absolute-form target, the Host header is ignored (RFC 9112
                    // §3.2.2): the authority already gave the host.
                    if !(field == F_HOST && out.flags & FLAG_ABSOLUTE_FORM != 0) {
                        store_request_value(out, &mut self.digest, field, index, value);
                    }
                }
                if self.head.ended != F_NONE {
                    self.end_of_value();
                }
            }
        }
        let h = &mut self.head;
        h.consumed = h.consumed.wrapping_add(1);
        if h.state == S_DONE {
            self.out.head_len = h.consumed;
            self.out.flags &= !FLAG_HEAD_INCOMPLETE;
        }
        h.state != S_DONE && h.state != S_INVALID
    }

    /// A kept value ended: its trailing whitespace is dropped from what was kept.
    #[inline(always)]
    fn end_of_value(&mut self) {
        let h = &mut self.head;
        let field = h.ended;
        h.ended = F_NONE;
        let kept = h.value_len.saturating_sub(h.trail) as usize;
        if field == F_HOST && self.out.flags & FLAG_ABSOLUTE_FORM == 0 {
            self.out.host_len = kept.min(HOST_LEN) as u8;
            return;
        }
        let slot = field as usize;
        if slot < CAPTURE_SLOTS {
            self.out.header_lens[slot & (CAPTURE_SLOTS - 1)] = kept.min(HEADER_VALUE_LEN) as u8;
            self.digest.end_of_value(slot);
        }
    }

    /// A byte of the request target (the request line up to its space).
    #[inline(always)]
    fn target_step(&mut self, b: u8) {
        if b == b' ' {
            if self.head.chunked_pos == T_AUTHORITY {
                // "http://host": the path is "/" (RFC 9112 §3.2.2).
                self.target_byte(b'/');
                self.head.chunked_pos = T_PATH;
            }
            let h = &mut self.head;
            if self.out.path_len == 0 || (h.chunked_pos != T_PATH && h.chunked_pos != T_OPAQUE) {
                h.state = S_INVALID;
            } else {
                h.state = S_VERSION;
                h.version_pos = 0;
                // `chunked_pos` is Transfer-Encoding's from here on.
                h.chunked_pos = 0;
            }
        } else if !(b'!'..=b'~').contains(&b) {
            // A request target is ASCII (RFC 3986; clients percent-encode the rest).
            self.head.state = S_INVALID;
        } else {
            self.target_form_byte(b);
        }
    }

    /// A byte of the target, by its form: origin-form goes to the path; absolute-form's
    /// authority goes to the host and its path to the path; authority-form ("host:port"
    /// of CONNECT) is kept whole in the path. `head.chunked_pos` (unused until the
    /// headers) holds where in the target the byte is (T_*).
    #[inline(always)]
    fn target_form_byte(&mut self, b: u8) {
        let first = self.out.path_len == 0 && self.head.chunked_pos == T_PATH;
        if first && b != b'/' && b != b'*' {
            if !b.is_ascii_alphanumeric() {
                self.head.state = S_INVALID;
                return;
            }
            // A scheme, or the host of an authority-form target: kept in the path until
            // "://" tells which.
            self.out.flags |= FLAG_ABSOLUTE_FORM;
            self.head.chunked_pos = T_SCHEME;
            self.target_byte(b);
            return;
        }
        match self.head.chunked_pos {
            T_SCHEME => {
                if b == b':' {
                    self.head.chunked_pos = T_SLASH1;
                }
                self.target_byte(b);
            }
            T_SLASH1 => {
                self.head.chunked_pos = if b == b'/' { T_SLASH2 } else { T_OPAQUE };
                self.target_byte(b);
            }
            T_SLASH2 => {
                if b == b'/' {
                    // "scheme://": the authority follows; the path starts over.
                    self.head.chunked_pos = T_AUTHORITY;
                    self.head.value_len = 0;
                    self.out.path_len = 0;
                    self.digest.reset_path();
                } else {
                    self.head.chunked_pos = T_OPAQUE;
                    self.target_byte(b);
                }
            }
            T_AUTHORITY => {
                if b == b'/' || b == b'?' {
                    self.head.chunked_pos = T_PATH;
                    if b == b'?' {
                        self.target_byte(b'/');
                    }
                    self.target_byte(b);
                } else {
                    let index = self.head.value_len;
                    self.head.value_len = index.saturating_add(1);
                    store_request_value(&mut self.out, &mut self.digest, F_HOST, index, b);
                }
            }
            _ => self.target_byte(b),
        }
    }

    /// A byte of the target's path (or of an opaque target).
    #[inline(always)]
    fn target_byte(&mut self, b: u8) {
        let out = &mut self.out;
        let len = out.path_len as usize;
        if len < PATH_LEN {
            out.path[len & (PATH_LEN - 1)] = b;
        } else {
            out.flags |= FLAG_PATH_TRUNCATED;
        }
        self.digest.target_byte(b);
        out.path_len = out.path_len.saturating_add(1);
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
    /// How the body of this (complete) response head is framed (RFC 9112 §6.3), given the
    /// method of the request it answers.
    #[inline(always)]
    pub fn body(&self, request_method: u8) -> Body {
        if request_method == Method::Head as u8
            || self.status < 200
            || self.status == 204
            || self.status == 304
        {
            return Body::None;
        }
        if self.flags & FLAG_TRANSFER_CODING != 0 {
            return if self.flags & FLAG_CHUNKED != 0 {
                Body::Chunked
            } else {
                Body::UntilClose
            };
        }
        if self.flags & FLAG_BAD_LENGTH != 0 {
            return Body::Unknown;
        }
        if self.flags & FLAG_CONTENT_LENGTH != 0 {
            return if self.content_length > 0 {
                Body::Length(self.content_length)
            } else {
                Body::None
            };
        }
        Body::UntilClose
    }

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
        if self.flags & (FLAG_TRANSFER_CODING | FLAG_BAD_LENGTH) != 0
            || self.flags & FLAG_CONTENT_LENGTH == 0
        {
            // A coding, a bad length, or delimited by close: the end is not in the head.
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

    /// Makes this parser ready for a head whose first byte comes next (the status line is
    /// read byte by byte, so a head may be cut anywhere), in place.
    #[inline(always)]
    pub fn start(&mut self) {
        self.head = HeadState::new(S_STATUS_PREFIX, 0);
        self.out = ResponseHead {
            status: 0,
            flags: 0,
            version_minor: 0,
            _pad: [0; 3],
            content_length: 0,
            head_len: 0,
        };
    }

    /// A byte of "HTTP/1.x NNN" and the one after it (`version_pos` is the column).
    #[inline(always)]
    fn status_prefix_step(&mut self, b: u8) {
        const PREFIX: &[u8; 7] = b"HTTP/1.";
        let h = &mut self.head;
        let col = h.version_pos as usize;
        let ok = match col {
            0..=6 => PREFIX[col] == b,
            7 => b == b'0' || b == b'1',
            8 => b == b' ',
            9 => (b'1'..=b'9').contains(&b),
            10 | 11 => b.is_ascii_digit(),
            // After the code: the reason phrase, or the end of the line.
            _ => b == b' ' || b == b'\r' || b == b'\n',
        };
        if !ok {
            h.state = S_INVALID;
            return;
        }
        match col {
            7 => self.out.version_minor = b - b'0',
            9..=11 => self.out.status = self.out.status * 10 + u16::from(b - b'0'),
            12 => {
                h.state = match b {
                    b'\n' => S_LINE_START,
                    _ => S_STATUS_LINE,
                };
                h.version_pos = if b == b'\r' { REASON_CR } else { 13 };
                return;
            }
            _ => {}
        }
        h.version_pos = h.version_pos.saturating_add(1);
    }

    /// Consumes one byte. Returns false when the head is complete or invalid.
    #[inline(always)]
    pub fn step(&mut self, b: u8, config: &CaptureConfig) -> bool {
        if self.head.state == S_STATUS_PREFIX {
            self.status_prefix_step(b);
        } else if self.head.state == S_STATUS_LINE {
            let h = &mut self.head;
            // The reason phrase, up to the end of the line: text, no controls.
            if b == b'\n' {
                h.state = S_LINE_START;
            } else if h.version_pos == REASON_CR || (b < b' ' && b != b'\t' && b != b'\r') {
                h.state = S_INVALID;
            } else if b == b'\r' {
                h.version_pos = REASON_CR; // Only an LF may follow.
            } else if b == 0x7f {
                h.state = S_INVALID;
            }
        } else {
            // Response header values are not captured; only the body's length matters.
            let h = &mut self.head;
            let _ = h.header_step(b, config, &mut self.out.flags, &mut self.out.content_length);
            h.ended = F_NONE;
        }
        let h = &mut self.head;
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

#[cfg(test)]
mod tests;
