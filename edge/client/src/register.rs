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
