//! The E2EE frames of a session (issue 14): `UploadKeys`, `ClaimKeys`,
//! `GetDeviceKeys`, `KeysLow`, and the device-list check of a `Send` that
//! carries a `devices_digest` (a child module of `core`: it extends
//! [`Session`]).
//!
//! - `UploadKeys` appends `UploadDeviceKeys` to the user's own partition
//!   (with the client's id: a retry is applied once), answered
//!   `KeysUploaded` with the device's unclaimed count.
//! - `ClaimKeys` passes the edge's per-user claim budget
//!   ([`Limits::key_claim`], `RateLimited` with `retry_after_ms`), then
//!   appends `ClaimDeviceKeys` to the **target's** partition, answered
//!   `KeyBundle` (an unknown target: `UnknownRecipient`).
//! - `GetDeviceKeys` asks the directory view (`DeviceKeyList`).
//! - At login the directory view's count of the device's unclaimed keys
//!   gives a `KeysLow` below [`PREKEYS_LOW_WATERMARK`]; later a claim that
//!   takes it below arrives from the bus ([`Session::handle_keys_low`]).
//! - A `Send` with a digest: the current list (the members of the chat —
//!   the two users of a direct chat, the members view of a group — and
//!   each one's devices, the users view), minus the sending device, is
//!   compared with the digest ([`device_list_digest`]). A mismatch is
//!   answered `StaleDevices` with the list, and nothing is appended; a match
//!   goes on as any send. A send without a digest never comes here.

use std::collections::BTreeSet;

use chorus_schema::bus::{DeviceKeysRequest, MembersRequest, UserRequest, ViewAnswer, ViewQuery};
use chorus_schema::edge::device_list_digest;
use chorus_schema::{
    ClientFrame, ClientMsgId, Command, CommandBody, CommandResult, DeviceId, EdgeErrorCode, MediaRef, Origin, Outcome,
    Recipient, ServerFrame, UserId, PREKEYS_LOW_WATERMARK,
};

use super::{append_error_code, AppendError, Correlation, Identity, Pending, Session};

/// A `Send` waiting for its device-list check.
#[derive(Clone, Debug)]
pub(super) struct DeviceCheck {
    id: Identity,
    to: Recipient,
    client_msg_id: ClientMsgId,
    ciphertext: Vec<u8>,
    media: Option<MediaRef>,
    digest: [u8; 32],
    /// Answers still to come.
    waiting: usize,
    /// The devices found so far.
    devices: BTreeSet<(UserId, DeviceId)>,
    /// A user of the list is not registered: no check, the send path
    /// refuses it as usual (`UnknownRecipient`).
    unknown: bool,
}

impl Session {
    /// A logged-in `UploadKeys`, `ClaimKeys` or `GetDeviceKeys`.
    pub(super) fn keys_frame(&mut self, now_ms: u64, id: Identity, frame: ClientFrame) {
        let client_msg_id = match &frame {
            ClientFrame::UploadKeys { client_msg_id, .. }
            | ClientFrame::ClaimKeys { client_msg_id, .. }
            | ClientFrame::GetDeviceKeys { client_msg_id, .. } => *client_msg_id,
            _ => return,
        };
        if self.refuse_reserved(client_msg_id) || !self.admit(now_ms, Some(client_msg_id)) {
            return;
        }
        let origin = Origin { user: id.user, device: id.device, client_msg_id };
        match frame {
            ClientFrame::UploadKeys { one_time_keys, fallback_key, fallback_signature, .. } => {
                let body = CommandBody::UploadDeviceKeys { prekeys: one_time_keys, fallback_key, fallback_signature };
                self.append(Pending::KeysUploaded { client_msg_id }, Command { origin, body });
            }
            ClientFrame::ClaimKeys { user, .. } => {
                if let Some((limits, _)) = &self.limits {
                    if let Err(r) = limits.key_claim(id.user) {
                        return self.rate_limited(r, Some(client_msg_id));
                    }
                }
                let body = CommandBody::ClaimDeviceKeys { target: user };
                self.append(Pending::KeyBundle { client_msg_id }, Command { origin, body });
            }
            ClientFrame::GetDeviceKeys { user, .. } => {
                self.query(
                    Pending::DeviceKeyList { client_msg_id, user },
                    ViewQuery::DeviceKeys(DeviceKeysRequest { user }),
                );
            }
            _ => {}
        }
    }

    /// The log's answer to an `UploadKeys` or `ClaimKeys` append.
    pub(super) fn keys_append_result(&mut self, pending: Pending, result: Result<CommandResult, AppendError>) {
        let client_msg_id = match pending {
            Pending::KeysUploaded { client_msg_id } | Pending::KeyBundle { client_msg_id } => client_msg_id,
            _ => return,
        };
        let cmid = Some(client_msg_id);
        match result {
            Ok(Ok(Outcome::KeysUploaded { one_time_keys_left })) => {
                self.send(ServerFrame::KeysUploaded { client_msg_id, one_time_keys_left })
            }
            Ok(Ok(Outcome::KeyBundle { user, devices })) => {
                self.send(ServerFrame::KeyBundle { client_msg_id, user, devices })
            }
            Ok(Ok(other)) => self.error(EdgeErrorCode::Internal, format!("unexpected key outcome {other:?}"), cmid),
            Ok(Err(r)) => self.error(r.code.to_edge(), r.message, cmid),
            Err(e) => self.error(append_error_code(&e), e.to_string(), cmid),
        }
    }

    /// A view's answer for the key directory or a device-list check.
    pub(super) fn keys_query_result(
        &mut self,
        correlation: Correlation,
        pending: Pending,
        result: Result<ViewAnswer, String>,
    ) {
        match (pending, result) {
            (Pending::DeviceKeyList { client_msg_id, user }, Ok(ViewAnswer::DeviceKeys(entries))) => {
                let devices = entries.into_iter().map(|(k, _)| k).collect();
                self.send(ServerFrame::DeviceKeyList { client_msg_id, user, devices })
            }
            (Pending::DeviceKeyList { client_msg_id, .. }, Err(e)) => {
                self.error(EdgeErrorCode::Unavailable, format!("view unavailable: {e}"), Some(client_msg_id))
            }
            (Pending::KeysAtLogin, Ok(ViewAnswer::DeviceKeys(entries))) => {
                let Some(me) = self.identity() else { return };
                if let Some((_, left)) = entries.iter().find(|(k, _)| k.device == me.device) {
                    self.handle_keys_low(me.device, *left);
                }
            }
            (Pending::DeviceCheckPart { check, user }, answer) => self.device_check_step(check, user, answer),
            (Pending::DeviceKeyList { client_msg_id, .. }, Ok(_)) => {
                self.error(EdgeErrorCode::Internal, "a view answered another query", Some(client_msg_id))
            }
            // A login's count is a hint: without the view, no notice.
            (Pending::KeysAtLogin, _) => {}
            (other, _) => {
                // Not ours: put it back for its own handler (never happens).
                self.pending.insert(correlation, other);
            }
        }
    }

    /// Asks the directory view for this device's unclaimed one-time keys:
    /// `KeysLow` (delivery stream) if below the watermark. The driver calls
    /// it when it subscribes the logged-in device.
    pub fn keys_at_login(&mut self) {
        if let Some(id) = self.identity() {
            self.query(Pending::KeysAtLogin, ViewQuery::DeviceKeys(DeviceKeysRequest { user: id.user }));
        }
    }

    /// `device` of this user holds `left` unclaimed one-time keys (at login,
    /// or a claim took it below the watermark: `chorus.keys.<user>`): this
    /// device is told if it is the one and below [`PREKEYS_LOW_WATERMARK`].
    pub fn handle_keys_low(&mut self, device: DeviceId, left: u32) {
        let Some(me) = self.identity() else { return };
        if device == me.device && left < PREKEYS_LOW_WATERMARK {
            self.actions.push_back(super::Action::Deliver(ServerFrame::KeysLow { one_time_keys_left: left }));
        }
    }

    /// A `Send` with a `devices_digest`: checks the list first (see the module docs).
    #[expect(clippy::too_many_arguments, reason = "the fields of a Send frame")]
    pub(super) fn send_checked(
        &mut self,
        now_ms: u64,
        id: Identity,
        to: Recipient,
        client_msg_id: ClientMsgId,
        ciphertext: Vec<u8>,
        media: Option<MediaRef>,
        digest: [u8; 32],
    ) {
        if !self.admit_send(now_ms, client_msg_id, ciphertext.len()) {
            return;
        }
        let check = self.correlation();
        let users: Vec<UserId> = match to {
            Recipient::User(peer) => {
                let mut users = vec![id.user, peer];
                users.dedup();
                users
            }
            Recipient::Group(_) => Vec::new(),
        };
        let waiting = if users.is_empty() { 1 } else { users.len() };
        let state = DeviceCheck {
            id,
            to,
            client_msg_id,
            ciphertext,
            media,
            digest,
            waiting,
            devices: BTreeSet::new(),
            unknown: false,
        };
        self.pending.insert(check, Pending::DeviceCheck(Box::new(state)));
        match to {
            Recipient::Group(chat) => {
                let query = ViewQuery::Members(MembersRequest { chat });
                self.query(Pending::DeviceCheckPart { check, user: None }, query);
            }
            Recipient::User(_) => {
                for user in users {
                    self.query(
                        Pending::DeviceCheckPart { check, user: Some(user) },
                        ViewQuery::User(UserRequest { user }),
                    );
                }
            }
        }
    }

    fn device_check_step(&mut self, check: Correlation, user: Option<UserId>, answer: Result<ViewAnswer, String>) {
        let Some(Pending::DeviceCheck(state)) = self.pending.get_mut(&check) else { return };
        let cmid = Some(state.client_msg_id);
        let me = state.id.user;
        state.waiting = state.waiting.saturating_sub(1);
        let mut more = Vec::new();
        match (user, answer) {
            (Some(user), Ok(ViewAnswer::User(info))) => {
                state.unknown |= !info.registered;
                state.devices.extend(info.devices.iter().map(|d| (user, *d)));
            }
            (None, Ok(ViewAnswer::Members(m))) => {
                if m.known && m.members.contains(&me) {
                    more = m.members;
                }
                // Otherwise: the chat's partition refuses the send as usual
                // (no such group, not a member) and says why.
            }
            (_, Ok(_)) => {
                self.pending.remove(&check);
                return self.error(EdgeErrorCode::Internal, "a view answered another query", cmid);
            }
            (_, Err(e)) => {
                self.pending.remove(&check);
                return self.error(EdgeErrorCode::Unavailable, format!("view unavailable: {e}"), cmid);
            }
        }
        state.waiting += more.len();
        for user in more {
            self.query(Pending::DeviceCheckPart { check, user: Some(user) }, ViewQuery::User(UserRequest { user }));
        }
        let done = matches!(self.pending.get(&check), Some(Pending::DeviceCheck(s)) if s.waiting == 0);
        if !done {
            return;
        }
        let Some(Pending::DeviceCheck(state)) = self.pending.remove(&check) else { return };
        let DeviceCheck { id, to, client_msg_id, ciphertext, media, digest, devices, unknown, .. } = *state;
        let list: Vec<(UserId, DeviceId)> = devices.into_iter().filter(|d| *d != (id.user, id.device)).collect();
        if unknown || device_list_digest(&list) == digest {
            self.send_admitted(id, to, client_msg_id, ciphertext, media);
        } else {
            self.send(ServerFrame::StaleDevices { client_msg_id, devices: list });
        }
    }
}
