//! A host process in a cgroup of a lab, talking to the test server on lo: for the cases
//! that need lo (its 64 KiB segments, its egress-only hook).

use std::{
    path::PathBuf,
    process::Output,
    time::{Duration, Instant},
};

use crate::{Daemon, Lab, fixture, net::Guard};

/// A daemon on lo, the test server on a free port of 127.0.0.1, and a cgroup of the lab
/// for the client. Fields drop in order: server, cgroup, daemon, lab.
#[derive(Debug)]
pub struct OnLo {
    _server: Guard,
    cgroup: HostCgroup,
    pub daemon: Daemon,
    pub port: u16,
    lab: Lab,
}

/// A cgroup of the lab for host processes; its processes are killed and it is removed
/// on drop, also when an assertion fails.
#[derive(Debug)]
struct HostCgroup(PathBuf);

impl Drop for HostCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl OnLo {
    /// `name` is the client's cgroup, under the lab's.
    pub fn new(name: &str) -> Self {
        let lab = Lab::new();
        let daemon = Daemon::start(lab.id(), &["lo"], lab.cgroup());
        let path = lab.cgroup().join(name);
        std::fs::create_dir(&path).expect("creating the client's cgroup");
        let cgroup = HostCgroup(path);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = Guard(
            std::process::Command::new("python3")
                .arg(fixture("http_server.py"))
                .arg(port.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("python3"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        OnLo {
            _server: server,
            cgroup,
            daemon,
            port,
            lab,
        }
    }

    /// The client's cgroup as rules name it.
    pub fn container(&self) -> String {
        format!(
            "/{}/{}",
            self.lab
                .cgroup()
                .file_name()
                .expect("name")
                .to_string_lossy(),
            self.cgroup.0.file_name().expect("name").to_string_lossy()
        )
    }

    /// Runs a Python script in the client's cgroup.
    pub fn python(&self, script: &str) -> Output {
        use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(self.cgroup.0.join("cgroup.procs"))
            .expect("cgroup.procs");
        let mut command = std::process::Command::new("python3");
        command.args(["-c", script]);
        // SAFETY: one write(2) of a static buffer to a descriptor opened before fork:
        // async-signal-safe, no lock, no allocation.
        unsafe {
            command.pre_exec(move || {
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.output().expect("python3")
    }

    /// [`OnLo::python`] that must succeed; its stdout, trimmed.
    pub fn python_ok(&self, script: &str) -> String {
        let out = self.python(script);
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.status.success(),
            "python failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Requests the server has seen (asked from outside the lab's cgroups: not faulted).
    pub fn server_count(&self) -> u64 {
        use std::io::{Read as _, Write as _};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("the server");
        stream
            .write_all(b"GET /__count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("asking the count");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("the count");
        answer
            .split("\r\n\r\n")
            .nth(1)
            .and_then(|b| b.trim().parse().ok())
            .unwrap_or_else(|| panic!("bad count answer {answer:?}"))
    }
}
