//! A tiny HTTP/1.1 microservice: the bundled example system that fi explores.
//!
//!   fi-shop --name NAME --listen IP:PORT [--call SPEC]... [--fail-status N]
//!
//! SPEC is one argument: `NAME METHOD URL [retries=N] [on-error=fail|fallback] [timeout-ms=N]
//! [when-failed=CALL]` (defaults: retries=0, on-error=fail, timeout-ms=500; URL is `http://IP:PORT/path`, no DNS).
//!
//! Several instances, each in its own network namespace, form a call graph. For every
//! inbound request a service counts POSTs per `order` query parameter (so a test can see
//! a request executed twice), makes its configured calls one after the other (propagating
//! the query string and `traceparent`), and answers 200 with what each call did, or
//! `--fail-status` naming the call that failed. `GET /processed?order=ID` returns the POST
//! count for an order and `GET /health` returns "ok"; neither is counted nor makes calls.
//!
//! Deliberately simple: blocking I/O, one thread per connection, `Connection: close` on
//! everything. Simple code is easier to reason about when fi injects faults into it, and
//! each new connection is a fresh flow for fi to observe.

use std::{
    collections::HashMap,
    env,
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    process::ExitCode,
    sync::{Arc, Mutex, PoisonError},
    thread,
    time::Duration,
};

const USAGE: &str = "\
usage: fi-shop --name NAME --listen IP:PORT [--call SPEC]... [--fail-status N]
  SPEC: 'NAME METHOD URL [retries=N] [on-error=fail|fallback] [timeout-ms=N] [when-failed=CALL]'
        defaults retries=0 on-error=fail timeout-ms=500; URL is http://IP:PORT/path
  --fail-status N: status answered when an on-error=fail call fails (default 503)
";

/// Largest request head we accept (else 431).
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body we accept (else 413).
const MAX_BODY: usize = 64 * 1024;
/// We stop reading a downstream response after this much; only its status line matters.
const MAX_RESPONSE: u64 = 1024 * 1024;
/// How long a client may take to send its request, so a stuck client cannot pin a thread.
const INBOUND_TIMEOUT: Duration = Duration::from_secs(10);
/// After answering we read (and discard) what the client still sends, for at most this long:
/// closing a socket with unread data makes the kernel send RST, which can destroy our
/// response before the client reads it (matters for 413/431, where the body is unread).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnError {
    /// Stop and answer `--fail-status`.
    Fail,
    /// Note "fallback" and carry on, as a service with a degraded mode would.
    Fallback,
}

/// One configured downstream call (one `--call SPEC`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    name: String,
    method: String,
    addr: SocketAddr,
    /// Path (and optional query) from the URL; the inbound query is appended to it.
    path: String,
    retries: u32,
    on_error: OnError,
    timeout: Duration,
    /// `when-failed=NAME`: made only when call NAME failed (an alternative source: a
    /// cache behind a primary).
    when_failed: Option<String>,
}

#[derive(Debug, Clone)]
struct Config {
    name: String,
    listen: SocketAddr,
    calls: Vec<Call>,
    fail_status: u16,
}

/// Service names and call names end up unescaped in JSON bodies and logs, so they are
/// restricted to characters that need no escaping anywhere.
fn check_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(())
    } else {
        Err(format!(
            "name {name:?} must be non-empty and use only A-Z a-z 0-9 - _ ."
        ))
    }
}

/// `http://IP:PORT/path` or `http://[IPv6]:PORT/path` → (address, path). No DNS on purpose:
/// the services live in network namespaces with fixed addresses and no resolver.
fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("URL {url:?} must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority.parse().map_err(|_| {
        format!("URL {url:?}: {authority:?} is not IPv4:PORT or [IPv6]:PORT (no host names)")
    })?;
    if addr.port() == 0 {
        return Err(format!("URL {url:?}: port 0 is not a destination"));
    }
    Ok((addr, path.to_owned()))
}

/// Parses `NAME METHOD URL [retries=N] [on-error=fail|fallback] [timeout-ms=N]`.
fn parse_call(spec: &str) -> Result<Call, String> {
    let mut words = spec.split_whitespace();
    let (Some(name), Some(method), Some(url)) = (words.next(), words.next(), words.next()) else {
        return Err(format!(
            "call {spec:?}: expected 'NAME METHOD URL [retries=N] [on-error=fail|fallback] [timeout-ms=N]'"
        ));
    };
    check_name(name).map_err(|e| format!("call {spec:?}: {e}"))?;
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "call {name}: method {method:?} must be upper case, like GET or POST"
        ));
    }
    let (addr, path) = parse_url(url).map_err(|e| format!("call {name}: {e}"))?;
    let mut call = Call {
        name: name.to_owned(),
        method: method.to_owned(),
        addr,
        path,
        retries: 0,
        on_error: OnError::Fail,
        timeout: DEFAULT_TIMEOUT,
        when_failed: None,
    };
    for option in words {
        let Some((key, value)) = option.split_once('=') else {
            return Err(format!("call {name}: option {option:?} is not KEY=VALUE"));
        };
        match key {
            "retries" => {
                call.retries = value.parse().map_err(|_| {
                    format!("call {name}: retries={value:?} is not a non-negative whole number")
                })?;
            }
            "on-error" => {
                call.on_error = match value {
                    "fail" => OnError::Fail,
                    "fallback" => OnError::Fallback,
                    _ => {
                        return Err(format!(
                            "call {name}: on-error={value:?} must be fail or fallback"
                        ));
                    }
                };
            }
            "when-failed" => call.when_failed = Some(value.to_owned()),
            "timeout-ms" => match value.parse::<u64>() {
                // Zero would mean "no timeout" to the socket API; refuse it.
                Ok(ms) if ms > 0 => call.timeout = Duration::from_millis(ms),
                _ => {
                    return Err(format!(
                        "call {name}: timeout-ms={value:?} must be a positive number of milliseconds"
                    ));
                }
            },
            _ => {
                return Err(format!(
                    "call {name}: unknown option {key:?} (known: retries, on-error, timeout-ms, when-failed)"
                ));
            }
        }
    }
    Ok(call)
}

/// Parses the command line (without the program name). `Ok(None)` means --help.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Config>, String> {
    let mut args = args.into_iter();
    let (mut name, mut listen, mut calls, mut fail_status) = (None, None, Vec::<Call>::new(), 503);
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(None);
        }
        // Accept both `--flag value` and `--flag=value`.
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), value.to_owned()),
            _ => {
                let value = args.next();
                (
                    arg,
                    value.ok_or_else(|| "missing value after the last flag".to_owned())?,
                )
            }
        };
        match flag.as_str() {
            "--name" => {
                check_name(&value).map_err(|e| format!("--name: {e}"))?;
                name = Some(value);
            }
            "--listen" => {
                let addr = value
                    .parse::<SocketAddr>()
                    .map_err(|_| format!("--listen {value:?} is not IPv4:PORT or [IPv6]:PORT"))?;
                listen = Some(addr);
            }
            "--call" => {
                let call = parse_call(&value)?;
                // Call names are keys of the JSON "calls" object, so they must be unique.
                if calls.iter().any(|c| c.name == call.name) {
                    return Err(format!("two calls are named {:?}", call.name));
                }
                calls.push(call);
            }
            "--fail-status" => {
                fail_status = match value.parse::<u16>() {
                    Ok(status) if (200..=599).contains(&status) => status,
                    _ => return Err(format!("--fail-status {value:?} must be a status 200-599")),
                };
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(Some(Config {
        name: name.ok_or("--name is required")?,
        listen: listen.ok_or("--listen is required")?,
        calls,
        fail_status,
    }))
}

/// Splits a request target into (path, query); the query is "" when absent.
fn split_target(target: &str) -> (&str, &str) {
    target.split_once('?').unwrap_or((target, ""))
}

/// The raw (not percent-decoded) value of `key` in a query string; `key` alone gives "".
fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The outbound target: the call's path with the inbound query appended, so that
/// `order=ID` travels down the whole chain.
fn outbound_target(path: &str, query: &str) -> String {
    match (query.is_empty(), path.contains('?')) {
        (true, _) => path.to_owned(),
        (false, true) => format!("{path}&{query}"),
        (false, false) => format!("{path}?{query}"),
    }
}

/// `HTTP/1.x NNN [reason]` → NNN. Needs the whole line, so a response cut off by a reset
/// mid-line does not count as an answer.
fn parse_status_line(response: &[u8]) -> Option<u16> {
    let end = response.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(response.get(..end)?)
        .ok()?
        .trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let (version, code) = (parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/1.")
        || code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let status: u16 = code.parse().ok()?;
    (100..=599).contains(&status).then_some(status)
}

#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
enum BadRequest {
    /// The client closed without sending anything (e.g. a port probe): nothing to answer.
    Closed,
    /// Reading failed (reset, timeout): nobody to answer.
    Io(io::Error),
    HeadTooLarge,
    BodyTooLarge,
    Malformed(&'static str),
}

fn read_request(stream: &mut impl Read) -> Result<Request, BadRequest> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0_u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buf.len() >= MAX_HEAD {
            return Err(BadRequest::HeadTooLarge);
        }
        let n = stream.read(&mut chunk).map_err(BadRequest::Io)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                BadRequest::Closed
            } else {
                BadRequest::Malformed("connection closed before the end of the head")
            });
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    };
    if head_end + 4 > MAX_HEAD {
        return Err(BadRequest::HeadTooLarge);
    }
    let (head, rest) = buf.split_at(head_end);
    let already_read = rest.get(4..).unwrap_or_default();
    let head = std::str::from_utf8(head).map_err(|_| BadRequest::Malformed("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(BadRequest::Malformed(
            "request line is not METHOD TARGET VERSION",
        ));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(BadRequest::Malformed("bad method"));
    }
    if !target.starts_with('/') {
        return Err(BadRequest::Malformed("target must be an origin-form path"));
    }
    if !version.starts_with("HTTP/1.") {
        return Err(BadRequest::Malformed("not HTTP/1.x"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(BadRequest::Malformed("header line without ':'"));
        };
        // A bare CR or LF inside a header would let a copied header (traceparent) smuggle
        // extra lines into our outbound requests.
        if name.is_empty()
            || name.bytes().any(|b| b.is_ascii_whitespace())
            || value.bytes().any(|b| b == b'\r' || b == b'\n')
        {
            return Err(BadRequest::Malformed("bad header line"));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let request = Request {
        method: (*method).to_owned(),
        target: (*target).to_owned(),
        headers,
    };
    // Bodies are framed by Content-Length only; chunked uploads are out of scope here.
    if request.header("transfer-encoding").is_some() {
        return Err(BadRequest::Malformed("Transfer-Encoding is not supported"));
    }
    let mut length: Option<usize> = None;
    for (_, value) in request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        let parsed = value
            .parse::<usize>()
            .map_err(|_| BadRequest::Malformed("bad Content-Length"))?;
        if length.is_some_and(|l| l != parsed) {
            return Err(BadRequest::Malformed("conflicting Content-Length headers"));
        }
        length = Some(parsed);
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(BadRequest::BodyTooLarge);
    }
    // The body's content does not matter to this service, but it must be read: closing
    // with unread data would reset the connection. Bytes beyond it (a pipelined request)
    // are ignored: we answer one request and close.
    let missing = length.saturating_sub(already_read.len());
    if missing > 0 {
        let mut rest = vec![0_u8; missing];
        stream.read_exact(&mut rest).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                BadRequest::Malformed("body shorter than Content-Length")
            }
            _ => BadRequest::Io(e),
        })?;
    }
    Ok(request)
}

#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    fn json(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: "application/json",
            body,
        }
    }

    /// The whole response as one buffer, written with one call: fewer segments on the wire.
    fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            413 => "Content Too Large",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "",
        };
        let mut bytes = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

/// Short, stable words for the errors a fault injector causes, for the logs.
fn describe(err: &io::Error, while_doing: &str) -> String {
    let what = match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            "connection reset".to_owned()
        }
        io::ErrorKind::BrokenPipe => "broken pipe".to_owned(),
        // A socket read timeout shows up as WouldBlock on Linux.
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timeout".to_owned(),
        _ => err.to_string(),
    };
    format!("{what} while {while_doing}")
}

#[derive(Debug)]
struct Service {
    config: Config,
    /// POSTs processed per `order` value: a count of 2 means a request executed twice.
    processed: Mutex<HashMap<String, u64>>,
}

impl Service {
    fn new(config: Config) -> Self {
        Self {
            config,
            processed: Mutex::new(HashMap::new()),
        }
    }

    fn processed(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // A panicking handler thread cannot leave a half-updated counter; keep serving.
        self.processed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn respond(&self, request: &Request) -> Response {
        let me = &self.config.name;
        let (path, query) = split_target(&request.target);
        let order = query_param(query, "order").unwrap_or("");
        match (request.method.as_str(), path) {
            ("GET", "/health") => return Response::text(200, "ok"),
            ("GET", "/processed") => {
                let count = self.processed().get(order).copied().unwrap_or(0);
                return Response::text(200, count.to_string());
            }
            _ => {}
        }
        // Counted when the work starts, before the calls: a retried POST that reaches us
        // twice is executed twice, which is exactly what a functional test must catch.
        if request.method == "POST" {
            *self.processed().entry(order.to_owned()).or_insert(0) += 1;
        }
        let traceparent = request.header("traceparent");
        let mut outcomes = Vec::new();
        let mut failed: Vec<&str> = Vec::new();
        for call in &self.config.calls {
            if let Some(primary) = &call.when_failed
                && !failed.contains(&primary.as_str())
            {
                continue;
            }
            if self.call_with_retries(call, query, traceparent) {
                outcomes.push(format!("\"{}\":\"ok\"", call.name));
            } else if call.on_error == OnError::Fallback {
                failed.push(&call.name);
                outcomes.push(format!("\"{}\":\"fallback\"", call.name));
            } else {
                return Response::json(
                    self.config.fail_status,
                    format!("{{\"service\":\"{me}\",\"failed\":\"{}\"}}", call.name),
                );
            }
        }
        Response::json(
            200,
            format!(
                "{{\"service\":\"{me}\",\"ok\":true,\"calls\":{{{}}}}}",
                outcomes.join(",")
            ),
        )
    }

    /// True when one of the 1 + retries attempts succeeds. Retries are immediate (no
    /// backoff) so explorations stay fast and timing stays predictable.
    fn call_with_retries(&self, call: &Call, query: &str, traceparent: Option<&str>) -> bool {
        let me = &self.config.name;
        for attempt in 1..=call.retries.saturating_add(1) {
            match call_once(call, query, traceparent) {
                Ok(status) if status < 500 => {
                    eprintln!("{me}: call {} attempt {attempt} -> {status}", call.name);
                    return true;
                }
                Ok(status) => {
                    eprintln!(
                        "{me}: call {} attempt {attempt} failed: status {status}",
                        call.name
                    );
                }
                Err(why) => eprintln!("{me}: call {} attempt {attempt} failed: {why}", call.name),
            }
        }
        false
    }
}

/// One attempt on a fresh connection: the status, or why it failed.
fn call_once(call: &Call, query: &str, traceparent: Option<&str>) -> Result<u16, String> {
    let mut stream = TcpStream::connect_timeout(&call.addr, call.timeout)
        .map_err(|e| describe(&e, "connecting"))?;
    stream
        .set_read_timeout(Some(call.timeout))
        .and_then(|()| stream.set_write_timeout(Some(call.timeout)))
        .map_err(|e| describe(&e, "setting timeouts"))?;
    let mut request = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        call.method,
        outbound_target(&call.path, query),
        call.addr
    );
    if call.method == "POST" {
        request.push_str("Content-Length: 0\r\n");
    }
    if let Some(traceparent) = traceparent {
        request.push_str("traceparent: ");
        request.push_str(traceparent);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| describe(&e, "sending the request"))?;
    // Read to EOF (we asked for Connection: close). A reset even after the status line
    // counts as a failure: the caller cannot know the response was complete.
    let mut response = Vec::new();
    (&stream)
        .take(MAX_RESPONSE)
        .read_to_end(&mut response)
        .map_err(|e| describe(&e, "reading the response"))?;
    parse_status_line(&response).ok_or_else(|| {
        if response.is_empty() {
            "connection closed without a response".to_owned()
        } else {
            "unparsable response".to_owned()
        }
    })
}

fn handle(service: &Service, mut stream: TcpStream) {
    let me = &service.config.name;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    if let Err(e) = stream.set_read_timeout(Some(INBOUND_TIMEOUT)) {
        eprintln!("{me}: cannot set a read timeout for {peer}: {e}");
        return;
    }
    let response = match read_request(&mut stream) {
        Ok(request) => {
            let response = service.respond(&request);
            eprintln!(
                "{me}: {} {} -> {}",
                request.method, request.target, response.status
            );
            response
        }
        Err(BadRequest::Closed) => return,
        Err(BadRequest::Io(e)) => {
            eprintln!(
                "{me}: reading a request from {peer} failed: {}",
                describe(&e, "reading")
            );
            return;
        }
        Err(bad) => {
            let response = match bad {
                BadRequest::HeadTooLarge => {
                    Response::text(431, "request head larger than 16 KiB\n")
                }
                BadRequest::BodyTooLarge => {
                    Response::text(413, "request body larger than 64 KiB\n")
                }
                BadRequest::Malformed(why) => Response::text(400, format!("{why}\n")),
                BadRequest::Closed | BadRequest::Io(_) => return,
            };
            eprintln!(
                "{me}: bad request from {peer} -> {} ({})",
                response.status,
                response.body.trim_end()
            );
            response
        }
    };
    if let Err(e) = stream.write_all(&response.to_bytes()) {
        eprintln!("{me}: answering {peer} failed: {}", describe(&e, "writing"));
        return;
    }
    // Half-close, then drain what the client still sends (see DRAIN_TIMEOUT).
    let _ = stream.shutdown(Shutdown::Write);
    if stream.set_read_timeout(Some(DRAIN_TIMEOUT)).is_ok() {
        let _ = io::copy(&mut stream.take(MAX_RESPONSE), &mut io::sink());
    }
}

/// Serves forever on `listener`, one thread per connection. Separate from `main` so the
/// tests can run services on ephemeral ports.
fn serve(listener: &TcpListener, service: &Arc<Service>) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let for_thread = Arc::clone(service);
                let spawned = thread::Builder::new()
                    .name("fi-shop-conn".to_owned())
                    .spawn(move || handle(&for_thread, stream));
                if let Err(e) = spawned {
                    eprintln!(
                        "{}: cannot start a connection thread: {e}",
                        service.config.name
                    );
                }
            }
            Err(e) => {
                eprintln!("{}: accept failed: {e}", service.config.name);
                // E.g. out of file descriptors: don't spin.
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn main() -> ExitCode {
    let config = match parse_args(env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("fi-shop: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(config.listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "fi-shop {}: cannot listen on {}: {e}",
                config.name, config.listen
            );
            return ExitCode::FAILURE;
        }
    };
    eprintln!("{}: listening on {}", config.name, config.listen);
    for call in &config.calls {
        eprintln!(
            "{}: will call {} {} http://{}{} retries={} on-error={} timeout={:?}",
            config.name,
            call.name,
            call.method,
            call.addr,
            call.path,
            call.retries,
            match call.on_error {
                OnError::Fail => "fail",
                OnError::Fallback => "fallback",
            },
            call.timeout
        );
    }
    serve(&listener, &Arc::new(Service::new(config)));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_spec_defaults_and_options() {
        let call = parse_call("inventory GET http://10.77.0.4:8080/stock/42").unwrap();
        assert_eq!(call.name, "inventory");
        assert_eq!(call.method, "GET");
        assert_eq!(call.addr, "10.77.0.4:8080".parse().unwrap());
        assert_eq!(call.path, "/stock/42");
        assert_eq!(
            (call.retries, call.on_error, call.timeout),
            (0, OnError::Fail, DEFAULT_TIMEOUT)
        );

        let call = parse_call(
            "payments POST http://10.77.0.3:8080/charge retries=1 on-error=fallback timeout-ms=800",
        )
        .unwrap();
        assert_eq!(call.retries, 1);
        assert_eq!(call.on_error, OnError::Fallback);
        assert_eq!(call.timeout, Duration::from_millis(800));
    }

    #[test]
    fn bad_call_specs_say_what_is_wrong() {
        let cases = [
            ("inventory GET", "expected 'NAME METHOD URL"),
            ("inv entory GET http://1.2.3.4:80/", "method \"entory\""),
            ("a\"b GET http://1.2.3.4:80/", "must be non-empty"),
            ("inv GET https://1.2.3.4:80/", "must start with http://"),
            ("inv GET http://inventory:80/", "no host names"),
            ("inv GET http://1.2.3.4/", "no host names"),
            ("inv GET http://1.2.3.4:80/ retries=x", "retries=\"x\""),
            (
                "inv GET http://1.2.3.4:80/ on-error=ignore",
                "must be fail or fallback",
            ),
            ("inv GET http://1.2.3.4:80/ timeout-ms=0", "positive number"),
            (
                "inv GET http://1.2.3.4:80/ retry=1",
                "unknown option \"retry\"",
            ),
            ("inv GET http://1.2.3.4:80/ fallback", "not KEY=VALUE"),
        ];
        for (spec, expected) in cases {
            let err = parse_call(spec).unwrap_err();
            assert!(
                err.contains(expected),
                "{spec:?}: {err:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn urls() {
        let (addr, path) = parse_url("http://[fd00::2]:8080/recs?x=1").unwrap();
        assert_eq!(addr, "[fd00::2]:8080".parse().unwrap());
        assert_eq!(path, "/recs?x=1");
        assert_eq!(parse_url("http://10.0.0.1:80").unwrap().1, "/");
        assert!(parse_url("http://10.0.0.1:0/").is_err());
        assert!(parse_url("http://[fd00::2]/").is_err());
    }

    #[test]
    fn queries() {
        assert_eq!(split_target("/charge?order=7&x"), ("/charge", "order=7&x"));
        assert_eq!(split_target("/charge"), ("/charge", ""));
        assert_eq!(query_param("a=1&order=7", "order"), Some("7"));
        assert_eq!(query_param("order", "order"), Some(""));
        assert_eq!(query_param("orders=1", "order"), None);
        assert_eq!(query_param("", "order"), None);
        assert_eq!(outbound_target("/stock/42", "order=7"), "/stock/42?order=7");
        assert_eq!(outbound_target("/s?x=1", "order=7"), "/s?x=1&order=7");
        assert_eq!(outbound_target("/s", ""), "/s");
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n\r\n"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\nX: y\r\n"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), None, "line cut off");
        assert_eq!(parse_status_line(b"HTTP/2 200 OK\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20 OK\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 999 ?\r\n"), None);
        assert_eq!(parse_status_line(b"garbage\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    fn args(line: &[&str]) -> Result<Option<Config>, String> {
        parse_args(line.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn command_lines() {
        let config = args(&[
            "--name",
            "frontend",
            "--listen=10.77.0.1:8080",
            "--call",
            "inventory GET http://10.77.0.4:8080/stock/42",
            "--call=recommend GET http://10.77.0.2:8080/recs on-error=fallback",
            "--fail-status",
            "500",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.name, "frontend");
        assert_eq!(config.calls.len(), 2);
        assert_eq!(config.fail_status, 500);
        assert!(args(&["--help"]).unwrap().is_none());
        assert!(
            args(&["--listen", "1.2.3.4:1"])
                .unwrap_err()
                .contains("--name is required")
        );
        assert!(
            args(&["--name", "a"])
                .unwrap_err()
                .contains("--listen is required")
        );
        assert!(args(&["--name"]).unwrap_err().contains("missing value"));
        assert!(
            args(&["--name", "a", "--fail-status", "99"])
                .unwrap_err()
                .contains("200-599")
        );
        assert!(
            args(&["--nmae", "a"])
                .unwrap_err()
                .contains("unknown argument")
        );
        let dup = args(&[
            "--name",
            "a",
            "--listen",
            "1.2.3.4:1",
            "--call",
            "b GET http://1.2.3.4:1/",
            "--call",
            "b GET http://1.2.3.4:2/",
        ]);
        assert!(dup.unwrap_err().contains("two calls are named"));
    }

    #[test]
    fn request_reading() {
        let req = read_request(&mut &b"POST /charge?order=7 HTTP/1.1\r\nTraceparent: 00-ab\r\nContent-Length: 3\r\n\r\nabc"[..]).unwrap();
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("POST", "/charge?order=7")
        );
        assert_eq!(req.header("traceparent"), Some("00-ab"));
        let big_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(
            read_request(&mut big_head.as_bytes()),
            Err(BadRequest::HeadTooLarge)
        ));
        let big_body = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(
            read_request(&mut big_body.as_bytes()),
            Err(BadRequest::BodyTooLarge)
        ));
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
        ] {
            assert!(matches!(
                read_request(&mut &bad[..]),
                Err(BadRequest::Malformed(_))
            ));
        }
        assert!(matches!(
            read_request(&mut &b""[..]),
            Err(BadRequest::Closed)
        ));
    }

    /// Starts a service on an ephemeral 127.0.0.1 port; its thread is left running.
    fn start(name: &str, calls: &[String]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = listener.local_addr().unwrap();
        let mut line = vec![
            "--name".to_owned(),
            name.to_owned(),
            "--listen".to_owned(),
            listen.to_string(),
        ];
        for call in calls {
            line.extend(["--call".to_owned(), call.clone()]);
        }
        let service = Arc::new(Service::new(parse_args(line).unwrap().unwrap()));
        thread::spawn(move || serve(&listener, &service));
        listen
    }

    /// Sends one request, returns (status, body).
    fn send(addr: SocketAddr, method: &str, target: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = parse_status_line(response.as_bytes()).unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    }

    /// A port nobody listens on: bind an ephemeral one, then free it.
    fn closed_port() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn chain_of_two_services() {
        let b = start("b", &[]);
        let a = start(
            "a",
            &[format!("b POST http://{b}/work retries=1 on-error=fail")],
        );
        let (status, body) = send(a, "POST", "/checkout?order=7");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, r#"{"service":"a","ok":true,"calls":{"b":"ok"}}"#);
        // The order id travelled down the chain, and each service executed the POST once.
        assert_eq!(send(a, "GET", "/processed?order=7"), (200, "1".to_owned()));
        assert_eq!(send(b, "GET", "/processed?order=7"), (200, "1".to_owned()));
        assert_eq!(send(b, "GET", "/processed?order=8"), (200, "0".to_owned()));
        assert_eq!(send(a, "GET", "/health"), (200, "ok".to_owned()));
    }

    #[test]
    fn failing_call_falls_back_or_fails() {
        let dead = closed_port();
        let lenient = start("a", &[format!("x GET http://{dead}/ on-error=fallback")]);
        let (status, body) = send(lenient, "GET", "/");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""x":"fallback""#), "{body}");

        let strict = start(
            "a",
            &[format!("x GET http://{dead}/ retries=2 on-error=fail")],
        );
        assert_eq!(
            send(strict, "GET", "/"),
            (503, r#"{"service":"a","failed":"x"}"#.to_owned())
        );
    }

    #[test]
    fn retry_recovers_from_one_dropped_connection() {
        // A downstream that closes its first connection without answering, then answers 200.
        let flaky = TcpListener::bind("127.0.0.1:0").unwrap();
        let flaky_addr = flaky.local_addr().unwrap();
        thread::spawn(move || {
            for (i, stream) in flaky.incoming().enumerate() {
                let mut stream = stream.unwrap();
                let _ = read_request(&mut stream);
                if i > 0 {
                    let _ = stream.write_all(&Response::text(200, "ok").to_bytes());
                }
            }
        });
        let a = start("a", &[format!("x GET http://{flaky_addr}/ retries=1")]);
        let (status, body) = send(a, "GET", "/");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""x":"ok""#), "{body}");
    }
}
