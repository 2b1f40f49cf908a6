//! A fi-daemon process for one test, and a client to it.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use fi_api::{client, v1::GetStatusResponse};

use crate::process::bin_path;

/// A running fi-daemon. Dropping it kills it (SIGKILL) if a test did not stop it.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    /// The pid, kept after the child is reaped, to remove its injector if it was killed.
    pid_for_cleanup: Option<u32>,
    /// The store this harness chose (removed on drop); none when the test named one.
    own_store: Option<PathBuf>,
}

impl Daemon {
    /// Starts fi-daemon attached to `ifaces` and to `cgroup` (and to no veth as it
    /// appears), and waits until it answers.
    pub fn start(id: &str, ifaces: &[&str], cgroup: &Path) -> Self {
        Self::start_with(
            id,
            cgroup,
            &[
                "--no-veths".to_owned(),
                format!("--iface={}", ifaces.join(",")),
            ],
        )
    }

    /// Starts fi-daemon with sock_ops on `cgroup` and the given extra arguments.
    pub fn start_with(id: &str, cgroup: &Path, args: &[String]) -> Self {
        Self::start_in(id, cgroup, args, None)
    }

    /// Starts fi-daemon as [`Daemon::start_with`] does, in network namespace `netns` (a
    /// name under /run/netns) when given: entered with nsenter, which keeps this mount
    /// namespace and so the cgroup2 mount.
    pub fn start_in(id: &str, cgroup: &Path, args: &[String], netns: Option<&str>) -> Self {
        let dir = std::env::temp_dir();
        let socket = dir.join(format!("fi-test-{id}.sock"));
        let log = dir.join(format!("fi-test-{id}.log"));
        let log_file = File::create(&log).expect("creating the daemon's log file");
        // A store of its own (fresh) unless the test names one (to read it again later).
        let mut args = args.to_vec();
        let own_store = (!args.iter().any(|a| a.starts_with("--store")))
            .then(|| dir.join(format!("fi-test-{id}.db")));
        if let Some(store) = &own_store {
            remove_store(store);
            args.push(format!("--store={}", store.display()));
        }
        let mut command = match netns {
            Some(netns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{netns}"))
                    .arg("--")
                    .arg(bin_path("fi-daemon"));
                c
            }
            None => Command::new(bin_path("fi-daemon")),
        };
        let child = command
            .args(&args)
            .arg("--cgroup")
            .arg(cgroup)
            .arg("--socket")
            .arg(&socket)
            .env("FI_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("starting fi-daemon");
        let mut daemon = Self {
            pid_for_cleanup: Some(child.id()),
            own_store,
            child: Some(child),
            socket,
            log,
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child_mut().try_wait().expect("polling fi-daemon") {
                panic!("fi-daemon exited early ({status}):\n{}", self.log());
            }
            if self.try_status().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("fi-daemon did not answer within 15 s:\n{}", self.log());
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("daemon already stopped")
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon already stopped").id()
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_status(&self) -> Result<GetStatusResponse, String> {
        crate::block_on(async {
            let mut system = client::system(&self.socket)
                .await
                .map_err(|e| e.to_string())?;
            system
                .get_status(fi_api::v1::GetStatusRequest {})
                .await
                .map(tonic_response_inner)
                .map_err(|e| e.to_string())
        })
    }

    /// The daemon's status.
    pub fn status(&self) -> GetStatusResponse {
        self.try_status()
            .unwrap_or_else(|e| panic!("GetStatus failed: {e}\n{}", self.log()))
    }

    /// Runs fictl against this daemon; returns (success, stdout, stderr).
    pub fn fictl(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.fictl_command(args).output().expect("running fictl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The requests of `target` the daemon reports (`fictl --json watch --recent`), one
    /// JSON line each: all it remembers, then whatever arrives within `quiet`. Up to
    /// `at_most + 1` lines are read, so that one more than expected shows.
    pub fn watched(&self, target: &str, at_most: usize, quiet: Duration) -> Vec<String> {
        let count = (at_most + 1).to_string();
        let mut child = self
            .fictl_command(&[
                "--json", "watch", "--target", target, "--recent", "--count", &count,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("running fictl watch");
        let deadline = Instant::now() + quiet;
        while Instant::now() < deadline {
            if child.try_wait().expect("fictl watch").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let out = child.wait_with_output().expect("fictl watch output");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// A fictl command aimed at this daemon, to run or spawn.
    pub fn fictl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin_path("fictl"));
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd
    }

    /// Waits until the daemon reports TC programs on every one of `interfaces`.
    pub fn wait_attached(&self, interfaces: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.status();
            let missing: Vec<_> = interfaces
                .iter()
                .filter(|i| !status.attachments.iter().any(|a| a.target == **i))
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "fi-daemon did not attach to {missing:?} within 10 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The data-path counters by name.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.status()
            .counters
            .into_iter()
            .map(|c| (c.name, c.value))
            .collect()
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM)
    }

    /// SIGKILL, then waits: the daemon gets no chance to clean up.
    pub fn kill(mut self) -> ExitStatus {
        self.signal(libc::SIGKILL)
    }

    fn signal(&mut self, signal: libc::c_int) -> ExitStatus {
        let mut child = self.child.take().expect("daemon already stopped");
        self.pid_for_cleanup = Some(child.id());
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("waiting for fi-daemon") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("fi-daemon did not exit within 10 s of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn tonic_response_inner<T>(response: tonic::Response<T>) -> T {
    response.into_inner()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
        if let Some(store) = &self.own_store {
            remove_store(store);
        }
        // A daemon that was killed leaves its injector veth pair (named after its pid).
        if let Some(pid) = self.pid_for_cleanup {
            crate::process::ip_quiet(&["link", "del", &format!("fii{pid}a")]);
        }
    }
}

/// Removes an SQLite store with its WAL files.
pub fn remove_store(store: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
}
