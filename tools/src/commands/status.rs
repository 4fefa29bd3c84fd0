//! `chorus status`: the whole deployment at a glance. Asks every log node it
//! can learn of for its status (starting from `--node`, then every node the
//! answers' memberships name), scrapes the `/metrics` of the processes given
//! by `--scrape`, and prints what [`crate::status::assemble`] makes of both:
//! tables, or one JSON object ([`crate::status::DeploymentStatus`]) with
//! `--json`. A node or endpoint that does not answer within `--timeout-ms`
//! is shown as down; it never hides the rest.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use chorus_log_node::network::tls::Identity;
use chorus_log_node::{ClientConfig, LogClient};

use crate::status::{assemble, render_text, NodeProbe, ScrapeProbe};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Client API address(es) of log nodes to start from (the others are
    /// learnt from their answers).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7100")]
    pub node: Vec<String>,
    #[command(flatten)]
    pub tls: super::LogTlsArgs,
    /// Prometheus endpoints (`host:port`, GET /metrics; or a full URL) of the
    /// projectors, edges and nodes; `--scrape ''` scrapes none.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:9464")]
    pub scrape: Vec<String>,
    /// How long each node and endpoint has to answer.
    #[arg(long, default_value_t = 2_000)]
    pub timeout_ms: u64,
    /// Print one JSON object (`DeploymentStatus`) instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args) -> Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let seeds: Vec<String> = args.node.iter().filter(|n| !n.is_empty()).cloned().collect();
    let targets: Vec<String> = args.scrape.iter().filter(|t| !t.is_empty()).cloned().collect();
    let (nodes, scrapes) = tokio::join!(probe_nodes(&seeds, &args.tls, timeout), scrape_all(&targets, timeout));
    let status = assemble(&nodes?, &scrapes);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render_text(&status));
    }
    Ok(())
}

/// Asks every node reachable from `seeds` for its status, each within
/// `timeout`, round after round: a round asks, at once, every address that
/// an earlier answer's membership named and nobody asked yet.
///
/// # Errors
/// When the TLS material is unusable (an unreachable node is a probe result).
async fn probe_nodes(seeds: &[String], tls: &super::LogTlsArgs, timeout: Duration) -> Result<Vec<NodeProbe>> {
    let quic = Identity::load(&tls.paths()?)
        .and_then(|i| i.log_client())
        .with_context(|| format!("load the operator's TLS material ({})", tls.cert.display()))?;
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let config = ClientConfig {
        connect_timeout_ms: ms,
        attempt_timeout_ms: ms,
        request_timeout_ms: ms,
        ..ClientConfig::default()
    };
    let client = match LogClient::connect_with(seeds, quic, config).await {
        Ok(c) => c,
        // No seed answered: each is shown down, with the reason.
        Err(e) => {
            return Ok(seeds.iter().map(|s| NodeProbe { addr: s.clone(), result: Err(e.to_string()) }).collect());
        }
    };
    let mut asked: BTreeSet<String> = BTreeSet::new();
    let mut probes: Vec<NodeProbe> = Vec::new();
    let mut next: Vec<String> = seeds.to_vec();
    while !next.is_empty() {
        asked.extend(next.iter().cloned());
        let asks = next.iter().map(|addr| {
            let client = &client;
            async move {
                let result = match tokio::time::timeout(timeout, client.status(addr)).await {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
                };
                NodeProbe { addr: addr.clone(), result }
            }
        });
        let round = futures::future::join_all(asks).await;
        next = round
            .iter()
            .filter_map(|p| p.result.as_ref().ok())
            .flat_map(|s| s.members.iter().map(|m| m.client_addr.clone()))
            .filter(|a| !asked.contains(a))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        probes.extend(round);
    }
    Ok(probes)
}

/// Scrapes every target at once, each within `timeout`.
async fn scrape_all(targets: &[String], timeout: Duration) -> Vec<ScrapeProbe> {
    let http = match reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => {
            let error = format!("HTTP client: {e}");
            return targets.iter().map(|t| ScrapeProbe { target: t.clone(), result: Err(error.clone()) }).collect();
        }
    };
    let asks = targets.iter().map(|target| {
        let http = &http;
        async move { ScrapeProbe { target: target.clone(), result: scrape(http, target).await } }
    });
    futures::future::join_all(asks).await
}

/// GET `http://{target}/metrics` (or `target` itself when it is a URL): the
/// body of a successful answer.
async fn scrape(http: &reqwest::Client, target: &str) -> Result<String, String> {
    let url = if target.contains("://") { target.to_owned() } else { format!("http://{target}/metrics") };
    let failed = |e: reqwest::Error| format!("GET {url}: {}", causes(&e));
    let resp = http.get(&url).send().await.map_err(failed)?;
    let resp = resp.error_for_status().map_err(failed)?;
    resp.text().await.map_err(failed)
}

/// An error and its causes, `: `-separated (reqwest's own message names no
/// cause: "error sending request").
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = c.source();
    }
    out
}
