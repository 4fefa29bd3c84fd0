//! The one error type of the bus, shared by both implementations.

/// What went wrong on the bus. Both implementations return the same variant
/// for the same mistake, so embedded mode and cluster mode fail alike.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The NATS client could not reach or handshake with the server.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },

    /// The message could not be handed to the connection.
    #[error("cannot publish on {subject}: {reason}")]
    Publish { subject: String, reason: String },

    /// The subscription could not be registered (or the server did not
    /// confirm it in time, e.g. while disconnected).
    #[error("cannot subscribe to {subject}: {reason}")]
    Subscribe { subject: String, reason: String },

    /// A request failed for a reason other than the ones below.
    #[error("request on {subject} failed: {reason}")]
    Request { subject: String, reason: String },

    /// The server did not confirm a flush in time.
    #[error("flush failed: {reason}")]
    Flush { reason: String },

    /// Nobody is subscribed to the subject of a request. Returned at once,
    /// without waiting for the timeout.
    #[error("no responders on {subject}")]
    NoResponders { subject: String },

    /// Somebody is subscribed but no reply came within the timeout.
    #[error("no reply on {subject} within {after_ms} ms")]
    Timeout { subject: String, after_ms: u64 },

    /// The subject breaks the rules of [`crate::subject`].
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject { subject: String, reason: &'static str },

    /// The queue group name breaks the rules of [`crate::subject::validate_queue_group`].
    #[error("invalid queue group {group:?}: {reason}")]
    InvalidQueueGroup { group: String, reason: &'static str },

    /// The payload is larger than the bus carries: the server's `max_payload`
    /// in cluster mode, [`crate::PAYLOAD_BYTES_MAX`] in embedded mode (the
    /// same number unless the server is configured otherwise).
    #[error("payload of {bytes} bytes on {subject} exceeds the limit of {limit} bytes")]
    PayloadTooLarge { subject: String, bytes: usize, limit: usize },

    /// [`crate::Bus::respond`] was called on a message that was published, not requested.
    #[error("message on {subject} has no reply subject")]
    NoReplySubject { subject: String },

    /// The connection is gone for good (the client was closed or dropped).
    #[error("the bus is closed")]
    Closed,
}

impl Error {
    /// Whether trying the same call again later may succeed. Invalid input
    /// (subjects, groups, payload size, a missing reply subject) never will.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Publish { .. }
            | Error::Subscribe { .. }
            | Error::Request { .. }
            | Error::Flush { .. }
            | Error::NoResponders { .. }
            | Error::Timeout { .. } => true,
            Error::InvalidSubject { .. }
            | Error::InvalidQueueGroup { .. }
            | Error::PayloadTooLarge { .. }
            | Error::NoReplySubject { .. }
            | Error::Closed => false,
        }
    }
}

/// The result of every fallible bus call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
