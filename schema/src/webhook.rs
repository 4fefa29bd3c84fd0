//! How chorus signs the webhooks it sends (the SMS webhook of the edges and
//! the push webhook of the notifier), and how a receiver checks them: an
//! HMAC-SHA256 with the shared secret over `"<timestamp>.<body>"`, sent as
//! [`TIMESTAMP_HEADER`] (milliseconds since the Unix epoch) and
//! [`SIGNATURE_HEADER`] (`sha256=` and the lowercase hex of the MAC). A
//! receiver refuses a bad signature and a timestamp far from its clock (a
//! replayed request): [`verify`].

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header with the request's timestamp (ms since the Unix epoch).
pub const TIMESTAMP_HEADER: &str = "X-Chorus-Timestamp";
/// The header with the request's signature (see [`sign`]).
pub const SIGNATURE_HEADER: &str = "X-Chorus-Signature";

/// Why [`verify`] refused a webhook request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("timestamp {at_ms} is more than {tolerance_ms} ms from now ({now_ms}): a replay?")]
    Stale { at_ms: u64, now_ms: u64, tolerance_ms: u64 },
    #[error("signature does not match")]
    BadSignature,
}

#[expect(clippy::expect_used, reason = "HMAC takes a key of any length")]
fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The [`SIGNATURE_HEADER`] value of `body` sent at `at_ms`.
pub fn sign(secret: &[u8], at_ms: u64, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, &at_ms.to_string(), body).finalize().into_bytes()))
}

/// What a receiver does with a request: checks the signature (constant time)
/// and that the timestamp is within `tolerance_ms` of `now_ms`.
///
/// # Errors
/// [`VerifyError`] naming what is wrong.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_ms: u64,
    tolerance_ms: u64,
) -> Result<(), VerifyError> {
    let at_ms: u64 = timestamp.parse().map_err(|_| VerifyError::Malformed(TIMESTAMP_HEADER))?;
    let sig = signature
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(VerifyError::Malformed(SIGNATURE_HEADER))?;
    mac(secret, timestamp, body).verify_slice(&sig).map_err(|_| VerifyError::BadSignature)?;
    if at_ms.abs_diff(now_ms) > tolerance_ms {
        return Err(VerifyError::Stale { at_ms, now_ms, tolerance_ms });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_secret_body_and_time() {
        let secret = b"a secret of at least thirty-two bytes";
        let sig = sign(secret, 1_000, b"body");
        assert_eq!(verify(secret, "1000", &sig, b"body", 1_500, 1_000), Ok(()));
        assert_eq!(verify(b"another secret", "1000", &sig, b"body", 1_500, 1_000), Err(VerifyError::BadSignature));
        assert_eq!(verify(secret, "1000", &sig, b"bodY", 1_500, 1_000), Err(VerifyError::BadSignature));
        assert_eq!(verify(secret, "1001", &sig, b"body", 1_500, 1_000), Err(VerifyError::BadSignature));
        assert!(matches!(verify(secret, "1000", &sig, b"body", 9_000, 1_000), Err(VerifyError::Stale { .. })));
        assert_eq!(verify(secret, "x", &sig, b"body", 1_000, 1_000), Err(VerifyError::Malformed(TIMESTAMP_HEADER)));
        assert_eq!(
            verify(secret, "1000", "md5=00", b"body", 1_000, 1_000),
            Err(VerifyError::Malformed(SIGNATURE_HEADER))
        );
    }
}
