//! The edges of a run: `chorus edge` processes (each its own OS process, UDP
//! port, certificate and SMS file sink) connected to the log-nodes and the
//! nats-server, and registration of devices through them.
//!
//! The same approach as the end-to-end stack (`tools/src/stack.rs`), in this
//! crate because `chorus-tools` depends on it, not the other way round.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use chorus_client::{self as client, ClientConfig, Credentials};
use chorus_edge::config::SmsConfig;
use chorus_log_node::network::tls;
use chorus_projections::bus_auth::{BusRole, Provisioned};

use crate::error::{io, Error, Result};

/// The log line an edge prints once it serves.
const LISTENING: &str = "edge listening";

/// One `chorus edge` process.
#[derive(Debug)]
pub struct EdgeProc {
    pub index: usize,
    pub dir: PathBuf,
    /// The UDP address clients connect to (kept across restarts).
    pub listen: String,
    pub config: chorus_edge::Config,
    config_path: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
}

impl EdgeProc {
    /// Writes edge `index`'s certificate (from the cluster's CA in `tls_dir`)
    /// and config under `dir`; nothing is started.
    ///
    /// # Errors
    /// On IO failure or an invalid config.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        dir: &Path,
        binary: &Path,
        index: usize,
        listen: String,
        tls_dir: &Path,
        log_seeds: Vec<String>,
        bus: &Provisioned,
        nats_url: String,
        session: chorus_edge::session::Config,
    ) -> Result<EdgeProc> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let name = format!("edge-{index}");
        let server = tls::issue_edge_server(tls_dir, &name, &[])?;
        let config = chorus_edge::Config {
            listen: listen.parse().map_err(|e| Error::Invalid(format!("edge address {listen}: {e}")))?,
            cert: server.cert,
            key: server.key,
            log_seeds,
            log_tls: tls::issue(tls_dir, &tls::Principal::new(tls::Role::Edge, &name)?)?,
            bus: bus.bus(&nats_url, BusRole::Edge, &name),
            view_key: bus.view_key.clone(),
            sms: SmsConfig::File { path: dir.join("sms.jsonl") },
            session,
            // An append stuck on a dead log-node gives up (the client resends
            // with the same id) well before the SDK's own patience runs out.
            append_deadline_ms: 5_000,
            ..chorus_edge::Config::default()
        };
        config.validate().map_err(Error::Invalid)?;
        let config_path = dir.join("edge.toml");
        let text =
            toml::to_string(&config).map_err(|e| Error::Encode { what: "edge config", reason: e.to_string() })?;
        std::fs::write(&config_path, text).map_err(io("write", &config_path))?;
        Ok(EdgeProc {
            index,
            dir: dir.to_path_buf(),
            listen,
            config,
            config_path,
            binary: binary.to_path_buf(),
            child: None,
        })
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("edge.log")
    }

    /// Where this edge texts its codes.
    pub fn sms_path(&self) -> PathBuf {
        self.dir.join("sms.jsonl")
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// How many times the edge has said it listens (once per incarnation).
    pub fn listening_count(&self) -> usize {
        std::fs::read_to_string(self.log_path()).unwrap_or_default().matches(LISTENING).count()
    }

    /// Starts the process unless it runs.
    ///
    /// # Errors
    /// When it cannot be spawned.
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.child = Some(crate::services::spawn_logged(
            &self.binary,
            "edge",
            &self.config_path,
            &self.log_path(),
            "info,quinn=warn",
        )?);
        Ok(())
    }

    /// `kill -9` (whatever it is doing) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the edge has said it listens `count` times in all.
    ///
    /// # Errors
    /// When it exits or `timeout` passes first.
    pub async fn wait_listening(&mut self, count: usize, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.listening_count() >= count {
                return Ok(());
            }
            let running = self.is_running();
            if !running || tokio::time::Instant::now() > deadline {
                let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                return Err(Error::Cluster(format!(
                    "edge {} does not listen (running: {}): {}",
                    self.index,
                    running,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EdgeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Registers a new device of the user of `phone` through the edge at
/// `listen` (whose SMS file is `sms_path`): asks for a code, reads it from the
/// file, verifies it there. The user id is the phone's; the device id is
/// chosen by the edge.
///
/// # Errors
/// When the edge refuses or the code never arrives.
pub async fn register(listen: &str, sms_path: &Path, ca: &Path, phone: &str, device_name: &str) -> Result<Credentials> {
    let config = ClientConfig::new(vec![listen.to_owned()], ca.to_path_buf());
    let failed = |what: &str, e: client::Error| Error::Cluster(format!("registering {phone} at {listen}: {what}: {e}"));
    client::request_otp(&config, phone).await.map_err(|e| failed("request a code", e))?;
    let mut code = None;
    for _ in 0..200 {
        code = chorus_edge::sms::last_code(sms_path, phone);
        if code.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let code = code.ok_or_else(|| Error::Cluster(format!("no code texted to {phone} in {}", sms_path.display())))?;
    client::verify_otp(&config, phone, &code, device_name, vec![1; 32]).await.map_err(|e| failed("verify the code", e))
}
