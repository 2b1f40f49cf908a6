//! fi's benchmarks (run by `cargo xtask bench`): what fi costs per packet, and how precise
//! its faults are. Writes `report.md` and `report.json` into the output directory.
//!
//!   fi-bench [--short] [--only packets,faults,control,exploration,overhead] --out DIR
//!
//! `--short` runs few samples, so that a test can run the whole bench and it cannot rot.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::programs::{TestRun, TestRunOptions};
use fi_common::{flow::v4_mapped, http::CaptureConfig};
use fi_daemon::{
    dataplane::{DataPlane, program},
    rules::{Draft, Rules, validate},
    targets::Targets,
};
use fi_tests::{Daemon, Lab, packet, process::bin_path};

#[path = "fi-bench/overhead.rs"]
mod overhead;
use serde_json::{Value, json};

const REQUEST: &[u8] = b"GET /api/items/42 HTTP/1.1\r\nHost: items.svc:8080\r\nUser-Agent: fi-bench\r\nAccept: */*\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn summary(mut values: Vec<f64>) -> Value {
    values.sort_by(|a, b| a.total_cmp(b));
    json!({
        "n": values.len(),
        "median": quantile(&values, 0.5),
        "p95": quantile(&values, 0.95),
        "p99": quantile(&values, 0.99),
        "min": values.first().copied().unwrap_or(f64::NAN),
        "max": values.last().copied().unwrap_or(f64::NAN),
    })
}

/// The flow of the crafted packets.
const KEY: fi_common::flow::FlowKey = fi_common::flow::FlowKey {
    client: v4_mapped([10, 77, 0, 1]),
    server: v4_mapped([10, 77, 0, 2]),
    client_port: 40000,
    server_port: 8080,
    _pad: 0,
};

/// One run of the egress program on `frame`; its nanoseconds.
fn run_egress(dp: &mut DataPlane, frame: &[u8]) -> f64 {
    let mut out = vec![0u8; frame.len() + 512];
    let prog = dp.classifier(program::TC_EGRESS).expect("egress program");
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..TestRunOptions::default()
    };
    prog.test_run(opts)
        .expect("BPF_PROG_TEST_RUN")
        .duration
        .as_nanos() as f64
}

/// Nanoseconds of one run of the egress program on `frame`, `n` times, the flow's state
/// reset before each run (a repeated run would otherwise see its own request as done).
fn per_packet(dp: &mut DataPlane, frame: &[u8], track: Option<u64>, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            // As the daemon does: rules act only while its heartbeat is fresh.
            dp.beat().expect("heartbeat");
            if let Some(cgroup) = track {
                dp.track_flow(KEY, cgroup).expect("tracking the flow");
            }
            run_egress(dp, frame)
        })
        .collect()
}

/// Nanoseconds of a body segment of a watched flow, `n` times: before each, the flow
/// starts over (at sequence number 1000, as sock_ops records it) and the head of a
/// 1 MB upload goes by unmeasured, so that the segment measured is body data, right where
/// the stream is.
fn body_segment(dp: &mut DataPlane, cgroup: u64, n: usize) -> Vec<f64> {
    let head: &[u8] =
        b"POST /upload HTTP/1.1\r\nHost: items.svc\r\nContent-Length: 1000000\r\n\r\n";
    let head_frame = packet::tcp4_seq(
        [10, 77, 0, 1],
        [10, 77, 0, 2],
        40000,
        8080,
        packet::TCP_PSH_ACK,
        1000,
        head,
    );
    let body_frame = packet::tcp4_seq(
        [10, 77, 0, 1],
        [10, 77, 0, 2],
        40000,
        8080,
        packet::TCP_PSH_ACK,
        1000 + head.len() as u32,
        &[b'b'; 1448],
    );
    (0..n)
        .map(|_| {
            dp.track_flow_from(KEY, cgroup, 1000, 1)
                .expect("tracking the flow");
            run_egress(dp, &head_frame);
            run_egress(dp, &body_frame)
        })
        .collect()
}

fn packet_costs(short: bool) -> Value {
    let n = if short { 200 } else { 5000 };
    let request = packet::tcp4(
        [10, 77, 0, 1],
        [10, 77, 0, 2],
        40000,
        8080,
        packet::TCP_PSH_ACK,
        REQUEST,
    );
    let ack = packet::tcp4([10, 77, 0, 1], [10, 77, 0, 2], 40000, 8080, 0x10, b"");
    let other = packet::tcp4(
        [10, 77, 0, 9],
        [10, 77, 0, 2],
        50000,
        5432,
        packet::TCP_PSH_ACK,
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
    );

    let mut dp = DataPlane::load(
        &CaptureConfig::from_names(["traceparent", "x-fi-target"]).expect("config"),
    )
    .expect("loading fi's programs (root)");
    let mount = fi_daemon::cgroup_fs::cgroup2_mount().expect("cgroup2");
    let mut targets = Targets::new(mount, Box::new(dp.take_targets_map().expect("targets map")));
    let root = targets.resolve("/").expect("root cgroup").cgroup_id;
    let mut rules = Rules::new(Box::new(dp.take_rule_maps().expect("rule maps")));

    let arp = {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        f.extend_from_slice(&[0u8; 28]);
        f
    };
    let mut rows = serde_json::Map::new();
    rows.insert(
        "non-IP frame (floor: the test run's own cost)".into(),
        summary(per_packet(&mut dp, &arp, None, n)),
    );
    rows.insert(
        "non-flow TCP segment (not ours)".into(),
        summary(per_packet(&mut dp, &other, None, n)),
    );
    rows.insert(
        "pure ACK of a tracked flow".into(),
        summary(per_packet(&mut dp, &ack, Some(root + 1), n)),
    );
    rows.insert(
        "request, tracked flow, not watched, no rules".into(),
        summary(per_packet(&mut dp, &request, Some(root + 1), n)),
    );
    targets.add("/").expect("target");
    rows.insert(
        "request, watched (parse + event)".into(),
        summary(per_packet(&mut dp, &request, Some(root), n)),
    );
    rows.insert(
        "body segment of a watched flow".into(),
        summary(body_segment(&mut dp, root, n)),
    );
    targets.remove("/", None).expect("untarget");
    let capture = ["traceparent".to_owned(), "x-fi-target".to_owned()];
    for i in 0..256 {
        let draft = Draft {
            path: Some(format!("/other/{i}")),
            fault: Some(fi_common::fault::Fault::Reset),
            ..Draft::default()
        };
        rules
            .create(validate(draft, &capture, &targets).expect("valid rule"))
            .expect("rule");
    }
    rows.insert(
        "request, 256 rules that do not match".into(),
        summary(per_packet(&mut dp, &request, Some(root + 1), n)),
    );
    Value::Object(rows)
}

/// The Rust client's latencies (µs) for `n` requests of `url` from `from`.
/// One request of fi-http-probe --repeat: what it got, how long it took (µs), when it
/// started (Unix ns).
fn probe_lines(stdout: &[u8]) -> Vec<(String, f64, u128)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let (rest, start) = l.rsplit_once(' ')?;
            let (what, micros) = rest.rsplit_once(' ')?;
            Some((what.to_owned(), micros.parse().ok()?, start.parse().ok()?))
        })
        .collect()
}

fn latencies(from: &fi_tests::Container, url: &str, n: usize) -> Vec<(String, f64)> {
    let probe = bin_path("fi-http-probe");
    let out = from.run(
        probe.to_str().expect("UTF-8 path"),
        &["--repeat", &n.to_string(), "GET", url, "10000"],
    );
    probe_lines(&out.stdout)
        .into_iter()
        .map(|(what, micros, _)| (what, micros))
        .collect()
}

fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The daemon's resident memory (kB).
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Memory of the maps the daemon holds: the `memlock` of each distinct map among its
/// file descriptors (/proc/PID/fdinfo).
fn map_bytes(pid: u32) -> u64 {
    let mut seen = std::collections::BTreeMap::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    for fd in fds.flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(bytes)) = (field("map_id:"), field("memlock:")) {
            seen.insert(id, bytes);
        }
    }
    seen.values().sum()
}

/// Control latency: with requests flowing back to back from one container to another,
/// the time from a rule's create call returning to the first faulted request, and from
/// the kill switch returning to the first clean one; and how many requests that started
/// after the call returned still saw the old state (the goal is none).
fn control_latency(short: bool) -> Value {
    use fi_api::v1 as api;
    let rounds = if short { 2 } else { 10 };
    let lab = Lab::new();
    let a = lab.container("a", 1);
    let b = lab.container("b", 2);
    let daemon = Daemon::start(lab.id(), &[&a.host_veth, &b.host_veth], lab.cgroup());
    let _server = b.http_server(8080);
    let url = format!("http://{}:8080/c", b.ipv4);
    let rss_idle_kb = rss_kb(daemon.pid());
    let maps = map_bytes(daemon.pid());
    let probe = bin_path("fi-http-probe");
    let (mut activate_ms, mut deactivate_ms) = (Vec::new(), Vec::new());
    let (mut stale_after_create, mut stale_after_stop) = (0, 0);
    for _ in 0..rounds {
        let child = a
            .command(&probe)
            .args(["--repeat", "3000", "GET", &url, "2000"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("probe");
        std::thread::sleep(Duration::from_millis(150));
        let (created, stop_called, stopped) = fi_tests::block_on(async {
            let mut rules = fi_api::client::rules(daemon.socket())
                .await
                .expect("connect");
            rules
                .create_rule(api::CreateRuleRequest {
                    r#match: Some(api::Match {
                        path: Some("/c".into()),
                        ..Default::default()
                    }),
                    // A delay keeps the connection: what is measured is the rule, not
                    // the reconnections an abort or a reset would cause.
                    fault: Some(api::Fault {
                        kind: api::FaultKind::Delay as i32,
                        status: 0,
                        delay: Some(prost_types::Duration {
                            seconds: 0,
                            nanos: 20_000_000,
                        }),
                    }),
                    probability_ppm: Some(1_000_000),
                    ..Default::default()
                })
                .await
                .expect("create");
            let created = unix_ns();
            tokio::time::sleep(Duration::from_millis(150)).await;
            // While the kill switch works, the state changes on purpose (held requests go
            // on at once): a request started then is neither side's.
            let stop_called = unix_ns();
            rules.stop_all(api::StopAllRequest {}).await.expect("stop");
            (created, stop_called, unix_ns())
        });
        let out = child.wait_with_output().expect("probe output");
        let lines = probe_lines(&out.stdout);
        // Delayed: answered, 15 ms or more late (the fault is 20 ms; a request takes < 1).
        let answered = |w: &str| w == "200";
        let delayed = |micros: f64| micros >= 15_000.0;
        if let Some((_, _, t)) = lines
            .iter()
            .find(|(w, m, t)| *t >= created && answered(w) && delayed(*m))
        {
            activate_ms.push((*t - created) as f64 / 1e6);
        }
        // Answered before the kill switch was called (one it released early is its own).
        let done_before_stop = |m: f64, t: u128| t + ((m * 1000.0) as u128) < stop_called;
        stale_after_create += lines
            .iter()
            .filter(|(w, m, t)| {
                *t >= created && done_before_stop(*m, *t) && answered(w) && !delayed(*m)
            })
            .count();
        if let Some((_, _, t)) = lines
            .iter()
            .find(|(w, m, t)| *t >= stopped && answered(w) && !delayed(*m))
        {
            deactivate_ms.push((*t - stopped) as f64 / 1e6);
        }
        stale_after_stop += lines
            .iter()
            .filter(|(w, m, t)| *t >= stopped && answered(w) && delayed(*m))
            .count();
    }
    json!({
        "rounds": rounds,
        "fault": "delay 20 ms on every request of the path",
        "create_to_first_faulted_ms": summary(activate_ms),
        "clean_requests_started_after_create": stale_after_create,
        "stop_to_first_clean_ms": summary(deactivate_ms),
        "faulted_requests_started_after_stop": stale_after_stop,
        "daemon_rss_idle_kb": rss_idle_kb,
        "daemon_rss_after_load_kb": rss_kb(daemon.pid()),
        "map_bytes": maps,
    })
}

/// Exploration speed on the bundled shop: executions per minute, and fi's share of each
/// execution (all but the test command's own run time).
fn exploration_speed(short: bool) -> Value {
    let lab = Lab::new();
    let shop = fi_tests::example::Example::shop(&lab);
    let daemon = shop.daemon(&lab, &[]);
    let mut args = vec!["--json", "explore", "run", "--faults"];
    args.push(if short { "reset" } else { "default" });
    let targets = shop.target_args();
    args.extend(targets.iter().map(String::as_str));
    let test = shop.shop_test();
    args.extend(["--", &test]);
    let out = daemon.fictl_command(&args).output().expect("fictl");
    let report: Value = serde_json::from_slice(&out.stdout).expect("the JSON report");
    let executions = report["executions"].as_array().cloned().unwrap_or_default();
    let run: Vec<&Value> = executions
        .iter()
        .filter(|e| e["pruned"].is_null())
        .collect();
    let total_ms: f64 = run.iter().filter_map(|e| e["duration_ms"].as_f64()).sum();
    let test_ms: f64 = run.iter().filter_map(|e| e["test_ms"].as_f64()).sum();
    let wall_ms = report["finished_ms"].as_f64().unwrap_or(0.0)
        - report["created_ms"].as_f64().unwrap_or(0.0);
    json!({
        "executions": run.len(),
        "wall_s": wall_ms / 1000.0,
        "executions_per_minute": run.len() as f64 / (wall_ms / 60_000.0),
        "fi_share_of_execution_time": if total_ms > 0.0 { (total_ms - test_ms) / total_ms } else { 0.0 },
        "mean_fi_ms_per_execution": if run.is_empty() { 0.0 } else { (total_ms - test_ms) / run.len() as f64 },
    })
}

fn fault_precision(short: bool) -> Value {
    let n = if short { 3 } else { 20 };
    let delays_ms: &[u64] = if short {
        &[1, 20]
    } else {
        &[1, 5, 20, 100, 500, 2000]
    };
    let lab = Lab::new();
    let a = lab.container("a", 1);
    let b = lab.container("b", 2);
    let daemon = Daemon::start(lab.id(), &[&a.host_veth, &b.host_veth], lab.cgroup());
    let _server = b.http_server(8080);
    let url = |path: &str| format!("http://{}:8080{path}", b.ipv4);
    let median = |v: &[(String, f64)]| {
        let mut x: Vec<f64> = v.iter().map(|(_, m)| *m).collect();
        x.sort_by(|p, q| p.total_cmp(q));
        quantile(&x, 0.5)
    };
    let baseline = latencies(&a, &url("/base"), n.max(10));
    let base = median(&baseline);

    let mut delay_rows = Vec::new();
    for &d in delays_ms {
        let (ok, _, err) = daemon.fictl(&[
            "rules",
            "add",
            "--fault",
            &format!("delay:{d}ms"),
            "--path",
            "/d",
        ]);
        assert!(ok, "{err}");
        let samples = latencies(&a, &url("/d"), n);
        let _ = daemon.fictl(&["stop"]);
        let errors: Vec<f64> = samples
            .iter()
            .filter(|(what, _)| what == "200")
            .map(|(_, micros)| (micros - base) / 1000.0 - d as f64)
            .collect();
        let abs: Vec<f64> = errors.iter().map(|e| e.abs()).collect();
        let goal_ms = (d as f64 * 0.02).max(1.0);
        let mut sorted_abs = abs.clone();
        sorted_abs.sort_by(|p, q| p.total_cmp(q));
        delay_rows.push(json!({
            "delay_ms": d,
            "answered": errors.len(),
            "error_ms": summary(errors),
            "abs_error_ms_p95": quantile(&sorted_abs, 0.95),
            "goal_median_abs_error_ms": goal_ms,
            "meets_goal": quantile(&sorted_abs, 0.5) <= goal_ms,
        }));
    }
    let (ok, _, err) = daemon.fictl(&["rules", "add", "--fault", "reset", "--path", "/r"]);
    assert!(ok, "{err}");
    let reset = latencies(&a, &url("/r"), n);
    let _ = daemon.fictl(&["stop"]);
    let reset_ms: Vec<f64> = reset
        .iter()
        .filter(|(what, _)| what.starts_with("ERROR reset"))
        .map(|(_, micros)| micros / 1000.0)
        .collect();
    // Probability accuracy: a 30 % rule, many requests, the share that was faulted.
    let tries = if short { 40 } else { 1000 };
    let (ok, _, err) = daemon.fictl(&[
        "rules",
        "add",
        "--fault",
        "abort:503",
        "--percent",
        "30",
        "--path",
        "/p",
    ]);
    assert!(ok, "{err}");
    let sampled = latencies(&a, &url("/p"), tries);
    let _ = daemon.fictl(&["stop"]);
    let faulted = sampled.iter().filter(|(w, _)| w == "503").count();
    let answered = sampled
        .iter()
        .filter(|(w, _)| w == "200" || w == "503")
        .count();
    let share = faulted as f64 / answered.max(1) as f64;
    // The binomial standard deviation of the share, to judge the difference.
    let sigma = (0.3 * 0.7 / answered.max(1) as f64).sqrt();
    json!({
        "probability": {
            "asked": 0.3,
            "requests": answered,
            "faulted": faulted,
            "observed": share,
            "sigma": sigma,
        },
        "baseline_request_ms": base / 1000.0,
        "delay": delay_rows,
        "time_to_reset_ms": summary(reset_ms),
        "resets_seen": reset.iter().filter(|(w, _)| w.starts_with("ERROR reset")).count(),
        "requests": reset.len(),
    })
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    json!({
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    })
}

/// The goal of an overhead state: the least throughput ratio and the most added p99 (µs).
fn overhead_goal(state: &str) -> Option<(f64, f64)> {
    match state {
        "fi attached, no rules" => Some((0.99, 10.0)),
        "fi, 256 rules that do not match" => Some((0.98, 10.0)),
        "fi, watching requests" => Some((0.88, 25.0)),
        _ => None,
    }
}

fn markdown(report: &Value) -> String {
    let mut md = String::from("# fi benchmark report\n\n");
    let m = &report["machine"];
    md += &format!(
        "Machine: Linux {}, {} CPUs ({}). Mode: {}. Took {:.0} s.\n\n",
        m["kernel"].as_str().unwrap_or("?"),
        m["cpus"],
        m["cpu"].as_str().unwrap_or("?"),
        report["mode"].as_str().unwrap_or("?"),
        report["seconds"].as_f64().unwrap_or(0.0)
    );
    if !report["per_packet_ns"].is_null() {
        md += "## Cost per packet (TC egress program, BPF_PROG_TEST_RUN, ns per run)\n\n";
        md += "| packet | n | median | p95 | p99 |\n| --- | ---: | ---: | ---: | ---: |\n";
        if let Some(rows) = report["per_packet_ns"].as_object() {
            for (name, s) in rows {
                md += &format!(
                    "| {name} | {} | {:.0} | {:.0} | {:.0} |\n",
                    s["n"],
                    s["median"].as_f64().unwrap_or(f64::NAN),
                    s["p95"].as_f64().unwrap_or(f64::NAN),
                    s["p99"].as_f64().unwrap_or(f64::NAN)
                );
            }
        }
    }
    if !report["faults"].is_null() {
        let f = &report["faults"];
        md += &format!(
            "\n## Delay precision (Rust client, container to container, keep-alive; error = observed - baseline - D)\n\nBaseline request: {:.2} ms.\n\n",
            f["baseline_request_ms"].as_f64().unwrap_or(f64::NAN)
        );
        md += "| D (ms) | answered | median error (ms) | p95 abs error (ms) | goal: median abs error <= (ms) | met |\n| ---: | ---: | ---: | ---: | ---: | --- |\n";
        if let Some(rows) = f["delay"].as_array() {
            for r in rows {
                md += &format!(
                    "| {} | {} | {:+.3} | {:.3} | {:.1} | {} |\n",
                    r["delay_ms"],
                    r["answered"],
                    r["error_ms"]["median"].as_f64().unwrap_or(f64::NAN),
                    r["abs_error_ms_p95"].as_f64().unwrap_or(f64::NAN),
                    r["goal_median_abs_error_ms"].as_f64().unwrap_or(f64::NAN),
                    if r["meets_goal"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    }
                );
            }
        }
        let r = &f["time_to_reset_ms"];
        md += &format!(
            "\n## Time to reset\n\n{} of {} requests got ECONNRESET; median {:.3} ms, p95 {:.3} ms (goal: within 50 ms).\n",
            f["resets_seen"],
            f["requests"],
            r["median"].as_f64().unwrap_or(f64::NAN),
            r["p95"].as_f64().unwrap_or(f64::NAN)
        );
        let p = &f["probability"];
        md += &format!(
            "\n## Probability accuracy\n\nA 30 % rule over {} requests faulted {} of them: {:.1} % (one binomial standard deviation: {:.1} points).\n",
            p["requests"],
            p["faulted"],
            p["observed"].as_f64().unwrap_or(f64::NAN) * 100.0,
            p["sigma"].as_f64().unwrap_or(f64::NAN) * 100.0
        );
    }
    if !report["control"].is_null() {
        let c = &report["control"];
        md += &format!(
            "\n## Control latency (requests back to back from one container, keep-alive; rule: delay 20 ms; {} rounds)\n\n\
             | call returned → first request that saw the new state | median (ms) | p95 (ms) | requests started after the call that saw the old state |\n| --- | ---: | ---: | ---: |\n\
             | rule created | {:.3} | {:.3} | {} |\n\
             | kill switch | {:.3} | {:.3} | {} |\n\n\
             Goal: activation and kill switch under 1 ms, i.e. no request started after the call\n\
             returned sees the old state (last column: 0). The first column is bounded by the\n\
             request in flight when the call returned (delayed 20 ms after a create).\n",
            c["rounds"],
            c["create_to_first_faulted_ms"]["median"]
                .as_f64()
                .unwrap_or(f64::NAN),
            c["create_to_first_faulted_ms"]["p95"]
                .as_f64()
                .unwrap_or(f64::NAN),
            c["clean_requests_started_after_create"],
            c["stop_to_first_clean_ms"]["median"]
                .as_f64()
                .unwrap_or(f64::NAN),
            c["stop_to_first_clean_ms"]["p95"]
                .as_f64()
                .unwrap_or(f64::NAN),
            c["faulted_requests_started_after_stop"],
        );
        md += &format!(
            "\n## Resources\n\nDaemon resident memory: {} kB idle, {} kB after the control rounds. Maps held by the daemon: {:.1} MiB (bytes_memlock).\n",
            c["daemon_rss_idle_kb"],
            c["daemon_rss_after_load_kb"],
            c["map_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
        );
    }
    if !report["exploration"].is_null() {
        let x = &report["exploration"];
        md += &format!(
            "\n## Exploration (the bundled shop)\n\n{} executions in {:.1} s: {:.0} executions per minute; fi's share of an execution (all but the test's own run time): {:.0} % ({:.0} ms each, mostly the 250 ms wait for late kernel events).\n",
            x["executions"],
            x["wall_s"].as_f64().unwrap_or(f64::NAN),
            x["executions_per_minute"].as_f64().unwrap_or(f64::NAN),
            x["fi_share_of_execution_time"].as_f64().unwrap_or(f64::NAN) * 100.0,
            x["mean_fi_ms_per_execution"].as_f64().unwrap_or(f64::NAN),
        );
    }
    if !report["overhead"].is_null() {
        let o = &report["overhead"];
        md += &format!(
            "\n## Data-path overhead under load (wrk -t1 -c8 against nginx; {} interleaved rounds of {} s per state; medians)\n\n\
             Goals (throughput vs no programs, added p99): attached with no rules >= 0.99 and <= 10 µs; rules loaded and not matching >= 0.98 and <= 10 µs; watching requests with those rules loaded >= 0.88 and <= 25 µs. A state whose runs spread over more than a quarter of their median is run again, twice at most, and reported as not measured if it stays so; so are all states when the baseline does.\n",
            o["rounds"], o["seconds_per_run"]
        );
        for (key, title) in [
            ("veth_keep_alive", "veth between two containers, keep-alive"),
            ("veth_new_connection", "veth, a new connection per request"),
            ("loopback_keep_alive", "loopback, keep-alive"),
            (
                "loopback_new_connection",
                "loopback, a new connection per request",
            ),
        ] {
            let Some(rows) = o[key].as_array() else {
                continue;
            };
            md += &format!(
                "\n### {title}\n\n| state | runs | req/s | spread | throughput vs none | p50 (µs) | p99 (µs) | added p50 | added p99 | program ns / run | program ns / request | daemon CPU ms / 1,000 requests | goal |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"
            );
            let number = |v: &Value, digits: usize| {
                v.as_f64()
                    .filter(|x| x.is_finite())
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
            };
            for r in rows {
                let ratio = if r["measured"].as_bool().unwrap_or(false) {
                    number(&r["throughput_ratio"], 3)
                } else {
                    format!(
                        "not measured: {}",
                        r["not_measured_because"].as_str().unwrap_or("unstable")
                    )
                };
                let goal = overhead_goal(r["state"].as_str().unwrap_or(""))
                    .filter(|_| r["measured"].as_bool().unwrap_or(false))
                    .map_or("-", |(ratio, p99)| {
                        let met = r["throughput_ratio"].as_f64().is_some_and(|x| x >= ratio)
                            && r["added_p99_us"].as_f64().is_some_and(|x| x <= p99);
                        if met { "met" } else { "not met" }
                    });
                md += &format!(
                    "| {} | {} | {:.0} | {:.0} | {ratio} | {:.0} | {:.0} | {:+.0} | {:+.0} | {} | {} | {} | {goal} |\n",
                    r["state"].as_str().unwrap_or("?"),
                    r["runs"],
                    r["rps_median"].as_f64().unwrap_or(f64::NAN),
                    r["rps_spread"].as_f64().unwrap_or(f64::NAN),
                    r["p50_us"].as_f64().unwrap_or(f64::NAN),
                    r["p99_us"].as_f64().unwrap_or(f64::NAN),
                    r["added_p50_us"].as_f64().unwrap_or(f64::NAN),
                    r["added_p99_us"].as_f64().unwrap_or(f64::NAN),
                    number(&r["program_ns_per_run"], 0),
                    number(&r["program_ns_per_request"], 0),
                    number(&r["daemon_cpu_ms_per_1000_requests"], 1),
                );
            }
        }
    }

    md
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let short = args.iter().any(|a| a == "--short");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("bench/results"));
    // `--only faults,control`: just those sections (for iterating on one of them).
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_owned).collect());
    let run = |section: &str| only.as_ref().is_none_or(|o| o.iter().any(|s| s == section));
    fi_tests::require_privileges();
    let start = Instant::now();
    let per_packet = if run("packets") {
        packet_costs(short)
    } else {
        Value::Null
    };
    let faults = if run("faults") {
        fault_precision(short)
    } else {
        Value::Null
    };
    let control = if run("control") {
        control_latency(short)
    } else {
        Value::Null
    };
    let exploration = if run("exploration") {
        exploration_speed(short)
    } else {
        Value::Null
    };
    let load = if run("overhead") {
        overhead::overhead(short)
    } else {
        Value::Null
    };
    let report = json!({
        "overhead": load,
        "control": control,
        "exploration": exploration,
        "mode": if short { "short" } else { "full" },
        "machine": machine(),
        "seconds": start.elapsed().as_secs_f64(),
        "per_packet_ns": per_packet,
        "faults": faults,
    });
    std::fs::create_dir_all(&out).expect("creating the output directory");
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report).expect("JSON"),
    )
    .expect("writing report.json");
    let md = markdown(&report);
    std::fs::write(out.join("report.md"), &md).expect("writing report.md");
    println!("{md}");
}
