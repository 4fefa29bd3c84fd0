//! The log client's settings: every timeout, deadline, backoff and queue bound
//! in one serde struct with `_ms` fields, so that an edge, a projector or a tool
//! takes it from its TOML (`[log_client]`) and every field may be left out.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::router::Policy;

/// Settings of a [`LogClient`](super::LogClient).
///
/// Appends wait for room in their group's queue (back-pressure) and give up
/// with [`Error::Overloaded`](super::Error::Overloaded) only if the queue is
/// still full at their deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Bound on one QUIC handshake with a node. A dead node costs a request
    /// to it this long, and delays no request to another node.
    pub connect_timeout_ms: u64,
    /// Bound on one attempt of a routed request (connect, send, answer). A
    /// killed node's connection looks alive until QUIC's idle timeout; after
    /// this long the router tries another node (a retried append is safe: the
    /// log deduplicates it by its `client_msg_id`).
    pub attempt_timeout_ms: u64,
    /// Bound on a request to one named node (`request`, `status`,
    /// `read_from`), and the deadline of a routed `read`.
    pub request_timeout_ms: u64,
    /// How long an append (or a membership request) keeps trying, from the
    /// call, queueing included. Past it the append fails `UnknownOutcome` if
    /// it was sent at least once, else `Unavailable` or `Overloaded`.
    pub append_deadline_ms: u64,
    /// First pause before retrying a failed attempt; it doubles with each
    /// further failure up to `backoff_max_ms`. A `NotLeader` hint is followed
    /// at once.
    pub backoff_min_ms: u64,
    /// Longest pause between two attempts: while the others elect a dead
    /// leader's successor, they are asked this often.
    pub backoff_max_ms: u64,
    /// Least time between two leader sweeps (`refresh_leaders` asks every
    /// node for its status): callers on a failure path may call it in a loop.
    pub leader_refresh_ms: u64,
    /// Most commands the batcher puts in one `Append` frame.
    pub batch_commands_max: usize,
    /// Batches of one group in flight at once. The leader merges the batches
    /// in flight into its Raft entries, so a few suffice.
    pub batches_in_flight_max: usize,
    /// Appends waiting in one group's queue for a batch. A full queue makes
    /// `append` wait (back-pressure), up to its deadline.
    pub queue_commands_max: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout_ms: 3_000,
            attempt_timeout_ms: 2_000,
            request_timeout_ms: 15_000,
            append_deadline_ms: 20_000,
            backoff_min_ms: 10,
            backoff_max_ms: 100,
            leader_refresh_ms: 100,
            batch_commands_max: 512,
            batches_in_flight_max: 2,
            queue_commands_max: 16_384,
        }
    }
}

impl ClientConfig {
    /// Checks that every bound can be met.
    ///
    /// # Errors
    /// A sentence naming the first field out of range.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("attempt_timeout_ms", self.attempt_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("append_deadline_ms", self.append_deadline_ms),
            ("batch_commands_max", self.batch_commands_max as u64),
            ("batches_in_flight_max", self.batches_in_flight_max as u64),
            ("queue_commands_max", self.queue_commands_max as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("log client: {name} must be positive"));
        }
        if self.backoff_min_ms > self.backoff_max_ms {
            return Err(format!(
                "log client: backoff_min_ms ({}) exceeds backoff_max_ms ({})",
                self.backoff_min_ms, self.backoff_max_ms
            ));
        }
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn append_deadline(&self) -> Duration {
        Duration::from_millis(self.append_deadline_ms)
    }

    /// The router's part of the settings.
    pub fn policy(&self) -> Policy {
        Policy {
            attempt_timeout_ms: self.attempt_timeout_ms,
            backoff_min_ms: self.backoff_min_ms,
            backoff_max_ms: self.backoff_max_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_may_be_left_out_and_unknown_ones_are_refused() {
        let c: ClientConfig = toml::from_str("append_deadline_ms = 3000\nqueue_commands_max = 8").unwrap();
        assert_eq!(c.append_deadline(), Duration::from_secs(3));
        assert_eq!(c.queue_commands_max, 8);
        assert_eq!(ClientConfig { append_deadline_ms: 3000, queue_commands_max: 8, ..ClientConfig::default() }, c);
        assert_eq!(toml::from_str::<ClientConfig>("").unwrap(), ClientConfig::default());
        assert!(toml::from_str::<ClientConfig>("append_deadline = 3").is_err(), "a field without _ms is a typo");
        assert!(ClientConfig::default().validate().is_ok());
        assert!(ClientConfig { queue_commands_max: 0, ..ClientConfig::default() }.validate().is_err());
        assert!(ClientConfig { backoff_min_ms: 9, backoff_max_ms: 8, ..ClientConfig::default() }.validate().is_err());
    }
}
