//! `chorus log …`: talk to a log-node's client API.

use anyhow::{bail, Result};
use chorus_schema::{
    ChatId, ClientMsgId, Command, CommandBody, DeviceId, GroupId, Key, NodeId, Offset, Origin, PartitionId, Request,
    UserId,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub log: super::LogTarget,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Append a direct message (ciphertext = the text's bytes; for trying the log only).
    Append {
        #[arg(long)]
        from: u64,
        #[arg(long, default_value_t = 1)]
        device: u32,
        #[arg(long)]
        to: u64,
        #[arg(long)]
        text: String,
        /// Idempotency key; random if not given. Resending with the same one appends nothing.
        #[arg(long)]
        client_msg_id: Option<u64>,
    },
    /// Print committed events of a partition (or of the direct chat of --user and --peer).
    Read {
        #[arg(long)]
        partition: Option<u16>,
        #[arg(long)]
        user: Option<u64>,
        #[arg(long)]
        peer: Option<u64>,
        #[arg(long, default_value_t = Offset(0))]
        from: Offset,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Follow a partition's committed events as they commit.
    Tail {
        #[arg(long)]
        partition: u16,
        #[arg(long, default_value_t = Offset(0))]
        from: Offset,
    },
    /// Per-group leader, term, applied index and replica lag, and per-partition
    /// events, as the node given sees them.
    Status,
    /// Add a node as learner of a Raft group (run against any node; routed to the leader).
    AddLearner {
        #[arg(long)]
        group: u16,
        #[arg(long)]
        node_id: u64,
        #[arg(long)]
        raft_addr: String,
        #[arg(long)]
        client_addr: String,
    },
    /// Set the voters of a Raft group (e.g. to move a replica onto a learner).
    ChangeVoters {
        #[arg(long)]
        group: u16,
        #[arg(long, value_delimiter = ',')]
        voters: Vec<u64>,
    },
    /// Promote a learner of a Raft group to voter once it has caught up.
    Promote {
        #[arg(long)]
        group: u16,
        #[arg(long)]
        node_id: u64,
    },
    /// Remove one voter of a Raft group (the leader keeps the others).
    RemoveVoter {
        #[arg(long)]
        group: u16,
        #[arg(long)]
        node_id: u64,
    },
}

pub async fn run(args: Args) -> Result<()> {
    let client = args.log.connect().await?;
    match args.cmd {
        Cmd::Append { from, device, to, text, client_msg_id } => {
            let cmd = Command {
                origin: Origin {
                    user: UserId(from),
                    device: DeviceId(device),
                    client_msg_id: ClientMsgId(client_msg_id.unwrap_or_else(rand::random)),
                },
                body: CommandBody::SendDirect { recipient: UserId(to), ciphertext: text.into_bytes(), media: None },
            };
            let p = client.partition_of(&cmd);
            let result = client.append(&cmd).await?;
            println!("partition {p}: {result:?}");
        }
        Cmd::Read { partition, user, peer, from, limit } => {
            let p = match (partition, user, peer) {
                (Some(p), _, _) => PartitionId(p),
                (None, Some(u), Some(v)) => {
                    PartitionId::for_key(&Key::Chat(ChatId::direct(UserId(u), UserId(v))), client.partitions())
                }
                _ => bail!("give --partition, or --user and --peer"),
            };
            let (events, next) = client.read(p, from, limit).await?;
            for e in &events {
                println!("{e:?}");
            }
            println!("partition {p}: {} events, next offset {next}", events.len());
        }
        Cmd::Tail { partition, from } => {
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let c = client.clone();
            let node = args.log.node.clone();
            let task = tokio::spawn(async move { c.tail(&node, PartitionId(partition), from, tx).await });
            while let Some(e) = rx.recv().await {
                println!("{e:?}");
            }
            task.await??;
        }
        Cmd::Status => {
            let s = client.status(&args.log.node).await?;
            println!("node {}:", s.node);
            let ids = |v: &[NodeId]| v.iter().map(|v| v.0).collect::<Vec<_>>();
            for g in &s.groups {
                println!(
                    "  group {:>3}: leader {:>4} term {:>3} last_log {:>7} applied {:>7} voters {:?} learners {:?} replicas {:?} hosts {}",
                    g.group,
                    g.leader.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                    g.term,
                    g.last_log_index,
                    g.last_applied,
                    ids(&g.voters),
                    ids(&g.learners),
                    g.replicas.iter().map(|r| (r.node.0, r.matched)).collect::<Vec<_>>(),
                    g.partitions.len()
                );
            }
            for p in &s.partitions {
                println!("  partition {:>3}: group {:>3} events {:>8}", p.partition, p.group, p.next_offset);
            }
        }
        Cmd::AddLearner { group, node_id, raft_addr, client_addr } => {
            let g = GroupId(group);
            client.admin(g, &Request::AddLearner { group: g, node: NodeId(node_id), raft_addr, client_addr }).await?;
            println!("done");
        }
        Cmd::ChangeVoters { group, voters } => {
            let g = GroupId(group);
            client
                .admin(g, &Request::ChangeVoters { group: g, voters: voters.into_iter().map(NodeId).collect() })
                .await?;
            println!("done");
        }
        Cmd::Promote { group, node_id } => {
            let g = GroupId(group);
            client.admin(g, &Request::PromoteLearner { group: g, node: NodeId(node_id) }).await?;
            println!("done");
        }
        Cmd::RemoveVoter { group, node_id } => {
            let g = GroupId(group);
            client.admin(g, &Request::RemoveVoter { group: g, node: NodeId(node_id) }).await?;
            println!("done");
        }
    }
    Ok(())
}
