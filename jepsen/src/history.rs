//! The history of a run: one JSON object per line.
//!
//! Each operation is an `invoke` entry followed by exactly one completion of the
//! same `index` and `process`: `ok` (it happened, with its value), `fail` (it
//! certainly did not happen) or `info` (unknown: a timed-out send may or may not
//! have happened, and may appear at most once). Besides operations, devices
//! record what they `observe` (live deliveries after the SDK's dedup, receipt
//! updates), and a `setup` entry names the chats, their initial members and
//! every user's devices. With the SDK executor, the live deliveries and
//! receipt ticks are what each device's client handed to the app, and
//! `device_read` operations hold what each device holds at the end. A
//! harness also writes a `meta` entry (the wall-clock time of `time_ns` 0
//! and the run's parameters) and a `nemesis` entry at the start and stop of
//! every fault; the checker ignores both.
//!
//! `time_ns` is monotonic time since the run started; wall-clock time is
//! `meta.start_wall_ms + time_ns / 1e6`.

use std::collections::BTreeMap;
use std::io::BufRead;

use chorus_schema::{ChatId, ClientMsgId, DeviceId, ReceiptKind, Seq, UserId};
use serde::{Deserialize, Serialize};

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    Setup {
        chats: Vec<ChatSetup>,
        devices: Vec<(UserId, DeviceId)>,
    },
    Invoke {
        index: u64,
        process: u64,
        time_ns: u64,
        op: Op,
    },
    Ok {
        index: u64,
        process: u64,
        time_ns: u64,
        value: Value,
    },
    Fail {
        index: u64,
        process: u64,
        time_ns: u64,
        error: String,
    },
    Info {
        index: u64,
        process: u64,
        time_ns: u64,
        error: String,
    },
    Observe {
        process: u64,
        time_ns: u64,
        observation: Observation,
    },
    /// The run's start on the wall clock and its parameters (free-form).
    Meta {
        start_wall_ms: u64,
        params: serde_json::Value,
    },
    /// A fault began or ended; `id` pairs the two.
    Nemesis {
        id: u64,
        time_ns: u64,
        phase: FaultPhase,
        fault: String,
        targets: Vec<u64>,
        detail: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultPhase {
    Start,
    Stop,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSetup {
    pub chat: ChatId,
    pub members: Vec<UserId>,
}

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Op {
    Send {
        chat: ChatId,
        sender: UserId,
        device: DeviceId,
        client_msg_id: ClientMsgId,
    },
    AddMember {
        chat: ChatId,
        actor: UserId,
        member: UserId,
    },
    RemoveMember {
        chat: ChatId,
        actor: UserId,
        member: UserId,
    },
    /// A final read of a chat's whole timeline as the log gives it to one
    /// device (derived from every replica by the log's roster rule).
    Read {
        user: UserId,
        device: DeviceId,
        chat: ChatId,
    },
    /// A cumulative receipt of `user`/`device` in `chat`.
    Ack {
        chat: ChatId,
        user: UserId,
        device: DeviceId,
        kind: ReceiptKind,
        up_to_seq: Seq,
    },
    /// The device drops its connection and connects again (through the SDK).
    Reconnect {
        user: UserId,
        device: DeviceId,
        how: ReconnectHow,
    },
    /// A final read of a chat as the device itself holds it: the messages a
    /// fresh SDK client of the device gets from a full sync (no resume
    /// positions), in the order it got them. A device does not receive its own
    /// sends, nor roster items.
    DeviceRead {
        user: UserId,
        device: DeviceId,
        chat: ChatId,
    },
}

/// How a [`Op::Reconnect`] drops the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconnectHow {
    /// The client drops its connection and heals itself (next edge, resend of
    /// unacknowledged sends and acks, sync from its positions).
    Drop,
    /// The app restarts: the client is closed and a new one connects with the
    /// old one's positions (sends still pending in the old one are abandoned).
    Restart,
}

/// What an `ok` operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "v", rename_all = "snake_case")]
pub enum Value {
    Sent {
        chat: ChatId,
        seq: Seq,
    },
    MemberChanged {
        seq: Seq,
    },
    Read {
        items: Vec<Item>,
    },
    /// The device's cursor of the acked kind after the ack.
    Receipt {
        up_to_seq: Seq,
    },
    /// Done, nothing to return (a reconnect).
    Done,
}

/// One timeline item of a chat as a device received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Item {
    pub seq: Seq,
    /// For messages: who sent it and its idempotency key. `None` for other
    /// timeline items (roster changes, edits, …).
    pub message: Option<(UserId, ClientMsgId)>,
}

/// Something a device saw outside of an operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "o", rename_all = "snake_case")]
pub enum Observation {
    /// A live delivery handed to the application (after the SDK's dedup).
    Deliver { user: UserId, device: DeviceId, chat: ChatId, item: Item },
    /// A receipt update shown to `viewer`: `of` has delivered / read up to `up_to_seq`.
    Receipt { viewer: (UserId, DeviceId), chat: ChatId, of: UserId, kind: ReceiptKind, up_to_seq: Seq },
    /// A receipt tick the SDK handed to the app of `viewer`: every message of
    /// the viewer's user in `chat` up to `up_to_seq` is now delivered to (or
    /// read by) every other member. A read tick implies delivered.
    Tick { viewer: (UserId, DeviceId), chat: ChatId, kind: ReceiptKind, up_to_seq: Seq },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("history line {line}: {source}")]
    Parse { line: usize, source: serde_json::Error },
    #[error("reading history: {0}")]
    Io(#[from] std::io::Error),
}

/// A completed operation: its invocation and completion paired up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub index: u64,
    pub process: u64,
    pub op: Op,
    pub invoke_ns: u64,
    /// `None` while the operation never completed (treated as `info`).
    pub complete_ns: Option<u64>,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok(Value),
    Fail(String),
    Info(String),
}

/// A parsed history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub entries: Vec<Entry>,
}

impl History {
    /// Parses JSON lines (blank lines are skipped).
    ///
    /// # Errors
    /// On unreadable input or a line that is not an [`Entry`].
    pub fn from_jsonl(reader: impl BufRead) -> Result<History, Error> {
        let mut entries = Vec::new();
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            entries.push(serde_json::from_str(&line).map_err(|source| Error::Parse { line: i + 1, source })?);
        }
        Ok(History { entries })
    }

    /// Writes JSON lines.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            #[expect(clippy::expect_used, reason = "entries are plain data with string keys: serializing cannot fail")]
            out.push_str(&serde_json::to_string(e).expect("history entries serialize"));
            out.push('\n');
        }
        out
    }

    /// Operations with their completions, in invocation order. An invocation
    /// with no completion is `Info` (its outcome is unknown).
    pub fn operations(&self) -> Vec<Operation> {
        let mut open: BTreeMap<u64, Operation> = BTreeMap::new();
        let mut done = Vec::new();
        for e in &self.entries {
            match e {
                Entry::Invoke { index, process, time_ns, op } => {
                    open.insert(
                        *index,
                        Operation {
                            index: *index,
                            process: *process,
                            op: op.clone(),
                            invoke_ns: *time_ns,
                            complete_ns: None,
                            outcome: Outcome::Info("never completed".into()),
                        },
                    );
                }
                Entry::Ok { index, time_ns, value, .. } => {
                    close(&mut open, &mut done, *index, *time_ns, Outcome::Ok(value.clone()))
                }
                Entry::Fail { index, time_ns, error, .. } => {
                    close(&mut open, &mut done, *index, *time_ns, Outcome::Fail(error.clone()))
                }
                Entry::Info { index, time_ns, error, .. } => {
                    close(&mut open, &mut done, *index, *time_ns, Outcome::Info(error.clone()))
                }
                Entry::Setup { .. } | Entry::Observe { .. } | Entry::Meta { .. } | Entry::Nemesis { .. } => {}
            }
        }
        done.extend(open.into_values());
        done.sort_by_key(|o| (o.invoke_ns, o.index));
        done
    }

    /// The setup entry's chats and devices (empty if there is none).
    pub fn setup(&self) -> (Vec<ChatSetup>, Vec<(UserId, DeviceId)>) {
        for e in &self.entries {
            if let Entry::Setup { chats, devices } = e {
                return (chats.clone(), devices.clone());
            }
        }
        (Vec::new(), Vec::new())
    }

    pub fn observations(&self) -> impl Iterator<Item = (u64, &Observation)> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Observe { time_ns, observation, .. } => Some((*time_ns, observation)),
            _ => None,
        })
    }
}

fn close(open: &mut BTreeMap<u64, Operation>, done: &mut Vec<Operation>, index: u64, time_ns: u64, outcome: Outcome) {
    if let Some(mut op) = open.remove(&index) {
        op.complete_ns = Some(time_ns);
        op.outcome = outcome;
        done.push(op);
    }
}
