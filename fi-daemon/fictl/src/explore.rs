//! `fictl explore`: run an exploration with a progress bar, list, show, diff and replay.

use std::{io::IsTerminal as _, path::PathBuf, time::Duration};

use clap::{Subcommand, ValueEnum};
use fi_api::{
    client::{self, Connection},
    v1::{self as api, explore_service_client::ExploreServiceClient},
};
use fi_common::fault::Fault;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Cli, print_json};

#[derive(Debug, Subcommand)]
pub enum ExploreCommand {
    /// Run TEST_COMMAND again and again, each time with other faults on the requests it
    /// causes, and report which faults it does not survive. Exit status: 0 when the test
    /// survived every fault tried, 1 when some plan broke it (the report says which).
    Run(Box<RunArgs>),
    /// List explorations, newest first.
    Ls {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show an exploration's report: a table, JSON (--json) or a self-contained HTML page.
    Show {
        id: i64,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write the report to this file instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// What changed from exploration BASE to HEAD: new failures, fixed ones, unchanged.
    Diff { base: i64, head: i64 },
    /// Run exactly the plan of one execution again: ID is EXPLORATION/EXECUTION, as the
    /// report prints it (e.g. 12/7). Exit status 1 when the test fails again, 70 when the
    /// plan could not be set up (a container of it is gone), so nothing was reproduced.
    Replay { id: String },
    /// Stop a running exploration (its finished executions are kept).
    Cancel { id: i64 },
    /// Follow a running exploration.
    Watch { id: i64 },
    /// The faults injected so far in an execution. Inside a test command run by an
    /// exploration, FI_EXPLORATION_ID and FI_EXECUTION select the running one.
    Injected {
        #[arg(long, env = "FI_EXPLORATION_ID", default_value_t = 0)]
        exploration: i64,
        #[arg(long, env = "FI_EXECUTION", default_value_t = 0)]
        execution: u32,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A container whose outgoing requests are explored: cgroup path or container id
    /// (repeatable). The test command's own requests are always explored.
    #[arg(long = "target", value_name = "CONTAINER")]
    targets: Vec<String>,
    /// The fault set, comma-separated: reset, timeout, abort:STATUS, delay:DURATION,
    /// response-lost, and `default` (reset, timeout, abort:500, abort:503).
    #[arg(long, default_value = "default", value_parser = parse_fault_set)]
    faults: FaultSet,
    /// Executions at most, the reference run included.
    #[arg(long, value_name = "N", default_value_t = 500)]
    max_executions: u32,
    /// A command run before every execution, to put the services back in their initial
    /// state.
    #[arg(long, value_name = "CMD")]
    reset: Option<String>,
    /// Each execution is killed after this long (it then counts as failed).
    #[arg(long, value_parser = crate::cli::parse_duration, default_value = "60s")]
    run_timeout: Duration,
    /// Run every plan, even those equivalent to one already run (docs/EXPLORE.md).
    #[arg(long)]
    no_reduction: bool,
    /// Also fault the test command's own requests (by default they are seen, not
    /// faulted: a fault on the test's own call is nearly always a false alarm).
    #[arg(long)]
    include_test_requests: bool,
    /// A name for the exploration in `explore ls` (explorations of one test command are
    /// then told apart).
    #[arg(long, value_name = "TEXT")]
    label: Option<String>,
    /// Also write the HTML report here when the exploration ends.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Start it and print its id, without following it.
    #[arg(long)]
    detach: bool,
    /// The functional test: a shell command, run with `sh -c` in the current directory;
    /// exit status 0 means it passed.
    #[arg(last = true, required = true, value_name = "TEST_COMMAND")]
    command: Vec<String>,
}

/// A parsed `--faults` (one argument, several faults).
#[derive(Debug, Clone)]
pub struct FaultSet(Vec<Fault>);

fn parse_fault_set(text: &str) -> Result<FaultSet, String> {
    Fault::parse_set(text)
        .map(FaultSet)
        .map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Html,
}

/// Exit status of a run or replay that found failing plans.
const FOUND_FAILURES: u8 = 1;
/// `explore replay`: the plan could not be set up (its rules, its test), so nothing was
/// reproduced either way (sysexits' EX_SOFTWARE).
const REPLAY_NOT_DONE: u8 = 70;

fn shell_join(words: &[String]) -> String {
    if let [one] = words {
        return one.clone();
    }
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn status_name(s: i32) -> &'static str {
    match api::ExplorationStatus::try_from(s) {
        Ok(api::ExplorationStatus::Running) => "running",
        Ok(api::ExplorationStatus::Finished) => "finished",
        Ok(api::ExplorationStatus::Cancelled) => "cancelled",
        Ok(api::ExplorationStatus::Interrupted) => "interrupted",
        Ok(api::ExplorationStatus::Failed) => "failed",
        _ => "unknown",
    }
}

fn outcome_name(o: i32) -> &'static str {
    match api::ExecutionOutcome::try_from(o) {
        Ok(api::ExecutionOutcome::Passed) => "passed",
        Ok(api::ExecutionOutcome::Failed) => "FAILED",
        Ok(api::ExecutionOutcome::TimedOut) => "TIMED OUT",
        Ok(api::ExecutionOutcome::Error) => "ERROR",
        Ok(api::ExecutionOutcome::Pruned) => "pruned",
        Ok(api::ExecutionOutcome::Interrupted) => "interrupted",
        _ => "unknown",
    }
}

fn seconds(d: Option<prost_types::Duration>) -> f64 {
    d.map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// Follows a progress stream to its end: the last message.
async fn follow(
    cli: &Cli,
    mut stream: tonic::Streaming<api::ExplorationProgress>,
) -> anyhow::Result<api::ExplorationProgress> {
    let interactive = !cli.json && std::io::stderr().is_terminal();
    let bar = if interactive {
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} exploration {prefix}: [{bar:30}] {pos}/{len} executions, {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    } else {
        None
    };
    let mut last = None;
    while let Some(p) = stream.message().await.map_err(client::stream_error)? {
        if let Some(bar) = &bar {
            bar.set_prefix(p.exploration_id.to_string());
            bar.set_length(u64::from(p.known.max(1)));
            bar.set_position(u64::from(p.done));
            bar.set_message(format!(
                "{} failing, about {:.0}s left",
                p.failures,
                seconds(p.remaining)
            ));
        }
        if let Some(e) = &p.last {
            let line = format!(
                "#{:<4} {:<11} {:>6.2}s  {}",
                e.number,
                outcome_name(e.outcome),
                seconds(e.duration),
                e.plan
            );
            if cli.json {
                // Standard output is for the report; progress goes to standard error.
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "exploration": p.exploration_id, "execution": e.number,
                        "outcome": outcome_name(e.outcome), "plan": e.plan,
                        "done": p.done, "known": p.known,
                    })
                );
            } else if let Some(bar) = &bar {
                bar.println(line);
            } else {
                eprintln!("{line}");
            }
        }
        last = Some(p);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    last.ok_or_else(|| anyhow::anyhow!("the daemon ended the stream without a word"))
}

async fn report(
    client: &mut ExploreServiceClient<Connection>,
    id: i64,
    format: Format,
) -> anyhow::Result<Vec<u8>> {
    let format = match format {
        Format::Text => api::ReportFormat::Text,
        Format::Json => api::ReportFormat::Json,
        Format::Html => api::ReportFormat::Html,
    };
    Ok(client
        .get_report(api::GetReportRequest {
            exploration_id: id,
            format: format as i32,
        })
        .await?
        .into_inner()
        .content)
}

/// Prints the report of a finished run and maps it to an exit status.
async fn conclude(
    cli: &Cli,
    client: &mut ExploreServiceClient<Connection>,
    last: &api::ExplorationProgress,
    html: Option<&PathBuf>,
) -> anyhow::Result<u8> {
    let id = last.exploration_id;
    let format = if cli.json { Format::Json } else { Format::Text };
    let content = report(client, id, format).await?;
    print!("{}", String::from_utf8_lossy(&content));
    if let Some(path) = html {
        let page = report(client, id, Format::Html).await?;
        std::fs::write(path, page)
            .map_err(|e| anyhow::anyhow!("writing the HTML report {}: {e}", path.display()))?;
        if !cli.json {
            println!("HTML report: {}", path.display());
        }
    }
    match api::ExplorationStatus::try_from(last.status) {
        Ok(api::ExplorationStatus::Finished) => {}
        _ => anyhow::bail!(
            "exploration {id} {}: {}",
            status_name(last.status),
            last.error
        ),
    }
    Ok(if last.failures > 0 { FOUND_FAILURES } else { 0 })
}

/// Runs an explore subcommand; the exit status on success.
pub async fn run(cli: &Cli, cmd: &ExploreCommand) -> anyhow::Result<u8> {
    let mut client = client::explore(cli.target()?).await?;
    match cmd {
        ExploreCommand::Run(a) => {
            let cwd = std::env::current_dir()
                .map_err(|e| anyhow::anyhow!("the current directory: {e}"))?;
            let request = api::StartExplorationRequest {
                targets: a.targets.clone(),
                faults: a.faults.0.iter().map(|&f| api::Fault::from(f)).collect(),
                command: shell_join(&a.command),
                reset_command: a.reset.clone().unwrap_or_default(),
                working_dir: cwd.display().to_string(),
                no_reduction: a.no_reduction,
                include_test_requests: a.include_test_requests,
                label: a.label.clone(),
                max_executions: a.max_executions,
                run_timeout: prost_types::Duration::try_from(a.run_timeout).ok(),
            };
            let mut stream = client.start_exploration(request).await?.into_inner();
            if a.detach {
                let first = stream
                    .message()
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the daemon ended the stream"))?;
                if cli.json {
                    print_json(&serde_json::json!({ "exploration": first.exploration_id }))?;
                } else {
                    println!(
                        "exploration {} started; follow it with `fictl explore watch {0}`",
                        first.exploration_id
                    );
                }
                return Ok(0);
            }
            let last = follow(cli, stream).await?;
            conclude(cli, &mut client, &last, a.html.as_ref()).await
        }
        ExploreCommand::Watch { id } => {
            let stream = client
                .watch_exploration(api::WatchExplorationRequest {
                    exploration_id: *id,
                })
                .await?
                .into_inner();
            let last = follow(cli, stream).await?;
            conclude(cli, &mut client, &last, None).await
        }
        ExploreCommand::Replay { id } => {
            let (exploration, execution) = parse_execution_id(id)?;
            let stream = client
                .replay_execution(api::ReplayExecutionRequest {
                    exploration_id: exploration,
                    execution,
                })
                .await?
                .into_inner();
            let last = follow(cli, stream).await?;
            // A replay that could not run says so, never as a reproduced failure.
            let replayed = report(&mut client, last.exploration_id, Format::Json).await?;
            let replayed: serde_json::Value = serde_json::from_slice(&replayed)?;
            let outcome = &replayed["executions"][0]["outcome"];
            if outcome["kind"] == "error" {
                eprintln!(
                    "fictl: the replay of {id} could not be done: {}",
                    outcome["message"].as_str().unwrap_or("?")
                );
                return Ok(REPLAY_NOT_DONE);
            }
            conclude(cli, &mut client, &last, None).await
        }
        ExploreCommand::Ls { limit } => {
            let list = client
                .list_explorations(api::ListExplorationsRequest { limit: *limit })
                .await?
                .into_inner()
                .explorations;
            if cli.json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|x| {
                        serde_json::json!({
                            "id": x.id, "status": status_name(x.status),
                            "label": x.label, "created_unix_ms": x.created_unix_ms,
                            "targets": x.targets, "faults": x.faults,
                            "command": x.command, "executions": x.executions,
                            "failures": x.failures, "replay_of": x.replay_of, "error": x.error,
                        })
                    })
                    .collect();
                print_json(&serde_json::Value::Array(rows))?;
            } else if list.is_empty() {
                println!(
                    "no exploration yet: start one with `fictl explore run --target C -- TEST`"
                );
            } else {
                println!(
                    "{:>5}  {:<11} {:>6} {:>8}  {:<19}  {:<16}  {:<24}  command",
                    "id", "status", "runs", "failing", "started", "label", "faults"
                );
                for x in &list {
                    let replay = if x.replay_of.is_empty() {
                        String::new()
                    } else {
                        format!(" (replay of {})", x.replay_of)
                    };
                    let label = if x.label.is_empty() { "-" } else { &x.label };
                    println!(
                        "{:>5}  {:<11} {:>6} {:>8}  {:<19}  {:<16}  {:<24}  {}{replay}",
                        x.id,
                        status_name(x.status),
                        x.executions,
                        x.failures,
                        crate::render::date_time_utc(x.created_unix_ms),
                        label,
                        x.faults.join(","),
                        x.command
                    );
                }
            }
            Ok(0)
        }
        ExploreCommand::Show { id, format, output } => {
            let format = if cli.json { Format::Json } else { *format };
            let content = report(&mut client, *id, format).await?;
            match output {
                Some(path) => {
                    std::fs::write(path, &content)
                        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
                    eprintln!("report written to {}", path.display());
                }
                None => print!("{}", String::from_utf8_lossy(&content)),
            }
            Ok(0)
        }
        ExploreCommand::Diff { base, head } => {
            let d = client
                .diff_explorations(api::DiffExplorationsRequest {
                    base: *base,
                    head: *head,
                })
                .await?
                .into_inner();
            let list = |v: &[api::PlanComparison]| -> Vec<serde_json::Value> {
                v.iter()
                    .map(|c| serde_json::json!({"plan": c.plan, "base_execution": c.base_execution, "head_execution": c.head_execution}))
                    .collect()
            };
            if cli.json {
                print_json(&serde_json::json!({
                    "new_failures": list(&d.new_failures),
                    "fixed": list(&d.fixed),
                    "still_failing": list(&d.still_failing),
                    "not_run": list(&d.not_run),
                    "unchanged_passing": d.unchanged_passing,
                }))?;
            } else {
                let section = |title: &str, v: &[api::PlanComparison]| {
                    println!("{title} ({}):", v.len());
                    for c in v {
                        println!(
                            "  {}  (#{} → #{})",
                            c.plan, c.base_execution, c.head_execution
                        );
                    }
                };
                section("new failures", &d.new_failures);
                section("fixed", &d.fixed);
                section("still failing", &d.still_failing);
                section("failing before, not run now", &d.not_run);
                println!("unchanged and passing: {}", d.unchanged_passing);
            }
            Ok(if d.new_failures.is_empty() {
                0
            } else {
                FOUND_FAILURES
            })
        }
        ExploreCommand::Cancel { id } => {
            client
                .cancel_exploration(api::CancelExplorationRequest {
                    exploration_id: *id,
                })
                .await?;
            if cli.json {
                print_json(&serde_json::json!({ "cancelled": id }))?;
            } else {
                println!("exploration {id} cancelled");
            }
            Ok(0)
        }
        ExploreCommand::Injected {
            exploration,
            execution,
        } => {
            let r = client
                .get_injected_faults(api::GetInjectedFaultsRequest {
                    exploration_id: *exploration,
                    execution: *execution,
                })
                .await?
                .into_inner();
            if cli.json {
                let faults: Vec<_> = r
                    .faults
                    .iter()
                    .map(|f| serde_json::json!({"rule": f.rule_id, "source": f.source, "destination": f.destination, "method": f.method, "path": f.path, "fault": f.fault, "service": f.service}))
                    .collect();
                print_json(
                    &serde_json::json!({"exploration": r.exploration_id, "execution": r.execution, "faults": faults}),
                )?;
            } else if r.faults.is_empty() {
                println!(
                    "no fault injected in execution {}/{}",
                    r.exploration_id, r.execution
                );
            } else {
                for f in &r.faults {
                    let service = if f.service.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", f.service)
                    };
                    println!(
                        "{} on {} → {} {}{}{service}",
                        f.fault, f.source, f.method, f.destination, f.path
                    );
                }
            }
            Ok(0)
        }
    }
}

fn parse_execution_id(id: &str) -> anyhow::Result<(i64, u32)> {
    let parsed = id
        .split_once(['/', '#', ':'])
        .and_then(|(x, e)| Some((x.trim().parse().ok()?, e.trim().parse().ok()?)));
    parsed.ok_or_else(|| {
        anyhow::anyhow!(
            "{id:?} is not an execution id: EXPLORATION/EXECUTION, e.g. 12/7 (the report's \
             `fictl explore replay` lines)"
        )
    })
}
