//! The demo behind `cargo xtask demo`: the example shop in test containers, fi-daemon,
//! a few requests watched live, one manual fault, an exploration, the report, and
//! everything removed at the end (also on Ctrl-C).
//!
//! Run by xtask after it has built everything, as root: `fi-demo [--report-dir DIR]`.

use std::{
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use fi_tests::{Lab, example::Example};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn step(text: &str) {
    println!("\n\x1b[1m==> {text}\x1b[0m");
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Runs a command with the terminal; false if it failed or was interrupted.
fn show(cmd: &mut Command) -> Option<std::process::ExitStatus> {
    let status = cmd.status().ok()?;
    if interrupted() { None } else { Some(status) }
}

fn main() -> ExitCode {
    // Ctrl-C reaches every process of the terminal's group: fictl and the daemon stop on
    // their own; this process stops at the next step and removes the scenery (Drop).
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
    let report_dir = std::env::args()
        .skip_while(|a| a != "--report-dir")
        .nth(1)
        .map_or_else(|| std::env::temp_dir().join("fi-demo"), PathBuf::from);
    let code = match run(&report_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fi-demo: {e}");
            ExitCode::FAILURE
        }
    };
    step("cleaning up: daemon, containers, cgroups, namespaces");
    code
}

fn run(report_dir: &std::path::Path) -> Result<(), String> {
    step("starting the example shop: 5 services in 5 test containers (examples/shop/README.md)");
    let lab = Lab::new();
    let shop = Example::shop(&lab);
    for s in &shop.services {
        println!(
            "  {:<10} {}  cgroup {}",
            s.container.name,
            s.url(),
            s.target()
        );
    }
    if interrupted() {
        return Err("interrupted".into());
    }

    step("starting fi-daemon (it attaches to the containers' veths as they appear)");
    let daemon = shop.daemon(&lab, &[]);
    let fictl = |args: &[&str]| {
        let mut c = daemon.fictl_command(args);
        c.stdin(Stdio::null());
        c
    };
    let lab_cgroup = format!("/fi-test-{}", lab.id());
    let test = shop.shop_test();

    step("watching requests live while the functional test runs once (fictl watch)");
    // Targeted first, so that the kernel reports every request of the run whenever the
    // watch's stream begins; `--recent` then shows those that came before it.
    show(fictl(&["target", "add", &lab_cgroup]).stdout(Stdio::null()));
    let mut watcher = fictl(&["watch", "--target", &lab_cgroup, "--recent", "--count", "6"])
        .spawn()
        .map_err(|e| format!("fictl watch: {e}"))?;
    // In the client container, so that the test's own requests are seen too.
    let ok = show(shop.client.command("sh").args(["-c", &test]));
    // Six requests make one checkout; do not wait forever should one be missed.
    for _ in 0..30 {
        if watcher.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    show(fictl(&["target", "rm", &lab_cgroup]).stdout(Stdio::null()));
    if !ok.is_some_and(|s| s.success()) {
        return Err("the functional test does not pass without faults".into());
    }

    step("one manual fault: inventory answers 503 to frontend (fictl rules add)");
    let inventory = shop.service("inventory");
    let frontend = shop.service("frontend").target();
    let ip = inventory.container.ipv4.clone();
    show(&mut fictl(&[
        "rules",
        "add",
        "--fault",
        "abort:503",
        "--container",
        &frontend,
        "--dst",
        &ip,
        "--path",
        "/stock/*",
        "--ttl",
        "60s",
        "--description",
        "demo: inventory down",
    ]))
    .ok_or("interrupted")?;
    let broken = show(shop.client.command("sh").args(["-c", &test])).ok_or("interrupted")?;
    println!(
        "  the test {} under that fault",
        if broken.success() {
            "PASSED (unexpected)"
        } else {
            "FAILED, as it should"
        }
    );
    show(&mut fictl(&["rules", "ls"])).ok_or("interrupted")?;
    step("the kill switch: fictl stop");
    show(&mut fictl(&["stop"])).ok_or("interrupted")?;

    step("exploring: every fault on every request of the functional test (fictl explore run)");
    std::fs::create_dir_all(report_dir)
        .map_err(|e| format!("creating {}: {e}", report_dir.display()))?;
    let html = report_dir.join("report.html");
    let html_arg = html.display().to_string();
    let mut args = vec![
        "explore",
        "run",
        "--faults",
        "default,response-lost",
        "--html",
        &html_arg,
    ];
    let targets = shop.target_args();
    args.extend(targets.iter().map(String::as_str));
    args.extend(["--", &test]);
    let status = show(&mut fictl(&args)).ok_or("interrupted")?;
    // Exit status 1: failing plans found, which is what the example is built for.
    if status.code() != Some(1) {
        return Err(format!(
            "the exploration did not find the expected failures ({status})"
        ));
    }
    step("done");
    println!("  HTML report: {}", html.display());
    println!("  what it should say: examples/shop/README.md");
    println!("  next: README.md, \"Five minutes with your own containers\"");
    drop(daemon);
    drop(shop);
    drop(lab);
    Ok(())
}
