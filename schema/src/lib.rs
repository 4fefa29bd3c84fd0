//! Wire and domain types of chorus: flatbuffers schemas for commands, events and
//! log-node frames; typed ids; verified, limit-checked decoding.
//!
//! # What it does
//! - Defines the schemas in `schema/fbs/*.fbs` and commits the Rust that `flatc`
//!   generates from them (`schema/generate.sh`; a test fails if it is stale).
//! - Exposes plain domain types ([`Command`], [`Event`], [`EventRecord`],
//!   [`CommandResult`], [`Request`], [`Response`]) with `encode(&self) -> Vec<u8>`
//!   and `decode(&[u8]) -> Result<Self>`. Generated flatbuffers types never leave
//!   this crate.
//! - Every decode checks the byte limit and the file identifier, runs the
//!   flatbuffers verifier with explicit bounds (depth, tables, apparent size), and
//!   then validates the domain limits of [`limits`]. Bad input is an [`Error`],
//!   never a panic (proptested with random bytes, truncations and bit flips).
//! - Typed ids ([`ids`]) and the key → partition mapping ([`PartitionId::for_key`]).
//!
//! # What it leaves out
//! - Decisions: whether a command is allowed (membership, admin rights, seqs,
//!   dedup) is the partition state machine's job (`chorus-partition`).
//! - Transport, framing on the stream, storage and cryptography. Ciphertext is
//!   opaque bytes here.
//!
//! # Module map
//! - [`ids`]: `UserId`, `DeviceId`, `PartitionId`, `GroupId`, `Seq`, `ClientMsgId`, `NodeId`,
//!   `ChatId`, `Key`.
//! - [`types`]: `Origin`, `MediaRef`, `ReceiptKind`, `Visibility`, `Prekey`, and the chat
//!   state shared by the partition and the projections: `ChatKind`, `Member`, `Cursors`.
//! - [`command`]: `Command`, `CommandBody`.
//! - [`event`]: `Event`, `EventBody`, `EventRecord`.
//! - [`outcome`]: `CommandResult`, `Outcome`, `Rejection`, `RejectCode`,
//!   `encode_result`, `decode_result`.
//! - [`api`]: `Request`, `Response` and the status and error types of frames.
//! - [`bus`]: what the projector publishes on the bus and the view queries it
//!   answers: subjects, payloads, view values (`Ticks`, `ChatListEntry`, …).
//! - [`edge`]: `ClientFrame`, `ServerFrame`, `EdgeErrorCode`, framing and
//!   phone-number user ids of the client ↔ edge protocol.
//! - [`framing`]: `FrameSplitter`, edge frames out of QUIC stream chunks
//!   without a read buffer (the edge's driver and the client SDK).
//! - [`limits`]: every size limit; [`error`]: `Error`, `Result`.
//!
//! # Dataflow
//! ```text
//!  client ──Request::Append{[Command bytes]}──▶ log-node ──Command::decode──▶ partition state machine
//!                                                                              │ apply → Vec<Event>
//!  client ◀──Response::Appended{[CommandResult]}──┘          EventRecord::encode ▼
//!  readers ◀──Response::Events{[EventRecord bytes]}── log-node ◀── stored records
//! ```

pub mod api;
pub mod bus;
mod codec;
pub mod codes;
pub mod command;
pub mod consumer;
pub mod edge;
pub mod error;
pub mod event;
pub mod framing;
pub mod ids;
pub mod keys;
// ---- E2EE envelope (issue 14) ----
pub mod e2ee;
pub mod limits;
pub mod media;
pub mod outcome;
pub mod push;
pub mod social;
pub mod types;
pub mod webhook;

// The code flatc generates: unsafe accessors that are sound only on verified
// buffers, so it stays private and is reached only through `codec::root`.
#[allow(
    unsafe_code,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    dead_code,
    deprecated,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unused_imports,
    unused_extern_crates,
    unused_qualifications,
    missing_docs,
    unreachable_pub,
    elided_lifetimes_in_paths,
    mismatched_lifetime_syntaxes
)]
#[rustfmt::skip]
#[path = "generated/chorus_generated.rs"]
mod generated;

use generated::chorus::fb;

pub use api::{
    AppendCommand, ErrorCode, GroupStatus, LeaderHint, MemberAddr, NodeStatus, PartitionStatus, ReplicaStatus, Request,
    Response,
};
pub use command::{Command, CommandBody};
pub use consumer::{ConsumerKey, PartitionOffset};
pub use edge::{
    ClientFrame, DeviceNoticeKind, EdgeErrorCode, GroupInfo, GroupOp, MessageReceipt, Recipient, ServerFrame,
};
pub use error::{Error, Result};
pub use event::{Event, EventBody, EventRecord, StoredRecord};
pub use ids::{ChatId, ClientMsgId, DeviceId, GroupId, Key, LogIndex, NodeId, Offset, PartitionId, Seq, UserId};
pub use keys::{device_list_digest, DeviceKeys};
pub use limits::*;
pub use outcome::{decode_result, encode_result, validate_result, CommandResult, Outcome, RejectCode, Rejection};
pub use social::{ContactMatch, Profile, StatusAudience, StatusEntry};
pub use types::{ChatKind, Cursors, MediaRef, Member, Origin, Prekey, ReceiptKind, Visibility};
