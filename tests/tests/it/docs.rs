//! The documentation cannot rot: docs/FICTL.md is fictl's help, and README's tour runs as
//! written against a real daemon and real containers.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use fi_tests::{Lab, example::Example, process::bin_path};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn the_fictl_reference_matches_the_code() {
    let out = Command::new(bin_path("fictl"))
        .arg("docs-markdown")
        // Help shows the value of environment defaults: none set here.
        .env_remove("FI_SOCKET")
        .env_remove("FI_ADDR")
        .env_remove("FI_TOKEN_FILE")
        .env_remove("FI_EXPLORATION_ID")
        .env_remove("FI_EXECUTION")
        .output()
        .expect("running fictl docs-markdown");
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).expect("UTF-8");
    let written = std::fs::read_to_string(repo("docs/FICTL.md")).expect("docs/FICTL.md");
    assert!(
        generated == written,
        "docs/FICTL.md is stale: run `cargo xtask docs` (first difference near line {})",
        generated
            .lines()
            .zip(written.lines())
            .position(|(a, b)| a != b)
            .map_or(0, |i| i + 1)
    );
    // Every command says what it does.
    for section in generated.split("\n## ").skip(1) {
        let body = section.split_once("```text\n").map_or("", |(_, b)| b);
        assert!(
            body.lines().next().is_some_and(|l| l.len() > 10),
            "no description for {}",
            section.lines().next().unwrap_or("")
        );
    }
}

/// The ```sh tour block of README.md, line by line.
fn tour() -> Vec<String> {
    let readme = std::fs::read_to_string(repo("README.md")).expect("README.md");
    let block = readme
        .split("```sh tour\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("README.md has a ```sh tour block");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checkouts every 200 ms from the client container, so that the tour has requests to
/// watch; stopped before the exploration (which wants the test's requests alone).
fn traffic(shop: &Example) -> Child {
    let test = shop.shop_test();
    shop.client
        .command("sh")
        .args([
            "-c",
            &format!("while true; do {test} >/dev/null 2>&1; sleep 0.2; done"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting traffic")
}

#[test]
fn the_readme_tour_runs_as_written() {
    let lines = tour();
    assert!(lines.len() >= 10, "{lines:?}");
    let lab = Lab::new();
    let shop = Example::shop(&lab);
    let daemon = shop.daemon(&lab, &[]);
    let frontend = shop.service("frontend");
    let inventory = shop.service("inventory");
    let bin_dir = bin_path("fictl").parent().expect("bin dir").to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut background = Some(traffic(&shop));
    for line in &lines {
        if line.contains("explore run")
            && let Some(mut child) = background.take()
        {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(300));
        }
        // In the client container's network namespace (the exploration's curl must
        // reach the service); fictl reaches the daemon by its socket path.
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", shop.client.netns))
            .args(["sh", "-c", line])
            .env("PATH", &path)
            .env("FI_SOCKET", daemon.socket())
            .env("C", frontend.target())
            .env("DST", &inventory.container.ipv4)
            .env("PORT", fi_tests::example::PORT.to_string())
            // The daemon runs the test in its own network namespace; here the services
            // are only reachable from the lab's.
            .env(
                "TEST",
                shop.in_client(&format!(
                    "curl -sf http://{}:{}/",
                    inventory.container.ipv4,
                    fi_tests::example::PORT
                )),
            )
            .stdin(Stdio::null())
            .output()
            .expect("running a tour line");
        let code = out.status.code().unwrap_or(-1);
        // `explore run` exits 1 when it found failing plans (this one does).
        let allowed: &[i32] = if line.contains("explore run") {
            &[0, 1]
        } else {
            &[0]
        };
        assert!(
            allowed.contains(&code),
            "README tour line failed ({code}): {line}\nstdout:\n{}\nstderr:\n{}\ndaemon:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        if line.starts_with("fictl watch") {
            assert_eq!(stdout.lines().count(), 5, "{stdout}");
            assert!(stdout.contains("/frontend"), "{stdout}");
        }
        if line.starts_with("fictl stop") {
            assert!(stdout.contains("2 rule(s) removed"), "{stdout}");
        }
        if line.starts_with("fictl explore ls") {
            assert!(stdout.contains("finished"), "{stdout}");
        }
    }
    if let Some(mut child) = background {
        let _ = child.kill();
        let _ = child.wait();
    }
}
