//! Command results: what the state machine decided about one command.

use serde::{Deserialize, Serialize};

use crate::codec::{self, ident, Builder};
pub use crate::codes::RejectCode;
use crate::consumer::PartitionOffset;
use crate::error::check_len;
use crate::fb;
use crate::ids::{ChatId, DeviceId, Seq, UserId};
use crate::limits::{MAX_MESSAGE_BYTES, MAX_RESULT_BYTES};
use crate::types::Prekey;
use crate::{Error, Result};

/// The result of one command: an [`Outcome`] or a [`Rejection`].
///
/// Encode with [`encode_result`], decode with [`decode_result`].
pub type CommandResult = std::result::Result<Outcome, Rejection>;

/// What an accepted command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The command appended a chat timeline item at `seq` (the last one if several).
    Chat { chat: ChatId, seq: Seq },
    /// The cursor of the acked kind after the ack (unchanged if it did not advance).
    Receipt { chat: ChatId, up_to_seq: Seq },
    /// The one-time prekey handed out.
    PrekeyClaimed { user: UserId, device: DeviceId, prekey: Prekey },
    /// Any other accepted command.
    Done,
    // ---- consumer partition (issue 13) ----
    /// A consumer's committed offsets after a `CommitOffsets`, by partition
    /// (partitions it never committed are absent).
    Offsets(Vec<PartitionOffset>),
    // ---- E2EE (issue 14) ----
    /// The uploading device's unclaimed one-time keys after the upload.
    KeysUploaded { one_time_keys_left: u32 },
    /// What a key claim handed out: one entry per device of `user`, in
    /// device order.
    KeyBundle { user: UserId, devices: Vec<crate::keys::DeviceKeys> },
}

/// Why a command was refused. A refused command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
}

impl Rejection {
    /// A rejection with this code and message.
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Rejection { code, message: message.into() }
    }
}

/// Encodes a command result as a flatbuffer with file identifier `CRES`.
pub fn encode_result(result: &CommandResult) -> Vec<u8> {
    let mut fbb = Builder::with_capacity(64);
    let root = build_result(&mut fbb, result);
    codec::finish(fbb, root, ident::COMMAND_RESULT)
}

/// Verifies and decodes a buffer made by [`encode_result`].
///
/// # Errors
/// [`Error::TooLarge`] above [`MAX_RESULT_BYTES`] or a field limit;
/// [`Error::Malformed`] if the verifier refuses it or it holds an unknown variant.
pub fn decode_result(buf: &[u8]) -> Result<CommandResult> {
    let r = codec::root::<fb::CommandResult>(buf, "command result", ident::COMMAND_RESULT, MAX_RESULT_BYTES, 16)?;
    read_result(r)
}

/// Checks the field limits of a result.
///
/// # Errors
/// [`Error::TooLarge`] if the rejection message or the prekey is too long.
pub fn validate_result(result: &CommandResult) -> Result<()> {
    match result {
        Ok(Outcome::PrekeyClaimed { prekey, .. }) => prekey.validate(),
        Ok(Outcome::Offsets(offsets)) => crate::consumer::validate_offsets(offsets),
        Ok(Outcome::KeyBundle { devices, .. }) => crate::keys::validate_list(devices),
        Ok(_) => Ok(()),
        Err(r) => check_len("rejection message", r.message.len(), MAX_MESSAGE_BYTES),
    }
}

pub(crate) fn build_result<'a>(
    fbb: &mut Builder<'a>,
    result: &CommandResult,
) -> flatbuffers::WIPOffset<fb::CommandResult<'a>> {
    let (body_type, body) = match result {
        Ok(Outcome::Chat { chat, seq }) => {
            let chat = codec::chat_fb(chat);
            let t = fb::OutcomeChat::create(fbb, &fb::OutcomeChatArgs { chat: Some(&chat), seq: seq.0 });
            (fb::CommandResultBody::OutcomeChat, t.as_union_value())
        }
        Ok(Outcome::Receipt { chat, up_to_seq }) => {
            let chat = codec::chat_fb(chat);
            let t =
                fb::OutcomeReceipt::create(fbb, &fb::OutcomeReceiptArgs { chat: Some(&chat), up_to_seq: up_to_seq.0 });
            (fb::CommandResultBody::OutcomeReceipt, t.as_union_value())
        }
        Ok(Outcome::PrekeyClaimed { user, device, prekey }) => {
            let prekey = codec::prekey_fb(fbb, prekey);
            let t = fb::OutcomePrekeyClaimed::create(
                fbb,
                &fb::OutcomePrekeyClaimedArgs { user: user.0, device: device.0, prekey: Some(prekey) },
            );
            (fb::CommandResultBody::OutcomePrekeyClaimed, t.as_union_value())
        }
        Ok(Outcome::Done) => {
            let t = fb::OutcomeDone::create(fbb, &fb::OutcomeDoneArgs {});
            (fb::CommandResultBody::OutcomeDone, t.as_union_value())
        }
        Ok(Outcome::Offsets(offsets)) => {
            let offsets = fbb.create_vector(&crate::consumer::offsets_fb(offsets));
            let t = fb::OutcomeOffsets::create(fbb, &fb::OutcomeOffsetsArgs { offsets: Some(offsets) });
            (fb::CommandResultBody::OutcomeOffsets, t.as_union_value())
        }
        Ok(Outcome::KeysUploaded { one_time_keys_left }) => {
            let t = fb::OutcomeKeysUploaded::create(
                fbb,
                &fb::OutcomeKeysUploadedArgs { one_time_keys_left: *one_time_keys_left },
            );
            (fb::CommandResultBody::OutcomeKeysUploaded, t.as_union_value())
        }
        Ok(Outcome::KeyBundle { user, devices }) => {
            let devices = crate::keys::device_keys_fb(fbb, devices);
            let t =
                fb::OutcomeKeyBundle::create(fbb, &fb::OutcomeKeyBundleArgs { user: user.0, devices: Some(devices) });
            (fb::CommandResultBody::OutcomeKeyBundle, t.as_union_value())
        }
        Err(Rejection { code, message }) => {
            let message = fbb.create_string(message);
            let t =
                fb::Rejection::create(fbb, &fb::RejectionArgs { code: reject_code_fb(*code), message: Some(message) });
            (fb::CommandResultBody::Rejection, t.as_union_value())
        }
    };
    fb::CommandResult::create(fbb, &fb::CommandResultArgs { body_type, body: Some(body) })
}

pub(crate) fn read_result(r: fb::CommandResult<'_>) -> Result<CommandResult> {
    let tag = r.body_type();
    let bad = || codec::bad_union("command result", tag.0);
    let result = match tag {
        fb::CommandResultBody::OutcomeChat => {
            let b = r.body_as_outcome_chat().ok_or_else(bad)?;
            Ok(Outcome::Chat { chat: codec::chat(b.chat()), seq: Seq(b.seq()) })
        }
        fb::CommandResultBody::OutcomeReceipt => {
            let b = r.body_as_outcome_receipt().ok_or_else(bad)?;
            Ok(Outcome::Receipt { chat: codec::chat(b.chat()), up_to_seq: Seq(b.up_to_seq()) })
        }
        fb::CommandResultBody::OutcomePrekeyClaimed => {
            let b = r.body_as_outcome_prekey_claimed().ok_or_else(bad)?;
            Ok(Outcome::PrekeyClaimed {
                user: UserId(b.user()),
                device: DeviceId(b.device()),
                prekey: codec::prekey(b.prekey()),
            })
        }
        fb::CommandResultBody::OutcomeDone => {
            r.body_as_outcome_done().ok_or_else(bad)?;
            Ok(Outcome::Done)
        }
        fb::CommandResultBody::Rejection => {
            let b = r.body_as_rejection().ok_or_else(bad)?;
            Err(Rejection { code: reject_code(b.code())?, message: b.message().to_owned() })
        }
        fb::CommandResultBody::OutcomeOffsets => {
            let b = r.body_as_outcome_offsets().ok_or_else(bad)?;
            Ok(Outcome::Offsets(crate::consumer::offsets_of(b.offsets())))
        }
        fb::CommandResultBody::OutcomeKeysUploaded => {
            let b = r.body_as_outcome_keys_uploaded().ok_or_else(bad)?;
            Ok(Outcome::KeysUploaded { one_time_keys_left: b.one_time_keys_left() })
        }
        fb::CommandResultBody::OutcomeKeyBundle => {
            let b = r.body_as_outcome_key_bundle().ok_or_else(bad)?;
            Ok(Outcome::KeyBundle { user: UserId(b.user()), devices: crate::keys::device_keys(b.devices())? })
        }
        _ => return Err(bad()),
    };
    validate_result(&result)?;
    Ok(result)
}

fn reject_code_fb(c: RejectCode) -> fb::RejectCode {
    fb::RejectCode(c.value())
}

fn reject_code(c: fb::RejectCode) -> Result<RejectCode> {
    RejectCode::from_value(c.0).ok_or_else(|| Error::malformed("reject code", format!("unknown value {}", c.0)))
}
