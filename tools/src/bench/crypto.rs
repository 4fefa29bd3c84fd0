//! `chorus bench crypto`: the SDK's end-to-end encryption alone, in this
//! process on one core (no network, no server): `--messages` messages of
//! `--bytes` bytes each encrypted by one device and decrypted by another,
//! Olm (direct messages: one pairwise double-ratchet message each) and
//! Megolm (group messages: one sender-key message each; the Olm share of
//! the session key only in the first) separately. Printed per kind, the
//! median (and range) of `--runs` runs: messages per second (encrypt +
//! decrypt, one core) and CPU µs per message. The envelope's size is
//! printed too. Not run in tests (no timing assertions anywhere).

use std::time::Instant;

use anyhow::{bail, Result};
use chorus_client::e2ee::{Address, Crypto, PeerKeys};
use chorus_schema::{ChatId, DeviceId, UserId};

use super::stats::{median_min_max, process_cpu_us};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Messages per run and kind.
    #[arg(long, default_value_t = 5000)]
    pub messages: usize,
    /// Plaintext bytes per message.
    #[arg(long, default_value_t = 1024)]
    pub bytes: usize,
    /// Runs per kind (the median is printed).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

fn device(user: u64) -> Crypto {
    let mut c = Crypto::new();
    c.set_address((UserId(user), DeviceId(1)));
    c
}

/// Two devices with an Olm session each way (as after a first exchange).
fn pair() -> Result<(Crypto, Crypto)> {
    let (mut a, mut b) = (device(1), device(2));
    let up = b.keys_to_upload(None);
    let Some((_, otk)) = up.one_time.into_iter().next() else { bail!("no one-time key") };
    let keys = PeerKeys {
        address: b.address().unwrap_or_default(),
        identity_key: b.identity_key().to_bytes().to_vec(),
        one_time_key: Some(otk),
        fallback_key: None,
        fallback_signature: None,
    };
    a.add_peer(&keys)?;
    b.learn(a.address().unwrap_or_default(), &a.identity_key().to_bytes())?;
    let chat = ChatId::direct(UserId(1), UserId(2));
    let first = a.encrypt_direct(chat, &[addr(&b)], b"hello")?;
    b.decrypt(chat, addr(&a), &first)?;
    let reply = b.encrypt_direct(chat, &[addr(&a)], b"hi")?;
    a.decrypt(chat, addr(&b), &reply)?;
    Ok((a, b))
}

fn addr(c: &Crypto) -> Address {
    c.address().unwrap_or_default()
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Olm,
    Megolm,
}

/// One run: (messages/s, CPU µs per message, envelope bytes).
fn run_once(kind: Kind, messages: usize, body: &[u8]) -> Result<(f64, f64, usize)> {
    let (mut a, mut b) = pair()?;
    let (to, from) = (addr(&b), addr(&a));
    let chat = match kind {
        Kind::Olm => ChatId::direct(UserId(1), UserId(2)),
        Kind::Megolm => ChatId([7; 16]),
    };
    let mut size = 0;
    let cpu0 = process_cpu_us(std::process::id()).unwrap_or(0);
    let t0 = Instant::now();
    for _ in 0..messages {
        let env = match kind {
            Kind::Olm => a.encrypt_direct(chat, &[to], body)?,
            Kind::Megolm => {
                let (env, shares) = a.encrypt_group(chat, &[to], body)?;
                a.confirm_shared(&shares);
                env
            }
        };
        size = env.len();
        let got = b.decrypt(chat, from, &env)?;
        if got.body.len() != body.len() {
            bail!("decrypted {} bytes, sent {}", got.body.len(), body.len());
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = process_cpu_us(std::process::id()).unwrap_or(0).saturating_sub(cpu0);
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let (n, cpu) = (messages as f64, cpu as f64);
    Ok((n / secs.max(1e-9), cpu / n, size))
}

pub async fn run(args: Args) -> Result<()> {
    if args.messages == 0 || args.runs == 0 {
        bail!("--messages and --runs must be positive");
    }
    let body: Vec<u8> = (0..args.bytes).map(|i| u8::try_from(i % 251).unwrap_or(0)).collect();
    println!(
        "E2EE in the SDK, one core, {} messages of {} bytes, encrypt + decrypt, median of {} runs:",
        args.messages, args.bytes, args.runs
    );
    for kind in [Kind::Olm, Kind::Megolm] {
        let (messages, body) = (args.messages, body.clone());
        let runs = args.runs;
        let results = tokio::task::spawn_blocking(move || {
            (0..runs).map(|_| run_once(kind, messages, &body)).collect::<Result<Vec<_>>>()
        })
        .await??;
        let rate: Vec<f64> = results.iter().map(|r| r.0).collect();
        let cpu: Vec<f64> = results.iter().map(|r| r.1).collect();
        let (r, rmin, rmax) = median_min_max(&rate);
        let (c, cmin, cmax) = median_min_max(&cpu);
        let size = results.first().map_or(0, |r| r.2);
        println!(
            "  {:<7} {r:>9.0} messages/s ({rmin:.0}..{rmax:.0}), {c:>7.1} CPU µs/message ({cmin:.1}..{cmax:.1}), envelope {size} bytes",
            format!("{kind:?}:")
        );
    }
    Ok(())
}
