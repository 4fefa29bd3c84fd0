//! [`SmsSink`]: where OTP texts go. Fire and forget: a lost text is a user
//! asking for a new code, never a lost message.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use crate::config::SmsConfig;

/// The gateway of an edge. Cheap to clone.
#[derive(Clone, Debug)]
pub enum SmsSink {
    /// Logs each text (development), and appends it as a JSON line to a file if set.
    Log { file: Option<Arc<std::sync::Mutex<PathBuf>>> },
    /// POSTs `{"phone", "text"}` as JSON to `url`.
    Webhook { url: String, http: reqwest::Client },
}

#[derive(Serialize)]
struct Text<'a> {
    phone: &'a str,
    text: &'a str,
    at_ms: u64,
}

/// Why a webhook send failed (logged; the user asks again).
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    #[error("sms webhook: {0}")]
    Http(#[from] reqwest::Error),
    #[error("sms webhook answered {0}")]
    Status(reqwest::StatusCode),
    #[error("sms file: {0}")]
    Io(#[from] std::io::Error),
}

impl SmsSink {
    /// The sink of a configuration.
    ///
    /// # Errors
    /// If the HTTP client cannot be built.
    pub fn new(config: &SmsConfig) -> Result<SmsSink, SmsError> {
        Ok(match config {
            SmsConfig::Log => SmsSink::Log { file: None },
            SmsConfig::File { path } => SmsSink::Log { file: Some(Arc::new(std::sync::Mutex::new(path.clone()))) },
            SmsConfig::Webhook { url } => SmsSink::Webhook {
                url: url.clone(),
                http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
            },
        })
    }

    /// Sends one text and waits for the gateway.
    ///
    /// # Errors
    /// When the gateway refuses or cannot be reached.
    pub async fn send(&self, phone: &str, text: &str) -> Result<(), SmsError> {
        let at_ms = crate::now_ms();
        match self {
            SmsSink::Log { file } => {
                info!(%phone, %text, "sms (development sink)");
                if let Some(file) = file {
                    let mut line = serde_json::to_vec(&Text { phone, text, at_ms }).expect("json of strings");
                    line.push(b'\n');
                    let path = file.lock().expect("sms file lock");
                    std::fs::OpenOptions::new().create(true).append(true).open(&*path)?.write_all(&line)?;
                }
                Ok(())
            }
            SmsSink::Webhook { url, http } => {
                let reply = http.post(url).json(&Text { phone, text, at_ms }).send().await?;
                if !reply.status().is_success() {
                    return Err(SmsError::Status(reply.status()));
                }
                Ok(())
            }
        }
    }

    /// Sends in the background, logging a failure.
    pub fn spawn_send(&self, phone: String, text: String) {
        let sink = self.clone();
        tokio::spawn(async move {
            if let Err(e) = sink.send(&phone, &text).await {
                warn!(%phone, error = %e, "otp text not sent");
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
        .filter(|v| v["phone"] == phone)
        .filter_map(|v| v["text"].as_str().and_then(|t| t.rsplit(' ').next()).map(str::to_owned))
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn webhook_posts_json_and_reports_refusals() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut bodies = Vec::new();
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
                bodies.push(String::from_utf8(buf).unwrap());
            }
            bodies
        });
        let sink = SmsSink::new(&SmsConfig::Webhook { url: format!("http://{addr}/sms") }).unwrap();
        sink.send("+15550001", "Your chorus code: 123456").await.unwrap();
        let err = sink.send("+15550001", "again").await.unwrap_err();
        assert!(matches!(err, SmsError::Status(s) if s.as_u16() == 500), "{err}");
        let bodies = server.await.unwrap();
        assert!(bodies[0].starts_with("POST /sms HTTP/1.1"), "{}", bodies[0]);
        let body: serde_json::Value = serde_json::from_str(bodies[0].split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["phone"], "+15550001");
        assert_eq!(body["text"], "Your chorus code: 123456");
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
