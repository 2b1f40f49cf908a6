//! A lab (one per test): a bridge with no address in the host namespace, a parent cgroup,
//! and containers (network namespace + cgroup) plugged into the bridge by veth pairs.
//!
//! Addresses: container N has 10.77.0.N/24 and fd77::N/64 on its `eth0`, and `lo`; there
//! is no default route anywhere, and the host side has no address, so traffic stays
//! between the lab's containers.

use std::{
    fs::{self, File, OpenOptions},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::process::{ip, ip_quiet, must};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// The cgroup2 mount point, from /proc/mounts.
pub fn cgroup2_mount() -> PathBuf {
    let mounts = fs::read_to_string("/proc/mounts").expect("reading /proc/mounts");
    fi_daemon::cgroup_fs::cgroup2_mount_in(&mounts)
        .expect("this test needs root and eBPF with a cgroup2 filesystem mounted")
}

/// One test's scenery. Drop it last: containers first, then the lab.
#[derive(Debug)]
pub struct Lab {
    id: String,
    bridge: String,
    cgroup: PathBuf,
}

impl Lab {
    pub fn new() -> Self {
        crate::require_privileges();
        // pid (at most 6 hex digits) + a per-process counter: unique across parallel test
        // binaries, and short enough for 15-character interface names.
        let id = format!(
            "{:x}{:02x}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed) % 256
        );
        let bridge = format!("fib{id}");
        let cgroup = cgroup2_mount().join(format!("fi-test-{id}"));
        let lab = Self { id, bridge, cgroup };
        fs::create_dir(&lab.cgroup)
            .unwrap_or_else(|e| panic!("creating cgroup {:?}: {e}", lab.cgroup));
        ip(&["link", "add", &lab.bridge, "type", "bridge"]);
        disable_ipv6_on_host_side(&lab.bridge);
        ip(&["link", "set", &lab.bridge, "up"]);
        lab
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The lab's parent cgroup; every container's cgroup is below it.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// A container with index `n` (1..=250): address 10.77.0.n and fd77::n.
    pub fn container(&self, name: &str, n: u8) -> Container {
        assert!((1..=250).contains(&n), "container index {n} out of range");
        let netns = format!("fi{}{name}", self.id);
        let host_veth = format!("fv{}{n:x}", self.id);
        let peer = format!("fp{}{n:x}", self.id);
        let cgroup = self.cgroup.join(name);
        fs::create_dir(&cgroup).unwrap_or_else(|e| panic!("creating cgroup {cgroup:?}: {e}"));
        let container = Container {
            name: name.to_owned(),
            netns,
            host_veth,
            cgroup,
            ipv4: format!("10.77.0.{n}"),
            ipv6: format!("fd77::{n:x}"),
        };
        let ns = container.netns.as_str();
        ip(&["netns", "add", ns]);
        ip(&[
            "link",
            "add",
            &container.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            ns,
        ]);
        disable_ipv6_on_host_side(&container.host_veth);
        ip(&[
            "link",
            "set",
            &container.host_veth,
            "master",
            &self.bridge,
            "up",
        ]);
        ip(&["-n", ns, "link", "set", &peer, "name", "eth0"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", container.ipv4),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            ns,
            "-6",
            "addr",
            "add",
            &format!("{}/64", container.ipv6),
            "dev",
            "eth0",
            "nodad",
        ]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        container
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        ip_quiet(&["link", "del", &self.bridge]);
        remove_cgroup(&self.cgroup);
    }
}

/// The host side of the lab carries no address at all, not even an IPv6 link-local one.
fn disable_ipv6_on_host_side(interface: &str) {
    let _ = fs::write(
        format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6"),
        "1",
    );
}

/// Kills every process in a cgroup, waits for it to empty, and removes it.
fn remove_cgroup(cgroup: &Path) {
    if !cgroup.exists() {
        return;
    }
    let _ = fs::write(cgroup.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if fs::remove_dir(cgroup).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("warning: could not remove cgroup {cgroup:?}");
}

/// A network namespace plus a cgroup: what a container is to fi.
#[derive(Debug)]
pub struct Container {
    pub name: String,
    pub netns: String,
    /// The veth end in the host namespace (on the lab's bridge).
    pub host_veth: String,
    pub cgroup: PathBuf,
    pub ipv4: String,
    pub ipv6: String,
}

impl Container {
    /// A command that runs inside this container: it joins the cgroup, then the network
    /// namespace, before exec. (Not `ip netns exec`, which remounts /sys and so hides the
    /// cgroup2 mount.)
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let procs = OpenOptions::new()
            .write(true)
            .open(self.cgroup.join("cgroup.procs"))
            .unwrap_or_else(|e| panic!("opening cgroup.procs of {:?}: {e}", self.cgroup));
        let netns = File::open(format!("/run/netns/{}", self.netns))
            .unwrap_or_else(|e| panic!("opening netns {}: {e}", self.netns));
        let mut cmd = Command::new(program);
        // SAFETY: the closure only makes async-signal-safe syscalls (write, setns) on
        // descriptors opened before fork, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // "0" moves the writing process itself.
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs a command in the container to completion.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = self.command(program);
        cmd.args(args);
        cmd.output()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.name))
    }

    /// Starts a long-running process in the container; it is killed on drop.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Guard {
        let mut cmd = self.command(program);
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program} in {}: {e}", self.name));
        Guard(child)
    }

    /// Waits until something listens on TCP `port` in this container.
    pub fn wait_for_listener(&self, port: u16) {
        let filter = format!("sport = :{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let out = must(self.command("ss").args(["-Hltn", &filter]));
            if !out.stdout.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nothing listens on port {port} in {} after 10 s", self.name);
    }

    /// Starts the test HTTP server (tests/fixtures/http_server.py) on `port`, IPv4 and
    /// IPv6, with its line-echo server on `port + 1000` and its pipelining server on
    /// `port + 2000`, and waits for all three.
    pub fn http_server(&self, port: u16) -> Guard {
        let script = crate::fixture("http_server.py");
        let script = script.to_str().expect("fixture path is UTF-8");
        let guard = self.spawn("python3", &[script, &port.to_string()]);
        self.wait_for_listener(port);
        self.wait_for_listener(port + 1000);
        self.wait_for_listener(port + 2000);
        guard
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        remove_cgroup(&self.cgroup);
        // Sockets left in the namespace (a blackholed connection retransmitting its FIN
        // for minutes) would keep it, and its veth pair, alive after `netns del`: destroy
        // them first.
        ip_quiet(&["netns", "exec", &self.netns, "ss", "-K", "-a", "-t"]);
        // Deleting the namespace also deletes the veth pair.
        ip_quiet(&["netns", "del", &self.netns]);
    }
}

/// A child process that is killed when the guard drops.
#[derive(Debug)]
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
