//! Reports of an exploration: JSON (for scripts), a terminal table, and a self-contained
//! HTML page with the call graph (each edge: which faults the test survived, which broke
//! it) and the table of executions. Also the delta between two explorations.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
};

use serde::Serialize;

use crate::model::{Execution, Exploration, GraphSnapshot, Outcome, Plan, TEST_SOURCE};

/// How a fault on an edge went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Survived,
    Broke,
}

/// A failing plan with the command that runs it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub execution: u32,
    pub plan: String,
    pub outcome: String,
    pub replay: String,
    /// Pruned plans predicted to fail like the execution they are equivalent to.
    pub predicted: bool,
}

/// One edge of the call graph: from a caller to a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeVerdicts {
    pub source: String,
    pub destination: String,
    /// Endpoints seen on this edge ("POST /charge").
    pub endpoints: Vec<String>,
    /// Single-fault executions on this edge: fault -> verdicts (one per call site).
    pub faults: BTreeMap<String, Vec<Verdict>>,
}

/// Failing plans that tell one story: the same call sites, the same kinds of fault, the
/// same failure. A reader acts on a finding, not on each of its plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Where and what: "frontend → payments POST /charge: reset" (" + " between the
    /// faults of a plan with several).
    pub faults: String,
    /// How the test failed: its outcome and its last FAIL line.
    pub failure: String,
    /// The executions of this finding (predicted ones included), in order.
    pub executions: Vec<u32>,
    /// Runs the first of them again.
    pub replay: String,
}

/// What the report says, before it is rendered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub runs: u32,
    pub pruned: u32,
    /// The failing plans grouped: what a reader looks at first.
    pub findings: Vec<Finding>,
    pub failures: Vec<Failure>,
    pub edges: Vec<EdgeVerdicts>,
    pub notes: Vec<String>,
}

/// The JSON report: the exploration, its summary, and every execution.
#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    exploration: &'a Exploration,
    summary: Summary,
}

/// The id a replay takes: `EXPLORATION/EXECUTION`.
pub fn execution_id(exploration: i64, execution: u32) -> String {
    format!("{exploration}/{execution}")
}

/// Names the servers: an address is named after the source whose requests came from it
/// (a service is a caller in one place and a server in another), else it stays ip:port.
fn server_names(
    executions: &[Execution],
    graph: Option<&GraphSnapshot>,
) -> BTreeMap<String, String> {
    // The addresses of each target, as the daemon read them when the exploration began.
    let mut names = graph.map(|g| g.names.clone()).unwrap_or_default();
    for e in executions {
        for call in &e.calls {
            if let Some(parent) = &call.parent {
                names
                    .entry(parent.destination.to_string())
                    .or_insert_with(|| call.site.source.clone());
            }
        }
    }
    names
}

pub fn summarize(x: &Exploration) -> Summary {
    let id = x.row.id;
    let by_plan: BTreeMap<&Plan, &Execution> = x
        .executions
        .iter()
        .filter(|e| e.pruned.is_none())
        .map(|e| (&e.plan, e))
        .collect();
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    for e in &x.executions {
        let predicted = e
            .pruned
            .as_ref()
            .and_then(|p| by_plan.get(&p.equivalent))
            .is_some_and(|eq| eq.outcome.is_failure());
        if e.outcome.is_failure() || predicted {
            let source = if predicted {
                e.pruned
                    .as_ref()
                    .and_then(|p| by_plan.get(&p.equivalent))
                    .map_or(e.number, |eq| eq.number)
            } else {
                e.number
            };
            failures.push(Failure {
                execution: e.number,
                plan: e.plan.to_string(),
                outcome: if predicted {
                    format!("predicted to fail like #{source}")
                } else {
                    e.outcome.describe()
                },
                replay: format!("fictl explore replay {}", execution_id(id, e.number)),
                predicted,
            });
        }
        for n in &e.notes {
            if (n.contains("non-idempotent") || n.contains("ended differently"))
                && !notes.iter().any(|m: &String| m.ends_with(n.as_str()))
            {
                notes.push(format!("#{}: {n}", e.number));
            }
        }
    }
    let names = server_names(&x.executions, x.graph.as_ref());
    let name = |dest: &std::net::SocketAddr| {
        crate::model::name_in(&names, dest)
            .cloned()
            .unwrap_or_else(|| dest.to_string())
    };
    let mut edges: BTreeMap<(String, String), EdgeVerdicts> = BTreeMap::new();
    for e in &x.executions {
        for call in &e.calls {
            let key = (call.site.source.clone(), name(&call.site.destination));
            let edge = edges.entry(key.clone()).or_insert_with(|| EdgeVerdicts {
                source: key.0.clone(),
                destination: key.1.clone(),
                endpoints: Vec::new(),
                faults: BTreeMap::new(),
            });
            let endpoint = format!("{} {}", call.site.method, call.site.path);
            if !edge.endpoints.contains(&endpoint) {
                edge.endpoints.push(endpoint);
            }
        }
    }
    for e in &x.executions {
        let [fault] = e.plan.0.as_slice() else {
            continue;
        };
        let outcome = match (&e.outcome, &e.pruned) {
            (Outcome::Pruned, Some(p)) => by_plan.get(&p.equivalent).map(|eq| &eq.outcome),
            (o, _) => Some(o),
        };
        let Some(outcome) = outcome else { continue };
        if matches!(outcome, Outcome::Interrupted | Outcome::Pruned) {
            continue;
        }
        let key = (fault.site.source.clone(), name(&fault.site.destination));
        if let Some(edge) = edges.get_mut(&key) {
            edge.faults
                .entry(fault.fault.to_string())
                .or_default()
                .push(if outcome.is_failure() {
                    Verdict::Broke
                } else {
                    Verdict::Survived
                });
        }
    }
    let findings = findings(x, &failures, &by_plan, &name);
    Summary {
        runs: x.executions.iter().filter(|e| e.pruned.is_none()).count() as u32,
        pruned: x.executions.iter().filter(|e| e.pruned.is_some()).count() as u32,
        findings,
        failures,
        edges: edges.into_values().collect(),
        notes,
    }
}

/// Groups the failing plans into findings: the same call sites (by endpoint, whichever
/// call of it), the same kinds of fault (abort, whatever its status), the same failure.
fn findings(
    x: &Exploration,
    failures: &[Failure],
    by_plan: &BTreeMap<&Plan, &Execution>,
    name: &dyn Fn(&std::net::SocketAddr) -> String,
) -> Vec<Finding> {
    let mut groups: Vec<Finding> = Vec::new();
    for f in failures {
        let Some(e) = x.executions.iter().find(|e| e.number == f.execution) else {
            continue;
        };
        // A predicted failure is told like the execution it is predicted from.
        let told = e
            .pruned
            .as_ref()
            .and_then(|p| by_plan.get(&p.equivalent).copied())
            .unwrap_or(e);
        let faults = e
            .plan
            .0
            .iter()
            .map(|p| {
                let fault = p.fault.to_string();
                let kind = fault.split(':').next().unwrap_or(&fault).to_owned();
                format!(
                    "{} → {} {} {}: {kind}",
                    p.site.source,
                    name(&p.site.destination),
                    p.site.method,
                    p.site.path
                )
            })
            .collect::<Vec<_>>()
            .join(" + ");
        let last_fail = told
            .output_tail
            .lines()
            .rev()
            .find(|l| l.contains("FAIL"))
            .map(|l| {
                without_queries(l.trim())
                    .chars()
                    .take(160)
                    .collect::<String>()
            });
        let failure = match last_fail {
            Some(line) => format!("{}: {line}", told.outcome.describe()),
            None => told.outcome.describe(),
        };
        match groups
            .iter_mut()
            .find(|g| g.faults == faults && g.failure == failure)
        {
            Some(g) => g.executions.push(e.number),
            None => groups.push(Finding {
                faults,
                failure,
                executions: vec![e.number],
                replay: f.replay.clone(),
            }),
        }
    }
    groups
}

/// A failure line without its query strings (an order id, a timestamp): what differs
/// from one execution to the next is not part of the story.
fn without_queries(line: &str) -> String {
    line.split(' ')
        .map(|word| match word.split_once('?') {
            Some((before, _)) => format!("{before}?…"),
            None => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn json(x: &Exploration) -> String {
    serde_json::to_string_pretty(&JsonReport {
        exploration: x,
        summary: summarize(x),
    })
    .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn edge_line(edge: &EdgeVerdicts) -> String {
    let mut parts = Vec::new();
    for (fault, verdicts) in &edge.faults {
        let broke = verdicts.iter().filter(|v| **v == Verdict::Broke).count();
        parts.push(if broke == 0 {
            format!("{fault} ✓")
        } else {
            format!("{fault} ✗")
        });
    }
    parts.join("  ")
}

/// The terminal report.
pub fn text(x: &Exploration) -> String {
    let s = summarize(x);
    let mut out = String::new();
    let c = &x.row.config;
    let _ = writeln!(
        out,
        "exploration {}  {}  {} executions run, {} pruned, {} failing",
        x.row.id,
        x.row.status.as_str(),
        s.runs,
        s.pruned,
        s.failures.len()
    );
    let _ = writeln!(out, "test: {}", c.command);
    if let Some(err) = &x.row.error {
        let _ = writeln!(out, "note: {err}");
    }
    if !s.findings.is_empty() {
        let _ = writeln!(out, "\nfindings ({}):", s.findings.len());
        for (i, f) in s.findings.iter().enumerate() {
            let plans: Vec<String> = f.executions.iter().map(|n| format!("#{n}")).collect();
            let _ = writeln!(
                out,
                "  {}. {}\n     {}\n     {} plan{} ({})  →  {}",
                i + 1,
                f.faults,
                f.failure,
                f.executions.len(),
                if f.executions.len() == 1 { "" } else { "s" },
                plans.join(", "),
                f.replay
            );
        }
    }
    let _ = writeln!(out, "\ncall graph (✓ survived, ✗ broke the test):");
    for edge in &s.edges {
        let _ = writeln!(
            out,
            "  {} → {}  [{}]  {}",
            edge.source,
            edge.destination,
            edge.endpoints.join(", "),
            edge_line(edge)
        );
    }
    let _ = writeln!(out, "\nexecutions:");
    let _ = writeln!(out, "  {:>4}  {:<12} {:>7}  plan", "#", "outcome", "ms");
    for e in &x.executions {
        let _ = writeln!(
            out,
            "  {:>4}  {:<12} {:>7}  {}",
            e.number,
            e.outcome.label(),
            e.duration_ms,
            e.plan
        );
        if let Some(p) = &e.pruned {
            let _ = writeln!(out, "        ↳ {}", p.reason);
        }
    }
    if s.failures.is_empty() {
        let _ = writeln!(
            out,
            "\nno failing plan: the test survived every fault tried"
        );
    } else {
        let _ = writeln!(out, "\nfailing plans ({}):", s.failures.len());
        for f in &s.failures {
            let _ = writeln!(
                out,
                "  #{:<4} {}\n        {}  →  {}",
                f.execution, f.plan, f.outcome, f.replay
            );
        }
    }
    for n in &s.notes {
        let _ = writeln!(out, "\n⚠ {n}");
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn edge_colour(e: &EdgeVerdicts) -> &'static str {
    let broke = e.faults.values().flatten().any(|v| *v == Verdict::Broke);
    match (e.faults.is_empty(), broke) {
        (true, _) => "#888",
        (false, true) => "#c62828",
        (false, false) => "#2e7d32",
    }
}

/// The call graph as SVG: nodes in columns by depth from the test, edges coloured red
/// when a fault on them broke the test, green when it survived them all.
fn svg(edges: &[EdgeVerdicts]) -> String {
    let mut depth: BTreeMap<String, usize> = BTreeMap::new();
    depth.insert(TEST_SOURCE.to_owned(), 0);
    for _ in 0..edges.len() + 1 {
        for e in edges {
            let d = depth.get(&e.source).copied().unwrap_or(0);
            let entry = depth.entry(e.destination.clone()).or_insert(d + 1);
            if *entry < d + 1 && *entry != 0 {
                *entry = (d + 1).min(edges.len());
            }
        }
    }
    for e in edges {
        depth.entry(e.source.clone()).or_insert(0);
    }
    let mut columns: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (node, d) in &depth {
        columns.entry(*d).or_default().push(node.clone());
    }
    let (col_w, row_h, node_w, node_h) = (300.0, 110.0, 170.0, 44.0);
    let rows = columns.values().map(Vec::len).max().unwrap_or(1) as f64;
    let width = columns.len() as f64 * col_w + 40.0;
    let height = rows * row_h + 40.0;
    // Columns in depth order, side by side: a depth that no node has leaves no gap (a
    // cycle can push a depth far beyond the number of columns).
    let mut pos: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (column, nodes) in columns.values().enumerate() {
        for (i, n) in nodes.iter().enumerate() {
            pos.insert(
                n.clone(),
                (20.0 + column as f64 * col_w, 20.0 + i as f64 * row_h),
            );
        }
    }
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>"##
    );
    for (i, e) in edges.iter().enumerate() {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (pos.get(&e.source), pos.get(&e.destination))
        else {
            continue;
        };
        let colour = edge_colour(e);
        let (sx, sy) = (x1 + node_w, y1 + node_h / 2.0);
        let (ex, ey) = (x2, y2 + node_h / 2.0);
        let _ = write!(
            svg,
            r#"<line x1="{sx}" y1="{sy}" x2="{ex}" y2="{ey}" stroke="{colour}" stroke-width="3" marker-end="url(#arrow)"/>"#
        );
        // A numbered badge on the edge; the edge table below the graph says what it holds.
        let (lx, ly) = (sx + (ex - sx) * 0.45, sy + (ey - sy) * 0.45);
        let _ = write!(
            svg,
            r##"<circle cx="{lx}" cy="{ly}" r="11" fill="#fff" stroke="{colour}" stroke-width="2"/><text x="{lx}" y="{}" text-anchor="middle" font-weight="bold" fill="{colour}">{}</text>"##,
            ly + 4.0,
            i + 1
        );
    }
    for (node, (x, y)) in &pos {
        let _ = write!(
            svg,
            r##"<rect x="{x}" y="{y}" width="{node_w}" height="{node_h}" rx="8" fill="#e3f2fd" stroke="#1565c0" stroke-width="2"/><text x="{}" y="{}" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"##,
            x + node_w / 2.0,
            y + node_h / 2.0 + 5.0,
            escape(node)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The HTML report: one file, no external resources.
pub fn html(x: &Exploration) -> String {
    let s = summarize(x);
    let mut rows = String::new();
    for e in &x.executions {
        let class = if e.outcome.is_failure() {
            "fail"
        } else if e.pruned.is_some() {
            "pruned"
        } else {
            "pass"
        };
        let mut detail = String::new();
        if let Some(p) = &e.pruned {
            detail.push_str(&escape(&p.reason));
        }
        for n in &e.notes {
            let _ = write!(detail, "<div>{}</div>", escape(n));
        }
        let replay = if e.outcome.is_failure() {
            format!(
                "<code>fictl explore replay {}</code>",
                execution_id(x.row.id, e.number)
            )
        } else {
            String::new()
        };
        let _ = write!(
            rows,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{detail}{replay}</td></tr>",
            e.number,
            escape(&e.plan.to_string()),
            e.outcome.label(),
            e.duration_ms,
            e.calls.len(),
        );
    }
    let mut failures = String::new();
    for f in &s.failures {
        let _ = write!(
            failures,
            "<li><b>#{}</b> {} — {} — <code>{}</code></li>",
            f.execution,
            escape(&f.plan),
            escape(&f.outcome),
            escape(&f.replay)
        );
    }
    if failures.is_empty() {
        failures.push_str("<li>none: the test survived every fault tried</li>");
    }
    let notes: String = s
        .notes
        .iter()
        .map(|n| format!("<li>{}</li>", escape(n)))
        .collect();
    let findings: String = s
        .findings
        .iter()
        .map(|f| {
            let plans: Vec<String> = f.executions.iter().map(|n| format!("#{n}")).collect();
            format!(
                "<li><b>{}</b><br>{}<br>{} plan(s): {} — <code>{}</code></li>",
                escape(&f.faults),
                escape(&f.failure),
                f.executions.len(),
                plans.join(", "),
                escape(&f.replay)
            )
        })
        .collect();
    let findings_block = if findings.is_empty() {
        String::new()
    } else {
        format!("<h2>Findings</h2><ol>{findings}</ol>")
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fi exploration {id}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
tr.fail td {{ background: #ffebee; }} tr.pruned td {{ color: #777; }} tr.pass td {{ background: #f1f8e9; }}
.graph {{ border: 1px solid #ddd; padding: 8px; overflow-x: auto; }}
code {{ background: #eee; padding: 1px 4px; }}
table.edges {{ margin-top: 8px; width: auto; }}
</style></head><body>
<h1>fi exploration {id}</h1>
<p>Test <code>{command}</code>, status <b>{status}</b>: {runs} executions run, {pruned} pruned, <b>{nfail} failing</b>.</p>
{findings_block}
<h2>Call graph</h2>
<p>Each edge lists the faults injected on it: ✓ the test survived, ✗ it broke the test.</p>
<div class="graph">{svg}</div>
<table class="edges"><tr><th>edge</th><th>from → to</th><th>endpoints</th><th>faults (✓ survived, ✗ broke the test)</th></tr>{edge_rows}</table>
<h2>Failing plans</h2><ul>{failures}</ul>
{notes_block}
<h2>Executions</h2>
<table><tr><th>#</th><th>plan</th><th>outcome</th><th>ms</th><th>requests</th><th>notes</th></tr>{rows}</table>
</body></html>
"#,
        id = x.row.id,
        command = escape(&x.row.config.command),
        status = x.row.status.as_str(),
        runs = s.runs,
        pruned = s.pruned,
        nfail = s.failures.len(),
        svg = svg(&s.edges),
        edge_rows = s
            .edges
            .iter()
            .enumerate()
            .map(|(i, e)| format!(
                "<tr><td style=\"color:{}\"><b>{}</b></td><td>{} → {}</td><td>{}</td><td>{}</td></tr>",
                edge_colour(e),
                i + 1,
                escape(&e.source),
                escape(&e.destination),
                escape(&e.endpoints.join(", ")),
                escape(&edge_line(e))
            ))
            .collect::<String>(),
        notes_block = if notes.is_empty() {
            String::new()
        } else {
            format!("<h2>Worth a look</h2><ul>{notes}</ul>")
        },
    )
}

/// The delta between two explorations, by plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// (plan, base execution, head execution); 0 when absent.
    pub new_failures: Vec<(String, u32, u32)>,
    pub fixed: Vec<(String, u32, u32)>,
    pub still_failing: Vec<(String, u32, u32)>,
    pub not_run: Vec<(String, u32, u32)>,
    pub unchanged_passing: u32,
}

/// Compares by plan (call sites are the same across runs of the same test).
pub fn diff(base: &Exploration, head: &Exploration) -> Diff {
    let index = |x: &Exploration| -> BTreeMap<String, (u32, bool)> {
        x.executions
            .iter()
            .filter(|e| !matches!(e.outcome, Outcome::Pruned | Outcome::Interrupted))
            .map(|e| (e.plan.to_string(), (e.number, e.outcome.is_failure())))
            .collect()
    };
    let (b, h) = (index(base), index(head));
    let plans: BTreeSet<&String> = b.keys().chain(h.keys()).collect();
    let mut d = Diff::default();
    for plan in plans {
        match (b.get(plan), h.get(plan)) {
            (Some(&(bn, true)), Some(&(hn, true))) => d.still_failing.push((plan.clone(), bn, hn)),
            (Some(&(bn, true)), Some(&(hn, false))) => d.fixed.push((plan.clone(), bn, hn)),
            (Some(&(bn, true)), None) => d.not_run.push((plan.clone(), bn, 0)),
            (Some(&(bn, false)), Some(&(hn, true))) => d.new_failures.push((plan.clone(), bn, hn)),
            (None, Some(&(hn, true))) => d.new_failures.push((plan.clone(), 0, hn)),
            (Some((_, false)), Some((_, false))) => d.unchanged_passing += 1,
            _ => {}
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_differ_by_what_they_say_not_by_their_query_strings() {
        assert_eq!(
            without_queries("FAIL: POST /checkout?order=1-6-32350 answered 503: {}"),
            "FAIL: POST /checkout?… answered 503: {}"
        );
        assert_eq!(without_queries("exit status 1"), "exit status 1");
    }

    #[test]
    fn every_node_of_a_graph_with_a_cycle_is_inside_the_picture() {
        let edge = |source: &str, destination: &str| EdgeVerdicts {
            source: source.into(),
            destination: destination.into(),
            endpoints: Vec::new(),
            faults: BTreeMap::new(),
        };
        let edges: Vec<EdgeVerdicts> = [
            ("test", "a"),
            ("a", "b"),
            ("b", "a"),
            ("b", "c"),
            ("c", "d"),
            ("d", "b"),
            ("a", "e"),
            ("e", "f"),
            ("f", "g"),
        ]
        .iter()
        .map(|(s, d)| edge(s, d))
        .collect();
        let picture = svg(&edges);
        let number = |attr: &str, from: &str| -> f64 {
            let at = from.find(attr).expect("the attribute") + attr.len();
            from[at..]
                .split('"')
                .next()
                .expect("a value")
                .parse()
                .expect("a number")
        };
        let width = number("width=\"", &picture);
        let height = number("height=\"", &picture);
        let mut rest = picture.as_str();
        let mut nodes = 0;
        while let Some(at) = rest.find("<rect x=\"") {
            rest = &rest[at..];
            let (x, y) = (number("x=\"", rest), number("y=\"", rest));
            assert!(
                x >= 0.0 && x + 170.0 <= width,
                "x={x} in a {width} wide picture"
            );
            assert!(
                y >= 0.0 && y + 44.0 <= height,
                "y={y} in a {height} high picture"
            );
            nodes += 1;
            rest = &rest[1..];
        }
        assert_eq!(nodes, 8);
    }
}
