//! Registration: one-shot exchanges with the first edge that answers.

use chorus_schema::{ClientFrame, ServerFrame};

use crate::config::ClientConfig;
use crate::link::{endpoint, quic_config, Link};
use crate::types::{Credentials, Error, Result};

/// A one-shot exchange: the first edge that answers.
async fn one_shot(config: &ClientConfig, frame: ClientFrame) -> Result<ServerFrame> {
    let endpoint = endpoint()?;
    let quic = quic_config(config)?;
    let mut last = Error::Connection("no edges configured".into());
    for edge in &config.edges {
        match Link::open_within(&endpoint, &quic, edge, config.connect_timeout_ms).await {
            Ok(mut link) => {
                link.write(&frame).await?;
                let reply = link.read().await;
                link.conn.close(0u32.into(), b"done");
                return match reply? {
                    ServerFrame::Error { code, message, retry_after_ms, .. } => {
                        Err(Error::Refused { code, message, retry_after_ms })
                    }
                    other => Ok(other),
                };
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Asks an edge to text a one-time code to `phone`. Returns how long it is valid (ms).
///
/// # Errors
/// [`Error::Refused`] (bad phone number, rate limits) or a connection error.
pub async fn request_otp(config: &ClientConfig, phone: &str) -> Result<u64> {
    match one_shot(config, ClientFrame::RequestOtp { phone: phone.to_owned() }).await? {
        ServerFrame::OtpSent { expires_in_ms, .. } => Ok(expires_in_ms),
        other => Err(Error::Protocol(format!("expected OtpSent, got {}", other.kind()))),
    }
}

/// Registers this device with the texted `code` (on the same edge that sent
/// it: codes are kept per edge). `identity_key` is the device's public
/// identity key (E2EE); empty until the app has one.
///
/// # Errors
/// [`Error::Refused`] (`BadOtp`, `OtpExpired`, `TooManyAttempts`, …) or a connection error.
pub async fn verify_otp(
    config: &ClientConfig,
    phone: &str,
    code: &str,
    device_name: &str,
    identity_key: Vec<u8>,
) -> Result<Credentials> {
    verify_otp_with_pin(config, phone, code, device_name, identity_key, None).await
}

/// [`verify_otp`] for a number whose account has a registration PIN
/// ([`crate::Client::set_pin`]): without it (or with a wrong one) registration is
/// refused with `PinRequired`, and a wrong one counts as a wrong code.
///
/// # Errors
/// As [`verify_otp`], and `PinRequired`, `PhoneLocked`.
pub async fn verify_otp_with_pin(
    config: &ClientConfig,
    phone: &str,
    code: &str,
    device_name: &str,
    identity_key: Vec<u8>,
    pin: Option<&str>,
) -> Result<Credentials> {
    let frame = ClientFrame::VerifyOtp {
        phone: phone.to_owned(),
        code: code.to_owned(),
        device_name: device_name.to_owned(),
        identity_key,
        pin: pin.map(str::to_owned),
    };
    match one_shot(config, frame).await? {
        ServerFrame::Registered { user, device, token } => Ok(Credentials { user, device, token }),
        other => Err(Error::Protocol(format!("expected Registered, got {}", other.kind()))),
    }
}

// ---- linked devices (issue 12) ----

/// A new device waiting to be linked by a logged-in device of the user:
/// show [`Pairing::code`] (as a QR code, or as text), then [`Pairing::wait`].
pub struct Pairing {
    link: Link,
    code: String,
    expires_in_ms: u64,
    _endpoint: quinn::Endpoint,
}

impl std::fmt::Debug for Pairing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pairing").field("expires_in_ms", &self.expires_in_ms).finish_non_exhaustive()
    }
}

/// Asks an edge for a pairing code for this new device (`device_name`, its
/// public `identity_key`). The code is single use and short-lived
/// ([`Pairing::expires_in_ms`]); a logged-in device of the user links this
/// one with it ([`crate::Client::link_device`], at any edge).
///
/// # Errors
/// [`Error::Refused`] (rate limits, `Unavailable`) or a connection error.
pub async fn pair_request(config: &ClientConfig, device_name: &str, identity_key: Vec<u8>) -> Result<Pairing> {
    let endpoint = endpoint()?;
    let quic = quic_config(config)?;
    let frame = ClientFrame::PairRequest { device_name: device_name.to_owned(), identity_key };
    if let Err(e) = frame.validate() {
        let code = chorus_schema::EdgeErrorCode::for_decode_error(&e);
        return Err(Error::Refused { code, message: e.to_string(), retry_after_ms: None });
    }
    let mut last = Error::Connection("no edges configured".into());
    for edge in &config.edges {
        let mut link = match Link::open_within(&endpoint, &quic, edge, config.connect_timeout_ms).await {
            Ok(link) => link,
            Err(e) => {
                last = e;
                continue;
            }
        };
        link.write(&frame).await?;
        return match link.read().await? {
            ServerFrame::PairCode { code, expires_in_ms } => {
                Ok(Pairing { link, code, expires_in_ms, _endpoint: endpoint })
            }
            ServerFrame::Error { code, message, retry_after_ms, .. } => {
                link.conn.close(0u32.into(), b"done");
                Err(Error::Refused { code, message, retry_after_ms })
            }
            other => Err(Error::Protocol(format!("expected PairCode, got {}", other.kind()))),
        };
    }
    Err(last)
}

impl Pairing {
    /// The code to show the logged-in device (`XXXXX-XXXXX`).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// How long the code links this device.
    pub fn expires_in_ms(&self) -> u64 {
        self.expires_in_ms
    }

    /// Waits until a logged-in device links this one: its credentials, to
    /// log in with ([`crate::Client::connect`]) like any device. Gives up a
    /// little after the code expires.
    ///
    /// # Errors
    /// [`Error::Refused`] (`TooManyDevices` when the user has no room,
    /// `BadPairingCode` when the code expired), or [`Error::Connection`]
    /// (`no link before the code expired`).
    pub async fn wait(mut self) -> Result<Credentials> {
        let bound = std::time::Duration::from_millis(self.expires_in_ms.saturating_add(5_000));
        let answer = tokio::time::timeout(bound, async {
            loop {
                match self.link.read().await? {
                    ServerFrame::Registered { user, device, token } => return Ok(Credentials { user, device, token }),
                    ServerFrame::Error { code, message, retry_after_ms, .. } => {
                        return Err(Error::Refused { code, message, retry_after_ms })
                    }
                    // Nothing else is meant for a waiting device.
                    _ => {}
                }
            }
        })
        .await;
        self.link.conn.close(0u32.into(), b"done");
        answer.unwrap_or_else(|_| Err(Error::Connection("no link before the code expired".into())))
    }
}
