//! How fictl shows things: one line per request, the call graph as a table, DOT or JSON.
//! Pure functions of API messages, so they are tested without a daemon.

use std::fmt::Write as _;

use fi_api::v1 as api;

fn millis(nanos: u64) -> String {
    format!("{:.1}ms", nanos as f64 / 1e6)
}

/// Time of day (UTC) with milliseconds: short, and needs no time zone database.
fn time_of_day(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let ms = unix_nanos.rem_euclid(1_000_000_000) / 1_000_000;
    let day = secs.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

/// Date and time (UTC) to the second, `2026-12-03 13:41:57`, from Unix milliseconds.
pub fn date_time_utc(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (days, day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

/// The URL of a request as the client meant it.
pub fn url(r: &api::ObservedRequest) -> String {
    if r.path.contains("://") {
        return r.path.clone();
    }
    let authority = if r.host.is_empty() {
        &r.server
    } else {
        &r.host
    };
    let ellipsis = if r.path_truncated { "..." } else { "" };
    format!("http://{authority}{}{ellipsis}", r.path)
}

/// `time container method url status latency`, one request per line.
pub fn watch_line(r: &api::ObservedRequest) -> String {
    let (status, latency) = if r.outcome == api::Outcome::Response as i32 {
        (r.status.to_string(), millis(r.latency_nanos))
    } else {
        ("---".to_owned(), "no response".to_owned())
    };
    let fault = if r.fault.is_empty() {
        String::new()
    } else {
        format!("  [fault {} by rule {}]", r.fault, r.rule_id)
    };
    format!(
        "{} {:<28} {:<7} {} {} {}{fault}",
        time_of_day(r.start_unix_nanos),
        r.source_cgroup,
        r.method,
        url(r),
        status,
        latency
    )
}

fn statuses(e: &api::Edge) -> String {
    let mut codes: Vec<_> = e.statuses.iter().collect();
    codes.sort();
    let mut out: Vec<String> = codes.iter().map(|(s, n)| format!("{s}x{n}")).collect();
    if e.no_response > 0 {
        out.push(format!("none x{}", e.no_response));
    }
    out.join(" ")
}

/// The call graph as a table.
pub fn graph_table(g: &api::CallGraph) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:<28} {:>8} {:>9} {:>9}  STATUSES",
        "SOURCE", "DESTINATION", "REQUESTS", "P50", "P99"
    );
    for e in &g.edges {
        let lat = e.latency.unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<28} {:<28} {:>8} {:>9} {:>9}  {}",
            e.source,
            e.destination,
            e.requests,
            millis(lat.p50_nanos),
            millis(lat.p99_nanos),
            statuses(e)
        );
        for ep in &e.endpoints {
            let _ = writeln!(
                out,
                "    {:<7} {:<40} {:>8}",
                ep.method, ep.path, ep.requests
            );
        }
    }
    let _ = writeln!(out, "{} edges, {} requests", g.edges.len(), g.requests);
    out
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The call graph in Graphviz DOT: containers and destinations as nodes, one edge each.
pub fn graph_dot(g: &api::CallGraph) -> String {
    let mut out = String::from("digraph fi {\n  rankdir=LR;\n  node [shape=box];\n");
    for e in &g.edges {
        let lat = e.latency.unwrap_or_default();
        let label = format!(
            "{} req, p50 {}\\n{}",
            e.requests,
            millis(lat.p50_nanos),
            dot_escape(&statuses(e))
        );
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\" [label=\"{}\"];",
            dot_escape(&e.source),
            dot_escape(&e.destination),
            label
        );
    }
    out.push_str("}\n");
    out
}

/// The call graph as JSON (stable field names, for scripts).
pub fn graph_json(g: &api::CallGraph) -> serde_json::Value {
    let edges: Vec<_> = g
        .edges
        .iter()
        .map(|e| {
            let lat = e.latency.unwrap_or_default();
            serde_json::json!({
                "source": e.source,
                "destination": e.destination,
                "servers": e.servers,
                "requests": e.requests,
                "no_response": e.no_response,
                "statuses": e.statuses.iter().map(|(s, n)| (s.to_string(), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>(),
                "latency_ns": {
                    "min": lat.min_nanos, "max": lat.max_nanos, "mean": lat.mean_nanos,
                    "p50": lat.p50_nanos, "p99": lat.p99_nanos,
                },
                "endpoints": e.endpoints.iter().map(|ep| serde_json::json!({
                    "method": ep.method, "path": ep.path, "requests": ep.requests,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "requests": g.requests, "edges": edges })
}

/// One request as JSON (for `fictl watch --json`, one object per line).
pub fn request_json(r: &api::ObservedRequest) -> serde_json::Value {
    let outcome = if r.outcome == api::Outcome::Response as i32 {
        "response"
    } else {
        "no_response"
    };
    serde_json::json!({
        "id": r.id,
        "start_unix_nanos": r.start_unix_nanos,
        "source_cgroup": r.source_cgroup,
        "client": r.client,
        "server": r.server,
        "method": r.method,
        "host": r.host,
        "path": r.path,
        "path_truncated": r.path_truncated,
        "url": url(r),
        "http_minor_version": r.http_minor_version,
        "headers": r.headers,
        "outcome": outcome,
        "status": r.status,
        "latency_ns": r.latency_nanos,
        "index_on_connection": r.index_on_connection,
        "fault": if r.fault.is_empty() { serde_json::Value::Null } else { r.fault.clone().into() },
        "rule_id": r.rule_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> api::ObservedRequest {
        api::ObservedRequest {
            start_unix_nanos: 3_723_004_000_000, // 01:02:03.004
            source_cgroup: "/app/a".into(),
            server: "10.0.0.2:8080".into(),
            method: "GET".into(),
            host: "b:8080".into(),
            path: "/x?y=1".into(),
            outcome: api::Outcome::Response as i32,
            status: 200,
            latency_nanos: 1_500_000,
            ..Default::default()
        }
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(date_time_utc(0), "1970-01-01 00:00:00");
        assert_eq!(date_time_utc(1_796_305_317_000), "2026-12-03 13:41:57");
        assert_eq!(date_time_utc(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn a_watch_line_has_time_container_method_url_status_latency() {
        assert_eq!(
            watch_line(&request()),
            format!(
                "01:02:03.004 {:<28} GET     http://b:8080/x?y=1 200 1.5ms",
                "/app/a"
            )
        );
        let mut lost = request();
        lost.outcome = api::Outcome::NoResponse as i32;
        assert!(watch_line(&lost).ends_with("--- no response"));
    }

    #[test]
    fn urls_fall_back_to_the_server_and_mark_truncation() {
        let mut r = request();
        r.host.clear();
        r.path_truncated = true;
        assert_eq!(url(&r), "http://10.0.0.2:8080/x?y=1...");
        r.path = "http://other/abs".into();
        assert_eq!(url(&r), "http://other/abs");
    }

    #[test]
    fn dot_output_escapes_names() {
        let g = api::CallGraph {
            edges: vec![api::Edge {
                source: "/a\"b".into(),
                destination: "c".into(),
                requests: 2,
                statuses: [(200, 2)].into_iter().collect(),
                ..Default::default()
            }],
            requests: 2,
        };
        let dot = graph_dot(&g);
        assert!(dot.starts_with("digraph fi {"));
        assert!(dot.contains(r#""/a\"b" -> "c""#), "{dot}");
        assert!(dot.contains("200x2"));
        let json = graph_json(&g);
        assert_eq!(json["edges"][0]["statuses"]["200"], 2);
    }
}
