//! `chorus bench media`: upload and download of a `--mib` MiB file over QUIC
//! on loopback through a real edge (a `chorus edge` process in a local
//! deployment: 3 log-nodes, nats-server, projector, 1 edge), in MB/s, the
//! median of `--runs`; beside the ceiling: one raw quinn stream in this
//! process with the edge's TLS and transport settings (the same certificate,
//! ALPN and `TransportConfig`, and the SDK's client config). Prints the ratio.
//!
//! Each upload is a new object (random bytes: nothing is deduplicated); the
//! file's encryption is not timed (it is the SDK's, before the upload).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use rand::RngCore;

use chorus_testkit::cluster::{self as launcher, chorus_binary};
use chorus_testkit::stack::{Stack, StackSpec};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Size of the file, MiB.
    #[arg(long, default_value_t = 50)]
    pub mib: usize,
    /// Runs of each measurement; the median is printed.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Deployment directory (wiped first).
    #[arg(long, default_value = "target/bench-media")]
    pub dir: PathBuf,
}

fn mb_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn random(n: usize) -> Bytes {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    Bytes::from(v)
}

pub async fn run(args: Args) -> Result<()> {
    if args.mib == 0 || args.runs == 0 {
        bail!("--mib and --runs must be positive");
    }
    let size = args.mib << 20;
    launcher::clean_dir(&args.dir)?;
    let mut spec = StackSpec::new(&args.dir, chorus_binary()).unthrottled();
    spec.edges = 1;
    spec.edge.media.file_bytes_max = (size as u64).max(1 << 20) + (1 << 20);
    spec.edge.media.user_quota_bytes = 1 << 50;
    spec.log_filter = "warn".into();
    let stack = Stack::start(spec).await.context("start the deployment")?;
    println!(
        "deployment: 3 log-nodes, nats-server, projector, 1 edge; a {} MiB file, median of {}",
        args.mib, args.runs
    );
    let creds = stack.register(0, "+15559100000").await?;
    let (client, _events) = stack.connect(0, creds).await;

    let (mut up, mut down) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..args.runs {
        let data = random(size);
        let t = Instant::now();
        let done = client.upload(data, "application/octet-stream").await?;
        up.push(mb_per_s(size, t.elapsed().as_secs_f64()));
        if done.deduplicated {
            bail!("a random object was deduplicated");
        }
        last = Some(done.media);
    }
    let media = last.context("an upload")?;
    for _ in 0..args.runs {
        let t = Instant::now();
        let got = client.download(&media).await?;
        down.push(mb_per_s(got.len(), t.elapsed().as_secs_f64()));
    }
    client.close();

    // The ceiling: raw quinn, the edge's TLS and transport, the SDK's client config.
    let edge = &stack.cluster.edges.first().context("an edge")?.config;
    let (raw_up, raw_down) = raw(edge, &stack.client_config(&[0]), size, args.runs).await?;

    let (up, down, raw_up, raw_down) = (median(up), median(down), median(raw_up), median(raw_down));
    println!("upload   chorus {up:8.1} MB/s   raw quinn {raw_up:8.1} MB/s   ratio {:.2}", up / raw_up.max(1e-9));
    println!(
        "download chorus {down:8.1} MB/s   raw quinn {raw_down:8.1} MB/s   ratio {:.2}",
        down / raw_down.max(1e-9)
    );
    Ok(())
}

/// Raw quinn on loopback: `runs` uploads and downloads of `size` bytes on
/// one stream each; MB/s of each.
async fn raw(
    edge: &chorus_edge::Config,
    client: &chorus_client::ClientConfig,
    size: usize,
    runs: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut server = chorus_edge::driver::tls::server_config(&edge.cert, &edge.key, chorus_schema::edge::ALPN)?;
    let transport = chorus_edge::driver::transport(edge);
    server.transport_config(transport);
    let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse()?)?;
    let addr = endpoint.local_addr()?;
    let data = random(size);
    let serve = tokio::spawn({
        let data = data.clone();
        async move {
            while let Some(incoming) = endpoint.accept().await {
                let Ok(conn) = incoming.await else { continue };
                let data = data.clone();
                tokio::spawn(async move {
                    // The login's place: raise the streams as the edge does.
                    conn.set_max_concurrent_bi_streams(8u32.into());
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let data = data.clone();
                        tokio::spawn(async move {
                            let mut op = [0u8; 1];
                            if recv.read_exact(&mut op).await.is_err() {
                                return;
                            }
                            if op[0] == b'u' {
                                let mut n = 0usize;
                                while let Ok(Some(c)) = recv.read_chunk(1 << 20, true).await {
                                    n += c.bytes.len();
                                }
                                let _ = send.write_all(&(n as u64).to_be_bytes()).await;
                            } else {
                                let _ = send.write_chunk(data).await;
                            }
                            let _ = send.finish();
                            let _ = send.stopped().await;
                        });
                    }
                });
            }
        }
    });
    let quic = chorus_client::quic_config(client)?;
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    ep.set_default_client_config(quic);
    let conn = ep.connect(addr, "chorus.local")?.await?;
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(b"u").await?;
        for part in data.chunks(1 << 20) {
            send.write_chunk(data.slice_ref(part)).await?;
        }
        send.finish()?;
        let mut n = [0u8; 8];
        recv.read_exact(&mut n).await?;
        up.push(mb_per_s(size, t.elapsed().as_secs_f64()));
        if u64::from_be_bytes(n) != size as u64 {
            bail!("the raw server got {} of {size} bytes", u64::from_be_bytes(n));
        }
        let t = Instant::now();
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(b"d").await?;
        send.finish()?;
        let mut got = 0usize;
        while let Some(c) = recv.read_chunk(1 << 20, true).await? {
            got += c.bytes.len();
        }
        down.push(mb_per_s(got, t.elapsed().as_secs_f64()));
    }
    conn.close(0u32.into(), b"done");
    serve.abort();
    Ok((up, down))
}
