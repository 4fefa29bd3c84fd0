//! [`SmsSink`]: where OTP texts go. Fire and forget: a lost text is a user
//! asking for a new code, never a lost message.
//!
//! Codes and phone numbers never reach the tracing logs: a failed send is
//! logged without them.
//!
//! # The webhook
//! `POST url`, JSON body `{"phone", "text", "at_ms"}`, with two headers:
//! - `X-Chorus-Timestamp`: milliseconds since the Unix epoch when it was sent;
//! - `X-Chorus-Signature`: `sha256=` and the lowercase hex HMAC-SHA256, under
//!   the shared secret, of the timestamp, a `.`, and the body bytes.
//!
//! The gateway recomputes the HMAC over the timestamp header and the raw body,
//! compares in constant time, and refuses a timestamp more than a few minutes
//! from its clock (a replayed request). [`verify`] does exactly this. The URL
//! must be https (plain http only to a loopback host, e.g. a local relay);
//! the secret (at least 32 bytes) is read from `secret_file` at start.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::warn;

pub use chorus_schema::webhook::{sign, verify, VerifyError, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use crate::config::SmsConfig;

/// Shortest shared secret accepted.
pub const SECRET_BYTES_MIN: usize = 32;

/// The gateway of an edge. Cheap to clone.
#[derive(Clone)]
pub enum SmsSink {
    /// `chorus dev`: prints each text on standard output, and appends it as a
    /// JSON line to a file if set.
    Log { file: Option<Arc<std::sync::Mutex<PathBuf>>> },
    /// Appends each text as a JSON line to a file (tests).
    File { path: Arc<std::sync::Mutex<PathBuf>> },
    /// POSTs `{"phone", "text", "at_ms"}` as JSON to `url`, signed.
    Webhook { url: String, secret: Arc<Vec<u8>>, http: reqwest::Client },
}

impl std::fmt::Debug for SmsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmsSink::Log { .. } => f.write_str("SmsSink::Log"),
            SmsSink::File { path } => f.debug_struct("SmsSink::File").field("path", &*crate::lock(path)).finish(),
            SmsSink::Webhook { url, .. } => {
                f.debug_struct("SmsSink::Webhook").field("url", url).finish_non_exhaustive()
            }
        }
    }
}

#[derive(Serialize)]
struct Text<'a> {
    phone: &'a str,
    text: &'a str,
    at_ms: u64,
}

/// Why a sink could not be set up or a send failed (logged; the user asks again).
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    #[error("sms webhook: {0}")]
    Http(#[from] reqwest::Error),
    #[error("sms webhook answered {0}")]
    Status(reqwest::StatusCode),
    #[error("sms file: {0}")]
    Io(#[from] std::io::Error),
    #[error("sms webhook secret {path}: {reason}")]
    Secret { path: PathBuf, reason: String },
    #[error("{0}")]
    Url(String),
}

/// Checks a webhook URL: https, or http to a loopback host.
///
/// # Errors
/// A message saying why not.
pub fn check_webhook_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("sms webhook url {url:?}: {e}"))?;
    let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!("sms webhook url {url:?} must be https (plain http only to a loopback host)")),
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>, SmsError> {
    let err = |reason: String| SmsError::Secret { path: path.to_owned(), reason };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let secret = bytes.trim_ascii().to_vec();
    if secret.len() < SECRET_BYTES_MIN {
        return Err(err(format!("{} bytes; at least {SECRET_BYTES_MIN} are needed", secret.len())));
    }
    Ok(secret)
}

fn append_line(path: &std::sync::Mutex<PathBuf>, text: &Text<'_>) -> Result<(), SmsError> {
    #[expect(clippy::expect_used, reason = "a struct of strings and a number always serializes")]
    let mut line = serde_json::to_vec(text).expect("json of strings");
    line.push(b'\n');
    let path = crate::lock(path);
    std::fs::OpenOptions::new().create(true).append(true).open(&*path)?.write_all(&line)?;
    Ok(())
}

impl SmsSink {
    /// The sink of a configuration. (Whether the `log` sink is allowed is
    /// the config's check, [`crate::Config::validate`].)
    ///
    /// # Errors
    /// A webhook URL that is not https (or http to loopback), a secret file
    /// that cannot be read or is too short, or an HTTP client that cannot be
    /// built.
    pub fn new(config: &SmsConfig) -> Result<SmsSink, SmsError> {
        let shared = |p: &PathBuf| Arc::new(std::sync::Mutex::new(p.clone()));
        Ok(match config {
            SmsConfig::Log { file } => SmsSink::Log { file: file.as_ref().map(shared) },
            SmsConfig::File { path } => SmsSink::File { path: shared(path) },
            SmsConfig::Webhook { url, secret_file } => {
                check_webhook_url(url).map_err(SmsError::Url)?;
                SmsSink::Webhook {
                    url: url.clone(),
                    secret: Arc::new(read_secret(secret_file)?),
                    http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
                }
            }
        })
    }

    /// Sends one text and waits for the gateway.
    ///
    /// # Errors
    /// When the gateway refuses or cannot be reached.
    pub async fn send(&self, phone: &str, text: &str) -> Result<(), SmsError> {
        let at_ms = crate::now_ms();
        let body = Text { phone, text, at_ms };
        match self {
            SmsSink::Log { file } => {
                // Standard output, not tracing: codes stay out of the logs.
                println!("sms to {phone}: {text}");
                if let Some(file) = file {
                    append_line(file, &body)?;
                }
                Ok(())
            }
            SmsSink::File { path } => append_line(path, &body),
            SmsSink::Webhook { url, secret, http } => {
                #[expect(clippy::expect_used, reason = "a struct of strings and a number always serializes")]
                let bytes = serde_json::to_vec(&body).expect("json of strings");
                let reply = http
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(TIMESTAMP_HEADER, at_ms.to_string())
                    .header(SIGNATURE_HEADER, sign(secret, at_ms, &bytes))
                    .body(bytes)
                    .send()
                    .await?;
                if !reply.status().is_success() {
                    return Err(SmsError::Status(reply.status()));
                }
                Ok(())
            }
        }
    }

    /// Sends in the background, logging a failure (without the phone or text).
    pub fn spawn_send(&self, phone: String, text: String) {
        let sink = self.clone();
        tokio::spawn(async move {
            match sink.send(&phone, &text).await {
                Ok(()) => metrics::counter!(crate::metrics::SMS_SENT_TOTAL).increment(1),
                Err(e) => {
                    metrics::counter!(crate::metrics::SMS_FAILED_TOTAL).increment(1);
                    warn!(error = %e, "otp text not sent");
                }
            }
        });
    }
}

/// The last code texted to `phone` in the file of an [`SmsConfig::File`] sink
/// (development and tests: a code is the text's last word). `None` if the
/// file has none (yet: texts are written in the background).
pub fn last_code(path: &std::path::Path, phone: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("phone").is_some_and(|p| p == phone))
        .filter_map(|v| {
            v.get("text").and_then(serde_json::Value::as_str).and_then(|t| t.rsplit(' ').next()).map(str::to_owned)
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn secret_file(dir: &Path, secret: &[u8]) -> PathBuf {
        let path = dir.join("sms.secret");
        std::fs::write(&path, secret).unwrap();
        path
    }

    #[tokio::test]
    async fn webhook_posts_signed_json_and_reports_refusals() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            for status in ["200 OK", "500 Internal Server Error"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read until the JSON body's closing brace.
                while !buf.ends_with(b"}") {
                    let n = s.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "connection closed early");
                    buf.extend_from_slice(&chunk[..n]);
                }
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                s.write_all(reply.as_bytes()).await.unwrap();
                requests.push(String::from_utf8(buf).unwrap());
            }
            requests
        });
        let dir = tempfile::tempdir().unwrap();
        let secret = b"0123456789abcdef0123456789abcdef-shared";
        let config =
            SmsConfig::Webhook { url: format!("http://{addr}/sms"), secret_file: secret_file(dir.path(), secret) };
        let sink = SmsSink::new(&config).unwrap();
        sink.send("+15550001", "Your chorus code: 123456").await.unwrap();
        let err = sink.send("+15550001", "again").await.unwrap_err();
        assert!(matches!(err, SmsError::Status(s) if s.as_u16() == 500), "{err}");
        let requests = server.await.unwrap();
        let (head, body) = requests[0].split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /sms HTTP/1.1"), "{head}");
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    l.split_once(": ").filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_owned())
                })
                .unwrap_or_else(|| panic!("no {name} in {head}"))
        };
        let (timestamp, signature) = (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER));
        let now = crate::now_ms();
        // What a gateway checks: the signature over the timestamp and the raw body.
        assert_eq!(verify(secret, &timestamp, &signature, body.as_bytes(), now, 300_000), Ok(()));
        assert_eq!(
            verify(b"another secret of thirty-two bytes!!", &timestamp, &signature, body.as_bytes(), now, 300_000),
            Err(VerifyError::BadSignature)
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["phone"], "+15550001");
        assert_eq!(json["text"], "Your chorus code: 123456");
        assert_eq!(json["at_ms"].as_u64().unwrap().to_string(), timestamp);
    }

    #[test]
    fn signatures_bind_the_body_and_the_timestamp_and_expire() {
        let secret = [7u8; 32];
        let body = br#"{"phone":"+1","text":"Your chorus code: 000111","at_ms":1000}"#;
        let sig = sign(&secret, 1000, body);
        // A known answer: HMAC-SHA256(key = 32 × 0x07, "1000." + body).
        assert_eq!(sig, "sha256=f643e1dfe8f8e73c2ec3b8b77ccfb641c676bdff48c2d6589d1063a40e732d8e");
        assert_eq!(verify(&secret, "1000", &sig, body, 1000, 300_000), Ok(()));
        assert_eq!(verify(&secret, "1000", &sig, body, 301_000, 300_000), Ok(()));
        // A replay after the tolerance.
        assert!(matches!(verify(&secret, "1000", &sig, body, 301_001, 300_000), Err(VerifyError::Stale { .. })));
        // Another timestamp with the old signature, or another body.
        assert_eq!(verify(&secret, "2000", &sig, body, 2000, 300_000), Err(VerifyError::BadSignature));
        assert_eq!(verify(&secret, "1000", &sig, b"{}", 1000, 300_000), Err(VerifyError::BadSignature));
        assert_eq!(
            verify(&secret, "1000", &sig[7..], body, 1000, 300_000),
            Err(VerifyError::Malformed(SIGNATURE_HEADER))
        );
        assert_eq!(verify(&secret, "soon", &sig, body, 1000, 300_000), Err(VerifyError::Malformed(TIMESTAMP_HEADER)));
        assert_eq!(
            verify(&secret, "1000", "sha256=zz", body, 1000, 300_000),
            Err(VerifyError::Malformed(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn a_webhook_needs_https_and_a_long_enough_secret() {
        let dir = tempfile::tempdir().unwrap();
        let good = secret_file(dir.path(), &[b'k'; 40]);
        let webhook =
            |url: &str, secret_file: &Path| SmsConfig::Webhook { url: url.into(), secret_file: secret_file.to_owned() };
        for url in ["http://sms.example.com/x", "ftp://127.0.0.1/x", "http://10.0.0.1/x", "nonsense"] {
            let e = SmsSink::new(&webhook(url, &good)).unwrap_err();
            assert!(matches!(e, SmsError::Url(_)), "{url}: {e}");
        }
        for url in ["https://sms.example.com/x", "http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]/x"] {
            SmsSink::new(&webhook(url, &good)).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        let short = dir.path().join("short.secret");
        std::fs::write(&short, b"tooshort\n").unwrap();
        let e = SmsSink::new(&webhook("https://sms.example.com/x", &short)).unwrap_err();
        assert!(e.to_string().contains("at least 32"), "{e}");
        let e = SmsSink::new(&webhook("https://sms.example.com/x", &dir.path().join("missing"))).unwrap_err();
        assert!(matches!(e, SmsError::Secret { .. }), "{e}");
    }

    #[tokio::test]
    async fn file_sink_appends_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sms.jsonl");
        let sink = SmsSink::new(&SmsConfig::File { path: path.clone() }).unwrap();
        sink.send("+1", "a").await.unwrap();
        sink.send("+2", "b").await.unwrap();
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[1]["phone"].as_str(), lines[1]["text"].as_str()), (Some("+2"), Some("b")));
        sink.send("+1", "Your chorus code: 123456").await.unwrap();
        assert_eq!(last_code(&path, "+1").as_deref(), Some("123456"));
        assert_eq!(last_code(&path, "+3"), None);
    }
}
