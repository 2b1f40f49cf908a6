//! The bench runs (in its short mode) and writes a complete report, so it cannot rot.
//! What it measures is reported, never asserted: performance goals live in the report.

#[test]
fn the_bench_runs_in_short_mode_and_writes_its_report() {
    fi_tests::require_privileges();
    let out = std::env::temp_dir().join(format!("fi-test-bench-{}", std::process::id()));
    let status = std::process::Command::new(fi_tests::process::bin_path("fi-bench"))
        .args(["--short", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running fi-bench");
    assert!(status.success(), "fi-bench --short failed");
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json"),
    )
    .expect("report.json is JSON");
    for section in [
        "Cost per packet",
        "Delay precision",
        "Time to reset",
        "Control latency",
        "Resources",
        "Exploration (the bundled shop)",
        "Data-path overhead under load",
        "Probability accuracy",
    ] {
        assert!(md.contains(section), "report.md lacks {section}");
    }
    assert_eq!(json["mode"], "short");
    assert_eq!(json["per_packet_ns"].as_object().map(|m| m.len()), Some(7));
    let median = json["per_packet_ns"]["request, watched (parse + event)"]["median"]
        .as_f64()
        .expect("a number");
    assert!(median > 0.0, "the kernel reported a run time");
    assert_eq!(json["faults"]["delay"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        json["faults"]["resets_seen"], 3,
        "every request of the reset rule was reset"
    );
    assert!(json["control"]["daemon_rss_idle_kb"].as_u64().unwrap_or(0) > 0);
    assert!(json["control"]["map_bytes"].as_u64().unwrap_or(0) > 0);
    assert!(
        json["control"]["create_to_first_faulted_ms"]["n"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "a faulted request was seen after each create"
    );
    assert!(json["exploration"]["executions"].as_u64().unwrap_or(0) > 1);
    assert!(
        json["faults"]["probability"]["requests"]
            .as_u64()
            .unwrap_or(0)
            >= 30
    );
    for path in ["veth_keep_alive", "loopback_keep_alive"] {
        let rows = json["overhead"][path].as_array().expect("overhead rows");
        assert_eq!(rows.len(), 5, "{path}: every state measured");
        assert!(
            rows.iter()
                .all(|r| r["rps_median"].as_f64().unwrap_or(0.0) > 0.0),
            "{path}: wrk reported a throughput for every state: {rows:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
