//! fi's developer tasks. `cargo xtask --help` lists them.

mod cmd;
mod ebpf;
mod setup;
mod tasks;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "fi's developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing (apt packages, rust-src, bpf-linker) and check the kernel.
    /// Idempotent: a second run changes nothing.
    Setup,
    /// Build the eBPF object (nightly, bpfel-unknown-none), then the daemon and fictl.
    Build {
        /// Build the user-space binaries with optimizations.
        #[arg(long)]
        release: bool,
    },
    /// Run the tests: host unit tests, BPF_PROG_TEST_RUN tests and privileged integration
    /// tests (these need root).
    Test {
        /// Run only one tier.
        #[arg(long, value_enum)]
        tier: Option<tasks::Tier>,
        /// Passed to the test binaries (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// rustfmt --check and clippy (warnings denied), on the host crates and on fi-ebpf.
    Lint,
    /// Measure what fi costs per packet and how precise its faults are (root). Writes
    /// bench/results/report.md and report.json.
    Bench {
        /// Few samples, debug build: checks that the bench runs, not what it measures.
        #[arg(long)]
        short: bool,
        /// Only these sections: packets, faults, control, exploration, overhead
        /// (comma-separated).
        #[arg(long)]
        only: Option<String>,
    },
    /// The demo: set up, build, start the example services in test containers and
    /// fi-daemon, watch requests, inject one fault, explore the example's functional
    /// test, print the findings and the HTML report's path, and remove everything (also
    /// on Ctrl-C). Needs root.
    Demo,
    /// Exactly what CI does: README's commands (setup, lint, test) in a pristine Debian 12
    /// root, on a fresh clone of HEAD (commit first). Needs root; takes 10 to 15 minutes.
    Ci {
        /// Instead: README's two commands as a newcomer types them (`cargo xtask demo`,
        /// then `cargo xtask test`, no setup first), each timed.
        #[arg(long)]
        newcomer: bool,
    },
    /// Regenerate docs/FICTL.md from fictl's help (a test fails when it is stale).
    Docs,
    /// Build, then run fi-daemon in the foreground (needs root). Ctrl-C stops it.
    Run {
        #[arg(long)]
        release: bool,
        /// Passed to fi-daemon (e.g. `-- --iface eth0`).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::run(setup::Report::Table),
        Task::Ci { newcomer } => tasks::ci(newcomer),
        Task::Build { release } => tasks::build(release).map(drop),
        Task::Test { tier, args } => tasks::test(tier, &args),
        Task::Lint => tasks::lint(),
        Task::Bench { short, only } => tasks::bench(short, only.as_deref()),
        Task::Run { release, args } => tasks::run(release, &args),
        Task::Demo => tasks::demo(),
        Task::Docs => tasks::docs(),
    }
}
