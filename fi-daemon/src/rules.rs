//! The rule engine: validates rules, keeps them in precedence order in the kernel's rule
//! array, reads their counters, expires them, and stops them all at once.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use aya::maps::MapError;
use fi_common::{
    fault::Fault,
    flow::v4_mapped,
    http::{HEADER_NAME_LEN, Method, PATH_LEN},
    rule::{
        ABORT_RESPONSE_LEN, AbortResponse, MATCH_CGROUP, MATCH_DST, MATCH_HEADER, MATCH_HOST,
        MATCH_HOST_SUFFIX, MATCH_METHOD, MATCH_PATH, MATCH_PATH_PREFIX, MATCH_PORT, MAX_RULES,
        RULE_ACTIVE, Rule, RuleStats, fnv,
    },
};

use crate::clock::monotonic_now;
use crate::{
    dataplane::RuleMaps,
    targets::{Resolve, TargetError},
};

/// Expired rules kept, with their counters, for `rules ls` and `rules get`: the newest
/// ones; older ones are gone. A rule's life: active, then expired (listed), then gone.
pub const FINISHED: usize = 100;

/// Why a rule operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no rule {0}")]
    NotFound(u32),
    #[error("too many rules (at most {MAX_RULES} active); delete some or `fictl stop`")]
    TooMany,
    #[error("match.container: {0}")]
    Container(#[source] TargetError),
    #[error("updating the kernel's rule maps: {0}")]
    Map(#[from] MapError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> RuleError {
    RuleError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A rule as a client sent it (plain values; every field checked by [`validate`]).
///
/// `None` means "any" (or "no gate"). A value that is given must be valid and non-empty:
/// an empty string or a zero count is an error naming the field, never a wider rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    pub container: Option<String>,
    pub destination: Option<String>,
    pub port: Option<u32>,
    pub methods: Vec<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub header_name: Option<String>,
    pub header_value: Option<String>,
    pub fault: Option<Fault>,
    pub probability_ppm: Option<u32>,
    pub skip_first: Option<u32>,
    pub max_injections: Option<u32>,
    pub nth: Option<u32>,
    pub ttl: Option<Duration>,
    pub priority: i32,
    pub description: String,
}

pub use fi_api::limits::{MAX_DESCRIPTION, MAX_FIELD};

/// A text matcher: absent, or non-empty, bounded and free of control characters (a CR or
/// LF could never match a parsed head, and would corrupt listings).
fn text<'a>(field: &'static str, value: &'a Option<String>) -> Result<Option<&'a str>, RuleError> {
    let Some(value) = value else {
        return Ok(None);
    };
    if value.is_empty() {
        return Err(invalid(
            field,
            "empty; leave the matcher out to match any value",
        ));
    }
    if value.len() > MAX_FIELD {
        return Err(invalid(
            field,
            format!("{} bytes, longer than {MAX_FIELD}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("{value:?} has a control character (CR, LF, TAB, ...)"),
        ));
    }
    Ok(Some(value))
}

/// A count gate: absent (0 in the kernel: no gate), or at least 1.
fn count(field: &'static str, value: Option<u32>) -> Result<u32, RuleError> {
    match value {
        None => Ok(0),
        Some(0) => Err(invalid(
            field,
            "0 is not allowed: give at least 1, or leave the gate out",
        )),
        Some(n) => Ok(n),
    }
}

/// A validated rule, ready for the kernel (all but its id, cgroup and expiry time).
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub draft: Draft,
    pub kernel: Rule,
    pub response: Option<AbortResponse>,
    /// The container's cgroup (relative), when given.
    pub cgroup: Option<String>,
}

/// Checks a draft and builds the kernel's form. `capture` names the captured headers (a
/// header matcher must name one of them); `targets` resolves the container (reading
/// cgroupfs: call it off the async threads).
pub fn validate(
    draft: Draft,
    capture: &[String],
    targets: &(impl Resolve + ?Sized),
) -> Result<Validated, RuleError> {
    let fault = draft.fault.ok_or_else(|| {
        invalid(
            "fault.kind",
            "required: timeout, reset, refuse, abort, response-lost or delay",
        )
    })?;
    let mut k = Rule::EMPTY;
    k.flags = RULE_ACTIVE;
    k.fault = fault.code() as u8;
    let mut cgroup = None;

    if let Some(container) = text("match.container", &draft.container)? {
        let info = targets
            .resolve_target(container)
            .map_err(RuleError::Container)?;
        k.flags |= MATCH_CGROUP;
        k.cgroup_id = info.cgroup_id;
        cgroup = Some(info.cgroup);
    }
    if let Some(destination) = text("match.destination", &draft.destination)? {
        let (addr, prefix) = parse_cidr(destination).ok_or_else(|| {
            invalid(
                "match.destination",
                format!(
                    "{destination:?} is not an IP address or CIDR (10.0.0.2, 10.0.0.0/24, fd00::/64)"
                ),
            )
        })?;
        k.flags |= MATCH_DST;
        k.dst_addr = addr;
        k.dst_prefix = prefix;
    }
    if let Some(port) = draft.port {
        k.flags |= MATCH_PORT;
        k.dst_port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                invalid(
                    "match.port",
                    format!("{port} is not a TCP port (1..=65535; leave it out for any)"),
                )
            })?;
    }
    if draft.methods.len() > Method::ALL.len() {
        return Err(invalid(
            "match.methods",
            format!(
                "{} methods; at most {}",
                draft.methods.len(),
                Method::ALL.len()
            ),
        ));
    }
    if !draft.methods.is_empty() {
        k.flags |= MATCH_METHOD;
        for m in &draft.methods {
            let method = Method::ALL
                .iter()
                .find(|x| x.as_str().eq_ignore_ascii_case(m))
                .ok_or_else(|| invalid("match.methods", format!("{m:?} is not an HTTP method (GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH)")))?;
            k.method_mask |= 1 << (*method as u8);
        }
    }
    if let Some(host) = text("match.host", &draft.host)? {
        let host = host.to_ascii_lowercase();
        let (name, suffix) = match host.strip_prefix("*.").or_else(|| host.strip_prefix('.')) {
            Some(domain) => (domain.to_owned(), true),
            None => (host.clone(), false),
        };
        if name.is_empty()
            || name.len() > 253
            || name.contains(['/', ' ', '*'])
            || (name.contains(':') && !name.starts_with('['))
        {
            return Err(invalid(
                "match.host",
                format!(
                    "{host:?} is not a host name (a port is never part of it; `*.example.com` for a domain)"
                ),
            ));
        }
        k.flags |= MATCH_HOST;
        if suffix {
            k.flags |= MATCH_HOST_SUFFIX;
        }
        k.host_hash = fnv(name.as_bytes());
    }
    if let Some(pattern) = text("match.path", &draft.path)? {
        // Exact, or a prefix ending in "/*": the star is a whole last segment or nothing.
        let (path, prefix) = match pattern.strip_suffix("/*") {
            Some(dir) => (&pattern[..dir.len() + 1], true),
            None => (pattern, false),
        };
        if !path.starts_with('/') || path.contains(['?', '#', ' ', '*']) {
            return Err(invalid(
                "match.path",
                format!(
                    "{pattern:?}: a path is exact (\"/api/users\") or a prefix ending in \"/*\" (\"/api/*\"), starts with '/', and has no query, space or other '*'"
                ),
            ));
        }
        if prefix && path.len() > PATH_LEN {
            return Err(invalid(
                "match.path",
                format!("a prefix is at most {PATH_LEN} bytes"),
            ));
        }
        k.flags |= MATCH_PATH;
        if prefix {
            k.flags |= MATCH_PATH_PREFIX;
        }
        k.path_hash = fnv(path.as_bytes());
        k.path_len = u32::try_from(path.len()).map_err(|_| invalid("match.path", "too long"))?;
    }
    match (
        text("match.header_name", &draft.header_name)?,
        text("match.header_value", &draft.header_value)?,
    ) {
        (None, None) => {}
        (Some(name), Some(value)) => {
            let name = name.to_ascii_lowercase();
            if name.len() > HEADER_NAME_LEN {
                return Err(invalid("match.header_name", "too long"));
            }
            let slot = capture.iter().position(|c| *c == name).ok_or_else(|| {
                invalid("match.header_name", format!("{name:?} is not captured by the daemon (captured: {}); start fi-daemon with --capture-header {name}", capture.join(", ")))
            })?;
            k.flags |= MATCH_HEADER;
            k.header_slot = slot as u8;
            k.header_hash = fnv(value.as_bytes());
        }
        (None, Some(_)) => {
            return Err(invalid(
                "match.header_name",
                "required with match.header_value",
            ));
        }
        (Some(_), None) => {
            return Err(invalid(
                "match.header_value",
                "required with match.header_name",
            ));
        }
    }
    if fault == Fault::Refuse && k.flags & fi_common::rule::REQUEST_MATCHERS != 0 {
        return Err(invalid(
            "fault.kind",
            "refuse happens at connect, before any request: only container, destination and port can select it",
        ));
    }
    // The fault's own values were checked when it was made (fi_common::fault).
    let mut response = None;
    match fault {
        Fault::Abort(status) => {
            k.abort_status = status;
            response = Some(abort_response(status));
        }
        Fault::Delay(delay) => k.delay_ns = delay.as_nanos() as u64,
        _ => {}
    }
    k.probability_ppm = match draft.probability_ppm {
        None => 1_000_000,
        Some(p @ 1..=1_000_000) => p,
        Some(p) => {
            return Err(invalid(
                "probability_ppm",
                format!("{p} is outside 1..=1,000,000 parts per million (leave it out for all)"),
            ));
        }
    };
    k.skip_first = count("skip_first", draft.skip_first)?;
    k.max_injections = count("max_injections", draft.max_injections)?;
    k.nth = count("nth", draft.nth)?;
    if k.nth != 0 && k.skip_first != 0 {
        return Err(invalid("nth", "give nth or skip_first, not both"));
    }
    if let Some(ttl) = draft.ttl
        && (ttl.is_zero() || ttl > Duration::from_secs(30 * 86_400))
    {
        return Err(invalid(
            "ttl",
            "must be between 1ns and 30 days (leave it out: never expires)",
        ));
    }
    if draft.description.len() > MAX_DESCRIPTION {
        return Err(invalid(
            "description",
            format!(
                "{} bytes, longer than {MAX_DESCRIPTION}",
                draft.description.len()
            ),
        ));
    }
    if draft.description.chars().any(char::is_control) {
        return Err(invalid(
            "description",
            "has a control character (CR, LF, TAB, ...)",
        ));
    }
    Ok(Validated {
        draft,
        kernel: k,
        response,
        cgroup,
    })
}

/// `addr` or `addr/prefix` to an IPv6 (or IPv4-mapped) network and prefix length.
pub fn parse_cidr(text: &str) -> Option<([u8; 16], u8)> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
        None => (text, None),
    };
    match addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()?
    {
        IpAddr::V4(v4) => {
            let p = prefix.unwrap_or(32);
            (p <= 32).then(|| (v4_mapped(v4.octets()), 96 + p))
        }
        IpAddr::V6(v6) => {
            let p = prefix.unwrap_or(128);
            (p <= 128).then(|| (v6.octets(), p))
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected",
    }
}

/// The bytes an abort answers with: a complete response that closes the connection
/// (the server never saw the request, so the connection cannot go on), padded with
/// spaces to a multiple of 4 bytes for the kernel's checksum helper.
pub fn abort_response(status: u16) -> AbortResponse {
    let mut body = format!("fi: injected {status}\n");
    let head_for = |len: usize| {
        format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {len}\r\nconnection: close\r\nx-fi-fault: abort\r\n\r\n",
            reason(status)
        )
    };
    while (head_for(body.len()).len() + body.len()) % 4 != 0 {
        body.insert(body.len() - 1, ' ');
    }
    let text = head_for(body.len()) + &body;
    let mut response = AbortResponse {
        len: text.len() as u32,
        _pad: 0,
        bytes: [0; ABORT_RESPONSE_LEN],
    };
    response.bytes[..text.len()].copy_from_slice(text.as_bytes());
    response
}

/// The kernel's rule maps, or a fake in unit tests.
pub trait RuleSink: Send {
    fn set_slot(
        &mut self,
        slot: u32,
        rule: &Rule,
        response: &AbortResponse,
    ) -> Result<(), MapError>;
    fn set_count(&mut self, count: u32) -> Result<(), MapError>;
    fn add_stats(&mut self, id: u32) -> Result<(), MapError>;
    fn remove_stats(&mut self, id: u32) -> Result<(), MapError>;
    fn stats(&self, id: u32) -> RuleStats;
}

/// The kernel's rule maps.
impl RuleSink for RuleMaps {
    fn set_slot(
        &mut self,
        slot: u32,
        rule: &Rule,
        response: &AbortResponse,
    ) -> Result<(), MapError> {
        self.responses.set(slot, response, 0)?;
        self.rules.set(slot, rule, 0)
    }
    fn set_count(&mut self, count: u32) -> Result<(), MapError> {
        self.count.set(0, count, 0)
    }
    fn add_stats(&mut self, id: u32) -> Result<(), MapError> {
        self.stats.insert(id, RuleStats::default(), 0)
    }
    fn remove_stats(&mut self, id: u32) -> Result<(), MapError> {
        self.stats.remove(&id)
    }
    fn stats(&self, id: u32) -> RuleStats {
        self.stats.get(&id, 0).unwrap_or_default()
    }
}

/// A rule's life so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    Expired,
    Exhausted,
}

/// A rule as listed.
#[derive(Debug, Clone)]
pub struct RuleView {
    pub id: u32,
    pub rule: Validated,
    pub state: State,
    pub stats: RuleStats,
    pub created: SystemTime,
    pub expires: Option<SystemTime>,
}

#[derive(Debug, Clone)]
struct Entry {
    rule: Validated,
    created: SystemTime,
    expires: Option<SystemTime>,
    expires_mono: Option<Duration>,
}

/// The active rules and the kernel's copy of them.
pub struct Rules {
    sink: Box<dyn RuleSink>,
    next_id: u32,
    active: BTreeMap<u32, Entry>,
    finished: VecDeque<RuleView>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("active", &self.active.len())
            .finish_non_exhaustive()
    }
}

impl Rules {
    pub fn new(sink: Box<dyn RuleSink>) -> Self {
        Self {
            sink,
            next_id: 1,
            active: BTreeMap::new(),
            finished: VecDeque::new(),
        }
    }

    /// Activates a validated rule; returns its id.
    pub fn create(&mut self, mut rule: Validated) -> Result<u32, RuleError> {
        if self.active.len() >= MAX_RULES as usize {
            return Err(RuleError::TooMany);
        }
        let id = self.next_id;
        rule.kernel.id = id;
        let now = SystemTime::now();
        let expires_mono = rule.draft.ttl.map(|ttl| monotonic_now() + ttl);
        rule.kernel.expires_ns = expires_mono.map_or(0, |t| t.as_nanos() as u64);
        self.sink.add_stats(id)?;
        self.next_id += 1;
        self.active.insert(
            id,
            Entry {
                expires: rule.draft.ttl.map(|ttl| now + ttl),
                rule,
                created: now,
                expires_mono,
            },
        );
        if let Err(err) = self.sync() {
            self.active.remove(&id);
            let _ = self.sink.remove_stats(id);
            let _ = self.sync();
            return Err(err);
        }
        Ok(id)
    }

    /// Writes the active rules into the kernel in precedence order: higher priority
    /// first, then creation order. The count is lowered first, so that the kernel never
    /// evaluates a slot being rewritten, then raised.
    fn sync(&mut self) -> Result<(), RuleError> {
        let mut order: Vec<(&u32, &Entry)> = self.active.iter().collect();
        order.sort_by_key(|(id, e)| (std::cmp::Reverse(e.rule.draft.priority), **id));
        let empty = AbortResponse {
            len: 0,
            _pad: 0,
            bytes: [0; ABORT_RESPONSE_LEN],
        };
        let slots: Vec<(Rule, AbortResponse)> = order
            .iter()
            .map(|(_, e)| (e.rule.kernel, e.rule.response.unwrap_or(empty)))
            .collect();
        self.sink.set_count(0)?;
        for (slot, (rule, response)) in slots.iter().enumerate() {
            self.sink.set_slot(slot as u32, rule, response)?;
        }
        self.sink.set_count(slots.len() as u32)?;
        Ok(())
    }

    /// Removes a rule, active or expired.
    pub fn delete(&mut self, id: u32) -> Result<(), RuleError> {
        if let Some(at) = self.finished.iter().position(|v| v.id == id) {
            self.finished.remove(at);
            return Ok(());
        }
        if self.active.remove(&id).is_none() {
            return Err(RuleError::NotFound(id));
        }
        self.sync()?;
        self.sink.remove_stats(id)?;
        Ok(())
    }

    /// The kill switch: the kernel stops matching when the count drops to zero. Returns how many
    /// rules were in effect (expired ones are moved to the finished list, not counted).
    pub fn stop_all(&mut self) -> Result<u32, RuleError> {
        // Expiry first: it rewrites the slots and the count, which must end at zero.
        self.expire()?;
        self.sink.set_count(0)?;
        let ids: Vec<u32> = self.active.keys().copied().collect();
        self.active.clear();
        for id in &ids {
            self.sink.remove_stats(*id)?;
        }
        Ok(ids.len() as u32)
    }

    fn view(&self, id: u32, e: &Entry) -> RuleView {
        let stats = self.sink.stats(id);
        let expired = e.expires_mono.is_some_and(|t| monotonic_now() >= t);
        let exhausted = e.rule.kernel.max_injections != 0
            && stats.injected >= u64::from(e.rule.kernel.max_injections);
        RuleView {
            id,
            rule: e.rule.clone(),
            state: if expired {
                State::Expired
            } else if exhausted {
                State::Exhausted
            } else {
                State::Active
            },
            stats,
            created: e.created,
            expires: e.expires,
        }
    }

    /// Rules in effect (not yet expired or removed).
    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// Active rules, then the recently finished ones.
    pub fn list(&self) -> Vec<RuleView> {
        let mut out: Vec<RuleView> = self
            .active
            .iter()
            .map(|(id, e)| self.view(*id, e))
            .collect();
        out.extend(self.finished.iter().cloned());
        out
    }

    pub fn get(&self, id: u32) -> Result<RuleView, RuleError> {
        if let Some(e) = self.active.get(&id) {
            return Ok(self.view(id, e));
        }
        self.finished
            .iter()
            .find(|v| v.id == id)
            .cloned()
            .ok_or(RuleError::NotFound(id))
    }

    /// Moves expired rules out of the kernel (they already match nothing there: the kernel
    /// checks the expiry time itself) into the finished list, with their counters.
    /// Returns their ids.
    pub fn expire(&mut self) -> Result<Vec<u32>, RuleError> {
        let now = monotonic_now();
        let expired: Vec<u32> = self
            .active
            .iter()
            .filter(|(_, e)| e.expires_mono.is_some_and(|t| now >= t))
            .map(|(id, _)| *id)
            .collect();
        if expired.is_empty() {
            return Ok(expired);
        }
        for id in &expired {
            if let Some(e) = self.active.get(id) {
                let mut view = self.view(*id, e);
                view.state = State::Expired;
                if self.finished.len() == FINISHED {
                    self.finished.pop_front();
                }
                self.finished.push_back(view);
            }
            self.active.remove(id);
        }
        self.sync()?;
        for id in &expired {
            self.sink.remove_stats(*id)?;
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod tests;
