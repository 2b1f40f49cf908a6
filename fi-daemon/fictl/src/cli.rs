//! Parsing fictl's rule arguments into API messages (pure, so they are unit-tested).

use std::time::Duration;

use fi_api::v1 as api;
use fi_common::fault::{DurationText, Fault};

/// A fault in fi's one grammar (`timeout`, `reset`, `refuse`, `response-lost`,
/// `abort:503`, `delay:200ms`); see `fi_common::fault`.
pub fn parse_fault(text: &str) -> Result<Fault, String> {
    Fault::parse(text).map_err(|e| e.to_string())
}

/// `250ms`, `1.5s`, `2m`, `1m30s`: fi's one duration grammar.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    fi_common::fault::parse_duration(text)
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

/// A rule's fault in the grammar it was given in (`?` for one this fictl does not know).
pub fn fault_name(f: &api::Fault) -> String {
    match fi_api::fault::from_api(f) {
        Ok(Some(fault)) => fault.to_string(),
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
        parts.push(format!("ttl {} left", DurationText(left)));
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
    fn faults_and_durations_use_the_one_grammar() {
        let delay = parse_fault("delay:1.5s").unwrap();
        assert_eq!(fault_name(&api::Fault::from(delay)), "delay:1s500ms");
        assert_eq!(
            fault_name(&api::Fault::from(parse_fault("abort:503").unwrap())),
            "abort:503"
        );
        assert!(parse_fault("abort").unwrap_err().contains("fault.status"));
        assert!(parse_fault("blackhole").is_err());
        assert!(parse_duration("-1s").unwrap_err().contains("negative"));
        assert_eq!(parse_duration("4m59s"), Ok(Duration::from_secs(299)));
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
