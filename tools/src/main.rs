//! The `chorus` command.

use anyhow::Result;
use chorus_tools::{bench, commands};
use clap::{Parser, Subcommand};

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
    /// Abuse reports against a user (operators: reads the log).
    Reports(commands::reports::Args),
    /// Media objects: garbage collection (`gc`).
    #[command(subcommand)]
    Media(commands::media::Cmd),
    /// Issue a certificate (the CAs are made in --dir when missing): a role of
    /// the cluster CA (node, edge, projector, operator, analyst) or an edge's server
    /// certificate of the separate edge CA (edge-server). See docs/security.md.
    Certs {
        #[arg(long, default_value = "data/tls")]
        dir: std::path::PathBuf,
        /// node, edge, projector, operator, analyst or edge-server.
        #[arg(long)]
        role: String,
        /// The principal's name (a node's is its id).
        #[arg(long)]
        name: String,
        /// More DNS names or addresses of an edge-server certificate.
        #[arg(long, value_delimiter = ',')]
        host: Vec<String>,
    },
    /// Write the nats-server configuration of a deployment: TLS (a server
    /// certificate of the cluster CA in --dir) and one user per NKey that
    /// `chorus certs` made there, with its role's permissions. Also makes the
    /// view key (`view.key`) projectors and edges share, if missing.
    BusConfig {
        #[arg(long, default_value = "data/tls")]
        dir: std::path::PathBuf,
        /// The address nats-server listens on.
        #[arg(long, default_value = "127.0.0.1:4222")]
        listen: String,
        /// More DNS names or addresses of the server certificate.
        #[arg(long, value_delimiter = ',')]
        host: Vec<String>,
        #[arg(long, default_value = "data/tls/nats.conf")]
        out: std::path::PathBuf,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Export the log's events as metadata-only Parquet or JSON lines files
    /// for analysts (resumable: --from-manifest).
    Export(commands::export::Args),
    /// Jepsen: run a workload against a local cluster under faults, check the history.
    Jepsen(commands::jepsen::Args),
    /// The whole deployment: nodes, Raft groups and replica lag, partitions,
    /// projector positions and lag, edges and their connections.
    Status(commands::status::Args),
    /// Stream committed events as JSON lines, optionally as a named consumer
    /// whose offsets the log keeps (at-least-once).
    Tail(commands::tail::Args),
    /// Named consumers: show or reset their committed offsets.
    Consumer(commands::tail::ConsumerArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Committed appends/s and commit latency of a local 3-node cluster.
    Log(bench::log::Args),
    /// Messages through the whole pipeline: delivered/s, latency, memory per idle connection.
    E2e(bench::e2e::Args),
    /// One group, every member online across 2 edges: time until every member has each message.
    Group(bench::group::Args),
    /// One user's presence changes to 1,000 watching clients on 2 edges: p50/p99 to the last one.
    Presence(bench::presence::Args),
    /// Events/s (and per core) exported to Parquet, and views rebuilt per second by replay, from a filled local cluster.
    Export(bench::export::Args),
    // ---- E2EE (issue 14) ----
    /// Olm and Megolm encrypt + decrypt of 1 KiB messages in the SDK: messages/s and CPU µs per message, one core.
    Crypto(bench::crypto::Args),
    /// Upload and download of a 50 MiB file over QUIC on loopback (MB/s), beside a raw quinn stream.
    Media(bench::media::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    chorus_tools::telemetry::init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Dev(a) => commands::dev::run(a).await,
            Cmd::LogNode(a) => commands::log_node::run(a).await,
            Cmd::Cluster(c) => commands::cluster::run(c).await,
            Cmd::Log(a) => commands::log::run(a).await,
            Cmd::Projector(a) => commands::projector::run(a).await,
            Cmd::Edge(a) => commands::edge::run(a).await,
            Cmd::Client(a) => commands::client::run(a).await,
            Cmd::Replay(a) => commands::projector::replay(a).await,
            Cmd::Reports(a) => commands::reports::run(a).await,
            Cmd::Media(c) => commands::media::run(c).await,
            Cmd::Tail(a) => commands::tail::run(a).await,
            Cmd::Consumer(a) => commands::tail::consumer(a).await,
            Cmd::Certs { dir, role, name, host } => {
                use chorus_log_node::network::tls;
                let paths = if role == "edge-server" {
                    tls::issue_edge_server(&dir, &name, &host)?
                } else {
                    if !host.is_empty() {
                        anyhow::bail!("--host is for edge-server certificates");
                    }
                    tls::issue(&dir, &tls::Principal::new(role.parse()?, &name)?)?
                };
                println!("ca {}\ncert {}\nkey {}", paths.ca.display(), paths.cert.display(), paths.key.display());
                // Edges and projectors are on the bus too: an NKey each.
                use chorus_projections::bus_auth::{self, BusRole};
                let bus_role = match role.as_str() {
                    "edge" => Some(BusRole::Edge),
                    "projector" => Some(BusRole::Projector),
                    _ => None,
                };
                if let Some(r) = bus_role {
                    let seed = bus_auth::seed_path(&dir, r, &name);
                    let public = bus_auth::create_nkey(&seed)?;
                    println!("nkey_seed {}\nnkey {public}", seed.display());
                }
                Ok(())
            }
            Cmd::BusConfig { dir, listen, host, out } => {
                use chorus_projections::bus_auth;
                chorus_projections::seal::ViewKey::create(&dir.join("view.key"))?;
                let ca = bus_auth::write_server_config(&dir, &listen, &host, &out)?;
                let users = bus_auth::users_in(&dir)?;
                println!(
                    "wrote {} ({} users); clients verify the server with {}",
                    out.display(),
                    users.len(),
                    ca.display()
                );
                println!("start it with: nats-server -c {}", out.display());
                Ok(())
            }
            Cmd::Bench(BenchCmd::Log(a)) => bench::log::run(a).await,
            Cmd::Bench(BenchCmd::E2e(a)) => bench::e2e::run(a).await,
            Cmd::Bench(BenchCmd::Group(a)) => bench::group::run(a).await,
            Cmd::Bench(BenchCmd::Presence(a)) => bench::presence::run(a).await,
            Cmd::Bench(BenchCmd::Media(a)) => bench::media::run(a).await,
            Cmd::Bench(BenchCmd::Export(a)) => bench::export::run(a).await,
            Cmd::Bench(BenchCmd::Crypto(a)) => bench::crypto::run(a).await,
            Cmd::Jepsen(a) => commands::jepsen::run(a).await,
            Cmd::Status(a) => commands::status::run(a).await,
            Cmd::Export(a) => commands::export::run(a).await,
        }
    });
    chorus_tools::telemetry::shutdown();
    result
}
