//! `chorus reports show <user>`: the abuse reports against a user (issue
//! 14), for operators. Reads the user's partition from the log with an
//! operator's certificate and folds its `ReportFiled` events with the
//! `reports` view's own fold (`chorus_projections::fold::reports`), so it
//! prints what the view holds: the count and the latest reports, with the
//! messages the reporters chose to reveal.

use anyhow::{bail, Result};
use chorus_projections::fold::reports;
use chorus_projections::store::MemStore;
use chorus_schema::edge::{normalize_phone, user_for_phone};
use chorus_schema::{EventBody, Key, Offset, PartitionId, UserId};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// The count and the latest reports against a user (id or +phone).
    Show {
        user: String,
        #[command(flatten)]
        log: super::LogTarget,
        /// Print JSON (one object) instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn user_of(s: &str) -> Result<UserId> {
    if s.starts_with('+') {
        return Ok(user_for_phone(&normalize_phone(s)?)?);
    }
    match s.parse::<u64>() {
        Ok(u) => Ok(UserId(u)),
        Err(_) => bail!("{s:?} is neither a user id nor a +phone"),
    }
}

pub async fn run(args: Args) -> Result<()> {
    let Cmd::Show { user, log, json } = args.cmd;
    let user = user_of(&user)?;
    let client = log.connect().await?;
    let partition = PartitionId::for_key(&Key::User(user), client.partitions());
    let mut store = MemStore::new();
    let mut txn = store.begin();
    let mut from = Offset(0);
    let mut effects = Vec::new();
    loop {
        let (records, next) = client.read(partition, from, 4096).await?;
        if records.is_empty() {
            break;
        }
        for r in &records {
            if matches!(&r.event.body, EventBody::ReportFiled { user: u, .. } if *u == user) {
                reports::apply(&mut txn, r, &mut effects)?;
            }
        }
        from = next;
    }
    let summary = reports::summary(&txn, user)?;
    let latest = reports::latest(&txn, user)?;
    if json {
        let latest: Vec<serde_json::Value> = latest
            .iter()
            .map(|r| {
                serde_json::json!({
                    "reporter": r.reporter.0,
                    "chat": r.chat.map(|c| c.to_string()),
                    "at_ms": r.at_ms,
                    "reason": r.reason,
                    "messages": r.messages.iter().map(|m| serde_json::json!({
                        "seq": m.seq.0,
                        "sender": m.sender.0,
                        "at_ms": m.at_ms,
                        "text": String::from_utf8_lossy(&m.text),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let out = serde_json::json!({
            "user": user.0,
            "count": summary.count,
            "last_at_ms": summary.last_at_ms,
            "latest": latest,
        });
        println!("{out}");
        return Ok(());
    }
    println!("user {user}: {} reports (latest at {} ms)", summary.count, summary.last_at_ms);
    for r in latest {
        let chat = r.chat.map_or_else(|| "-".to_owned(), |c| c.to_string());
        println!("  by {} at {} in {chat}: {:?}", r.reporter, r.at_ms, r.reason);
        for m in r.messages {
            println!("    #{} {} at {}: {}", m.seq, m.sender, m.at_ms, String::from_utf8_lossy(&m.text));
        }
    }
    Ok(())
}
