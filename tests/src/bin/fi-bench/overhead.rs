//! Data-path overhead under load: wrk against nginx, across a veth between two test
//! containers and on loopback, keep-alive and a new connection per request, with fi in
//! its states (no programs, attached, 256 rules that do not match, watching), and the same
//! load through nginx as a reverse proxy (what a sidecar or proxy injector adds).
//! Variants run interleaved, round after round, so that drift hits them all alike.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use fi_api::v1 as api;
use fi_tests::{Container, Daemon, Lab};
use serde_json::{Value, json};

const PORT: u16 = 8080;

/// An nginx process (foreground) with its own configuration file.
struct Nginx {
    child: Child,
    conf: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master stops its workers, which SIGKILL would orphan.
        // SAFETY: a signal to our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.conf);
    }
}

fn nginx_conf(name: &str, server: &str) -> PathBuf {
    let dir = std::env::temp_dir();
    let conf = dir.join(format!("fi-bench-nginx-{name}-{}.conf", std::process::id()));
    let text = format!(
        "worker_processes 1;\nuser root;\ndaemon off;\npid {pid};\nerror_log stderr error;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n{server}\n}}\n",
        pid = dir
            .join(format!("fi-bench-nginx-{name}-{}.pid", std::process::id()))
            .display(),
    );
    std::fs::write(&conf, text).expect("writing an nginx configuration");
    conf
}

/// Starts nginx with `server` (an http-block body) in `container`, or on the host.
fn nginx(name: &str, container: Option<&Container>, server: &str) -> Nginx {
    let conf = nginx_conf(name, server);
    let mut cmd = match container {
        Some(c) => c.command("nginx"),
        None => Command::new("nginx"),
    };
    let child = cmd
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting nginx (cargo xtask setup installs it)");
    std::thread::sleep(Duration::from_millis(300));
    Nginx { child, conf }
}

fn origin(listen: &str) -> String {
    format!("  server {{ listen {listen}; location / {{ return 200 \"ok\\n\"; }} }}")
}

fn proxy(listen: &str, upstream: &str) -> String {
    format!(
        "  upstream origin {{ server {upstream}; keepalive 64; }}\n  server {{ listen {listen}; \
         location / {{ proxy_pass http://origin; proxy_http_version 1.1; \
         proxy_set_header Connection \"\"; }} }}"
    )
}

/// One wrk run: requests per second and latency quantiles (µs).
fn wrk(client: &mut Command, url: &str, close: bool, seconds: u32) -> Option<Value> {
    client.args(["-t1", "-c8", &format!("-d{seconds}s"), "--latency"]);
    if close {
        client.args(["-H", "Connection: close"]);
    }
    let out = client.arg(url).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let quantile = |q: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(q))
            .and_then(|v| micros(v.trim()))
    };
    Some(json!({ "rps": rps, "p50_us": quantile("50%"), "p99_us": quantile("99%") }))
}

/// wrk's "123.45us", "1.20ms", "2.00s" in µs.
fn micros(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The daemon in one of fi's states.
fn daemon(lab: &Lab, ifaces: &[&str], rules: bool, watch: Option<&Path>) -> Daemon {
    let daemon = Daemon::start(lab.id(), ifaces, lab.cgroup());
    if rules {
        fi_tests::block_on(async {
            let mut client = fi_api::client::rules(daemon.socket())
                .await
                .expect("connect");
            for i in 0..256 {
                client
                    .create_rule(api::CreateRuleRequest {
                        r#match: Some(api::Match {
                            path: Some(format!("/never-{i}")),
                            ..Default::default()
                        }),
                        fault: Some(api::Fault {
                            kind: api::FaultKind::Abort as i32,
                            status: 503,
                            delay: None,
                        }),
                        probability_ppm: Some(1_000_000),
                        ..Default::default()
                    })
                    .await
                    .expect("a rule");
            }
        });
    }
    if let Some(c) = watch {
        let cgroup = c.display().to_string();
        let (ok, _, err) = daemon.fictl(&["target", "add", &cgroup]);
        assert!(ok, "{err}");
    }
    daemon
}

const STATES: [&str; 5] = [
    "no programs",
    "reverse proxy (nginx), no programs",
    "fi attached, no rules",
    "fi, 256 rules that do not match",
    "fi, watching requests",
];

/// Runs every state `rounds` times, interleaved, for one path (veth or loopback) and one
/// connection mode.
#[allow(
    clippy::too_many_arguments,
    reason = "the scenery of one measurement, passed once"
)]
fn measure(
    lab: &Lab,
    ifaces: &[&str],
    wrk_in: &dyn Fn() -> Command,
    direct: &str,
    proxied: &str,
    watched: &Path,
    close: bool,
    rounds: u32,
    seconds: u32,
) -> Value {
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); STATES.len()];
    for _ in 0..rounds {
        for (i, state) in STATES.iter().enumerate() {
            let fi = match i {
                0 | 1 => None,
                2 => Some(daemon(lab, ifaces, false, None)),
                3 => Some(daemon(lab, ifaces, true, None)),
                _ => Some(daemon(lab, ifaces, true, Some(watched))),
            };
            let url = if i == 1 { proxied } else { direct };
            if let Some(r) = wrk(&mut wrk_in(), url, close, seconds) {
                runs[i].push(r);
            } else {
                eprintln!("fi-bench: wrk gave no result for {state}");
            }
            drop(fi);
        }
    }
    let base_rps = median(runs[0].iter().filter_map(|r| r["rps"].as_f64()).collect());
    let base_p50 = median(
        runs[0]
            .iter()
            .filter_map(|r| r["p50_us"].as_f64())
            .collect(),
    );
    let base_p99 = median(
        runs[0]
            .iter()
            .filter_map(|r| r["p99_us"].as_f64())
            .collect(),
    );
    let rows: Vec<Value> = STATES
        .iter()
        .zip(&runs)
        .map(|(state, rs)| {
            let rps: Vec<f64> = rs.iter().filter_map(|r| r["rps"].as_f64()).collect();
            let spread = rps.iter().copied().fold(f64::NAN, f64::max)
                - rps.iter().copied().fold(f64::NAN, f64::min);
            let rps_m = median(rps);
            let p50 = median(rs.iter().filter_map(|r| r["p50_us"].as_f64()).collect());
            let p99 = median(rs.iter().filter_map(|r| r["p99_us"].as_f64()).collect());
            json!({
                "state": state,
                "runs": rs.len(),
                "rps_median": rps_m,
                "rps_spread": spread,
                "throughput_ratio": rps_m / base_rps,
                "p50_us": p50,
                "p99_us": p99,
                "added_p50_us": p50 - base_p50,
                "added_p99_us": p99 - base_p99,
            })
        })
        .collect();
    json!(rows)
}

/// The whole overhead section.
pub fn overhead(short: bool) -> Value {
    let (rounds, seconds) = if short { (1, 1) } else { (3, 4) };
    let lab = Lab::new();
    let client = lab.container("wrk", 1);
    let origin_box = lab.container("origin", 2);
    let proxy_box = lab.container("proxy", 3);
    let origin_addr = format!("{}:{PORT}", origin_box.ipv4);
    let _origin = nginx("origin", Some(&origin_box), &origin(&origin_addr));
    let proxy_addr = format!("{}:{PORT}", proxy_box.ipv4);
    let _proxy = nginx("proxy", Some(&proxy_box), &proxy(&proxy_addr, &origin_addr));
    // Loopback: nginx on the host's lo; wrk in a lab cgroup (so that fi sees its
    // connections) but in the host's network namespace.
    let lo_origin = format!("127.0.0.1:{}", 20_000 + std::process::id() % 20_000);
    let lo_proxy = format!("127.0.0.1:{}", 40_000 + std::process::id() % 20_000);
    let _lo_origin = nginx("lo-origin", None, &origin(&lo_origin));
    let _lo_proxy = nginx("lo-proxy", None, &proxy(&lo_proxy, &lo_origin));
    let lo_cgroup = lab.cgroup().join("wrk-lo");
    std::fs::create_dir_all(&lo_cgroup).expect("a cgroup for wrk on lo");
    let lo_procs = lo_cgroup.join("cgroup.procs");
    let veth_ifaces = [
        client.host_veth.as_str(),
        origin_box.host_veth.as_str(),
        proxy_box.host_veth.as_str(),
    ];
    let veth_wrk = || client.command("wrk");
    let lo_wrk = || {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            &format!("echo $$ > {} && exec wrk \"$@\"", lo_procs.display()),
            "wrk",
        ]);
        c
    };
    let mut result = json!({ "rounds": rounds, "seconds_per_run": seconds });
    let modes: &[bool] = if short { &[false] } else { &[false, true] };
    for &close in modes {
        let mode = if close {
            "new_connection"
        } else {
            "keep_alive"
        };
        result[format!("veth_{mode}")] = measure(
            &lab,
            &veth_ifaces,
            &veth_wrk,
            &format!("http://{origin_addr}/"),
            &format!("http://{proxy_addr}/"),
            &client.cgroup,
            close,
            rounds,
            seconds,
        );
        result[format!("loopback_{mode}")] = measure(
            &lab,
            &["lo"],
            &lo_wrk,
            &format!("http://{lo_origin}/"),
            &format!("http://{lo_proxy}/"),
            &lo_cgroup,
            close,
            rounds,
            seconds,
        );
    }
    let _ = std::fs::remove_dir(&lo_cgroup);
    result
}
