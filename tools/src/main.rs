//! The `chorus` command.

use anyhow::Result;
use clap::{Parser, Subcommand};
use chorus_tools::{bench, commands};

/// mimalloc instead of glibc's malloc: the log-node spent ~17% of its CPU in
/// glibc's allocator (bins, consolidation) under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "chorus", version, about = "chorus: an event-sourced messaging backend on a replicated log")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Embedded mode: everything in one process, data under ./data.
    Dev(commands::dev::Args),
    /// Run one log-node process.
    LogNode(commands::log_node::Args),
    /// Local clusters of log-node processes.
    #[command(subcommand)]
    Cluster(commands::cluster::Cmd),
    /// Talk to the log: append, read, tail, status, membership.
    Log(commands::log::Args),
    /// Run a projector: fold the log into views, publish deliveries, answer view queries.
    Projector(commands::projector::Args),
    /// Run one edge: clients connect here (QUIC, ALPN chorus/1).
    Edge(commands::edge::Args),
    /// A command-line chat client: register, login, send, listen, chats, history.
    Client(commands::client::Args),
    /// Rebuild views from the log into a fresh store; compare them with a live store.
    Replay(commands::projector::ReplayArgs),
    /// Make a development CA and a certificate signed by it.
    Certs {
        #[arg(long, default_value = "data/tls")]
        dir: std::path::PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Jepsen: run a workload against a local cluster under faults, check the history.
    Jepsen(commands::jepsen::Args),
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Committed appends/s and commit latency of a local 3-node cluster.
    Log(bench::log::Args),
    /// Messages through the whole pipeline: delivered/s, latency, memory per idle connection.
    E2e(bench::e2e::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,quinn=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Dev(a) => commands::dev::run(a).await,
            Cmd::LogNode(a) => commands::log_node::run(a).await,
            Cmd::Cluster(c) => commands::cluster::run(c).await,
            Cmd::Log(a) => commands::log::run(a).await,
            Cmd::Projector(a) => commands::projector::run(a).await,
            Cmd::Edge(a) => commands::edge::run(a).await,
            Cmd::Client(a) => commands::client::run(a).await,
            Cmd::Replay(a) => commands::projector::replay(a).await,
            Cmd::Certs { dir, name } => {
                let paths = chorus_log_node::network::tls::issue(&dir, &name)?;
                println!("ca {}\ncert {}\nkey {}", paths.ca.display(), paths.cert.display(), paths.key.display());
                Ok(())
            }
            Cmd::Bench(BenchCmd::Log(a)) => bench::log::run(a).await,
            Cmd::Bench(BenchCmd::E2e(a)) => bench::e2e::run(a).await,
            Cmd::Jepsen(a) => commands::jepsen::run(a).await,
        }
    })
}
