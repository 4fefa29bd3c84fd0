//! Size limits enforced on every decode.
//!
//! Decoders refuse a buffer above its byte limit before running the verifier, and
//! refuse any field above its limit after it. Encoders do not check: a value that
//! breaks a limit encodes fine and is refused by the peer's decoder, so validate
//! with `validate()` before sending if the value came from outside.

/// Opaque message / status ciphertext.
pub const MAX_CIPHERTEXT_BYTES: usize = 64 * 1024;
/// One client API frame (`Request` or `Response`).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Commands in one `Request::Append`.
pub const MAX_COMMANDS_PER_APPEND: usize = 4096;
/// Event records in one `Response::Events`.
pub const MAX_EVENTS_PER_RESPONSE: usize = 4096;
/// One encoded `Command`.
pub const MAX_COMMAND_BYTES: usize = 512 * 1024;
/// One encoded `Event` or `EventRecord`.
pub const MAX_EVENT_BYTES: usize = 512 * 1024;
/// One encoded `CommandResult`.
pub const MAX_RESULT_BYTES: usize = 16 * 1024;

/// One client ↔ edge frame (`ClientFrame` or `ServerFrame`), without its length prefix.
pub const MAX_EDGE_FRAME_BYTES: usize = 256 * 1024;
/// Chat cursors in one `ClientFrame::Sync`.
pub const MAX_SYNC_CURSORS: usize = 4096;
/// A one-time registration code as typed.
pub const MAX_OTP_CODE_BYTES: usize = 16;
/// Longest registration PIN.
pub const MAX_PIN_BYTES: usize = 64;

/// One bus payload (a delivery, an update, a view reply); NATS's default
/// `max_payload` and the in-process bus's limit (`chorus_bus::PAYLOAD_BYTES_MAX`).
pub const MAX_BUS_PAYLOAD_BYTES: usize = 1024 * 1024;
/// One view request (and one receipt or account update) on the bus.
pub const MAX_VIEW_REQUEST_BYTES: usize = 1024;
/// One view query on the bus: a contact lookup carries up to
/// `MAX_CONTACT_HASHES_PER_SYNC` (1000) hashes of 32 bytes.
pub const MAX_VIEW_QUERY_BYTES: usize = 40 * 1024;
/// Entries in one page of a view reply; a request asking for more gets this many.
pub const MAX_VIEW_PAGE_ENTRIES: usize = 1024;

/// Phone number (E.164 fits easily).
pub const MAX_PHONE_BYTES: usize = 32;
/// User, device and group names.
pub const MAX_NAME_BYTES: usize = 128;
/// Profile "about" text and group descriptions.
pub const MAX_ABOUT_BYTES: usize = 1024;
/// A reaction (an emoji sequence).
pub const MAX_REACTION_BYTES: usize = 32;
/// A media MIME type.
pub const MAX_MIME_BYTES: usize = 128;
/// An identity key or a one-time prekey.
pub const MAX_KEY_BYTES: usize = 256;
/// Human-readable messages in rejections and error frames.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Network addresses in membership requests and leader hints.
pub const MAX_ADDR_BYTES: usize = 256;

/// Members of a group (including the creator).
pub const MAX_GROUP_MEMBERS: usize = 1024;
/// Prekeys in one upload.
pub const MAX_PREKEYS_PER_UPLOAD: usize = 256;
/// Contacts in one contact sync.
pub const MAX_CONTACTS: usize = 10_000;
/// Users on a status post's access list.
pub const MAX_ACL: usize = 10_000;
// ---- linked devices (issue 12) ----
/// Devices one user may have linked at once: the primary and 4 companions
/// (the user partition enforces it).
pub const MAX_DEVICES_PER_USER: usize = 5;
/// A pairing code as typed (10 characters, perhaps with dashes and spaces).
pub const MAX_PAIRING_CODE_BYTES: usize = 32;
/// Voters of one partition.
pub const MAX_VOTERS: usize = 64;
/// Replicas reported for one partition in a status.
pub const MAX_REPLICAS: usize = 64;
/// Partitions in one node status (every possible `PartitionId`).
pub const MAX_STATUS_PARTITIONS: usize = u16::MAX as usize + 1;

/// Nesting depth the verifier accepts (the deepest chorus buffer is about 7).
pub(crate) const VERIFIER_MAX_DEPTH: usize = 16;

// ---- presence and typing (issue 12) ----
/// Most users one connection watches the presence of (`SubscribePresence`).
pub const MAX_WATCHED_USERS: usize = 1024;

// ---- E2EE (issue 14) ----
/// A device holding fewer unclaimed one-time keys than this is told
/// (`KeysLow`) at login and when a claim takes it below.
pub const PREKEYS_LOW_WATERMARK: u32 = 20;
