//! fi-daemon: loads fi's eBPF programs, attaches them, and serves the control API.
//!
//! Everything it attaches is a link owned by this process: when it exits (SIGINT, SIGTERM,
//! or killed), the kernel detaches every program, so no fault outlives the daemon.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use clap::Parser;
use fi_common::http::CaptureConfig;
use fi_daemon::{
    DEFAULT_CAPTURE_HEADERS, DEFAULT_SOCKET, DEFAULT_STORE, cgroup_fs, config,
    control::Control,
    daemon::Daemon,
    dataplane::{DataPlane, TcChoice, TcMode},
    delay::{self, Injector},
    explore::Explorer,
    heartbeat,
    interfaces::{self, VethPolicy},
    links, pump,
    requests::RequestLog,
    rules::Rules,
    server,
    store::Store,
    targets::Targets,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// fi's daemon: request-level fault injection in the kernel.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "fi's daemon: loads the eBPF programs, keeps the rules, serves the control API"
)]
struct Args {
    /// Interfaces to attach the TC egress and ingress programs to (repeat or comma-separate).
    #[arg(
        long = "iface",
        value_name = "NAME",
        value_delimiter = ',',
        default_value = "lo"
    )]
    ifaces: Vec<String>,

    /// Do not attach to host-side veths as they appear (containers' interfaces).
    #[arg(long)]
    no_veths: bool,

    /// Attach only to veths whose name starts with this (repeatable; default: every veth).
    #[arg(long = "veth-prefix", value_name = "PREFIX")]
    veth_prefixes: Vec<String>,

    /// cgroup for the sock_ops program, absolute or relative to the cgroup2 mount
    /// (default: the cgroup2 root, i.e. every process of the machine).
    #[arg(long, value_name = "PATH", default_value = "/")]
    cgroup: PathBuf,

    /// Containers to watch from the start: a cgroup path or a container id (repeatable).
    #[arg(long = "target", value_name = "CONTAINER")]
    targets: Vec<String>,

    /// Request headers to capture (at most 4; traceparent and the per-request targeting
    /// header by default).
    #[arg(long = "capture-header", value_name = "NAME", default_values = DEFAULT_CAPTURE_HEADERS)]
    capture_headers: Vec<String>,

    /// Unix socket of the control API (root only).
    #[arg(long, env = "FI_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,

    /// Also serve the API on this TCP address (e.g. 127.0.0.1:7443). Requires
    /// --token-file: whoever reaches the API can break every container's network.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,

    /// Bearer token for --listen (one word, 16+ characters, file mode 600).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,

    /// Serve --listen without a token. Anyone who can reach the port controls fi.
    #[arg(long)]
    insecure_no_token: bool,

    /// The store of explorations and their reports (SQLite; created with its directory).
    #[arg(long, env = "FI_STORE", value_name = "PATH", default_value = DEFAULT_STORE)]
    store: PathBuf,

    /// Allow explorations over --listen. They run the test command as root, so a token
    /// holder could run any command: off unless asked.
    #[arg(long)]
    tcp_explore: bool,

    /// A TOML configuration file (see docs/ARCHITECTURE.md). Flags and environment
    /// variables override it.
    #[arg(long, env = "FI_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,

    /// Check that this machine can run fi (load and verify the programs, attach them to
    /// the interfaces and cgroup given, read the maps), report, detach, and exit.
    #[arg(long)]
    check: bool,

    /// How to attach the TC programs: `probe` tries TCX links (they die with the daemon)
    /// and falls back to netlink clsact filters where the kernel has no TCX; `tcx` or
    /// `netlink` forces one.
    #[arg(long, env = "FI_TC", value_enum, default_value_t = TcArg::Probe)]
    tc: TcArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TcArg {
    Probe,
    Tcx,
    Netlink,
}

impl From<TcArg> for TcChoice {
    fn from(arg: TcArg) -> TcChoice {
        match arg {
            TcArg::Probe => TcChoice::Probe,
            TcArg::Tcx => TcChoice::Only(TcMode::Tcx),
            TcArg::Netlink => TcChoice::Only(TcMode::Netlink),
        }
    }
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
    let args = args()?;

    // Bad flags fail here, before anything is loaded or attached.
    let token = match (&args.listen, &args.token_file, args.insecure_no_token) {
        (None, None, false) => None,
        (None, _, _) => {
            anyhow::bail!("--token-file and --insecure-no-token only make sense with --listen")
        }
        (Some(_), Some(path), false) => Some(server::Token::from_file(path)?),
        (Some(_), None, true) => {
            warn!("--insecure-no-token: anyone who can reach the TCP port controls every fault");
            None
        }
        (Some(_), None, false) => anyhow::bail!(
            "refusing to listen on TCP without --token-file (or --insecure-no-token, if you must)"
        ),
        (Some(_), Some(_), true) => {
            anyhow::bail!("give --token-file or --insecure-no-token, not both")
        }
    };
    let capture = CaptureConfig::from_names(args.capture_headers.iter().map(String::as_str))
        .map_err(|e| {
            anyhow::anyhow!(
                "--capture-header: {e:?} (at most 4 header names of 1 to 32 token characters)"
            )
        })?;
    // The cgroup2 hierarchy and the socket first: a foreign mount or a busy socket must be
    // refused before anything is loaded or attached.
    let mount = cgroup_fs::cgroup2_mount()?;
    let cgroup = cgroup_fs::resolve_in(&mount, &args.cgroup)?;
    let listener = if args.check {
        None
    } else {
        Some(server::bind_unix(&args.socket)?)
    };
    let mut dataplane = DataPlane::load(&capture).context("loading fi's eBPF programs")?;
    dataplane.choose_tc(args.tc.into());
    // Netlink filters outlive their daemon: those of fi-daemons that are gone go now
    // (the dead-man switch already stopped their faults).
    match fi_daemon::tc_filters::sweep_dead() {
        Ok(0) => {}
        Ok(n) => info!(
            removed = n,
            "removed the netlink filters of fi-daemons that are gone"
        ),
        Err(err) => warn!(%err, "looking for netlink filters of earlier fi-daemons"),
    }
    // `--iface=` (empty) attaches to no named interface.
    for iface in args.ifaces.iter().filter(|i| !i.is_empty()) {
        dataplane.attach_interface(iface)?;
        info!(interface = %iface, "attached TC egress and ingress");
    }
    dataplane.attach_cgroup(&cgroup)?;
    info!(cgroup = %cgroup.display(), "attached sock_ops");
    if args.check {
        let counters = dataplane.counters()?;
        println!("fi-daemon --check: ok");
        println!(
            "  kernel      {}",
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
        );
        println!("  cgroup2     {}", mount.display());
        for a in dataplane.attachments() {
            let via = a.mode.map_or("cgroup link", TcMode::name);
            println!(
                "  attached    {:?} {} ({}, {via})",
                a.hook, a.target, a.program
            );
        }
        if let Some(mode) = dataplane.tc_mode() {
            println!("  tc mode     {}", mode.name());
        }
        println!("  maps        readable ({} counters)", counters.len());
        println!("  detaching: the check leaves nothing behind");
        return Ok(());
    }

    let mut targets = Targets::new(mount.clone(), Box::new(dataplane.take_targets_map()?));
    for spec in &args.targets {
        let info = targets.add(spec)?;
        info!(target = %info.cgroup, "watching");
    }
    let capture: Vec<String> = args
        .capture_headers
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let requests = Arc::new(Mutex::new(RequestLog::new(capture.clone())));
    let ring = dataplane.take_events()?;
    let rules = Rules::new(Box::new(dataplane.take_rule_maps()?));

    // The injector for delays: a veth pair of this daemon's own.
    let injector = Injector::create(&format!(
        "{}{}",
        fi_daemon::instance::INJECTOR_PREFIX,
        std::process::id()
    ))
    .context("creating the delay injector (veth pair)")?;
    dataplane.attach_injector(&injector.send_side, injector.ifindex())?;
    let delays = delay::start(injector)?;

    let listener = listener.context("the socket is bound unless --check")?;
    let tcp = match args.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            info!(%addr, authenticated = token.is_some(), "TCP listener");
            Some(server::Tcp {
                listener,
                token,
                explore: args.tcp_explore,
            })
        }
        None => None,
    };
    let store = Store::open(&args.store)
        .with_context(|| format!("opening the store (--store {:?})", args.store))?;
    let runtime_dir = args
        .socket
        .parent()
        .map_or_else(|| PathBuf::from("/run/fi"), Path::to_owned);
    fi_daemon::instance::sweep_test_cgroups(&cgroup);
    fi_daemon::instance::sweep_runtime_dirs(&runtime_dir);
    let control = Arc::new(Control::new(
        dataplane,
        targets,
        rules,
        Arc::clone(&requests),
        capture,
        Some(delays.clone()),
    ));
    let explorer = Explorer::new(
        Arc::clone(&control),
        store,
        args.socket.clone(),
        cgroup.clone(),
    );
    let daemon = Arc::new(Daemon::new(Arc::clone(&control), explorer));
    let (flush, flushes) = tokio::sync::mpsc::channel(16);
    control.attach_pump(flush);
    let pump = tokio::spawn(pump::run(
        ring,
        requests,
        cgroup_fs::CgroupIndex::new(mount.clone()),
        Some(delays),
        flushes,
    ));
    // The dead-man switch: beats while the core locks can be taken and the runtime runs.
    let liveness = Arc::new(heartbeat::Liveness::default());
    // Weak: the core (and with it every attachment) still goes when main drops it.
    let beating = Arc::downgrade(&control);
    heartbeat::start(Arc::clone(&liveness), move || {
        if let Some(beating) = beating.upgrade()
            && let Err(err) = beating.heartbeat()
        {
            warn!(%err, "the heartbeat failed: faults stop within a second");
        }
    })
    .context("starting the heartbeat thread")?;
    tokio::spawn(pulse(Arc::downgrade(&control), liveness));
    if !args.no_veths {
        let policy = VethPolicy {
            enabled: true,
            prefixes: args.veth_prefixes.clone(),
        };
        let events = links::watch().context("watching network interfaces (rtnetlink)")?;
        tokio::spawn(interfaces::follow(Arc::clone(&control), events, policy));
    }
    info!(socket = %args.socket.display(), "ready");
    let result = server::serve(Arc::clone(&daemon), listener, tcp, shutdown_signal()).await;

    // Detach everything before saying goodbye, and leave no socket behind.
    pump.abort();
    drop(daemon);
    drop(control);
    let _ = std::fs::remove_file(&args.socket);
    result?;
    info!("stopped; every program detached");
    Ok(())
}

/// Flags and environment, over the configuration file, over the defaults.
fn args() -> anyhow::Result<Args> {
    use clap::{CommandFactory as _, FromArgMatches as _, parser::ValueSource};
    let matches = Args::command().get_matches();
    let mut args = Args::from_arg_matches(&matches)?;
    let Some(path) = args.config.clone() else {
        return Ok(args);
    };
    let file = config::FileConfig::load(&path)?;
    let from_user = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    config::merge(&mut args.ifaces, from_user("ifaces"), file.ifaces);
    config::merge(&mut args.no_veths, from_user("no_veths"), file.no_veths);
    config::merge(
        &mut args.veth_prefixes,
        from_user("veth_prefixes"),
        file.veth_prefixes,
    );
    config::merge(&mut args.cgroup, from_user("cgroup"), file.cgroup);
    config::merge(&mut args.targets, from_user("targets"), file.targets);
    config::merge(
        &mut args.capture_headers,
        from_user("capture_headers"),
        file.capture_headers,
    );
    config::merge(&mut args.socket, from_user("socket"), file.socket);
    config::merge(&mut args.store, from_user("store"), file.store);
    config::merge(
        &mut args.tcp_explore,
        from_user("tcp_explore"),
        file.tcp_explore,
    );
    config::merge(&mut args.listen, from_user("listen"), file.listen.map(Some));
    config::merge(
        &mut args.token_file,
        from_user("token_file"),
        file.token_file.map(Some),
    );
    Ok(args)
}

/// The daemon's pulse, every 100 ms: tells the heartbeat that the runtime makes progress,
/// and moves expired rules out of the kernel (the kernel stops matching a rule at its
/// expiry time by itself; this keeps the list and the maps tidy, and ends what the rule
/// still holds).
async fn pulse(control: std::sync::Weak<Control>, liveness: Arc<heartbeat::Liveness>) {
    let interval = std::time::Duration::from_nanos(fi_common::rule::HEARTBEAT_INTERVAL_NS);
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        liveness.tick();
        let Some(control) = control.upgrade() else {
            return;
        };
        if let Err(err) = control.expire_rules().await {
            warn!(%err, "expiring rules");
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the default action (exit) still detaches everything.
        warn!("no signal handlers; SIGINT and SIGTERM will end the daemon abruptly");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => info!("SIGINT: shutting down"),
        _ = term.recv() => info!("SIGTERM: shutting down"),
    }
}
