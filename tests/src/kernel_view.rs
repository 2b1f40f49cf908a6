//! What the kernel says is attached: an independent view, not the daemon's word.

use std::{path::Path, process::Command};

use aya::programs::{SchedClassifier, TcAttachType};

/// Names of the programs attached by TCX to `interface` at `attach_type`.
pub fn tcx_programs(interface: &str, attach_type: TcAttachType) -> Vec<String> {
    let (_revision, programs) = SchedClassifier::query_tcx(interface, attach_type)
        .unwrap_or_else(|e| panic!("querying TCX {attach_type:?} of {interface}: {e}"));
    programs
        .iter()
        .map(|p| p.name_as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Names of the programs attached to a cgroup directory (any attach type), per bpftool.
pub fn cgroup_programs(cgroup: &Path) -> Vec<String> {
    let out = crate::process::must(
        Command::new("bpftool")
            .arg("-j")
            .arg("cgroup")
            .arg("show")
            .arg(cgroup),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Vec::new();
    }
    let entries: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("bpftool printed unexpected JSON ({e}): {text}"));
    entries
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|e| e.get("name")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
