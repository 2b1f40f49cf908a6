//! fi's fault vocabulary: what fi can do to one request, with its one text grammar and
//! its one printer. fictl's flags, the API conversion, the rule engine and the explorer
//! all speak it, so that `abort:503` means the same thing (and is refused for the same
//! reasons) everywhere.
//!
//! Grammar: `timeout`, `reset`, `refuse`, `response-lost`, `abort:STATUS`,
//! `delay:DURATION` (DURATION as in [`parse_duration`]). Round 1's explorer spelling
//! (`abort503`, `delay200ms`, `response_lost`) is accepted as a deprecated alias and always
//! printed in the one grammar.
//!
//! Host-only: the kernel sees a fault as its wire code, [`crate::rule::Fault`].

use core::{fmt, time::Duration};
use std::ops::RangeInclusive;

use crate::rule::Fault as Code;

/// Abort statuses: final responses only (a 1xx is interim and would leave the client
/// waiting for the real one).
pub const ABORT_STATUSES: RangeInclusive<u16> = 200..=599;
/// Shortest delay: below a millisecond the release thread's wake-up dominates.
pub const MIN_DELAY: Duration = Duration::from_millis(1);
/// Longest delay: a held request pins a packet in the daemon.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// One fault action.
///
/// The variant order is the order in which explorations list and try faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "stored::Stored", try_from = "stored::Stored")
)]
pub enum Fault {
    /// Answer the request with a TCP reset: ECONNRESET.
    Reset,
    /// The request and everything after it on its connection vanish: the client's own
    /// timeout fires.
    Timeout,
    /// Answer with an HTTP response of this status; the server never sees the request.
    Abort(u16),
    /// Hold the request this long, then let it go.
    Delay(Duration),
    /// Let the request through, then turn its response into a reset.
    ResponseLost,
    /// Answer the connection's SYN with a reset: ECONNREFUSED on connect.
    Refuse,
}

/// Why a fault (or one of its parts) is not valid. Each names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error(
        "unknown fault {0:?}: timeout, reset, refuse, response-lost, abort:STATUS, delay:DURATION"
    )]
    Unknown(String),
    #[error("{0} takes no argument")]
    NoArgument(&'static str),
    #[error("fault.status: abort needs a status, e.g. abort:503")]
    NoStatus,
    #[error("fault.status: {0:?} is not the status of a final HTTP response (200..=599)")]
    Status(String),
    #[error("fault.delay: delay needs a duration, e.g. delay:200ms")]
    NoDelay,
    #[error("fault.delay: {0}")]
    Delay(String),
}

impl Fault {
    /// Reset, timeout, abort 500 and abort 503: the failures every caller must handle.
    pub const DEFAULT_SET: [Fault; 4] = [
        Fault::Reset,
        Fault::Timeout,
        Fault::Abort(500),
        Fault::Abort(503),
    ];

    /// An abort, if `status` is a final response's.
    pub fn abort(status: u32) -> Result<Fault, FaultError> {
        u16::try_from(status)
            .ok()
            .filter(|s| ABORT_STATUSES.contains(s))
            .map(Fault::Abort)
            .ok_or_else(|| FaultError::Status(status.to_string()))
    }

    /// A delay, if it is within [`MIN_DELAY`]..=[`MAX_DELAY`].
    pub fn delay(duration: Duration) -> Result<Fault, FaultError> {
        if (MIN_DELAY..=MAX_DELAY).contains(&duration) {
            Ok(Fault::Delay(duration))
        } else {
            Err(FaultError::Delay(format!(
                "{} is outside 1ms..=60s",
                DurationText(duration)
            )))
        }
    }

    /// The kernel's code for this fault (its argument travels in the rule).
    pub const fn code(self) -> Code {
        match self {
            Fault::Reset => Code::Reset,
            Fault::Timeout => Code::Blackhole,
            Fault::Abort(_) => Code::Abort,
            Fault::Delay(_) => Code::Delay,
            Fault::ResponseLost => Code::ResponseLost,
            Fault::Refuse => Code::Refuse,
        }
    }

    /// The fault a kernel rule carries: its code with the argument the rule holds.
    pub fn of_rule(rule: &crate::rule::Rule) -> Option<Fault> {
        Some(match Code::from_u8(rule.fault)? {
            Code::Reset => Fault::Reset,
            Code::Blackhole => Fault::Timeout,
            Code::Refuse => Fault::Refuse,
            Code::ResponseLost => Fault::ResponseLost,
            Code::Abort => Fault::Abort(rule.abort_status),
            Code::Delay => Fault::Delay(Duration::from_nanos(rule.delay_ns)),
        })
    }

    /// Whether the fault acts on a request (every fault but `refuse`, which acts on a
    /// connection before any request exists).
    pub const fn acts_on_requests(self) -> bool {
        !matches!(self, Fault::Refuse)
    }

    /// Parses one fault in the grammar of this module.
    pub fn parse(text: &str) -> Result<Fault, FaultError> {
        let t = text.trim();
        let (kind, arg) = match t.split_once(':') {
            Some((kind, arg)) => (kind, Some(arg)),
            None => split_legacy(t),
        };
        let no_arg = |name: &'static str, fault: Fault| match arg {
            None => Ok(fault),
            Some(_) => Err(FaultError::NoArgument(name)),
        };
        match kind.to_ascii_lowercase().as_str() {
            "timeout" => no_arg("timeout", Fault::Timeout),
            "reset" => no_arg("reset", Fault::Reset),
            "refuse" => no_arg("refuse", Fault::Refuse),
            "response-lost" | "response_lost" => no_arg("response-lost", Fault::ResponseLost),
            "abort" => {
                let status = arg.filter(|a| !a.is_empty()).ok_or(FaultError::NoStatus)?;
                let code: u32 = status
                    .parse()
                    .map_err(|_| FaultError::Status(status.to_owned()))?;
                Fault::abort(code)
            }
            "delay" => {
                let d = arg.filter(|a| !a.is_empty()).ok_or(FaultError::NoDelay)?;
                Fault::delay(parse_duration(d).map_err(FaultError::Delay)?)
            }
            _ => Err(FaultError::Unknown(text.to_owned())),
        }
    }

    /// Parses a comma-separated set (`default` stands for [`Fault::DEFAULT_SET`]),
    /// sorted and without repeats.
    pub fn parse_set(text: &str) -> Result<Vec<Fault>, FaultError> {
        let mut set = Vec::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            if part.trim().eq_ignore_ascii_case("default") {
                set.extend(Fault::DEFAULT_SET);
            } else {
                set.push(Fault::parse(part)?);
            }
        }
        set.sort();
        set.dedup();
        if set.is_empty() {
            return Err(FaultError::Unknown(text.to_owned()));
        }
        Ok(set)
    }
}

/// Round 1's explorer spelling: `abort503`, `delay200ms` (kind and argument run together).
fn split_legacy(text: &str) -> (&str, Option<&str>) {
    for kind in ["abort", "delay"] {
        if let Some(rest) = text.strip_prefix(kind).filter(|r| !r.is_empty()) {
            return (kind, Some(rest));
        }
    }
    (text, None)
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Reset => f.write_str("reset"),
            Fault::Timeout => f.write_str("timeout"),
            Fault::Refuse => f.write_str("refuse"),
            Fault::ResponseLost => f.write_str("response-lost"),
            Fault::Abort(status) => write!(f, "abort:{status}"),
            Fault::Delay(d) => write!(f, "delay:{}", DurationText(*d)),
        }
    }
}

impl core::str::FromStr for Fault {
    type Err = FaultError;

    fn from_str(s: &str) -> Result<Fault, FaultError> {
        Fault::parse(s)
    }
}

/// Units of the duration grammar, largest first: (suffix, nanoseconds).
const UNITS: [(&str, u128); 6] = [
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// fi's duration grammar: one or more `NUMBER UNIT` parts, e.g. `250ms`, `1.5s`, `2m`,
/// `1m30s`, `1h 5m`, `30days`; units `d`, `h`, `m`, `s`, `ms`, `us` (also `µs`), `ns`,
/// and their common long names (`days`, `hours`, `min`, `seconds`...).
/// A negative or unitless value is an error that says so.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!(
            "{text:?} is negative; give a positive duration (e.g. 30s)"
        ));
    }
    let bad = || format!("{text:?} is not a duration (e.g. 250ms, 1.5s, 2m, 1m30s)");
    let mut rest = t;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_len);
        let tail = tail.trim_start();
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "d" | "day" | "days" => 24 * UNITS[0].1,
            "h" | "hr" | "hour" | "hours" => UNITS[0].1,
            "m" | "min" | "mins" | "minute" | "minutes" => UNITS[1].1,
            "s" | "sec" | "secs" | "second" | "seconds" => UNITS[2].1,
            "ms" | "msec" => UNITS[3].1,
            "us" | "µs" | "usec" => UNITS[4].1,
            "ns" | "nsec" => UNITS[5].1,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(scaled(number, scale).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        rest = tail.trim_start();
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// `number` (digits, optionally with a fraction) times `scale` nanoseconds, exactly.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos = whole.checked_mul(scale)?;
    let mut place = scale;
    for digit in fraction.chars() {
        place /= 10;
        nanos = nanos.checked_add(u128::from(digit.to_digit(10)?) * place)?;
    }
    Some(nanos)
}

/// A duration in [`parse_duration`]'s grammar, exactly: `250ms`, `1m30s`, `1s500ms`, `0s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub Duration);

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut left = self.0.as_nanos();
        if left == 0 {
            return f.write_str("0s");
        }
        for (name, scale) in UNITS {
            let n = left / scale;
            if n > 0 {
                write!(f, "{n}{name}")?;
                left %= scale;
            }
        }
        Ok(())
    }
}

/// How faults are stored (explorations in SQLite): the same JSON shape since round 1.
#[cfg(feature = "serde")]
mod stored {
    use core::time::Duration;

    use super::Fault;

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    #[serde(tag = "kind", rename_all = "kebab-case")]
    pub enum Stored {
        Reset,
        Timeout,
        Abort {
            status: u16,
        },
        Delay {
            millis: u64,
            /// The part below a millisecond (round 1 stored whole milliseconds only).
            #[serde(default, skip_serializing_if = "is_zero")]
            sub_ms_nanos: u32,
        },
        ResponseLost,
        Refuse,
    }

    fn is_zero(n: &u32) -> bool {
        *n == 0
    }

    impl From<Fault> for Stored {
        fn from(f: Fault) -> Stored {
            match f {
                Fault::Reset => Stored::Reset,
                Fault::Timeout => Stored::Timeout,
                Fault::Abort(status) => Stored::Abort { status },
                Fault::Delay(d) => Stored::Delay {
                    millis: d.as_millis() as u64,
                    sub_ms_nanos: d.subsec_nanos() % 1_000_000,
                },
                Fault::ResponseLost => Stored::ResponseLost,
                Fault::Refuse => Stored::Refuse,
            }
        }
    }

    impl TryFrom<Stored> for Fault {
        type Error = super::FaultError;

        fn try_from(s: Stored) -> Result<Fault, Self::Error> {
            Ok(match s {
                Stored::Reset => Fault::Reset,
                Stored::Timeout => Fault::Timeout,
                Stored::Abort { status } => Fault::abort(u32::from(status))?,
                Stored::Delay {
                    millis,
                    sub_ms_nanos,
                } => Fault::delay(
                    Duration::from_millis(millis) + Duration::from_nanos(u64::from(sub_ms_nanos)),
                )?,
                Stored::ResponseLost => Fault::ResponseLost,
                Stored::Refuse => Fault::Refuse,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_prints_in_the_grammar_it_parses_from() {
        let faults = [
            Fault::Reset,
            Fault::Timeout,
            Fault::Refuse,
            Fault::ResponseLost,
            Fault::Abort(200),
            Fault::Abort(503),
            Fault::Abort(599),
            Fault::Delay(Duration::from_millis(1)),
            Fault::Delay(Duration::from_micros(1500)),
            Fault::Delay(Duration::from_millis(250)),
            Fault::Delay(Duration::from_secs(60)),
        ];
        for fault in faults {
            let text = fault.to_string();
            assert_eq!(Fault::parse(&text), Ok(fault), "{text}");
        }
        assert_eq!(Fault::Abort(503).to_string(), "abort:503");
        assert_eq!(
            Fault::Delay(Duration::from_millis(1500)).to_string(),
            "delay:1s500ms"
        );
    }

    #[test]
    fn the_round_1_explorer_spelling_is_an_alias() {
        assert_eq!(Fault::parse("abort503"), Ok(Fault::Abort(503)));
        assert_eq!(
            Fault::parse("delay200ms"),
            Ok(Fault::Delay(Duration::from_millis(200)))
        );
        assert_eq!(Fault::parse("response_lost"), Ok(Fault::ResponseLost));
        assert_eq!(Fault::parse(" Reset "), Ok(Fault::Reset));
    }

    #[test]
    fn bad_faults_name_what_is_wrong() {
        assert_eq!(Fault::parse("abort"), Err(FaultError::NoStatus));
        assert_eq!(Fault::parse("abort:"), Err(FaultError::NoStatus));
        assert!(matches!(
            Fault::parse("abort:x"),
            Err(FaultError::Status(_))
        ));
        // One range everywhere: no interim responses, nothing past 599.
        for status in ["100", "199", "600", "70000"] {
            let err = Fault::parse(&format!("abort:{status}")).unwrap_err();
            assert!(err.to_string().starts_with("fault.status"), "{err}");
        }
        assert_eq!(
            Fault::parse("reset:1"),
            Err(FaultError::NoArgument("reset"))
        );
        assert_eq!(Fault::parse("delay"), Err(FaultError::NoDelay));
        for delay in [
            "delay:0s",
            "delay:999us",
            "delay:61s",
            "delay:-1s",
            "delay:5",
        ] {
            let err = Fault::parse(delay).unwrap_err();
            assert!(err.to_string().starts_with("fault.delay"), "{delay}: {err}");
        }
        assert!(matches!(
            Fault::parse("blackhole"),
            Err(FaultError::Unknown(_))
        ));
        assert!(
            Fault::parse("explode")
                .unwrap_err()
                .to_string()
                .contains("abort:STATUS")
        );
    }

    #[test]
    fn sets_sort_dedup_and_expand_default() {
        assert_eq!(
            Fault::parse_set("abort:503,default,reset"),
            Ok(Fault::DEFAULT_SET.to_vec())
        );
        assert!(Fault::parse_set(" , ").is_err());
    }

    #[test]
    fn durations_parse_exactly_and_print_back() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1m30s", Duration::from_secs(90)),
            ("1m 30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("10min", Duration::from_secs(600)),
            ("0.001s", Duration::from_millis(1)),
            (".5s", Duration::from_millis(500)),
            ("1500us", Duration::from_micros(1500)),
            ("7ns", Duration::from_nanos(7)),
            ("30days", Duration::from_secs(30 * 86_400)),
            ("2 hours", Duration::from_secs(7200)),
            ("5 seconds", Duration::from_secs(5)),
        ];
        for (text, d) in cases {
            assert_eq!(parse_duration(text), Ok(d), "{text}");
            assert_eq!(parse_duration(&DurationText(d).to_string()), Ok(d));
        }
        assert_eq!(DurationText(Duration::from_secs(299)).to_string(), "4m59s");
        for bad in ["", "5", "s", "1x", "-1s", "1..5s", "1s-"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("-3s").unwrap_err().contains("negative"));
    }

    #[test]
    fn the_kernel_code_follows_the_action() {
        assert_eq!(Fault::Timeout.code(), Code::Blackhole);
        assert_eq!(Fault::Abort(503).code(), Code::Abort);
        assert!(!Fault::Refuse.acts_on_requests());
    }
}
