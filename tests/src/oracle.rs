//! The host's reading of a client's byte stream, independent of fi's parser: request heads
//! by `httparse` (a well-kept HTTP/1.x parser), bodies framed to RFC 9112 §6 written here
//! (Content-Length; chunked with extensions and trailers), and the points where fi, by
//! design, stops reading a connection: a head over 16 KiB, a method it does not know, a
//! framing it cannot know (another transfer coding, a bad or repeated length), an upgrade
//! or CONNECT. The differential test compares the kernel with this.

/// Longest head fi reads (fi_common::framing::MAX_HEAD, restated: the oracle does not use
/// fi's code).
pub const MAX_HEAD: usize = 16 * 1024;
/// Bytes of path, host and captured header values fi keeps.
pub const PATH_KEPT: usize = 128;
pub const VALUE_KEPT: usize = 64;
/// Requests in flight whose methods fi keeps (fi_common::flow::PENDING).
pub const PENDING: usize = 8;

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// A request head as the oracle reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Stream offset of the byte that completes the head.
    pub end: usize,
    /// Bytes of the head, from its method.
    pub head_len: usize,
    pub method: String,
    /// The path (origin-form: the target; absolute-form: its path), first bytes kept.
    pub path: Vec<u8>,
    /// The host: the authority of an absolute-form target, else the last Host header.
    pub host: Vec<u8>,
    /// The last value of the captured header, if any.
    pub captured: Option<Vec<u8>>,
}

/// Every request head of a client's stream, in order, as far as it can be read.
pub fn requests(stream: &[u8], captured: &str) -> Vec<Head> {
    let mut heads = Vec::new();
    let mut pos = 0;
    loop {
        // Empty lines before a request are ignored (RFC 9112 §2.2).
        while pos < stream.len() && (stream[pos] == b'\r' || stream[pos] == b'\n') {
            pos += 1;
        }
        if pos >= stream.len() {
            return heads;
        }
        let mut slots = [httparse::EMPTY_HEADER; 256];
        let mut request = httparse::Request::new(&mut slots);
        let Ok(httparse::Status::Complete(n)) = request.parse(&stream[pos..]) else {
            return heads; // Cut by the end of the stream, or not a request.
        };
        if n > MAX_HEAD {
            return heads;
        }
        let method = request.method.unwrap_or_default();
        if !METHODS.contains(&method) {
            return heads;
        }
        let Some(target) = Target::of(request.path.unwrap_or_default().as_bytes()) else {
            return heads;
        };
        let last = |name: &str| {
            request
                .headers
                .iter()
                .rev()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value.to_vec())
        };
        let host = match &target {
            Target::Origin(_) => last("host").unwrap_or_default(),
            Target::Absolute { authority, .. } => authority.clone(),
            Target::Opaque(_) => Vec::new(),
        };
        let path = match &target {
            Target::Origin(p) | Target::Opaque(p) | Target::Absolute { path: p, .. } => p.clone(),
        };
        heads.push(Head {
            end: pos + n - 1,
            head_len: n,
            method: method.to_owned(),
            path: path[..path.len().min(PATH_KEPT)].to_vec(),
            host: host[..host.len().min(VALUE_KEPT)].to_vec(),
            // An empty value is an absent one for fi (it keeps lengths, 0 for absent).
            captured: last(captured)
                .filter(|v| !v.is_empty())
                .map(|v| v[..v.len().min(VALUE_KEPT)].to_vec()),
        });
        let upgrade = request
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
        if method == "CONNECT" || upgrade {
            return heads; // What follows depends on the answer.
        }
        pos += n;
        match body(request.headers) {
            Body::None => {}
            Body::Length(len) => pos = pos.saturating_add(len),
            Body::Chunked => match chunked(stream, pos) {
                Some(end) => pos = end,
                None => return heads,
            },
            Body::Unknown => return heads,
        }
    }
}

/// The final responses of a server's stream, in order, as far as it can be read: their
/// statuses. `methods` are the methods of the requests they answer (a HEAD's response has
/// no body; a CONNECT's 2xx is a tunnel); at most `methods.len()` are counted.
pub fn responses(stream: &[u8], methods: &[&str]) -> Vec<u16> {
    let mut statuses = Vec::new();
    let mut pos = 0;
    while statuses.len() < methods.len() {
        while pos < stream.len() && (stream[pos] == b'\r' || stream[pos] == b'\n') {
            pos += 1;
        }
        if pos >= stream.len() {
            break;
        }
        let mut slots = [httparse::EMPTY_HEADER; 256];
        let mut response = httparse::Response::new(&mut slots);
        let Ok(httparse::Status::Complete(n)) = response.parse(&stream[pos..]) else {
            break;
        };
        let status = response.code.unwrap_or_default();
        if n > MAX_HEAD || !(100..=999).contains(&status) {
            break;
        }
        pos += n;
        let method = methods[statuses.len()];
        if (100..200).contains(&status) && status != 101 {
            continue; // Interim: the final response follows.
        }
        statuses.push(status);
        if methods.len() - (statuses.len() - 1) > PENDING {
            // fi keeps the methods of 8 requests in flight: deeper, whether this one
            // was a HEAD is not known, and fi stops reading (every request was sent
            // before the first response, here).
            break;
        }
        if status == 101 || (method == "CONNECT" && (200..300).contains(&status)) {
            break; // A tunnel from here.
        }
        if method == "HEAD" || status < 200 || status == 204 || status == 304 {
            continue;
        }
        if !has_framing(response.headers) {
            break; // The body runs until the connection closes.
        }
        match body(response.headers) {
            Body::None => {}
            Body::Length(len) => pos = pos.saturating_add(len),
            Body::Chunked => match chunked(stream, pos) {
                Some(end) => pos = end,
                None => break,
            },
            // A coding other than chunked (until the close) or a bad length.
            Body::Unknown => break,
        }
    }
    statuses
}

/// Whether a response says how its body ends (Transfer-Encoding or Content-Length).
fn has_framing(headers: &[httparse::Header]) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("content-length")
    })
}

/// A request target, by form (RFC 9112 §3.2).
enum Target {
    Origin(Vec<u8>),
    Absolute {
        authority: Vec<u8>,
        path: Vec<u8>,
    },
    /// Authority-form ("host:port"), kept whole.
    Opaque(Vec<u8>),
}

impl Target {
    fn of(target: &[u8]) -> Option<Target> {
        if !target.is_ascii() {
            return None; // RFC 3986: fi reads ASCII targets only (httparse allows UTF-8).
        }
        let first = *target.first()?;
        if first == b'/' || first == b'*' {
            return Some(Target::Origin(target.to_vec()));
        }
        if !first.is_ascii_alphanumeric() {
            return None;
        }
        let colon = target.iter().position(|b| *b == b':')?;
        let rest = &target[colon + 1..];
        let Some(after) = rest.strip_prefix(b"//") else {
            return Some(Target::Opaque(target.to_vec()));
        };
        let cut = after
            .iter()
            .position(|b| *b == b'/' || *b == b'?')
            .unwrap_or(after.len());
        let mut path = after[cut..].to_vec();
        if path.first() != Some(&b'/') {
            path.insert(0, b'/');
        }
        Some(Target::Absolute {
            authority: after[..cut].to_vec(),
            path,
        })
    }
}

enum Body {
    None,
    Length(usize),
    Chunked,
    Unknown,
}

/// RFC 9112 §6.3: Transfer-Encoding first (its last coding must be chunked), then one
/// valid Content-Length.
fn body(headers: &[httparse::Header]) -> Body {
    let codings: Vec<_> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .collect();
    if let Some(last) = codings.last() {
        let value = String::from_utf8_lossy(last.value);
        let coding = value.rsplit(',').next().unwrap_or("").trim();
        return if coding.eq_ignore_ascii_case("chunked") {
            Body::Chunked
        } else {
            Body::Unknown
        };
    }
    let lengths: Vec<_> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .collect();
    match lengths.as_slice() {
        [] => Body::None,
        [one] => {
            let text = String::from_utf8_lossy(one.value);
            let text = text.trim_matches([' ', '\t']);
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Body::Unknown;
            }
            match text.parse::<u32>() {
                Ok(0) => Body::None,
                Ok(n) => Body::Length(n as usize),
                Err(_) => Body::Unknown,
            }
        }
        // fi does not compare repeated lengths: it stops.
        _ => Body::Unknown,
    }
}

/// The end of a chunked body that starts at `pos` (RFC 9112 §7.1; a bare LF ends a line
/// too). `None` when it is malformed; the stream's length when it runs past its end.
fn chunked(stream: &[u8], mut pos: usize) -> Option<usize> {
    let len = stream.len();
    loop {
        // chunk-size: 1*HEXDIG, whose value fi keeps under 2^64.
        let mut size: u64 = 0;
        let mut digits = 0;
        while pos + digits < len {
            let Some(d) = (stream[pos + digits] as char).to_digit(16) else {
                break;
            };
            if size >> 60 != 0 {
                return None;
            }
            size = (size << 4) | u64::from(d);
            digits += 1;
        }
        if pos + digits >= len {
            return Some(len);
        }
        if digits == 0 {
            return None;
        }
        pos += digits;
        // [ chunk-ext ] CRLF: an extension runs to the end of the line.
        match stream[pos] {
            b';' | b' ' | b'\t' => {
                pos = line_end(stream, pos)?;
            }
            b'\r' => {
                if pos + 1 >= len {
                    return Some(len);
                }
                if stream[pos + 1] != b'\n' {
                    return None;
                }
                pos += 2;
            }
            b'\n' => pos += 1,
            _ => return None,
        }
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let start = pos;
                let Some(next) = line_end(stream, pos) else {
                    return Some(len);
                };
                pos = next;
                if stream[start..next - 1].iter().all(|b| *b == b'\r') {
                    return Some(pos);
                }
            }
        }
        pos = pos.saturating_add(size as usize);
        if pos >= len {
            return Some(len);
        }
        // CRLF after the data.
        if stream[pos] == b'\r' {
            pos += 1;
            if pos >= len {
                return Some(len);
            }
        }
        if stream[pos] != b'\n' {
            return None;
        }
        pos += 1;
    }
}

/// The offset just past the LF that ends the line at `pos`; `None` at the stream's end.
fn line_end(stream: &[u8], pos: usize) -> Option<usize> {
    stream[pos.min(stream.len())..]
        .iter()
        .position(|b| *b == b'\n')
        .map(|i| pos + i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_bodies_and_stops() {
        let wire = b"GET /a HTTP/1.1\r\nHost: h\r\nX-User: ann\r\n\r\n\
            POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;e=1\r\nGET /\r\n0\r\nT: 1\r\n\r\n\
            PUT http://svc:81/c?d HTTP/1.1\nHost: other\nContent-Length: 3\n\nabc\
            GET /ws HTTP/1.1\r\nUpgrade: x\r\n\r\nGET /x HTTP/1.1\r\n\r\n";
        let heads = requests(wire, "x-user");
        let paths: Vec<_> = heads
            .iter()
            .map(|h| String::from_utf8_lossy(&h.path).into_owned())
            .collect();
        assert_eq!(paths, ["/a", "/b", "/c?d", "/ws"]);
        assert_eq!(heads[0].captured.as_deref(), Some(&b"ann"[..]));
        assert_eq!(heads[2].host, b"svc:81");
        assert_eq!(heads[0].end, heads[0].head_len - 1);
    }
}
