//! [`Config`]: the settings of one edge process (`chorus edge --config edge.toml`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use chorus_log_node::network::tls::TlsPaths;
pub use chorus_projections::projector::BusConfig;

/// Where OTP codes go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SmsConfig {
    /// `chorus dev` only (refused elsewhere, see [`Config::dev`]): print each
    /// text on standard output (never in the tracing logs), and append
    /// `{"phone", "text", "at_ms"}` as a JSON line to `file` if set.
    Log {
        #[serde(default)]
        file: Option<PathBuf>,
    },
    /// Tests and benchmarks: only the JSON line, to `path` (a file of
    /// codes: keep it private).
    File { path: PathBuf },
    /// Production: `POST url` with the JSON body `{"phone", "text", "at_ms"}`,
    /// signed with HMAC-SHA256 under the shared secret in `secret_file`
    /// (headers `X-Chorus-Timestamp` and `X-Chorus-Signature`; see
    /// [`crate::sms`]). `url` must be https (http only to a loopback host).
    Webhook { url: String, secret_file: PathBuf },
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig::Log { file: None }
    }
}

/// One edge's settings. `Default` fits `chorus dev` (with `dev` set).
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
    /// Client API addresses of log nodes to start from (any subset of the
    /// cluster). The same key as the projector's.
    #[serde(alias = "log_seeds")]
    pub log_nodes: Vec<String>,
    /// The edge's identity towards the log: the cluster CA and a certificate
    /// of role `edge` (`chorus certs --role edge`), the one role that may append.
    pub log_tls: TlsPaths,
    /// The log client's timeouts, backoff and queue bound (`[log_client]`;
    /// its `append_deadline_ms` is replaced by the edge's own below).
    pub log_client: chorus_log_node::ClientConfig,
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
    /// Most connections at once, handshakes included; beyond, new ones are
    /// refused.
    pub connections_max: usize,
    /// Most connections (handshakes included) from one source address (an
    /// IPv6 address counts by its /64). Addresses are validated first (QUIC
    /// Retry), so a spoofed source cannot use up another's share.
    pub connections_per_address_max: usize,
    /// Most logged-in connections of one device, and of one user: a login
    /// beyond closes that device's (or user's) oldest connection, which is
    /// usually one whose network went away and that the edge has not yet
    /// timed out.
    pub connections_per_device_max: usize,
    pub connections_per_user_max: usize,
    /// Items waiting for a client's delivery stream before the connection is
    /// closed as too slow (it reconnects and syncs).
    pub delivery_queue_max: usize,
    /// Bytes one connection may hold queued for its client: items routed to
    /// it, records a sync or gap fill recovered, and encoded frames waiting
    /// for the delivery stream. A client that stops reading holds at most
    /// this much at the edge: the edge stops taking work for it when its
    /// delivery stream is full, and closes it (`Unavailable`, "too slow")
    /// when live items would overflow; its client reconnects and syncs, so
    /// nothing is lost.
    pub delivery_queue_bytes_max: usize,
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
    /// Set by `chorus dev` only (never read from a file or the environment):
    /// allows the `log` SMS sink, which prints codes.
    #[serde(skip)]
    pub dev: bool,
    /// Where this process serves Prometheus metrics (`GET /metrics`, plain
    /// HTTP; see `docs/metrics.md`). None: not served. Also
    /// `CHORUS_METRICS_ADDR` and `--metrics-addr`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// An OpenTelemetry collector's OTLP/HTTP traces endpoint (e.g.
    /// `http://127.0.0.1:4318/v1/traces`): spans are exported there when set
    /// (the `chorus` binary must be built with the `otlp` feature). None: no
    /// export. Also `CHORUS_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// Media uploads and downloads (issue 14): the object store, the
    /// staging directory, the limits (`[media]`, see [`crate::media::MediaConfig`]).
    pub media: crate::media::MediaConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7300)),
            cert: PathBuf::from("data/tls/edge-server-dev.pem"),
            key: PathBuf::from("data/tls/edge-server-dev.key"),
            log_nodes: vec!["127.0.0.1:7100".into()],
            log_tls: TlsPaths {
                ca: PathBuf::from("data/tls/ca.pem"),
                cert: PathBuf::from("data/tls/edge-dev.pem"),
                key: PathBuf::from("data/tls/edge-dev.key"),
            },
            log_client: chorus_log_node::ClientConfig::default(),
            bus: BusConfig::Local,
            view_key: PathBuf::from("data/tls/view.key"),
            sms: SmsConfig::default(),
            session: crate::session::Config::default(),
            keep_alive_ms: 3_000,
            idle_timeout_ms: 10_000,
            view_timeout_ms: 3_000,
            append_deadline_ms: 10_000,
            connections_max: 100_000,
            connections_per_address_max: 64,
            connections_per_device_max: 4,
            connections_per_user_max: 32,
            delivery_queue_max: 4_096,
            delivery_queue_bytes_max: 4 << 20,
            stream_receive_window_bytes: 96 << 10,
            receive_window_bytes: 128 << 10,
            send_window_bytes: 128 << 10,
            udp_recv_buffer_bytes: 8 << 20,
            udp_send_buffer_bytes: 4 << 20,
            dev: false,
            metrics_addr: None,
            otlp_endpoint: None,
            media: crate::media::MediaConfig::default(),
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
        self.media.validate()?;
        self.log_client.validate()?;
        if self.log_nodes.is_empty() {
            return Err("log_nodes is empty".into());
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
        if self.connections_per_address_max == 0
            || self.connections_per_device_max == 0
            || self.connections_per_user_max == 0
        {
            return Err(
                "connections_per_address_max, connections_per_device_max and connections_per_user_max must be positive"
                    .into(),
            );
        }
        let frame_max = u32::try_from(chorus_schema::MAX_CIPHERTEXT_BYTES + 4096).unwrap_or(u32::MAX);
        // A quarter each for routed items and recovered records, half for the
        // delivery stream: each part must hold a few of the largest frames.
        let budget_min = 16 * frame_max as usize;
        if self.delivery_queue_bytes_max < budget_min || u32::try_from(self.delivery_queue_bytes_max).is_err() {
            return Err(format!(
                "delivery_queue_bytes_max must be between {budget_min} (16 frames of the largest ciphertext) and 4 GiB"
            ));
        }
        if self.stream_receive_window_bytes < frame_max || self.receive_window_bytes < self.stream_receive_window_bytes
        {
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
        match &self.sms {
            SmsConfig::Log { .. } if !self.dev => Err(
                "the `log` SMS sink prints codes and exists only inside `chorus dev`; configure `[sms] kind = \"webhook\"` (or `kind = \"file\"` for tests)".into(),
            ),
            SmsConfig::Webhook { url, .. } => crate::sms::check_webhook_url(url),
            _ => Ok(()),
        }
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
        let dev = Config { dev: true, ..Config::default() };
        assert_eq!(dev.validate(), Ok(()));
        // The log sink outside `chorus dev`.
        let e = Config::default().validate().unwrap_err();
        assert!(e.contains("`log` SMS sink") && e.contains("chorus dev"), "{e}");
        let file = Config { sms: SmsConfig::File { path: "sms.jsonl".into() }, ..Config::default() };
        assert_eq!(file.validate(), Ok(()));
        let bad = Config { keep_alive_ms: 20_000, ..dev.clone() };
        assert!(bad.validate().unwrap_err().contains("keep_alive_ms"));
        let bad = Config { stream_receive_window_bytes: 16 << 10, ..dev.clone() };
        assert!(bad.validate().unwrap_err().contains("stream_receive_window_bytes"));
        let bad = Config { delivery_queue_bytes_max: 64 << 10, ..dev.clone() };
        assert!(bad.validate().unwrap_err().contains("delivery_queue_bytes_max"));
        let bad = Config { connections_per_address_max: 0, ..dev.clone() };
        assert!(bad.validate().unwrap_err().contains("connections_per_address_max"));
        let webhook = |url: &str| Config {
            sms: SmsConfig::Webhook { url: url.into(), secret_file: "s".into() },
            ..Config::default()
        };
        for bad in ["ftp://x", "http://sms.example.com/send", "not a url"] {
            assert!(webhook(bad).validate().unwrap_err().contains("webhook"), "{bad}");
        }
        assert_eq!(webhook("https://sms.example.com/send").validate(), Ok(()));
        let toml = r#"
            listen = "127.0.0.1:9000"
            [sms]
            kind = "webhook"
            url = "http://127.0.0.1:8080/sms"
            secret_file = "/etc/chorus/sms.secret"
        "#;
        let c: Config = toml::from_str(toml).unwrap();
        assert_eq!(
            c.sms,
            SmsConfig::Webhook {
                url: "http://127.0.0.1:8080/sms".into(),
                secret_file: "/etc/chorus/sms.secret".into()
            }
        );
        assert_eq!(c.listen.port(), 9000);
        assert!(!c.dev, "dev is never read from a file");
        assert!(toml::from_str::<Config>("dev = true").is_err());
        let c: Config = toml::from_str("[sms]\nkind = \"log\"").unwrap();
        assert_eq!(c.sms, SmsConfig::Log { file: None });
    }
}
