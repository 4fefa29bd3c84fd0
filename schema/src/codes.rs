//! The one catalogue of chorus's error codes.
//!
//! Three wire surfaces carry a code, each with its own enum so that a surface
//! cannot carry another's codes:
//! - [`ErrorCode`]: a log-node answers a client request with it (`Response::Error`);
//! - [`RejectCode`]: the partition state machine refused one command of an append
//!   (`CommandResult::Err`), the same way on every replica;
//! - [`EdgeErrorCode`]: an edge answers its client with it (`ServerFrame::Error`).
//!
//! Every code is declared once, below: its stable wire value, whether the same
//! request may succeed later unchanged, what it means, and — for codes from
//! inside — the [`EdgeErrorCode`] an edge gives its client for it, which is
//! the only translation between surfaces. The flatbuffers enums of the schema
//! files carry the same values (a test checks each), and `docs/error-codes.md`
//! holds tables generated from here ([`markdown_table`]; a test checks they are
//! fresh, `CHORUS_BLESS=1` rewrites them).

use serde::{Deserialize, Serialize};

/// Declares one surface's codes: the enum, its wire values and its rows.
macro_rules! catalogue {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $variant:ident = $value:literal {
                    retryable: $retryable:literal,
                    $(edge: $edge:ident,)?
                    meaning: $meaning:literal,
                    $(action: $action:literal,)?
                }
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( #[doc = $meaning] $variant, )*
        }

        impl $name {
            /// Every code, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The stable wire value: never renumbered or reused.
            pub const fn value(self) -> u8 {
                match self { $($name::$variant => $value,)* }
            }

            /// The code of a wire value, if it is one.
            pub const fn from_value(value: u8) -> Option<$name> {
                match value { $($value => Some($name::$variant),)* _ => None }
            }

            /// The code's name, as in the schema and the docs.
            pub const fn name(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant),)* }
            }

            /// Whether the same request may succeed later unchanged. Retrying
            /// an append or a `Send` is always safe: its `client_msg_id` makes
            /// it idempotent.
            pub const fn retryable(self) -> bool {
                match self { $($name::$variant => $retryable,)* }
            }

            /// What the code means (the docs' table).
            pub const fn meaning(self) -> &'static str {
                match self { $($name::$variant => $meaning,)* }
            }

            /// What a client does about it, where the catalogue says.
            pub const fn action(self) -> Option<&'static str> {
                match self { $($name::$variant => catalogue!(@opt $($action)?),)* }
            }

            /// The code's row of the docs' table.
            fn row(self) -> Row {
                Row {
                    value: self.value(),
                    name: self.name(),
                    retryable: self.retryable(),
                    meaning: self.meaning(),
                    action: self.action(),
                    edge: self.edge_code(),
                }
            }

            /// What an edge tells its client when this code comes from inside.
            const fn edge_code(self) -> Option<EdgeErrorCode> {
                match self { $($name::$variant => catalogue!(@edge $($edge)?),)* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
    (@opt) => { None };
    (@opt $x:literal) => { Some($x) };
    (@edge) => { None };
    (@edge $x:ident) => { Some(EdgeErrorCode::$x) };
}

catalogue! {
    /// Stable codes of a log-node's error responses (`Response::Error.code`).
    pub enum ErrorCode {
        BadFrame = 0 {
            retryable: false, edge: Internal,
            meaning: "The frame is not a valid `Request` (flatbuffers verification failed, truncated stream, wrong identifier). Nothing was done.",
        }
        FrameTooLarge = 1 {
            retryable: false, edge: Internal,
            meaning: "The frame's length prefix is over `MAX_FRAME_BYTES` (16 MiB). Nothing was read past the prefix.",
        }
        InvalidCommand = 2 {
            retryable: false, edge: BadFrame,
            meaning: "A command in an `Append` failed to decode or validate (e.g. ciphertext over 64 KiB), or a request named a partition that does not exist, or a membership change was refused. Nothing was appended.",
        }
        MixedGroups = 3 {
            retryable: false, edge: Internal,
            meaning: "An `Append` held commands of partitions hosted by more than one Raft group. Nothing was appended.",
        }
        NotLeader = 4 {
            retryable: true, edge: Unavailable,
            meaning: "This node does not lead the partition; `leader` says which node does and its client address.",
            action: "The log client follows the hint.",
        }
        PartitionUnavailable = 5 {
            retryable: true, edge: Unavailable,
            meaning: "The partition has no known leader right now (election under way).",
            action: "Retry after a backoff.",
        }
        Unavailable = 6 {
            retryable: true, edge: Unavailable,
            meaning: "The node could not serve the request (shutting down, Raft stopped, proposal queue full).",
            action: "Retry after a backoff, at another node if need be.",
        }
        Timeout = 7 {
            retryable: true, edge: Unavailable,
            meaning: "The append was proposed but its commit was not confirmed in time: **the outcome is unknown**.",
            action: "Retry with the same `client_msg_id`.",
        }
        Internal = 8 {
            retryable: false, edge: Internal,
            meaning: "A storage error on the node; the node logs the details.",
        }
        Forbidden = 9 {
            retryable: false, edge: Internal,
            meaning: "The role in the caller's certificate may not make this request: appends are for `edge`, membership changes for `operator` (a node may change its own), reads and tails for everyone inside. Also: an append holding a superseded account command (`RegisterUser`, `LinkDevice`, `CreateSession`: `RegisterDevice` does all three and checks the registration PIN). Nothing was done. See [security.md](security.md).",
        }
    }
}

catalogue! {
    /// Stable codes of refused commands (`CommandResult::Err(Rejection)`): the
    /// command was ordered in the log and refused by the partition state
    /// machine, the same way on every replica. Nothing was appended for it.
    pub enum RejectCode {
        NotMember = 0 {
            retryable: false, edge: NotMember,
            meaning: "The sender is not a member of the chat (or the target user is not).",
        }
        NotAdmin = 1 {
            retryable: false, edge: Forbidden,
            meaning: "Only group admins may do this.",
        }
        UnknownChat = 2 {
            retryable: false, edge: UnknownRecipient,
            meaning: "No such chat in this partition.",
        }
        UnknownUser = 3 {
            retryable: false, edge: UnknownRecipient,
            meaning: "The user is not registered.",
        }
        UnknownMessage = 4 {
            retryable: false, edge: BadFrame,
            meaning: "The target message (seq) does not exist, or is not the sender's.",
        }
        AlreadyExists = 5 {
            retryable: false, edge: BadFrame,
            meaning: "The user, group, device or member already exists.",
        }
        NoPrekeys = 6 {
            retryable: false, edge: BadFrame,
            meaning: "The target device has no unclaimed one-time prekey left, or a key claim's target user has no linked device.",
        }
        Invalid = 7 {
            retryable: false, edge: BadFrame,
            meaning: "The command is well-formed but breaks a rule (message to oneself, ack beyond the last seq, limits, wrong chat kind, …).",
        }
        WrongPartition = 8 {
            retryable: false, edge: Internal,
            meaning: "The command was routed to a partition that does not own its key (a routing bug of the caller).",
        }
        Locked = 9 {
            retryable: false, edge: PhoneLocked,
            meaning: "The phone had too many wrong codes or PINs (`OTP_FAILURES_MAX` = 10 within `OTP_FAILURE_WINDOW_MS` = 6 h, counted by the log across edges and resends): `RecordOtpFailure` and `RegisterDevice` are refused for `OTP_LOCK_MS` (6 h).",
        }
        PinRequired = 10 {
            retryable: false, edge: PinRequired,
            meaning: "`RegisterDevice` for a user with a registration PIN, without its hash or with another one.",
        }
        Blocked = 11 {
            retryable: false, edge: Forbidden,
            meaning: "`SendDirect` to a user who blocks the sender (the direct chat's `SetDirectBlock` marker).",
        }
        // ---- linked devices (issue 12) ----
        TooManyDevices = 12 {
            retryable: false, edge: TooManyDevices,
            meaning: "`LinkDevice` or `RegisterDevice` for a user who has `MAX_DEVICES_PER_USER` (5: the primary and 4 companions) linked devices. Nothing was changed.",
        }
        // ---- social (issue 12) ----
        Expired = 13 {
            retryable: false, edge: Expired,
            meaning: "`ViewStatus` of a status post past its expiry (24 h after posting, or its shorter `ttl_ms`).",
        }
        RateLimited = 14 {
            retryable: true, edge: RateLimited,
            meaning: "`RecordContactLookup` past the user's allowance of phone hashes per day (`CONTACT_LOOKUPS_PER_DAY`, counted per UTC day of the partition's clock).",
            action: "Retry after the next UTC midnight (the edge gives `retry_after_ms`).",
        }
        UnknownStatus = 15 {
            retryable: false, edge: UnknownRecipient,
            meaning: "`ViewStatus` of a status post that does not exist or whose audience does not admit the viewer (the two are not told apart).",
        }
    }
}

catalogue! {
    /// Stable codes of an edge's [`ServerFrame::Error`](crate::ServerFrame).
    pub enum EdgeErrorCode {
        BadFrame = 0 {
            retryable: false,
            meaning: "The frame failed verification or validation (malformed flatbuffer, unknown variant, invalid phone number, reserved `client_msg_id` bit, a command the log refused as `Invalid`). After `Config::bad_frames_max` bad frames the edge closes the connection.",
            action: "Fix the client.",
        }
        FrameTooLarge = 1 {
            retryable: false,
            meaning: "A frame's length prefix is above `MAX_EDGE_FRAME_BYTES` (256 KiB). The stream cannot be resynchronized: the edge closes the connection.",
            action: "Fix the client.",
        }
        Unauthenticated = 2 {
            retryable: false,
            meaning: "Anything but `RequestOtp`, `VerifyOtp`, `Login` and `Ping` before login, or a `Login` whose token the sessions view does not accept (after `Config::logins_failed_max` failures the edge closes).",
            action: "Log in, or register again.",
        }
        BadOtp = 3 {
            retryable: false,
            meaning: "Wrong one-time code.",
            action: "Ask the user again (up to 5 tries per code).",
        }
        OtpExpired = 4 {
            retryable: false,
            meaning: "No live code for this phone: it expired (5 min), was used, or was requested at another edge.",
            action: "`RequestOtp` again.",
        }
        TooManyAttempts = 5 {
            retryable: false,
            meaning: "5 wrong codes: the phone is locked until the code's expiry; a new code cannot be requested before then.",
            action: "Wait, then `RequestOtp`.",
        }
        Forbidden = 6 {
            retryable: false,
            meaning: "Acting as another user or device (a second `Login` on a connection, registering while logged in, an admin-only command by a non-admin), a `Send` to a user who blocks the sender, or a `MessageInfo` of another user's message (only its sender sees it).",
            action: "Open a new connection for another identity.",
        }
        UnknownRecipient = 7 {
            retryable: false,
            meaning: "The recipient user or the chat does not exist.",
            action: "Show an error.",
        }
        NotMember = 8 {
            retryable: false,
            meaning: "The sender (or acker, or who asks for a `GroupInfo` or `MessageInfo`) is not a member of the group.",
            action: "Show an error; refresh the roster.",
        }
        CiphertextTooLarge = 9 {
            retryable: false,
            meaning: "The ciphertext is above the edge's limit (`Config::ciphertext_bytes_max`, at most 64 KiB). Nothing was appended.",
            action: "Send large content as media.",
        }
        RateLimited = 10 {
            retryable: true,
            meaning: "The device exceeded its frame budget (token bucket), its in-flight bound, or the phone its OTP resend interval.",
            action: "Back off (`retry_after_ms` when given), then retry.",
        }
        Unavailable = 11 {
            retryable: true,
            meaning: "The log did not answer (no leader, timeout). The outcome of a `Send` is unknown.",
            action: "Retry with the same `client_msg_id`.",
        }
        Internal = 12 {
            retryable: false,
            meaning: "A bug at the edge or in the log.",
            action: "Report; retrying a `Send` is still safe.",
        }
        PhoneLocked = 13 {
            retryable: false,
            meaning: "Too many wrong codes or PINs for this phone, at any edge, within hours: the log locked it (6 h). Registration is refused even with the right code.",
            action: "Tell the user to wait.",
        }
        PinRequired = 14 {
            retryable: false,
            meaning: "The number's account has a registration PIN: `VerifyOtp` without it, or with a wrong one (which counts as a wrong code). The code is used up.",
            action: "`RequestOtp` again and send the PIN.",
        }
        TokenExpired = 15 {
            retryable: false,
            meaning: "The login token is past its lifetime (`session.token_lifetime_ms`, 90 days). Counts as a failed login.",
            action: "Register the device again.",
        }
        Revoked = 16 {
            retryable: false,
            meaning: "This device logged out or was unlinked (at any edge): the edge closes every connection of the device at once.",
            action: "Stop; register again to come back.",
        }
        // ---- linked devices (issue 12) ----
        TooManyDevices = 17 {
            retryable: false,
            meaning: "The user already has the primary and 4 companion devices linked: linking (or registering) another is refused and nothing changes. The code is used up.",
            action: "Unlink a device, then pair again with a new code.",
        }
        BadPairingCode = 18 {
            retryable: false,
            meaning: "`LinkDevice` with a pairing code that no device is waiting with: wrong, expired (60 s), already used, or its device disconnected.",
            action: "Ask the new device for a new code (`PairRequest`).",
        }
        // ---- social (issue 12) ----
        Expired = 19 {
            retryable: false,
            meaning: "The status post expired (it is visible 24 h): nothing was recorded.",
            action: "Drop it from the list.",
        }
        // ---- media (issue 14) ----
        MediaTooLarge = 20 {
            retryable: false,
            meaning: "An upload's declared size is above the edge's per-file limit (`media.file_bytes_max`, 100 MiB by default). Nothing was stored.",
            action: "Tell the user the file is too large.",
        }
        QuotaExceeded = 21 {
            retryable: false,
            meaning: "The upload would take the user's stored media above their quota (`media.user_quota_bytes`). Nothing was stored.",
            action: "Tell the user; media no message references any more is collected after the grace period.",
        }
        UnknownMedia = 22 {
            retryable: false,
            meaning: "A download of a hash the store does not hold (never uploaded, not finished, or garbage-collected).",
            action: "Show the attachment as unavailable.",
        }
        BadChunk = 23 {
            retryable: false,
            meaning: "An upload chunk whose BLAKE3 does not match its data, at another offset than the edge's resume point, or longer than `chunk_max`: it was not stored. The media stream stays open; the error's `have` is where to re-send from.",
            action: "Re-send from `have`.",
        }
        MediaHashMismatch = 24 {
            retryable: false,
            meaning: "The uploaded bytes, complete, do not hash to the BLAKE3 of the upload's header: the staged upload was discarded and nothing became visible.",
            action: "Upload again from the start (with the right hash).",
        }
        BadMediaHeader = 25 {
            retryable: false,
            meaning: "A media stream's first frame is not a valid `UploadStart` or `DownloadStart` (malformed, a hash that is not 32 bytes, an empty or too long MIME type, a download offset past the end), or a media stream before login.",
            action: "Fix the client.",
        }
    }
}

impl ErrorCode {
    /// What an edge tells its client when the log answers with this code.
    pub const fn to_edge(self) -> EdgeErrorCode {
        match self.edge_code() {
            Some(code) => code,
            None => EdgeErrorCode::Internal,
        }
    }
}

impl RejectCode {
    /// What an edge tells its client when the log refuses its command with this code.
    pub const fn to_edge(self) -> EdgeErrorCode {
        match self.edge_code() {
            Some(code) => code,
            None => EdgeErrorCode::Internal,
        }
    }
}

/// Which surface's table [`markdown_table`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    LogApi,
    Rejection,
    Edge,
}

impl Surface {
    /// Every surface, in the docs' order.
    pub const ALL: [Surface; 3] = [Surface::LogApi, Surface::Rejection, Surface::Edge];

    /// The marker name of the surface's table in `docs/error-codes.md`.
    pub const fn marker(self) -> &'static str {
        match self {
            Surface::LogApi => "log-api",
            Surface::Rejection => "rejections",
            Surface::Edge => "edge",
        }
    }
}

/// One row, whatever the surface.
struct Row {
    value: u8,
    name: &'static str,
    retryable: bool,
    meaning: &'static str,
    action: Option<&'static str>,
    edge: Option<EdgeErrorCode>,
}

fn rows(surface: Surface) -> Vec<Row> {
    match surface {
        Surface::LogApi => ErrorCode::ALL.iter().map(|c| c.row()).collect(),
        Surface::Rejection => RejectCode::ALL.iter().map(|c| c.row()).collect(),
        Surface::Edge => EdgeErrorCode::ALL.iter().map(|c| c.row()).collect(),
    }
}

/// The markdown table of one surface, as `docs/error-codes.md` holds it.
pub fn markdown_table(surface: Surface) -> String {
    let inner = surface != Surface::Edge;
    let mut out = String::new();
    if inner {
        out.push_str("| value | code | retryable | meaning | an edge tells its client (and what a caller does) |\n| ---: | --- | :---: | --- | --- |\n");
    } else {
        out.push_str(
            "| value | code | retryable | meaning | what the client does |\n| ---: | --- | :---: | --- | --- |\n",
        );
    }
    for row in rows(surface) {
        let retryable = if row.retryable { "yes" } else { "no" };
        let last = match (inner, row.edge, row.action) {
            (true, Some(edge), Some(action)) => format!("`{}` — {action}", edge.name()),
            (true, Some(edge), None) => format!("`{}`", edge.name()),
            (_, _, Some(action)) => action.to_owned(),
            (_, _, None) => String::new(),
        };
        out.push_str(&format!("| {} | `{}` | {retryable} | {} | {last} |\n", row.value, row.name, row.meaning));
    }
    out
}

/// `doc` with the generated table of every surface put between its markers
/// (`<!-- generated: NAME -->` … `<!-- end generated: NAME -->`).
///
/// # Errors
/// Names the marker that is missing.
pub fn render_doc(doc: &str) -> Result<String, String> {
    let mut out = doc.to_owned();
    for surface in Surface::ALL {
        let begin = format!("<!-- generated: {} -->\n", surface.marker());
        let end = format!("<!-- end generated: {} -->", surface.marker());
        let start = out.find(&begin).ok_or_else(|| format!("no `{}` marker", begin.trim_end()))? + begin.len();
        let stop = out[start..].find(&end).ok_or_else(|| format!("no `{end}` marker"))? + start;
        out.replace_range(start..stop, &markdown_table(surface));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_dense_and_round_trip() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(all: &[T], value: fn(T) -> u8, from: fn(u8) -> Option<T>) {
            for (i, c) in all.iter().enumerate() {
                assert_eq!(usize::from(value(*c)), i, "{c:?} is out of order");
                assert_eq!(from(value(*c)), Some(*c));
            }
            let past = u8::try_from(all.len()).unwrap_or(u8::MAX);
            assert_eq!(from(past), None);
        }
        check(ErrorCode::ALL, ErrorCode::value, ErrorCode::from_value);
        check(RejectCode::ALL, RejectCode::value, RejectCode::from_value);
        check(EdgeErrorCode::ALL, EdgeErrorCode::value, EdgeErrorCode::from_value);
    }

    #[test]
    fn only_transient_codes_reach_clients_as_retryable() {
        // An inner code that may succeed later must not become a client code
        // that says "give up", and the other way round.
        for c in ErrorCode::ALL {
            assert_eq!(c.retryable(), c.to_edge().retryable(), "{c}");
        }
        // A refusal is final, but for the allowance of contact lookups
        // (`RateLimited`), which the same request meets again after a day.
        for c in RejectCode::ALL {
            assert_eq!(c.retryable(), c.to_edge().retryable(), "{c}");
            assert_eq!(c.retryable(), *c == RejectCode::RateLimited, "{c}");
        }
    }

    #[test]
    fn rendering_replaces_only_between_markers() {
        let mut doc = String::from("intro\n");
        for s in Surface::ALL {
            doc.push_str(&format!("<!-- generated: {0} -->\nstale\n<!-- end generated: {0} -->\nprose\n", s.marker()));
        }
        let out = render_doc(&doc).unwrap();
        assert!(!out.contains("stale"));
        assert!(out.starts_with("intro\n") && out.ends_with("prose\n"));
        assert!(out.contains("| 16 | `Revoked` | no |"));
        assert_eq!(render_doc(&out).unwrap(), out, "rendering is idempotent");
        assert!(render_doc("no markers").is_err());
    }
}
