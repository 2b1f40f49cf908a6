//! Runs a command in a cgroup: the process joins the cgroup between fork and exec (its
//! `cgroup.procs` opened before the fork), so that it and everything it starts is there
//! from its first instruction, and keeps the tail of its output.

use std::{
    os::{fd::AsRawFd as _, unix::process::ExitStatusExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::io::AsyncReadExt as _;

/// Output kept per run.
pub const OUTPUT_TAIL: usize = 4096;

/// What to run.
#[derive(Debug, Clone)]
pub struct Spawn<'a> {
    pub command: &'a str,
    pub working_dir: &'a str,
    pub env: Vec<(&'static str, String)>,
    /// The cgroup (absolute directory) to run it in.
    pub cgroup: &'a Path,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// 0, or the exit status (128 + the signal's number if a signal ended it).
    Code(i32),
    /// It could not start, or waiting for it failed.
    Error(String),
}

/// A started command.
#[derive(Debug)]
pub struct Started {
    child: tokio::process::Child,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    cgroup: PathBuf,
}

impl Spawn<'_> {
    /// Starts `sh -c COMMAND` in the cgroup, stdin closed, stdout and stderr kept.
    pub fn start(&self) -> Result<Started, String> {
        // Opened before the fork (close-on-exec: it never reaches the test), so that the
        // child only writes between fork and exec.
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(self.cgroup.join("cgroup.procs"))
            .map_err(|e| format!("opening cgroup.procs of {:?}: {e}", self.cgroup))?;
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(self.command)
            .current_dir(self.working_dir)
            .envs(self.env.iter().map(|(k, v)| (*k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: between fork and exec the closure only makes one async-signal-safe call,
        // write(2), on a descriptor opened before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // "0": the writing process itself.
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting `sh -c {:?}`: {e}", self.command))?;
        let output = Arc::new(Mutex::new(Vec::<u8>::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(collect(out, Arc::clone(&output))));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(collect(err, Arc::clone(&output))));
        }
        Ok(Started {
            child,
            output,
            readers,
            cgroup: self.cgroup.to_owned(),
        })
    }
}

impl Started {
    /// Waits for the command to exit.
    pub async fn wait(&mut self) -> Exit {
        match self.child.wait().await {
            Ok(s) => Exit::Code(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))),
            Err(e) => Exit::Error(format!("waiting for the test: {e}")),
        }
    }

    /// Kills it and everything it started, and returns the tail of its output.
    pub async fn finish(mut self) -> String {
        kill_cgroup(&self.cgroup);
        let _ = self.child.kill().await;
        for reader in self.readers {
            let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
        }
        let bytes = self
            .output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tail(&String::from_utf8_lossy(&bytes))
    }
}

/// The last [`OUTPUT_TAIL`] characters of `text`.
fn tail(text: &str) -> String {
    match text.char_indices().rev().nth(OUTPUT_TAIL) {
        Some((i, _)) => text[i..].to_owned(),
        None => text.to_owned(),
    }
}

/// Reads a pipe to its end, keeping the last bytes of the output.
async fn collect<R: tokio::io::AsyncRead + Unpin>(mut pipe: R, output: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut o = output.lock().unwrap_or_else(|p| p.into_inner());
        o.extend_from_slice(&buf[..n]);
        if o.len() > 4 * OUTPUT_TAIL {
            let cut = o.len() - OUTPUT_TAIL;
            o.drain(..cut);
        }
    }
}

/// Kills every process left in a cgroup (a test's background jobs included).
pub fn kill_cgroup(cgroup: &Path) {
    if let Err(e) = std::fs::write(cgroup.join("cgroup.kill"), b"1")
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("killing the processes in {cgroup:?}: {e}");
    }
}

/// Kills what is left in a cgroup and removes it, once its processes are gone (killing
/// takes a moment): waits on the async timer, never on a thread.
pub async fn remove_cgroup(cgroup: &Path) {
    kill_cgroup(cgroup);
    for _ in 0..50 {
        if std::fs::remove_dir(cgroup).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!("the test cgroup {cgroup:?} could not be removed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_characters_whole() {
        let text = format!("{}é{}", "a".repeat(10), "b".repeat(OUTPUT_TAIL));
        let t = tail(&text);
        assert_eq!(t.chars().count(), OUTPUT_TAIL + 1);
        assert!(t.starts_with('é'));
        assert_eq!(tail("short"), "short");
    }
}
