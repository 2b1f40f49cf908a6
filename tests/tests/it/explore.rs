//! Exploration against the bundled example services (examples/shop/README.md), end to
//! end: real services in lab containers, the daemon running the functional test under
//! every fault, fictl reading the reports.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use fi_tests::{Daemon, Lab, example::Example};
use serde_json::Value;

fn start_daemon(lab: &Lab, example: &Example, extra: &[String]) -> Daemon {
    example.daemon(lab, extra)
}

/// Runs fictl; panics with its output unless the exit status is one of `codes`.
fn fictl(daemon: &Daemon, args: &[&str], codes: &[i32]) -> String {
    let out = daemon.fictl_command(args).output().expect("running fictl");
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        codes.contains(&code),
        "fictl {args:?} exited {code}\nstdout:\n{stdout}\nstderr:\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    stdout
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// `fictl explore injected` for one execution: the JSON answer.
fn injected(daemon: &Daemon, exploration: &str, execution: &str) -> Value {
    json(&fictl(
        daemon,
        &[
            "--json",
            "explore",
            "injected",
            "--exploration",
            exploration,
            "--execution",
            execution,
        ],
        &[0],
    ))
}

/// Runs an exploration to its end with `fictl explore run --json`: the JSON report.
fn explore(daemon: &Daemon, example: &Example, test: &str, options: &[&str]) -> Value {
    let mut args = vec!["--json", "explore", "run", "--run-timeout", "30s"];
    let targets = example.target_args();
    args.extend(targets.iter().map(String::as_str));
    args.extend_from_slice(options);
    args.push("--");
    args.push(test);
    // 1: some plan broke the test (the examples are built so that some do).
    json(&fictl(daemon, &args, &[0, 1]))
}

/// A fault on one call site, by the names a reader uses.
fn describe_single(e: &Value) -> Option<(String, String, String, u64, String)> {
    let plan = e["plan"].as_array()?;
    let [fault] = plan.as_slice() else {
        return None;
    };
    let site = &fault["site"];
    Some((
        site["source"].as_str()?.to_owned(),
        format!("{} {}", site["method"].as_str()?, site["path"].as_str()?),
        site["destination"].as_str()?.to_owned(),
        site["index"].as_u64()?,
        fault_name(&fault["fault"]),
    ))
}

fn fault_name(f: &Value) -> String {
    match f["kind"].as_str().unwrap_or("?") {
        "abort" => format!("abort:{}", f["status"]),
        other => other.to_owned(),
    }
}

fn failed(e: &Value) -> bool {
    matches!(
        e["outcome"]["kind"].as_str(),
        Some("failed" | "timed-out" | "error")
    )
}

#[test]
fn the_shop_exploration_finds_exactly_the_known_breaking_faults_and_replays_them() {
    let lab = Lab::new();
    let shop = Example::shop(&lab);
    let store = std::env::temp_dir().join(format!("fi-test-{}-kept.db", lab.id()));
    let store_arg = format!("--store={}", store.display());
    let daemon = start_daemon(&lab, &shop, std::slice::from_ref(&store_arg));
    let report = explore(
        &daemon,
        &shop,
        &shop.shop_test(),
        &[
            "--faults",
            "default,response-lost",
            "--label",
            "shop checkout",
        ],
    );
    let all = [
        "abort:500",
        "abort:503",
        "reset",
        "response-lost",
        "timeout",
    ];
    check_shop_findings(&shop, &report, &all);
    let id = report["id"].as_i64().expect("exploration id");
    // Listings tell explorations apart: label, fault set, start.
    let listed = json(&fictl(&daemon, &["--json", "explore", "ls"], &[0]));
    let row = listed
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["id"] == id))
        .unwrap_or_else(|| panic!("exploration {id} is listed: {listed:#}"));
    assert_eq!(row["label"], "shop checkout", "{row:#}");
    assert_eq!(
        row["faults"],
        serde_json::json!([
            "reset",
            "timeout",
            "abort:500",
            "abort:503",
            "response-lost"
        ]),
        "{row:#}"
    );
    let text = fictl(&daemon, &["explore", "ls"], &[0]);
    assert!(text.contains("shop checkout"), "{text}");
    let executions = report["executions"].as_array().expect("executions");
    // The double execution under response lost is named as such.
    let lost = executions
        .iter()
        .find(|e| {
            describe_single(e).is_some_and(|(s, ep, _, _, f)| {
                s == "frontend" && ep == "POST /charge" && f == "response-lost"
            })
        })
        .expect("response-lost on the charge was tried");
    let notes = lost["notes"].to_string();
    assert!(notes.contains("non-idempotent"), "{notes}");
    assert!(
        lost["output_tail"]
            .as_str()
            .unwrap_or("")
            .contains("charged 2 times"),
        "{lost:#}"
    );
    // Findings group the failing plans: each failing plan is in exactly one, and plans
    // that tell one story (one site, one kind of fault, one failure) share one.
    let failures = report["summary"]["failures"].as_array().expect("failures");
    let findings = report["summary"]["findings"].as_array().expect("findings");
    let mut grouped: Vec<u64> = findings
        .iter()
        .flat_map(|f| f["executions"].as_array().expect("executions").iter())
        .filter_map(Value::as_u64)
        .collect();
    grouped.sort_unstable();
    let mut failing: Vec<u64> = failures
        .iter()
        .filter_map(|f| f["execution"].as_u64())
        .collect();
    failing.sort_unstable();
    assert_eq!(
        grouped, failing,
        "every failing plan in one finding: {findings:#?}"
    );
    assert!(
        findings.len() < failures.len(),
        "abort:500 and abort:503 on one call, with one failure, are one finding: {findings:#?}"
    );
    let text = fictl(&daemon, &["explore", "show", &id.to_string()], &[0, 1]);
    assert!(
        text.contains("findings ("),
        "the text report leads with findings: {text}"
    );
    // Each failure comes with its replay command; replay reproduces it.
    let singles: Vec<&Value> = failures
        .iter()
        .filter(|f| !f["plan"].as_str().unwrap_or("").contains(" + "))
        .collect();
    let pair = failures
        .iter()
        .find(|f| f["plan"].as_str().unwrap_or("").contains(" + "));
    for f in singles.into_iter().chain(pair) {
        let replay = f["replay"].as_str().expect("replay command");
        let execution_id = replay.rsplit(' ').next().expect("an id");
        assert_eq!(replay, format!("fictl explore replay {execution_id}"));
        // Exit status 1: the test failed again.
        let again = json(&fictl(
            &daemon,
            &["--json", "explore", "replay", execution_id],
            &[1],
        ));
        assert_eq!(again["config"]["replay_of"][0], id);
        let replayed = &again["executions"][0];
        assert!(
            failed(replayed),
            "replay of {execution_id} passed: {replayed:#}"
        );
    }

    // The faults injected are listed for past executions too.
    let lost_number = lost["number"].as_u64().expect("number").to_string();
    let injected = injected(&daemon, &id.to_string(), &lost_number);
    assert_eq!(
        injected["faults"][0]["fault"], "response-lost",
        "{injected:#}"
    );
    // Named after the target it reached, not only ip:port.
    assert_eq!(injected["faults"][0]["service"], "payments", "{injected:#}");

    // The report survives a restart of the daemon, intact.
    let before = fictl(
        &daemon,
        &["--json", "explore", "show", &id.to_string()],
        &[0],
    );
    let listed = json(&fictl(&daemon, &["--json", "explore", "ls"], &[0]));
    assert!(
        listed.as_array().is_some_and(|l| l.len() >= 2),
        "{listed:#}"
    );
    assert!(daemon.stop().success());
    let daemon = start_daemon(&lab, &shop, std::slice::from_ref(&store_arg));
    let after = fictl(
        &daemon,
        &["--json", "explore", "show", &id.to_string()],
        &[0],
    );
    assert_eq!(json(&before), json(&after));
    let text = fictl(&daemon, &["explore", "show", &id.to_string()], &[0]);
    assert!(text.contains("failing plans (36)"), "{text}");
    drop(daemon);
    fi_tests::daemon::remove_store(&store);
}

/// Checks a shop exploration with `faults` against what examples/shop/README.md says a
/// correct one finds: per call site, exactly the single faults that break the test; every
/// pair on the charge and its retry breaks it; and nothing else is reported.
fn check_shop_findings(shop: &Example, report: &Value, faults: &[&str]) {
    assert_eq!(report["status"], "finished", "{report:#}");
    let executions = report["executions"].as_array().expect("executions");
    assert_eq!(executions[0]["outcome"]["kind"], "passed", "reference run");
    let payments = shop.service("payments").url();
    let inventory = shop.service("inventory").url();
    let warehouse = shop.service("warehouse").url();
    let recommend = shop.service("recommend").url();
    let mut faults: Vec<String> = faults.iter().map(|f| (*f).to_owned()).collect();
    faults.sort();
    let lost_breaks_charge: Vec<String> = faults
        .iter()
        .filter(|f| *f == "response-lost")
        .cloned()
        .collect();
    let key = |s: &str, e: &str, d: &String| (s.to_owned(), e.to_owned(), d.clone(), 0);
    // The test's own requests (to frontend and payments) are seen, never faulted: a fault
    // on them would only say that the test notices errors it caused.
    assert!(
        executions.iter().all(|e| e["plan"]
            .as_array()
            .is_none_or(|p| p.iter().all(|f| f["site"]["source"] != "test"))),
        "a fault on the test's own request was tried"
    );
    let expected: BTreeMap<(String, String, String, u64), Vec<String>> = [
        (key("frontend", "GET /recs", &recommend), vec![]),
        (
            key("frontend", "GET /stock/{id}", &inventory),
            faults.clone(),
        ),
        (
            key("inventory", "GET /level/{id}", &warehouse),
            faults.clone(),
        ),
        (
            key("frontend", "POST /charge", &payments),
            lost_breaks_charge.clone(),
        ),
    ]
    .into_iter()
    .collect();
    let mut found: BTreeMap<(String, String, String, u64), Vec<String>> = BTreeMap::new();
    for e in executions {
        if let Some((source, endpoint, dest, index, fault)) = describe_single(e) {
            let broke = found.entry((source, endpoint, dest, index)).or_default();
            if failed(e) {
                broke.push(fault);
            }
        }
    }
    for broke in found.values_mut() {
        broke.sort();
    }
    assert_eq!(found, expected, "single faults that broke the test");

    // The retry: every pair of faults on the charge and its retry breaks the checkout.
    let pairs: Vec<&Value> = executions
        .iter()
        .filter(|e| e["plan"].as_array().is_some_and(|p| p.len() == 2))
        .collect();
    let n = faults.len();
    assert_eq!(
        pairs.len(),
        n * n,
        "each fault on the charge x each on its retry"
    );
    assert!(
        pairs.iter().all(|e| failed(e)),
        "a failed retry breaks the checkout"
    );
    // inventory n, warehouse n, response-lost on the charge, charge + retry n x n.
    let failures = report["summary"]["failures"].as_array().expect("failures");
    assert_eq!(
        failures.len(),
        2 * n + lost_breaks_charge.len() + n * n,
        "{failures:#?}"
    );
}

/// Two shop explorations with different faults, in two labs at once, each with its own
/// daemon: each finds exactly what it alone would. (They once shared the daemons' runtime
/// files, and each read the other's injected faults.)
#[test]
fn two_explorations_in_two_labs_at_once_each_find_exactly_their_own_results() {
    let explore_shop = |faults: &'static [&'static str]| {
        std::thread::spawn(move || {
            let lab = Lab::new();
            let shop = Example::shop(&lab);
            let daemon = start_daemon(&lab, &shop, &[]);
            let list = faults.join(",");
            let report = explore(&daemon, &shop, &shop.shop_test(), &["--faults", &list]);
            check_shop_findings(&shop, &report, faults);
        })
    };
    let first = explore_shop(&["reset", "abort:503"]);
    let second = explore_shop(&["abort:500", "response-lost"]);
    let results = [first.join(), second.join()];
    for (name, result) in ["reset,abort:503", "abort:500,response-lost"]
        .iter()
        .zip(results)
    {
        if let Err(panic) = result {
            std::panic::resume_unwind(Box::new(format!(
                "the exploration with {name}: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default()
            )));
        }
    }
}

/// The plans of a report that failed, or that reduction predicts to fail.
fn failing_plans(report: &Value) -> std::collections::BTreeSet<String> {
    report["summary"]["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| f["plan"].as_str().expect("plan").to_owned())
        .collect()
}

#[test]
fn reduction_runs_fewer_executions_on_the_deep_example_and_finds_the_same_failures() {
    let lab = Lab::new();
    let mut deep = Example::deep(&lab);
    let daemon = start_daemon(&lab, &deep, &[]);
    let faults = ["--faults", "reset,abort:503"];
    let reduced = explore(&daemon, &deep, &deep.deep_test(), &faults);
    let mut options = faults.to_vec();
    options.push("--no-reduction");
    let full = explore(&daemon, &deep, &deep.deep_test(), &options);
    let runs = |r: &Value| r["summary"]["runs"].as_u64().expect("runs");
    let pruned = |r: &Value| r["summary"]["pruned"].as_u64().expect("pruned");
    println!(
        "deep example, faults reset+abort:503: {} executions without reduction, {} with \
         reduction ({} pruned)",
        runs(&full),
        runs(&reduced),
        pruned(&reduced)
    );
    assert_eq!(pruned(&full), 0);
    assert!(runs(&reduced) < runs(&full));
    assert_eq!(runs(&reduced) + pruned(&reduced), runs(&full));
    assert_eq!(failing_plans(&reduced), failing_plans(&full));
    // Every pruned execution says why.
    for e in reduced["executions"].as_array().expect("executions") {
        if e["outcome"]["kind"] == "pruned" {
            let reason = e["pruned"]["reason"].as_str().unwrap_or("");
            assert!(reason.starts_with("equivalent to ["), "{e:#}");
        }
    }

    // Asked for, faults on the test's own request are explored too (checked below).
    let with_test = explore(
        &daemon,
        &deep,
        &deep.deep_test(),
        &["--faults", "reset", "--include-test-requests"],
    );

    // The HTML report, rendered by a real browser: the call graph is drawn with red
    // (broke the test: here the test's own call) and green (survived) edges.
    let id = reduced["id"].as_i64().expect("id").to_string();
    let shown = with_test["id"].as_i64().expect("id").to_string();
    let dir = std::env::temp_dir().join(format!("fi-test-{}-html", lab.id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let html = dir.join("report.html");
    let png = dir.join("report.png");
    fictl(
        &daemon,
        &[
            "explore",
            "show",
            &shown,
            "--format",
            "html",
            "--output",
            html.to_str().expect("utf-8"),
        ],
        &[0],
    );
    let page = std::fs::read_to_string(&html).expect("the HTML report");
    assert!(page.contains("<svg") && page.contains("gateway") && page.contains("orders"));
    screenshot(&html, &png);
    let (red, green) = colour_pixels(&png);
    assert!(
        red > 200 && green > 200,
        "graph edges drawn: {red} red, {green} green pixels"
    );
    std::fs::remove_dir_all(&dir).expect("removing the temp dir");

    // One fault on the test's own request replays in the replay's own test cgroup (the original one is gone): the fault is injected
    // again and breaks the test again.
    let own = failing_plans(&with_test)
        .into_iter()
        .find(|p| p.contains(" on test → "))
        .expect("a fault on the test's own request broke it");
    assert!(
        !failing_plans(&reduced)
            .iter()
            .any(|p| p.contains(" on test → ")),
        "by default the test's own requests are not faulted"
    );
    let own_replay = with_test["summary"]["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .find(|f| f["plan"] == own.as_str())
        .and_then(|f| f["replay"].as_str())
        .and_then(|r| r.rsplit(' ').next())
        .expect("a replay command")
        .to_owned();
    let again = json(&fictl(
        &daemon,
        &["--json", "explore", "replay", &own_replay],
        &[1],
    ));
    assert!(failed(&again["executions"][0]), "{again:#}");
    let injected = injected(
        &daemon,
        &again["id"].to_string(),
        &again["executions"][0]["number"].to_string(),
    );
    assert_eq!(
        injected["faults"].as_array().map(Vec::len),
        Some(1),
        "the fault on the test's own request was injected again: {injected:#}"
    );

    // The delta: with the cache gone, the fallback no longer saves the page.
    let cache = deep
        .services
        .iter()
        .position(|s| s.container.name == "cache")
        .expect("cache");
    deep.services.remove(cache);
    let after = explore(&daemon, &deep, &deep.deep_test(), &faults);
    let (a, b) = (id, after["id"].as_i64().expect("id").to_string());
    let diff = json(&fictl(
        &daemon,
        &["--json", "explore", "diff", &a, &b],
        &[1],
    ));
    let new: Vec<&str> = diff["new_failures"]
        .as_array()
        .expect("new failures")
        .iter()
        .filter_map(|c| c["plan"].as_str())
        .collect();
    assert!(
        new.iter()
            .any(|p| p.starts_with("abort:503 on gateway → GET") && p.ends_with("/orders")),
        "{diff:#}"
    );
    assert!(
        diff["fixed"].as_array().is_some_and(Vec::is_empty),
        "{diff:#}"
    );
    // The plans that faulted the cache could not run again: the cache is never called.
    assert!(
        diff["not_run"].as_array().is_some_and(|n| !n.is_empty()
            && n.iter()
                .all(|p| p["plan"].as_str().is_some_and(|p| p.contains("/cache")))),
        "{diff:#}"
    );

    // A replay that cannot be done (a container of the plan is gone) says so, with its
    // own exit status, never as a reproduced failure (1).
    let replay_id = format!("{a}/1");
    let out = daemon
        .fictl_command(&["explore", "replay", &replay_id])
        .output()
        .expect("fictl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("cache") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

/// Headless Chromium (Debian's `chromium`) renders a page to a PNG.
fn screenshot(html: &std::path::Path, png: &std::path::Path) {
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,700",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("running chromium (cargo xtask setup installs it)");
    assert!(
        out.status.success() && png.exists(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Counts reddish and greenish pixels of a PNG (decoded by Python's zlib: no image crate
/// for one test).
fn colour_pixels(png: &std::path::Path) -> (u64, u64) {
    let script = fi_tests::fixture("png_colours.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(png)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut numbers = text
        .split_whitespace()
        .map(|n| n.parse::<u64>().unwrap_or(0));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

#[test]
fn a_daemon_killed_mid_exploration_leaves_a_consistent_store() {
    let lab = Lab::new();
    let deep = Example::deep(&lab);
    let store = std::env::temp_dir().join(format!("fi-test-{}-sigkill.db", lab.id()));
    let store_arg = format!("--store={}", store.display());
    let daemon = start_daemon(&lab, &deep, std::slice::from_ref(&store_arg));
    let mut args = vec!["--json", "explore", "run", "--detach", "--no-reduction"];
    let targets = deep.target_args();
    args.extend(targets.iter().map(String::as_str));
    let test = deep.deep_test();
    args.extend(["--", &test]);
    let started = json(&fictl(&daemon, &args, &[0]));
    let id = started["exploration"].as_i64().expect("id");
    // Wait for a few executions, then kill the daemon in the middle of the next.
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let list = json(&fictl(&daemon, &["--json", "explore", "ls"], &[0]));
        let n = list[0]["executions"].as_u64().unwrap_or(0);
        if n >= 4 {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "no progress: {list:#}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!daemon.kill().success());
    let test_cgroups = || -> Vec<PathBuf> {
        std::fs::read_dir(lab.cgroup())
            .expect("the lab cgroup")
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("fi.explore-"))
            })
            .collect()
    };
    assert_eq!(
        test_cgroups().len(),
        1,
        "the killed daemon's test cgroup is left"
    );
    let daemon = start_daemon(&lab, &deep, std::slice::from_ref(&store_arg));
    assert_eq!(
        test_cgroups(),
        Vec::<PathBuf>::new(),
        "the new daemon removes the dead one's test cgroup"
    );
    let report = json(&fictl(
        &daemon,
        &["--json", "explore", "show", &id.to_string()],
        &[0],
    ));
    assert_eq!(report["status"], "interrupted", "{report:#}");
    let kept = report["executions"].as_array().expect("executions");
    assert!(
        kept.len() as u64 >= done,
        "{} kept, {done} were done",
        kept.len()
    );
    for (i, e) in kept.iter().enumerate() {
        assert_eq!(
            e["number"].as_u64(),
            Some(i as u64),
            "numbered without gaps"
        );
        assert!(e["outcome"]["kind"].is_string());
    }
    // No rule survives its daemon.
    let rules = json(&fictl(&daemon, &["--json", "rules", "ls"], &[0]));
    assert_eq!(rules, Value::Array(Vec::new()));
    drop(daemon);
    fi_tests::daemon::remove_store(&store);
}

/// Reports name servers by the sockets their containers listen on: services that share an
/// address (all on 127.0.0.1) differ by port. A listener of another cgroup in the same
/// network namespace is not the container's.
#[test]
fn a_containers_listening_sockets_are_its_own_and_no_one_elses() {
    let lab = Lab::new();
    let svc = lab.container("svc", 1);
    let _server = svc.http_server(8080);
    // Another process in the same network namespace but not in the container's cgroup.
    let mut stranger = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", svc.netns))
        .args(["python3", "-c"])
        .arg(
            "import socket, time\n\
             s = socket.socket()\n\
             s.bind(('127.0.0.1', 7070))\n\
             s.listen()\n\
             print('ready', flush=True)\n\
             time.sleep(60)\n",
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("nsenter python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(stranger.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("the stranger's first line");
    assert_eq!(line.trim(), "ready");
    let found = fi_daemon::explore::netns::listening(&svc.cgroup);
    let _ = stranger.kill();
    let _ = stranger.wait();
    let has = |addr: &str| found.contains(&addr.parse().expect("an address"));
    // The fixture listens on [::] (both families) at 8080, 9080 and 10080.
    for addr in ["127.0.0.1:8080", "[::1]:8080", "127.0.0.1:9080"] {
        assert!(has(addr), "{addr} is the container's: {found:?}");
    }
    assert!(
        !has("127.0.0.1:7070"),
        "the stranger's socket is not: {found:?}"
    );
}

/// Explores the shop with faults on the test's own requests (reset, abort 503), the test
/// being `test`, which asks fi's helpers once, right after the error it saw, whether fi
/// injected a fault on its own request. Every such plan must pass (a stale "no" from the
/// helpers would fail it), saying that the error `expected` (its message).
fn own_request_faults_are_explained_at_once(test: impl Fn(&Example) -> String, expected: &str) {
    let lab = Lab::new();
    let shop = Example::shop(&lab);
    let daemon = start_daemon(&lab, &shop, &[]);
    let report = explore(
        &daemon,
        &shop,
        &test(&shop),
        &["--faults", "reset,abort:503", "--include-test-requests"],
    );
    let executions = report["executions"].as_array().expect("executions");
    assert_eq!(
        executions[0]["outcome"]["kind"], "passed",
        "the reference run"
    );
    let own: Vec<&Value> = executions
        .iter()
        .filter(|e| describe_single(e).is_some_and(|(source, ..)| source == "test"))
        .collect();
    assert!(
        own.len() >= 2,
        "faults on the test's own requests were tried: {report:#}"
    );
    for e in own {
        assert_eq!(e["outcome"]["kind"], "passed", "explained at once: {e:#}");
        let output = e["output_tail"].as_str().unwrap_or("");
        assert!(output.contains(expected), "{output}");
    }
}

/// The Python helpers (`fi_testing`), as the shop's test uses them.
#[test]
fn the_test_helpers_answer_exactly_at_once_on_the_tests_own_requests() {
    own_request_faults_are_explained_at_once(Example::shop_test, "an error is expected");
}

/// The Rust helpers (`fi-testing`), as the shop's checkout in Rust uses them.
#[test]
fn the_rust_test_helpers_answer_exactly_at_once() {
    own_request_faults_are_explained_at_once(Example::shop_test_rust, "is expected");
}
