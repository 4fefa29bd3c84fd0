//! [`Config`]: the settings of one edge process (`chorus edge --config edge.toml`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use chorus_log_node::network::tls::TlsPaths;
pub use chorus_projections::projector::BusConfig;

/// Where OTP codes go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SmsConfig {
    /// Development: log the text, and append `{"phone", "text", "at_ms"}` as a
    /// JSON line to `file` if set (tests and `chorus dev` read codes there).
    #[default]
    Log,
    /// Development with a file: as `Log`, plus the JSON line.
    File { path: PathBuf },
    /// Production: `POST url` with the JSON body `{"phone", "text"}`.
    Webhook { url: String },
}

/// One edge's settings. `Default` fits `chorus dev`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The UDP address clients connect to (QUIC, ALPN `chorus/1`).
    pub listen: SocketAddr,
    /// This edge's server certificate and key (PEM), of the **edge CA**
    /// (`chorus certs --role edge-server`); clients verify it. Nothing in the
    /// cluster trusts that CA.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Log-node client addresses to start from.
    pub log_seeds: Vec<String>,
    /// The edge's identity towards the log: the cluster CA and a certificate
    /// of role `edge` (`chorus certs --role edge`), the one role that may append.
    pub log_tls: TlsPaths,
    pub bus: BusConfig,
    /// The view key shared with the projectors (hex, mode 0600): view
    /// replies not sealed with it are refused (`chorus_projections::seal`).
    pub view_key: PathBuf,
    pub sms: SmsConfig,
    /// Per-connection limits.
    pub session: crate::session::Config,
    /// QUIC keep-alive interval and idle timeout: a silent peer is dropped
    /// after `idle_timeout_ms`.
    pub keep_alive_ms: u64,
    pub idle_timeout_ms: u64,
    /// How long a view query (token check, sync page, recipient check) may take.
    pub view_timeout_ms: u64,
    /// How long one append may keep retrying inside the log client; past it the
    /// client gets `Unavailable` and resends with the same `client_msg_id`.
    pub append_deadline_ms: u64,
    /// Most connections at once; beyond, new ones are refused.
    pub connections_max: usize,
    /// Frames waiting for a client's delivery stream before the connection is
    /// closed as too slow (it reconnects and syncs).
    pub delivery_queue_max: usize,
    /// QUIC flow-control windows of one connection: what a client may send
    /// ahead of the edge reading it (on its control stream, and in total), and
    /// what the edge keeps in flight towards it unacknowledged. They bound the
    /// memory a connection can hold in quinn, so they are sized for a
    /// messaging connection that is idle most of the time, not for bulk
    /// transfer: one frame of the largest ciphertext fits, and the edge reads
    /// on while a longer frame arrives.
    pub stream_receive_window_bytes: u32,
    pub receive_window_bytes: u32,
    pub send_window_bytes: u32,
    /// Kernel buffers of the edge's UDP socket (`SO_RCVBUF`, `SO_SNDBUF`).
    /// Every client shares this one socket: a burst of handshakes or
    /// keep-alives of thousands of connections must not overflow it (a lost
    /// handshake packet costs the client a retransmission timeout, ≥ 1 s).
    /// Linux caps them at `net.core.rmem_max` / `wmem_max`; the edge logs
    /// what it got.
    pub udp_recv_buffer_bytes: usize,
    pub udp_send_buffer_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7300".parse().expect("address"),
            cert: PathBuf::from("data/tls/edge-server-dev.pem"),
            key: PathBuf::from("data/tls/edge-server-dev.key"),
            log_seeds: vec!["127.0.0.1:7100".into()],
            log_tls: TlsPaths {
                ca: PathBuf::from("data/tls/ca.pem"),
                cert: PathBuf::from("data/tls/edge-dev.pem"),
                key: PathBuf::from("data/tls/edge-dev.key"),
            },
            bus: BusConfig::Local,
            view_key: PathBuf::from("data/tls/view.key"),
            sms: SmsConfig::Log,
            session: crate::session::Config::default(),
            keep_alive_ms: 3_000,
            idle_timeout_ms: 10_000,
            view_timeout_ms: 3_000,
            append_deadline_ms: 10_000,
            connections_max: 100_000,
            delivery_queue_max: 4_096,
            stream_receive_window_bytes: 96 << 10,
            receive_window_bytes: 128 << 10,
            send_window_bytes: 128 << 10,
            udp_recv_buffer_bytes: 8 << 20,
            udp_send_buffer_bytes: 4 << 20,
        }
    }
}

impl Config {
    /// Checks the settings.
    ///
    /// # Errors
    /// A message naming the first bad setting.
    pub fn validate(&self) -> Result<(), String> {
        self.session.validate()?;
        if self.log_seeds.is_empty() {
            return Err("log_seeds is empty".into());
        }
        if self.keep_alive_ms == 0 || self.keep_alive_ms >= self.idle_timeout_ms {
            return Err("keep_alive_ms must be positive and below idle_timeout_ms".into());
        }
        if self.view_timeout_ms == 0 || self.append_deadline_ms == 0 {
            return Err("view_timeout_ms and append_deadline_ms must be positive".into());
        }
        if self.connections_max == 0 || self.delivery_queue_max == 0 {
            return Err("connections_max and delivery_queue_max must be positive".into());
        }
        let frame_max = chorus_schema::MAX_CIPHERTEXT_BYTES as u32 + 4096;
        if self.stream_receive_window_bytes < frame_max || self.receive_window_bytes < self.stream_receive_window_bytes {
            return Err(format!(
                "stream_receive_window_bytes must be at least {frame_max} (a frame of the largest ciphertext) and at most receive_window_bytes"
            ));
        }
        if self.send_window_bytes < frame_max {
            return Err(format!("send_window_bytes must be at least {frame_max} (a frame of the largest ciphertext)"));
        }
        if self.udp_recv_buffer_bytes == 0 || self.udp_send_buffer_bytes == 0 {
            return Err("udp_recv_buffer_bytes and udp_send_buffer_bytes must be positive".into());
        }
        if let SmsConfig::Webhook { url } = &self.sms {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("sms webhook url {url:?} is not http(s)"));
            }
        }
        Ok(())
    }

    pub(crate) fn view_timeout(&self) -> Duration {
        Duration::from_millis(self.view_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_settings_do_not() {
        assert_eq!(Config::default().validate(), Ok(()));
        let bad = Config { keep_alive_ms: 20_000, ..Config::default() };
        assert!(bad.validate().unwrap_err().contains("keep_alive_ms"));
        let bad = Config { stream_receive_window_bytes: 16 << 10, ..Config::default() };
        assert!(bad.validate().unwrap_err().contains("stream_receive_window_bytes"));
        let bad = Config { sms: SmsConfig::Webhook { url: "ftp://x".into() }, ..Config::default() };
        assert!(bad.validate().unwrap_err().contains("webhook"));
        let toml = r#"
            listen = "127.0.0.1:9000"
            [sms]
            kind = "webhook"
            url = "http://127.0.0.1:8080/sms"
        "#;
        let c: Config = toml::from_str(toml).unwrap();
        assert_eq!(c.sms, SmsConfig::Webhook { url: "http://127.0.0.1:8080/sms".into() });
        assert_eq!(c.listen.port(), 9000);
    }
}
