//! Named consumers' committed offsets (issue 13): the client side of the
//! `CommitOffsets` request. See [`crate::consumer`] for the consumer itself.

use chorus_schema::{Command, CommandBody, Key, Origin, Outcome, PartitionId, PartitionOffset, Request, Response};
use tokio::time::Instant;

use super::{describe, Error, LogClient, Result};

impl LogClient {
    /// Commits `offsets` of the named consumer `consumer` (each the next
    /// offset to read in its partition) and returns every committed offset
    /// of the consumer once the commit is applied. A committed offset only
    /// moves forward: a lower one is ignored (see [`LogClient::reset_offsets`]).
    ///
    /// # Errors
    /// [`Error::Refused`] for a bad name, a partition named twice or out of
    /// range (`InvalidCommand`: nothing committed), `Forbidden` for a
    /// certificate that may not commit; otherwise as [`LogClient::routed`]
    /// (an unknown outcome may be retried: commits are idempotent).
    pub async fn commit_offsets(&self, consumer: &str, offsets: &[PartitionOffset]) -> Result<Vec<PartitionOffset>> {
        self.offsets_request(consumer, offsets, false).await
    }

    /// The committed offsets of the named consumer `consumer`, by partition
    /// (partitions it never committed are absent). Read through the log: the
    /// answer follows every commit acknowledged before the call.
    ///
    /// # Errors
    /// As [`LogClient::commit_offsets`].
    pub async fn consumer_offsets(&self, consumer: &str) -> Result<Vec<PartitionOffset>> {
        self.offsets_request(consumer, &[], false).await
    }

    /// Sets the committed offsets of `consumer` in the given partitions to
    /// exactly these values, backwards too (an operator's rewind).
    ///
    /// # Errors
    /// As [`LogClient::commit_offsets`].
    pub async fn reset_offsets(&self, consumer: &str, offsets: &[PartitionOffset]) -> Result<Vec<PartitionOffset>> {
        self.offsets_request(consumer, offsets, true).await
    }

    /// The partition that keeps `consumer`'s offsets.
    pub fn consumer_partition(&self, consumer: &str) -> PartitionId {
        PartitionId::for_key(&Key::Consumer(chorus_schema::ConsumerKey::of(consumer)), self.partitions())
    }

    async fn offsets_request(
        &self,
        consumer: &str,
        offsets: &[PartitionOffset],
        reset: bool,
    ) -> Result<Vec<PartitionOffset>> {
        let body = CommandBody::CommitOffsets { consumer: consumer.to_owned(), offsets: offsets.to_vec(), reset };
        // Check here what the node would refuse, so a bad name is a clear refusal at once.
        Command { origin: Origin::default(), body }
            .validate()
            .map_err(|e| Error::Refused { code: chorus_schema::ErrorCode::InvalidCommand, message: e.to_string() })?;
        let group = self.group_of(self.consumer_partition(consumer));
        let req = Request::CommitOffsets { consumer: consumer.to_owned(), offsets: offsets.to_vec(), reset };
        let deadline = Instant::now() + self.inner.config.append_deadline();
        let expected = |r: &Response| matches!(r, Response::Appended { .. });
        match self.route(group, &req, true, deadline, expected).await? {
            Response::Appended { results } => match results.as_slice() {
                [Ok(Outcome::Offsets(now))] => Ok(now.clone()),
                [Err(r)] => {
                    Err(Error::Refused { code: chorus_schema::ErrorCode::InvalidCommand, message: r.to_string() })
                }
                other => Err(Error::Protocol(format!("unexpected commit results {other:?}"))),
            },
            other => Err(Error::Protocol(format!("unexpected {}", describe(&other)))),
        }
    }
}
