//! The hashes of a request head that rules match against (64-bit FNV-1a of the path's
//! prefixes, the host's label suffixes and the captured headers' values), computed while
//! the head is parsed: a rule costs a few compares, whatever its strings.

pub const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One step of 64-bit FNV-1a.
#[inline(always)]
pub const fn fnv_step(hash: u64, byte: u8) -> u64 {
    (hash ^ byte as u64).wrapping_mul(FNV_PRIME)
}

/// FNV-1a of a byte string (the daemon hashes rule strings with it).
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_BASIS, |h, b| fnv_step(h, *b))
}

/// Labels of a host name whose suffix hashes are kept (`a.b.c.example.com` has 5).
pub const HOST_LABELS: usize = 8;

/// Hashes of a request head's strings, computed while it is parsed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestDigest {
    /// `path_prefix[i]`: hash of the first i bytes of the path (without query), for
    /// i up to `min(path_len, PATH_LEN)`.
    pub path_prefix: [u64; crate::limits::PATH_LEN + 1],
    /// Hash of the whole path without its query, however long.
    pub path_hash: u64,
    /// Length of the path without its query.
    pub path_len: u32,
    /// The query ('?' or '#') has started.
    pub in_query: u8,
    /// Labels started in the host name (0: no Host header).
    pub host_labels: u8,
    /// The host name ended (the port or the end of the value).
    pub host_done: u8,
    /// Inside an IPv6 literal `[...]`.
    pub host_bracket: u8,
    /// `host_suffix[i]`: hash of the host name from the start of label i (lower-case,
    /// without the port).
    pub host_suffix: [u64; HOST_LABELS],
    /// Hash of each captured header's value (valid when the header is present).
    pub header_hash: [u64; crate::limits::CAPTURE_SLOTS],
    /// The current captured value's hash at its last byte that is not whitespace: its
    /// hash once the trailing whitespace is dropped.
    pub value_mark: u64,
}
// path_prefix, path_hash, path_len, the four u8 fields, host_suffix, header_hash; no padding.
const _: () = assert!(
    core::mem::size_of::<RequestDigest>()
        == (crate::limits::PATH_LEN + 1) * 8
            + 8
            + 4
            + 4
            + HOST_LABELS * 8
            + crate::limits::CAPTURE_SLOTS * 8
            + 8
);

impl RequestDigest {
    pub const fn new() -> RequestDigest {
        let mut d = RequestDigest {
            path_prefix: [0; crate::limits::PATH_LEN + 1],
            path_hash: FNV_BASIS,
            path_len: 0,
            in_query: 0,
            host_labels: 0,
            host_done: 0,
            host_bracket: 0,
            host_suffix: [0; HOST_LABELS],
            header_hash: [FNV_BASIS; crate::limits::CAPTURE_SLOTS],
            value_mark: FNV_BASIS,
        };
        d.path_prefix[0] = FNV_BASIS;
        d
    }

    /// Ready for a new head, in place (see `RequestParser::reset`). Prefix hashes past
    /// `path_len` are stale but never read.
    #[inline(always)]
    pub fn reset(&mut self) {
        self.path_prefix[0] = FNV_BASIS;
        self.path_hash = FNV_BASIS;
        self.path_len = 0;
        self.in_query = 0;
        self.host_labels = 0;
        self.host_done = 0;
        self.host_bracket = 0;
        self.header_hash = [FNV_BASIS; crate::limits::CAPTURE_SLOTS];
    }

    /// The path starts over (an absolute-form target's scheme was read as path).
    #[inline(always)]
    pub fn reset_path(&mut self) {
        self.path_prefix[0] = FNV_BASIS;
        self.path_hash = FNV_BASIS;
        self.path_len = 0;
        self.in_query = 0;
    }

    /// A byte of the request target.
    #[inline(always)]
    pub fn target_byte(&mut self, b: u8) {
        if b == b'?' || b == b'#' {
            self.in_query = 1;
        }
        if self.in_query != 0 {
            return;
        }
        self.path_hash = fnv_step(self.path_hash, b);
        let len = self.path_len as usize;
        if len < crate::limits::PATH_LEN {
            self.path_prefix[len + 1] = self.path_hash;
        }
        self.path_len = self.path_len.saturating_add(1);
    }

    /// Byte `index` of the Host value.
    #[inline(always)]
    pub fn host_byte(&mut self, index: u16, b: u8) {
        if index == 0 {
            self.host_labels = 1;
            self.host_suffix[0] = FNV_BASIS;
            self.host_bracket = u8::from(b == b'[');
            self.host_done = 0;
        }
        if self.host_done != 0 {
            return;
        }
        if b == b' ' || b == b'\t' {
            // A host name has no whitespace: what follows (trailing whitespace) is not it.
            self.host_done = 1;
            return;
        }
        if b == b':' && self.host_bracket == 0 {
            self.host_done = 1;
            return;
        }
        if b == b']' {
            self.host_bracket = 0;
        }
        let lower = b.to_ascii_lowercase();
        let mut i = 0;
        while i < HOST_LABELS {
            if i < self.host_labels as usize {
                self.host_suffix[i] = fnv_step(self.host_suffix[i], lower);
            }
            i += 1;
        }
        if b == b'.' && (self.host_labels as usize) < HOST_LABELS {
            self.host_suffix[self.host_labels as usize & (HOST_LABELS - 1)] = FNV_BASIS;
            self.host_labels += 1;
        }
    }

    /// Byte of the value of captured header `slot` (the first byte resets its hash).
    #[inline(always)]
    pub fn header_byte(&mut self, slot: usize, index: u16, b: u8) {
        // Constant indices: LLVM drops a mask it can prove redundant, and the verifier then
        // sees an unbounded offset; a match keeps every access at a fixed offset.
        let hash = match slot {
            0 => &mut self.header_hash[0],
            1 => &mut self.header_hash[1],
            2 => &mut self.header_hash[2],
            3 => &mut self.header_hash[3],
            _ => return,
        };
        if index == 0 {
            *hash = FNV_BASIS;
        }
        *hash = fnv_step(*hash, b);
        if b != b' ' && b != b'\t' {
            self.value_mark = *hash;
        }
    }

    /// Captured header `slot`'s value ended: its trailing whitespace is not hashed.
    #[inline(always)]
    pub fn end_of_value(&mut self, slot: usize) {
        let mark = self.value_mark;
        match slot {
            0 => self.header_hash[0] = mark,
            1 => self.header_hash[1] = mark,
            2 => self.header_hash[2] = mark,
            3 => self.header_hash[3] = mark,
            _ => {}
        }
    }
}

impl Default for RequestDigest {
    fn default() -> Self {
        Self::new()
    }
}
