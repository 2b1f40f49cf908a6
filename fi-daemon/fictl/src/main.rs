//! fictl: the command line of fi. Talks to fi-daemon over its Unix socket.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use fi_api::{
    DEFAULT_SOCKET,
    client::{self, ConnectError},
    v1::{self as api, AttachKind},
};
use fi_common::fault::Fault;

mod cli;
mod render;

// `println!` and `print!` for fictl's output: when the reader of stdout has gone
// (`fictl rules ls | head -1`), fictl ends as other Unix tools do, by SIGPIPE, instead of
// panicking. Only stdout does this: a write to the daemon's socket that fails is an error
// like any other (SIGPIPE stays ignored for sockets, as Rust sets it up).
macro_rules! println {
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*), true) };
}
macro_rules! print {
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*), false) };
}

mod explore;

/// Writes fictl's output; see `println!` above.
fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            // SAFETY: restoring a signal's default action and raising it on ourselves
            // have no memory-safety conditions; the process ends here.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
            std::process::exit(141);
        }
        Err(e) => {
            eprintln!("fictl: writing the output: {e}");
            std::process::exit(1);
        }
    }
}

/// Control fi-daemon: see and break HTTP requests of containers.
#[derive(Debug, Parser)]
#[command(
    name = "fictl",
    version,
    about = "Control fi-daemon: see and break the HTTP requests of containers, one request at a time"
)]
struct Cli {
    /// Unix socket of fi-daemon.
    #[arg(long, global = true, env = "FI_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,

    /// Reach the daemon over TCP instead (its --listen address), e.g. http://10.0.0.5:7443.
    #[arg(long, global = true, env = "FI_ADDR", value_name = "URL")]
    addr: Option<String>,

    /// File holding the bearer token of the daemon's TCP listener.
    #[arg(long, global = true, env = "FI_TOKEN_FILE", value_name = "PATH")]
    token_file: Option<PathBuf>,

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
    /// Manage watch targets (the containers whose outgoing requests are reported).
    #[command(subcommand)]
    Target(TargetCommand),
    /// Print requests as they complete: time, container, method, URL, status, latency.
    Watch {
        /// Container to watch while this runs: cgroup path or container id (repeatable).
        /// Without it, every target already added.
        #[arg(long = "target", value_name = "CONTAINER")]
        targets: Vec<String>,
        /// Only this method.
        #[arg(long)]
        method: Option<String>,
        /// Only requests whose Host contains this.
        #[arg(long)]
        host: Option<String>,
        /// Only requests whose path starts with this.
        #[arg(long)]
        path: Option<String>,
        /// Start with the recent requests the daemon still remembers.
        #[arg(long)]
        recent: bool,
        /// Stop after this many requests.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Manage fault rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// The kill switch: remove every rule at once.
    Stop,
    /// Print the reference of every command as Markdown (docs/FICTL.md is its output).
    #[command(hide = true, name = "docs-markdown")]
    DocsMarkdown,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Explore: run a functional test under every fault on every request it causes.
    #[command(subcommand)]
    Explore(explore::ExploreCommand),
    /// Show the call graph: which container calls which destination, how often, how it went.
    Graph {
        /// Output format (--json is the same as --format json).
        #[arg(long, value_enum, default_value_t = GraphFormat::Table)]
        format: GraphFormat,
    },
}

#[derive(Debug, Subcommand)]
enum TargetCommand {
    /// Watch a container (cgroup path, or container id) and everything below it.
    Add { container: String },
    /// Stop watching a container added with `target add`.
    Rm { container: String },
    /// List the targets.
    Ls,
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Add a rule: every matcher given must hold; the fault is injected into what matches.
    Add(Box<RuleArgs>),
    /// List rules with their counters (matched, injected) and state.
    Ls,
    /// Show one rule.
    Get { id: u32 },
    /// Remove one rule.
    Rm { id: u32 },
}

#[derive(Debug, clap::Args)]
struct RuleArgs {
    /// The fault: timeout, reset, refuse, abort:STATUS, response-lost, delay:DURATION.
    #[arg(long, value_parser = cli::parse_fault)]
    fault: Fault,
    /// Sending container (cgroup path or container id), with its descendants.
    #[arg(long)]
    container: Option<String>,
    /// Server address or CIDR.
    #[arg(long = "dst")]
    destination: Option<String>,
    /// Server port.
    #[arg(long, allow_hyphen_values = true)]
    port: Option<u32>,
    /// Method (repeatable).
    #[arg(long = "method")]
    methods: Vec<String>,
    /// Host, without port; `*.example.com` for a domain and everything below it.
    #[arg(long)]
    host: Option<String>,
    /// Path without query: exact (`/api/users`), or a prefix ending in `/*` (`/api/*`).
    #[arg(long)]
    path: Option<String>,
    /// A captured header and its value, NAME=VALUE (per-request targeting).
    #[arg(long, value_parser = cli::parse_header)]
    header: Option<(String, String)>,
    /// Share of matched requests to fault, e.g. 30% (default: all).
    #[arg(long, value_parser = cli::parse_percent, allow_hyphen_values = true)]
    percent: Option<u32>,
    /// Do not fault the first N matches.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    skip: Option<u32>,
    /// Fault at most N requests.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    max: Option<u32>,
    /// Fault only the N-th match.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    nth: Option<u32>,
    /// The rule stops after this long, e.g. 30s, 5m (then listed as expired).
    #[arg(long, value_parser = cli::parse_duration, allow_hyphen_values = true)]
    ttl: Option<std::time::Duration>,
    /// Higher priorities are evaluated first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// Free text shown in listings.
    #[arg(long)]
    description: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    Table,
    Dot,
    Json,
}

/// Exit codes (sysexits.h), so that scripts can tell failures apart.
mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 64;
    pub const NOT_FOUND: u8 = 66;
    pub const UNAVAILABLE: u8 = 69;
    pub const NOPERM: u8 = 77;
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Explore(cmd) => explore::run(&cli, cmd).await,
        _ => run(&cli).await.map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = if let Some(status) = err.downcast_ref::<tonic::Status>() {
                if status.message().contains("message length too large") {
                    eprintln!(
                        "fictl: the request is larger than the daemon accepts ({} KiB): a value is far too long",
                        fi_api::limits::MAX_REQUEST_BYTES / 1024
                    );
                } else {
                    eprintln!("fictl: {}", status.message());
                }
                match status.code() {
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => exit::USAGE,
                    tonic::Code::NotFound => exit::NOT_FOUND,
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => exit::NOPERM,
                    tonic::Code::Unavailable => exit::UNAVAILABLE,
                    _ => exit::FAILURE,
                }
            } else {
                eprintln!("fictl: {err:#}");
                match err.downcast_ref::<ConnectError>() {
                    Some(ConnectError::NotRunning(_)) => exit::UNAVAILABLE,
                    Some(ConnectError::PermissionDenied(_)) => exit::NOPERM,
                    _ => exit::FAILURE,
                }
            };
            ExitCode::from(code)
        }
    }
}

impl Cli {
    /// Where the daemon is: `--addr` (with `--token-file`) or the Unix socket.
    fn target(&self) -> anyhow::Result<client::Target> {
        let Some(url) = &self.addr else {
            return Ok(client::Target::Unix(self.socket.clone()));
        };
        let token = match &self.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading --token-file {}: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        Ok(client::Target::Tcp {
            url: url.clone(),
            token,
        })
    }
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Status => status(cli).await,
        Command::Target(cmd) => target(cli, cmd).await,
        Command::Watch {
            targets,
            method,
            host,
            path,
            recent,
            count,
        } => {
            let request = api::WatchRequestsRequest {
                targets: targets.clone(),
                method: method.clone().unwrap_or_default(),
                host: host.clone().unwrap_or_default(),
                path_prefix: path.clone().unwrap_or_default(),
                include_recent: *recent,
                // `--recent --count N`: the newest N remembered, not the oldest.
                recent_limit: count
                    .filter(|_| *recent)
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            };
            watch(cli, request, *count).await
        }
        Command::Graph { format } => graph(cli, *format).await,
        Command::DocsMarkdown => {
            use clap::CommandFactory as _;
            print!("{}", docs_markdown(&mut Cli::command()));
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(*shell, &mut Cli::command(), "fictl", &mut std::io::stdout());
            Ok(())
        }
        Command::Rules(cmd) => rules(cli, cmd).await,
        Command::Explore(_) => anyhow::bail!("internal error: explore is dispatched by main"),
        Command::Stop => {
            let mut client = client::rules(cli.target()?).await?;
            let stopped = client.stop_all(api::StopAllRequest {}).await?.into_inner();
            if cli.json {
                print_json(&serde_json::json!({
                    "removed": stopped.removed,
                    "released_held": stopped.released_held,
                    "closed_connections": stopped.closed_connections,
                }))
            } else {
                println!(
                    "stopped: {} rule(s) removed, {} delayed request(s) let go, {} blackholed connection(s) closed; no fault in effect",
                    stopped.removed, stopped.released_held, stopped.closed_connections
                );
                Ok(())
            }
        }
    }
}

fn rule_json(r: &api::Rule) -> serde_json::Value {
    let spec = r.spec.clone().unwrap_or_default();
    let m = spec.r#match.clone().unwrap_or_default();
    let state = match api::RuleState::try_from(r.state) {
        Ok(api::RuleState::Active) => "active",
        Ok(api::RuleState::Expired) => "expired",
        Ok(api::RuleState::Exhausted) => "exhausted",
        _ => "unknown",
    };
    let ttl = spec.ttl.and_then(|d| std::time::Duration::try_from(d).ok());
    // Time left until expiry, from the daemon's expiry time and this machine's clock.
    let ttl_left = (r.expires_unix_nanos > 0).then(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        std::time::Duration::from_nanos(r.expires_unix_nanos.saturating_sub(now).max(0) as u64)
    });
    serde_json::json!({
        "id": r.id,
        "state": state,
        "fault": cli::fault_name(&spec.fault.unwrap_or_default()),
        "match": cli::match_summary(&m),
        "container_cgroup": r.container_cgroup,
        "matched": r.matched,
        "injected": r.injected,
        "probability_ppm": spec.probability_ppm.unwrap_or(1_000_000),
        "percent": cli::percent_text(spec.probability_ppm),
        "skip_first": spec.skip_first,
        "max_injections": spec.max_injections,
        "nth": spec.nth,
        "ttl_seconds": ttl.map(|d| d.as_secs_f64()),
        "ttl_left_seconds": ttl_left.map(|d| d.as_secs_f64()),
        "gates": cli::gates_summary(&spec, ttl_left),
        "priority": spec.priority,
        "created_unix_nanos": r.created_unix_nanos,
        "expires_unix_nanos": (r.expires_unix_nanos > 0).then_some(r.expires_unix_nanos),
        "description": spec.description,
    })
}

async fn rules(cli: &Cli, cmd: &RulesCommand) -> anyhow::Result<()> {
    let mut client = client::rules(cli.target()?).await?;
    match cmd {
        RulesCommand::Add(a) => {
            // Every flag given is sent as given: the daemon refuses an empty or zero value
            // with the field named, rather than reading it as "any". A description too
            // long for the daemon's message limit is refused here, where it can be named.
            if let Some(d) = &a.description
                && d.len() > fi_api::limits::MAX_DESCRIPTION
            {
                return Err(tonic::Status::invalid_argument(format!(
                    "description: {} bytes, longer than {}",
                    d.len(),
                    fi_api::limits::MAX_DESCRIPTION
                ))
                .into());
            }
            let (header_name, header_value) = a.header.clone().unzip();
            let request = api::CreateRuleRequest {
                r#match: Some(api::Match {
                    container: a.container.clone(),
                    destination: a.destination.clone(),
                    port: a.port,
                    methods: a.methods.clone(),
                    host: a.host.clone(),
                    path: a.path.clone(),
                    header_name,
                    header_value,
                }),
                fault: Some(api::Fault::from(a.fault)),
                probability_ppm: a.percent,
                skip_first: a.skip,
                max_injections: a.max,
                nth: a.nth,
                ttl: a
                    .ttl
                    .map(prost_types::Duration::try_from)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?,
                priority: a.priority,
                description: a.description.clone().unwrap_or_default(),
            };
            let rule = client.create_rule(request).await?.into_inner();
            if cli.json {
                return print_json(&rule_json(&rule));
            }
            let j = rule_json(&rule);
            println!(
                "rule {} added: {} on {}{}",
                rule.id,
                j["fault"].as_str().unwrap_or("?"),
                j["match"].as_str().unwrap_or("?"),
                match j["gates"].as_str() {
                    Some("") | None => String::new(),
                    Some(gates) => format!(" ({gates})"),
                }
            );
        }
        RulesCommand::Ls => {
            let list = client
                .list_rules(api::ListRulesRequest {})
                .await?
                .into_inner();
            if cli.json {
                return print_json(&serde_json::Value::Array(
                    list.rules.iter().map(rule_json).collect(),
                ));
            }
            println!(
                "{:>4}  {:<10} {:<16} {:>8} {:>8} {:>8}  {:<28} MATCH",
                "ID", "STATE", "FAULT", "PERCENT", "MATCHED", "INJECTED", "GATES"
            );
            for r in &list.rules {
                let j = rule_json(r);
                println!(
                    "{:>4}  {:<10} {:<16} {:>8} {:>8} {:>8}  {:<28} {}",
                    r.id,
                    j["state"].as_str().unwrap_or("?"),
                    j["fault"].as_str().unwrap_or("?"),
                    j["percent"].as_str().unwrap_or("?"),
                    r.matched,
                    r.injected,
                    match j["gates"].as_str() {
                        Some("") | None => "-",
                        Some(gates) => gates,
                    },
                    j["match"].as_str().unwrap_or("?")
                );
            }
        }
        RulesCommand::Get { id } => {
            let rule = client
                .get_rule(api::GetRuleRequest { id: *id })
                .await?
                .into_inner();
            print_json(&rule_json(&rule))?;
        }
        RulesCommand::Rm { id } => {
            client
                .delete_rule(api::DeleteRuleRequest { id: *id })
                .await?;
            if !cli.json {
                println!("rule {id} removed");
            }
        }
    }
    Ok(())
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn status(cli: &Cli) -> anyhow::Result<()> {
    let mut system = client::system(cli.target()?).await?;
    let status = system
        .get_status(api::GetStatusRequest {})
        .await?
        .into_inner();
    if cli.json {
        return print_json(&serde_json::json!({
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
            "capabilities": status.capabilities.iter()
                .map(|c| (c.name.clone(), serde_json::Value::from(c.present)))
                .collect::<serde_json::Map<_, _>>(),
            "maps": status.maps.iter().map(|m| serde_json::json!({
                "name": m.name, "used": m.used, "capacity": m.capacity,
            })).collect::<Vec<_>>(),
            "rules": status.rules,
            "targets": status.targets,
        }));
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
    println!("\n{:<12} {:>10} {:>10}", "MAP", "USED", "CAPACITY");
    for m in &status.maps {
        println!("{:<12} {:>10} {:>10}", m.name, m.used, m.capacity);
    }
    let caps: Vec<String> = status
        .capabilities
        .iter()
        .map(|c| format!("{}{}", if c.present { "+" } else { "-" }, c.name))
        .collect();
    println!(
        "\nkernel: {}; {} rule(s), {} target(s)",
        caps.join(" "),
        status.rules,
        status.targets
    );
    if let Some(tcx) = status.capabilities.iter().find(|c| c.name == "tcx") {
        println!("{}", tcx.detail);
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

fn target_json(t: &api::Target) -> serde_json::Value {
    serde_json::json!({ "spec": t.spec, "cgroup": t.cgroup, "cgroup_id": t.cgroup_id })
}

async fn target(cli: &Cli, cmd: &TargetCommand) -> anyhow::Result<()> {
    let mut observe = client::observe(cli.target()?).await?;
    match cmd {
        TargetCommand::Add { container } => {
            let t = observe
                .add_target(api::AddTargetRequest {
                    target: container.clone(),
                })
                .await?
                .into_inner();
            if cli.json {
                return print_json(&target_json(&t));
            }
            println!("watching {} (cgroup id {})", t.cgroup, t.cgroup_id);
        }
        TargetCommand::Rm { container } => {
            observe
                .remove_target(api::RemoveTargetRequest {
                    target: container.clone(),
                })
                .await?;
            if !cli.json {
                println!("stopped watching {container}");
            }
        }
        TargetCommand::Ls => {
            let list = observe
                .list_targets(api::ListTargetsRequest {})
                .await?
                .into_inner();
            if cli.json {
                return print_json(&serde_json::Value::Array(
                    list.targets.iter().map(target_json).collect(),
                ));
            }
            println!("{:<40} {:>12}  SPEC", "CGROUP", "ID");
            for t in &list.targets {
                println!("{:<40} {:>12}  {}", t.cgroup, t.cgroup_id, t.spec);
            }
        }
    }
    Ok(())
}

async fn watch(
    cli: &Cli,
    request: api::WatchRequestsRequest,
    count: Option<u64>,
) -> anyhow::Result<()> {
    let mut observe = client::observe(cli.target()?).await?;
    let mut stream = observe.watch_requests(request).await?.into_inner();
    let mut seen = 0u64;
    if count == Some(0) {
        return Ok(());
    }
    while let Some(r) = stream.message().await.map_err(client::stream_error)? {
        if cli.json {
            println!("{}", render::request_json(&r));
        } else {
            println!("{}", render::watch_line(&r));
        }
        seen += 1;
        if count.is_some_and(|n| seen >= n) {
            break;
        }
    }
    Ok(())
}

async fn graph(cli: &Cli, format: GraphFormat) -> anyhow::Result<()> {
    let mut observe = client::observe(cli.target()?).await?;
    let g = observe
        .get_call_graph(api::GetCallGraphRequest {})
        .await?
        .into_inner();
    match (cli.json, format) {
        (true, _) | (false, GraphFormat::Json) => print_json(&render::graph_json(&g)),
        (false, GraphFormat::Dot) => {
            print!("{}", render::graph_dot(&g));
            Ok(())
        }
        (false, GraphFormat::Table) => {
            print!("{}", render::graph_table(&g));
            Ok(())
        }
    }
}

/// Every command's `--help`, as one Markdown page (tested against docs/FICTL.md, so that
/// the documentation cannot drift from the code).
fn docs_markdown(root: &mut clap::Command) -> String {
    fn walk(cmd: &mut clap::Command, path: &str, out: &mut String) {
        if cmd.is_hide_set() {
            return;
        }
        let help = cmd.render_long_help().to_string();
        out.push_str(&format!(
            "## {path}\n\n```text\n{}\n```\n\n",
            help.trim_end()
        ));
        let names: Vec<String> = cmd
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .filter(|n| n != "help")
            .collect();
        for name in names {
            if let Some(sub) = cmd.find_subcommand_mut(&name) {
                walk(sub, &format!("{path} {name}"), out);
            }
        }
    }
    root.build();
    let mut out = String::from(
        "# fictl reference\n\nGenerated from fictl's own help (`cargo xtask docs`); a test \
         checks that it matches the code.\n\n",
    );
    walk(root, "fictl", &mut out);
    out
}
