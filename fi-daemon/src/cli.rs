//! Parsing fictl's rule arguments into API messages (pure, so they are unit-tested).

use std::time::Duration;

use crate::api::v1 as api;

/// `timeout`, `reset`, `refuse`, `abort:503`, `response-lost`, `delay:200ms`.
pub fn parse_fault(text: &str) -> Result<api::Fault, String> {
    let (kind, arg) = match text.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (text, None),
    };
    let mut fault = api::Fault::default();
    let no_arg = |kind: &str| match arg {
        None => Ok(()),
        Some(_) => Err(format!("{kind} takes no argument")),
    };
    fault.kind = match kind {
        "timeout" => {
            no_arg(kind)?;
            api::FaultKind::Timeout
        }
        "reset" => {
            no_arg(kind)?;
            api::FaultKind::Reset
        }
        "refuse" => {
            no_arg(kind)?;
            api::FaultKind::Refuse
        }
        "response-lost" => {
            no_arg(kind)?;
            api::FaultKind::ResponseLost
        }
        "abort" => {
            let status = arg.ok_or("abort needs a status: abort:503")?;
            fault.status = status
                .parse()
                .map_err(|_| format!("{status:?} is not an HTTP status"))?;
            api::FaultKind::Abort
        }
        "delay" => {
            let d = arg.ok_or("delay needs a duration: delay:200ms")?;
            let d = parse_duration(d)?;
            fault.delay = Some(prost_types::Duration::try_from(d).map_err(|e| e.to_string())?);
            api::FaultKind::Delay
        }
        other => {
            return Err(format!(
                "unknown fault {other:?}: timeout, reset, refuse, abort:STATUS, response-lost, delay:DURATION"
            ));
        }
    } as i32;
    Ok(fault)
}

/// `250ms`, `1.5s`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.starts_with('-') {
        return Err(format!(
            "{text:?} is negative; give a positive duration (e.g. 30s)"
        ));
    }
    if let Some(secs) = text.strip_suffix('s').and_then(|n| n.parse::<f64>().ok())
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (e.g. 250ms, 1.5s, 2m)"))
}

/// `30%`, `0.5%`, `12.5` (percent) to parts per million.
pub fn parse_percent(text: &str) -> Result<u32, String> {
    let value: f64 = text
        .strip_suffix('%')
        .unwrap_or(text)
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("{text:?} is not a percentage (e.g. 30%, 0.5%)"))?;
    let ppm = (value * 10_000.0).round();
    if !(1.0..=1_000_000.0).contains(&ppm) {
        return Err(format!("{text:?}: give a share in 0.0001%..=100%"));
    }
    Ok(ppm as u32)
}

/// `NAME=VALUE`.
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(n, v)| (n.trim().to_owned(), v.to_owned()))
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| format!("{text:?}: expected NAME=VALUE, e.g. x-fi-target=user-42"))
}

/// A one-line description of a rule's fault.
pub fn fault_name(f: &api::Fault) -> String {
    match api::FaultKind::try_from(f.kind) {
        Ok(api::FaultKind::Timeout) => "timeout".into(),
        Ok(api::FaultKind::Reset) => "reset".into(),
        Ok(api::FaultKind::Refuse) => "refuse".into(),
        Ok(api::FaultKind::ResponseLost) => "response-lost".into(),
        Ok(api::FaultKind::Abort) => format!("abort:{}", f.status),
        Ok(api::FaultKind::Delay) => {
            let d = f
                .delay
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or_default();
            format!("delay:{}", humantime::format_duration(d))
        }
        _ => "?".into(),
    }
}

/// A rule's share as text: `100%` when it was left out.
pub fn percent_text(ppm: Option<u32>) -> String {
    let ppm = ppm.unwrap_or(1_000_000);
    format!("{}%", f64::from(ppm) / 10_000.0)
}

/// A rule's count and time gates, `skip 2, max 1, ttl 4m 59s left`; empty without any.
pub fn gates_summary(spec: &api::CreateRuleRequest, ttl_left: Option<Duration>) -> String {
    let mut parts = Vec::new();
    if let Some(n) = spec.skip_first {
        parts.push(format!("skip {n}"));
    }
    if let Some(n) = spec.nth {
        parts.push(format!("nth {n}"));
    }
    if let Some(n) = spec.max_injections {
        parts.push(format!("max {n}"));
    }
    if let Some(left) = ttl_left {
        let left = Duration::from_secs(left.as_secs());
        parts.push(format!("ttl {} left", humantime::format_duration(left)));
    }
    parts.join(", ")
}

/// A one-line description of what a rule selects.
pub fn match_summary(m: &api::Match) -> String {
    let mut parts = Vec::new();
    if let Some(container) = &m.container {
        parts.push(format!("from {container}"));
    }
    if !m.methods.is_empty() {
        parts.push(m.methods.join(","));
    }
    let mut to = String::new();
    if let Some(host) = &m.host {
        to.push_str(host);
        if let Some(destination) = &m.destination {
            to.push_str(&format!(" ({destination})"));
        }
    } else if let Some(destination) = &m.destination {
        to.push_str(destination);
    }
    if let Some(port) = m.port {
        to.push_str(&format!(":{port}"));
    }
    if let Some(path) = &m.path {
        to.push_str(path);
    }
    if !to.is_empty() {
        parts.push(format!("to {to}"));
    }
    if let (Some(name), Some(value)) = (&m.header_name, &m.header_value) {
        parts.push(format!("with {name}={value}"));
    }
    if parts.is_empty() {
        "everything".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_with_their_arguments() {
        assert_eq!(
            parse_fault("reset").unwrap().kind,
            api::FaultKind::Reset as i32
        );
        let abort = parse_fault("abort:503").unwrap();
        assert_eq!(
            (abort.kind, abort.status),
            (api::FaultKind::Abort as i32, 503)
        );
        let delay = parse_fault("delay:250ms").unwrap();
        assert_eq!(delay.delay.unwrap().nanos, 250_000_000);
        assert_eq!(parse_fault("delay:1.5s").unwrap().delay.unwrap().seconds, 1);
        assert!(parse_fault("abort").is_err());
        assert!(parse_fault("abort:x").is_err());
        assert!(parse_fault("reset:1").is_err());
        assert!(
            parse_fault("explode")
                .unwrap_err()
                .contains("timeout, reset")
        );
        assert_eq!(fault_name(&parse_fault("delay:2s").unwrap()), "delay:2s");
        assert!(parse_fault("blackhole").is_err());
        assert!(parse_duration("-1s").unwrap_err().contains("negative"));
    }

    #[test]
    fn percentages_become_ppm() {
        assert_eq!(parse_percent("30%"), Ok(300_000));
        assert_eq!(parse_percent("0.5"), Ok(5_000));
        assert_eq!(parse_percent("100"), Ok(1_000_000));
        assert!(parse_percent("0").is_err());
        assert!(parse_percent("30%%").is_err());
        assert!(parse_percent("0.00001%").is_err());
        assert!(parse_percent("NaN").is_err());
        assert_eq!(parse_percent("0.0001%"), Ok(1));
        assert!(parse_percent("101%").is_err());
        assert!(parse_percent("x").is_err());
    }

    #[test]
    fn headers_need_a_name_and_a_value() {
        assert_eq!(
            parse_header("x-fi-target=u=1"),
            Ok(("x-fi-target".into(), "u=1".into()))
        );
        assert!(parse_header("x-fi-target").is_err());
        assert!(parse_header("=v").is_err());
    }
}
