//! Push tokens and abuse reports (issue 14): `RegisterPush` and `Report`
//! frames of a logged-in device become user-partition commands carrying the
//! client's `client_msg_id` (a retry is applied once), answered `Done` or
//! `Error` with the partition's reason (the rules live there:
//! `log-node/partition/src/push.rs`).

use chorus_schema::edge::ClientFrame;
use chorus_schema::{Command, CommandBody, EdgeErrorCode, Origin};

use super::{Identity, Pending, Session};

impl Session {
    /// A `RegisterPush` or `Report` of a logged-in device.
    pub(super) fn push_or_report(&mut self, now_ms: u64, id: Identity, frame: ClientFrame) {
        let client_msg_id = match &frame {
            ClientFrame::RegisterPush { client_msg_id, .. } | ClientFrame::Report { client_msg_id, .. } => {
                *client_msg_id
            }
            _ => return,
        };
        if let ClientFrame::Report { user, .. } = &frame {
            // Refused here too, so a self-report does not cost an append.
            if *user == id.user {
                return self.error(EdgeErrorCode::BadFrame, "a user cannot report themself", Some(client_msg_id));
            }
        }
        if self.refuse_reserved(client_msg_id) || !self.admit(now_ms, Some(client_msg_id)) {
            return;
        }
        let origin = Origin { user: id.user, device: id.device, client_msg_id };
        let body = match frame {
            ClientFrame::RegisterPush { token, platform, .. } => CommandBody::SetPushToken { token, platform },
            ClientFrame::Report { user, chat, reason, messages, .. } => {
                CommandBody::FileReport { reported: user, chat, reason, messages }
            }
            _ => return,
        };
        self.append(Pending::Request { client_msg_id, close: false }, Command { origin, body });
    }
}
