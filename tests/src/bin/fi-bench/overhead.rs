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
// (The last state watches the client with the 256 rules of the one before loaded.)

/// A state's spread (max - min of its runs' throughput) above this share of its median
/// means the machine did not hold still: the state is run again.
const UNSTABLE_SPREAD: f64 = 0.25;
/// Extra runs a state gets to become stable.
const RETRIES: u32 = 2;

/// One run of state `i`: wrk's result, with what fi's programs and daemon spent.
#[allow(
    clippy::too_many_arguments,
    reason = "the scenery of one measurement, passed once"
)]
fn run_state(
    i: usize,
    lab: &Lab,
    ifaces: &[&str],
    wrk_in: &dyn Fn() -> Command,
    urls: (&str, &str),
    watched: &Path,
    close: bool,
    seconds: u32,
) -> Option<Value> {
    let fi = match i {
        0 | 1 => None,
        2 => Some(daemon(lab, ifaces, false, None)),
        3 => Some(daemon(lab, ifaces, true, None)),
        _ => Some(daemon(lab, ifaces, true, Some(watched))),
    };
    let url = if i == 1 { urls.1 } else { urls.0 };
    let programs_before = program_stats();
    let cpu_before = fi.as_ref().map(|d| cpu_ms(d.pid()));
    let mut result = wrk(&mut wrk_in(), url, close, seconds)?;
    let programs = program_stats().minus(&programs_before);
    let requests = result["rps"].as_f64().unwrap_or(0.0) * f64::from(seconds);
    if programs.runs > 0 && requests > 0.0 {
        result["program_ns_per_run"] = json!(programs.ns as f64 / programs.runs as f64);
        result["program_ns_per_request"] = json!(programs.ns as f64 / requests);
    }
    if let (Some(d), Some(before)) = (&fi, cpu_before) {
        result["daemon_cpu_ms_per_1000_requests"] =
            json!((cpu_ms(d.pid()) - before) / (requests / 1000.0));
    }
    Some(result)
}

/// CPU time (user + system) a process has used, in ms.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (in parentheses, which may hold spaces): fields 14 and 15
    // of the line are utime and stime, in clock ticks.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) * 1000.0 / hz
}

/// Run time and run count of fi's programs (kernel.bpf_stats_enabled, via bpftool).
#[derive(Default)]
struct ProgramStats {
    ns: u64,
    runs: u64,
}

impl ProgramStats {
    fn minus(&self, before: &ProgramStats) -> ProgramStats {
        ProgramStats {
            ns: self.ns.saturating_sub(before.ns),
            runs: self.runs.saturating_sub(before.runs),
        }
    }
}

fn program_stats() -> ProgramStats {
    let Ok(out) = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
    else {
        return ProgramStats::default();
    };
    let programs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut stats = ProgramStats::default();
    for p in programs.as_array().into_iter().flatten() {
        if p["name"].as_str().is_some_and(|n| n.starts_with("fi_")) {
            stats.ns += p["run_time_ns"].as_u64().unwrap_or(0);
            stats.runs += p["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    stats
}

/// Turns kernel.bpf_stats_enabled on while it lives (and back to what it was).
struct BpfStats(String);

impl BpfStats {
    fn on() -> BpfStats {
        const KNOB: &str = "/proc/sys/kernel/bpf_stats_enabled";
        let was = std::fs::read_to_string(KNOB).unwrap_or_else(|_| "0".to_owned());
        let _ = std::fs::write(KNOB, "1");
        BpfStats(was.trim().to_owned())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

fn rps_of(runs: &[Value]) -> Vec<f64> {
    runs.iter().filter_map(|r| r["rps"].as_f64()).collect()
}

/// Spread over median of a state's throughput.
fn spread_share(runs: &[Value]) -> f64 {
    let rps = rps_of(runs);
    let spread =
        rps.iter().copied().fold(f64::NAN, f64::max) - rps.iter().copied().fold(f64::NAN, f64::min);
    spread / median(rps)
}

/// Runs every state `rounds` times, interleaved, for one path (veth or loopback) and one
/// connection mode; then runs again the states that did not hold still, and reports as
/// not measured what stays unstable.
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
    let _stats = BpfStats::on();
    let run = |i: usize| {
        let r = run_state(
            i,
            lab,
            ifaces,
            wrk_in,
            (direct, proxied),
            watched,
            close,
            seconds,
        );
        if r.is_none() {
            eprintln!("fi-bench: wrk gave no result for {}", STATES[i]);
        }
        r
    };
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); STATES.len()];
    for _ in 0..rounds {
        for (i, runs) in runs.iter_mut().enumerate() {
            runs.extend(run(i));
        }
    }
    // The baseline must not fall below a state that does more work (fi attached).
    let below = |runs: &[Vec<Value>]| median(rps_of(&runs[0])) < 0.95 * median(rps_of(&runs[2]));
    for _ in 0..RETRIES {
        let unstable: Vec<usize> = (0..STATES.len())
            .filter(|&i| spread_share(&runs[i]) > UNSTABLE_SPREAD || (i == 0 && below(&runs)))
            .collect();
        if unstable.is_empty() {
            break;
        }
        for i in unstable {
            runs[i].extend(run(i));
        }
    }
    let baseline_ok = !below(&runs) && spread_share(&runs[0]) <= UNSTABLE_SPREAD;
    let base_rps = median(rps_of(&runs[0]));
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
            let rps = rps_of(rs);
            let spread = rps.iter().copied().fold(f64::NAN, f64::max)
                - rps.iter().copied().fold(f64::NAN, f64::min);
            let rps_m = median(rps);
            let of = |field: &str| median(rs.iter().filter_map(|r| r[field].as_f64()).collect());
            let (p50, p99) = (of("p50_us"), of("p99_us"));
            let why = if !baseline_ok {
                Some(format!(
                    "the baseline did not hold still (spread {:.0} % of its median, or below \
                     fi attached) after {} runs",
                    spread_share(&runs[0]) * 100.0,
                    runs[0].len()
                ))
            } else if spread / rps_m > UNSTABLE_SPREAD {
                Some(format!(
                    "spread {:.0} % of the median after {} runs",
                    spread / rps_m * 100.0,
                    rs.len()
                ))
            } else {
                None
            };
            json!({
                "state": state,
                "runs": rs.len(),
                "rps_median": rps_m,
                "rps_spread": spread,
                "measured": why.is_none(),
                "not_measured_because": why,
                "throughput_ratio": rps_m / base_rps,
                "p50_us": p50,
                "p99_us": p99,
                "added_p50_us": p50 - base_p50,
                "added_p99_us": p99 - base_p99,
                "program_ns_per_run": of("program_ns_per_run"),
                "program_ns_per_request": of("program_ns_per_request"),
                "daemon_cpu_ms_per_1000_requests": of("daemon_cpu_ms_per_1000_requests"),
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
