//! fi-daemon: loads fi's eBPF programs, attaches them, and serves the control API.
//!
//! Everything it attaches is a link owned by this process: when it exits (SIGINT, SIGTERM,
//! or killed), the kernel detaches every program, so no fault outlives the daemon.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::Parser;
use fi_daemon::{
    DEFAULT_SOCKET, cgroup_fs,
    dataplane::DataPlane,
    server::{self, Daemon},
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// fi's daemon: request-level fault injection in the kernel.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Interfaces to attach the TC egress and ingress programs to (repeat or comma-separate).
    #[arg(
        long = "iface",
        value_name = "NAME",
        value_delimiter = ',',
        default_value = "lo"
    )]
    ifaces: Vec<String>,

    /// cgroup for the sock_ops program, absolute or relative to the cgroup2 mount
    /// (default: the cgroup2 root, i.e. every process of the machine).
    #[arg(long, value_name = "PATH", default_value = "/")]
    cgroup: PathBuf,

    /// Unix socket of the control API (root only).
    #[arg(long, env = "FI_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let mut dataplane = DataPlane::load().context("loading fi's eBPF programs")?;
    for iface in &args.ifaces {
        dataplane.attach_interface(iface)?;
        info!(interface = %iface, "attached TC egress and ingress");
    }
    let cgroup = cgroup_fs::resolve(&args.cgroup)?;
    dataplane.attach_cgroup(&cgroup)?;
    info!(cgroup = %cgroup.display(), "attached sock_ops");

    let listener = server::bind_unix(&args.socket)?;
    info!(socket = %args.socket.display(), "ready");
    let daemon = Arc::new(Daemon::new(dataplane));
    let result = server::serve(Arc::clone(&daemon), listener, shutdown_signal()).await;

    // Detach everything before saying goodbye, and leave no socket behind.
    drop(daemon);
    let _ = std::fs::remove_file(&args.socket);
    result?;
    info!("stopped; every program detached");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the default action (exit) still detaches everything.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => info!("SIGINT: shutting down"),
        _ = term.recv() => info!("SIGTERM: shutting down"),
    }
}
