//! fictl: the command line of fi. Talks to fi-daemon over its Unix socket.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use fi_daemon::{
    DEFAULT_SOCKET,
    api::v1::{AttachKind, GetStatusRequest},
    client::{self, ConnectError},
};

/// Control fi-daemon: see and break HTTP requests of containers.
#[derive(Debug, Parser)]
#[command(name = "fictl", version, about)]
struct Cli {
    /// Unix socket of fi-daemon.
    #[arg(long, global = true, env = "FI_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the daemon's version, attachments and data-path counters.
    Status,
}

/// Exit codes (sysexits.h), so that scripts can tell failures apart.
mod exit {
    pub const FAILURE: u8 = 1;
    pub const UNAVAILABLE: u8 = 69;
    pub const NOPERM: u8 = 77;
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fictl: {err:#}");
            let code = match err.downcast_ref::<ConnectError>() {
                Some(ConnectError::NotRunning(_)) => exit::UNAVAILABLE,
                Some(ConnectError::PermissionDenied(_)) => exit::NOPERM,
                _ => exit::FAILURE,
            };
            ExitCode::from(code)
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Status => status(cli).await,
    }
}

async fn status(cli: &Cli) -> anyhow::Result<()> {
    let mut system = client::system(&cli.socket).await?;
    let status = system.get_status(GetStatusRequest {}).await?.into_inner();
    if cli.json {
        let json = serde_json::json!({
            "version": status.version,
            "kernel_release": status.kernel_release,
            "uptime_seconds": status.uptime_seconds,
            "attachments": status.attachments.iter().map(|a| serde_json::json!({
                "kind": kind_name(a.kind),
                "target": a.target,
                "program": a.program,
            })).collect::<Vec<_>>(),
            "counters": status.counters.iter()
                .map(|c| (c.name.clone(), serde_json::Value::from(c.value)))
                .collect::<serde_json::Map<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "fi-daemon {} on Linux {}, up {}s",
        status.version, status.kernel_release, status.uptime_seconds
    );
    println!("\n{:<12} {:<40} PROGRAM", "HOOK", "TARGET");
    for a in &status.attachments {
        println!("{:<12} {:<40} {}", kind_name(a.kind), a.target, a.program);
    }
    println!("\n{:<20} VALUE", "COUNTER");
    for c in &status.counters {
        println!("{:<20} {}", c.name, c.value);
    }
    Ok(())
}

fn kind_name(kind: i32) -> &'static str {
    match AttachKind::try_from(kind) {
        Ok(AttachKind::TcEgress) => "tc-egress",
        Ok(AttachKind::TcIngress) => "tc-ingress",
        Ok(AttachKind::SockOps) => "sock-ops",
        Ok(AttachKind::Unspecified) | Err(_) => "unknown",
    }
}
