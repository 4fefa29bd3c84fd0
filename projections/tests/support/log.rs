//! A real log-node in this process: RocksDB in a temp dir, QUIC on loopback.

use std::path::Path;

use chorus_log_node::network::tls::{Role, TlsPaths};
use chorus_log_node::{Config, LogClient, Node};
use chorus_schema::{
    ChatId, ClientMsgId, Command, CommandBody, CommandResult, DeviceId, EventRecord, Offset, Origin, PartitionId,
    ReceiptKind, Seq, UserId,
};

/// A single-replica node config on free loopback ports (the testkit's).
pub(crate) fn node_config(dir: &Path, partitions: u16) -> Config {
    chorus_testkit::node::one_node_config(dir, partitions).expect("a one-node config")
}

/// A certificate of `role` from the node's CA.
pub(crate) fn identity(config: &Config, role: Role) -> TlsPaths {
    chorus_testkit::node::identity(config, role, "test").expect("certificate")
}

/// Starts the node, waits for leaders, and connects a client.
pub(crate) async fn must_start(config: &Config) -> (Node, LogClient) {
    chorus_testkit::node::start(config).await.expect("the node starts and elects")
}

/// Builds commands of one user with fresh client message ids.
pub(crate) struct Device {
    pub user: UserId,
    pub device: DeviceId,
    next_id: u64,
}

impl Device {
    pub(crate) fn new(user: u64, device: u32) -> Device {
        Device { user: UserId(user), device: DeviceId(device), next_id: 1 }
    }

    pub(crate) fn command(&mut self, body: CommandBody) -> Command {
        let id = self.next_id;
        self.next_id += 1;
        Command { origin: Origin { user: self.user, device: self.device, client_msg_id: ClientMsgId(id) }, body }
    }

    pub(crate) fn send_direct(&mut self, to: u64, text: &str) -> Command {
        self.command(CommandBody::SendDirect {
            recipient: UserId(to),
            ciphertext: text.as_bytes().to_vec(),
            media: None,
        })
    }

    pub(crate) fn send_group(&mut self, chat: ChatId, text: &str) -> Command {
        self.command(CommandBody::SendGroup { chat, ciphertext: text.as_bytes().to_vec(), media: None })
    }

    pub(crate) fn create_group(&mut self, chat: ChatId, members: &[u64]) -> Command {
        let members = members.iter().copied().map(UserId).collect();
        self.command(CommandBody::CreateGroup { chat, name: "g".into(), members })
    }

    pub(crate) fn ack(&mut self, chat: ChatId, kind: ReceiptKind, up_to: u64) -> Command {
        self.command(CommandBody::Ack { chat, kind, up_to_seq: Seq(up_to) })
    }

    /// Registers (the user, if new) and links `device` with a session of
    /// `token_hash`, as an edge does after a verified code.
    pub(crate) fn register_device(&mut self, device: u32, token_hash: [u8; 32]) -> Command {
        self.command(CommandBody::RegisterDevice {
            phone: format!("+{}", self.user.0),
            device: DeviceId(device),
            identity_key: vec![1; 32],
            name: "d".into(),
            token_hash,
            pin_hash: None,
        })
    }

    pub(crate) fn unlink(&mut self, device: u32) -> Command {
        self.command(CommandBody::UnlinkDevice { device: DeviceId(device) })
    }

    pub(crate) fn revoke_session(&mut self, device: u32) -> Command {
        self.command(CommandBody::RevokeSession { device: DeviceId(device) })
    }
}

/// Appends and panics with context unless the command is accepted.
pub(crate) async fn must_append(client: &LogClient, command: &Command) -> chorus_schema::Outcome {
    let result: CommandResult = client.append(command).await.unwrap_or_else(|e| panic!("append {command:?}: {e}"));
    result.unwrap_or_else(|r| panic!("refused {command:?}: {r}"))
}

/// Every committed record of every partition, and each partition's end offset.
pub(crate) async fn read_all(client: &LogClient) -> (Vec<EventRecord>, Vec<chorus_schema::Offset>) {
    let mut all = Vec::new();
    let mut ends = Vec::new();
    for p in 0..client.partitions() {
        let mut from = Offset(0);
        loop {
            let (events, next) = client.read(PartitionId(p), from, 1024).await.expect("read");
            if events.is_empty() {
                break;
            }
            all.extend(events);
            from = next;
        }
        ends.push(from);
    }
    (all, ends)
}
