//! Names of what one daemon makes on ground it shares with other daemons: test cgroups,
//! FI_INJECTED_FAULTS files, injector veths.
//!
//! Each name carries the pid of the daemon that made it. Two daemons on one machine (two
//! users' explorations, or tests side by side) then never take each other's: exploration
//! ids restart at 1 in every store, so `fi.explore-1` alone was made, cleared and removed
//! by two daemons at once, and each exploration read the other's injected faults. The pid
//! also tells what a daemon that was killed left behind, so a new daemon sweeps only that.

use std::path::{Path, PathBuf};

/// Name prefix of a daemon's injector veth pair (`fii<pid>a`, `fii<pid>b`, see
/// crate::delay); interfaces never attach to them.
pub const INJECTOR_PREFIX: &str = "fii";
/// The prefix of test cgroups: `fi.explore-<pid>-<exploration>`.
const TEST_CGROUP: &str = "fi.explore-";
/// The prefix of an exploration's runtime directory: `fi-explore-<pid>-<exploration>`.
const RUNTIME_DIR: &str = "fi-explore-";

/// The test cgroup of exploration `id`, below `parent`.
pub fn test_cgroup(parent: &Path, id: i64) -> PathBuf {
    parent.join(format!("{TEST_CGROUP}{}-{id}", std::process::id()))
}

/// The runtime directory (FI_INJECTED_FAULTS lives there) of exploration `id`.
pub fn runtime_dir(parent: &Path, id: i64) -> PathBuf {
    parent.join(format!("{RUNTIME_DIR}{}-{id}", std::process::id()))
}

/// Whether `pid` is a running fi-daemon (a reused pid of another program is not).
pub fn daemon_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end().starts_with("fi-daemon"))
}

/// The entries of `dir` named `<prefix><pid>...` whose daemon is gone.
fn left_by_dead_daemons(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            pid.is_some_and(|pid| !daemon_alive(pid))
        })
        .map(|entry| entry.path())
        .collect()
}

/// Removes the test cgroups below `parent` that a killed daemon left, after killing what
/// still runs in them. Live daemons' cgroups are left alone.
pub fn sweep_test_cgroups(parent: &Path) {
    for dir in left_by_dead_daemons(parent, TEST_CGROUP) {
        let _ = std::fs::write(dir.join("cgroup.kill"), b"1");
        // Killing takes a moment; the cgroup can be removed once its processes are gone.
        for _ in 0..50 {
            if std::fs::remove_dir(&dir).is_ok() {
                tracing::info!(cgroup = %dir.display(), "removed a test cgroup left by a dead daemon");
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Removes the runtime directories below `parent` that a killed daemon left.
pub fn sweep_runtime_dirs(parent: &Path) {
    for dir in left_by_dead_daemons(parent, RUNTIME_DIR) {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_this_daemons_pid_and_sweeps_spare_live_daemons() {
        let dir = std::env::temp_dir().join(format!("fi-instance-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mine = runtime_dir(&dir, 1);
        assert_eq!(
            mine.file_name().and_then(|n| n.to_str()),
            Some(format!("fi-explore-{}-1", std::process::id()).as_str())
        );
        // pid 1 is init, not a daemon: its directory counts as left behind. A pid that no
        // process has (above pid_max) too. An unrelated name is never touched.
        let dead = dir.join("fi-explore-1-7");
        let gone = dir.join("fi-explore-4194305-2");
        let other = dir.join("fi-explore-notes");
        for d in [&mine, &dead, &gone, &other] {
            std::fs::create_dir_all(d).expect("dir");
        }
        sweep_runtime_dirs(&dir);
        assert!(!dead.exists() && !gone.exists());
        assert!(other.exists());
        // This test binary is not named fi-daemon, so its own directory goes too: the
        // sweep trusts only a live fi-daemon.
        assert!(!mine.exists());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
