//! The processes around the log: a projector (`chorus projector`) and edges
//! (`chorus edge`), each a real OS process that can be killed, and the
//! registration of devices through an edge.
//!
//! Their configuration files are written here and nowhere else
//! ([`projector_config`], [`edge_config`]): a renamed config field is fixed
//! in one place.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chorus_client::{self as client, ClientConfig, Credentials};
use chorus_edge::config::SmsConfig;
use chorus_log_node::network::tls::{self, Principal, Role};
use chorus_projections::bus_auth::{BusRole, Provisioned};
use chorus_projections::projector::Config as ProjectorConfig;

use crate::error::{io, write_toml, Error, Result};
use crate::process::Process;

/// The log line an edge prints once it serves (once per incarnation).
pub const EDGE_LISTENING: &str = "edge listening";
/// The log line a projector prints once its store is open and it serves view
/// queries (once per incarnation, at `info`).
pub const PROJECTOR_OPENED: &str = "projector opened";

/// The bus name of the projector (its NKey and its log-node certificate).
pub const PROJECTOR_NAME: &str = "projector";

/// The projector's configuration: tails `log_nodes` with a projector
/// certificate from the CA in `tls_dir`, publishes on the NATS at `nats_url`
/// with the credentials of [`PROJECTOR_NAME`], keeps its views under `dir`,
/// serves its metrics on a free loopback port.
///
/// # Errors
/// When the certificate cannot be issued or the config is invalid.
pub fn projector_config(
    dir: &Path,
    log_nodes: Vec<String>,
    tls_dir: &Path,
    bus: &Provisioned,
    nats_url: &str,
) -> Result<ProjectorConfig> {
    let config = ProjectorConfig {
        log_nodes,
        log_tls: tls::issue(tls_dir, &Principal::new(Role::Projector, PROJECTOR_NAME)?)?,
        view_key: bus.view_key.clone(),
        store_dir: dir.join("views"),
        bus: bus.bus(nats_url, BusRole::Projector, PROJECTOR_NAME),
        metrics_addr: Some(crate::ports::free_addr().map_err(io("find a free port on", "127.0.0.1"))?),
        ..ProjectorConfig::default()
    };
    config.validate().map_err(|e| Error::Invalid(format!("projector config: {e}")))?;
    Ok(config)
}

/// Edge `name`'s configuration: `template`'s tuning (session limits, caps,
/// queues, deadlines) with the wiring filled in: `listen`, a metrics address
/// (a free loopback port), a server
/// certificate from the edge CA and a log-node certificate from the CA in
/// `tls_dir`, the log seeds, the bus credentials of `name`, an SMS file sink
/// under `dir`.
///
/// # Errors
/// When a certificate cannot be issued or the config is invalid.
#[allow(clippy::too_many_arguments)]
pub fn edge_config(
    template: &chorus_edge::Config,
    dir: &Path,
    name: &str,
    listen: std::net::SocketAddr,
    tls_dir: &Path,
    log_nodes: Vec<String>,
    bus: &Provisioned,
    nats_url: &str,
) -> Result<chorus_edge::Config> {
    let server = tls::issue_edge_server(tls_dir, name, &[])?;
    let config = chorus_edge::Config {
        listen,
        cert: server.cert,
        key: server.key,
        log_nodes,
        log_tls: tls::issue(tls_dir, &Principal::new(Role::Edge, name)?)?,
        bus: bus.bus(nats_url, BusRole::Edge, name),
        view_key: bus.view_key.clone(),
        sms: SmsConfig::File { path: dir.join("sms.jsonl") },
        metrics_addr: Some(crate::ports::free_addr().map_err(io("find a free port on", "127.0.0.1"))?),
        // The edge's own media directory unless the template shares one.
        media: if template.media.dir == chorus_edge::media::MediaConfig::default().dir {
            chorus_edge::media::MediaConfig { dir: dir.join("media"), ..template.media.clone() }
        } else {
            template.media.clone()
        },
        ..template.clone()
    };
    config.validate().map_err(|e| Error::Invalid(format!("edge config: {e}")))?;
    Ok(config)
}

/// A `chorus projector` process with its own store directory.
#[derive(Debug)]
pub struct ProjectorProc {
    pub dir: PathBuf,
    pub config: ProjectorConfig,
    pub config_path: PathBuf,
    pub process: Process,
}

impl ProjectorProc {
    /// Writes `config` under `dir`; nothing is started.
    ///
    /// # Errors
    /// On IO failure.
    pub fn create(dir: &Path, binary: &Path, config: ProjectorConfig, log_filter: &str) -> Result<ProjectorProc> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let config_path = dir.join("projector.toml");
        write_toml("projector config", &config, &config_path)?;
        let process =
            Process::chorus("projector", binary, "projector", &config_path, dir.join("projector.log"), log_filter);
        Ok(ProjectorProc { dir: dir.to_path_buf(), config, config_path, process })
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// How many times the projector has opened its store and subscribed to
    /// the view queries (once per incarnation; needs `info` logs).
    pub fn opened_count(&self) -> usize {
        self.process.log_count(PROJECTOR_OPENED)
    }

    /// Starts the process unless it runs.
    ///
    /// # Errors
    /// When it cannot be spawned.
    pub fn start(&mut self) -> Result<()> {
        self.process.start().map(|_| ())
    }

    /// Starts the process unless it runs, and waits until it serves view
    /// queries (or `timeout` passes, or it exits: then it is left as it is).
    ///
    /// # Errors
    /// When it cannot be spawned.
    pub async fn start_and_wait(&mut self, timeout: Duration) -> Result<()> {
        let before = self.opened_count();
        self.start()?;
        let deadline = Instant::now() + timeout;
        while self.opened_count() <= before && Instant::now() < deadline && self.is_running() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// `kill -9` (mid-batch, whatever it was doing) and reap.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Stops the projector (`SIGTERM`), changes its configuration with `f`,
    /// writes it and starts it again, waiting up to `timeout` for it to serve
    /// (e.g. to turn push on: its `[push]`).
    ///
    /// # Errors
    /// When the configuration cannot be written or the process spawned.
    pub async fn reconfigure(&mut self, f: impl FnOnce(&mut ProjectorConfig), timeout: Duration) -> Result<()> {
        self.stop(Duration::from_secs(10));
        f(&mut self.config);
        write_toml("projector config", &self.config, &self.config_path)?;
        self.start_and_wait(timeout).await
    }

    /// `SIGTERM`, then waits up to `grace` for a clean exit (else `kill -9`).
    pub fn stop(&mut self, grace: Duration) {
        self.process.stop(grace);
    }
}

/// One `chorus edge` process.
#[derive(Debug)]
pub struct EdgeProc {
    pub index: usize,
    pub dir: PathBuf,
    /// The UDP address clients connect to (kept across restarts).
    pub listen: String,
    pub config: chorus_edge::Config,
    pub config_path: PathBuf,
    pub process: Process,
}

impl EdgeProc {
    /// Writes edge `index`'s `config` under `dir`; nothing is started.
    ///
    /// # Errors
    /// On IO failure.
    pub fn create(
        dir: &Path,
        binary: &Path,
        index: usize,
        config: chorus_edge::Config,
        log_filter: &str,
    ) -> Result<EdgeProc> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let config_path = dir.join("edge.toml");
        write_toml("edge config", &config, &config_path)?;
        let process =
            Process::chorus(format!("edge-{index}"), binary, "edge", &config_path, dir.join("edge.log"), log_filter);
        Ok(EdgeProc { index, dir: dir.to_path_buf(), listen: config.listen.to_string(), config, config_path, process })
    }

    pub fn log_path(&self) -> PathBuf {
        self.process.log_path().to_path_buf()
    }

    /// Where this edge texts its codes.
    pub fn sms_path(&self) -> PathBuf {
        self.dir.join("sms.jsonl")
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// How many times the edge has said it listens (once per incarnation).
    pub fn listening_count(&self) -> usize {
        self.process.log_count(EDGE_LISTENING)
    }

    /// Starts the process unless it runs.
    ///
    /// # Errors
    /// When it cannot be spawned.
    pub fn start(&mut self) -> Result<()> {
        self.process.start().map(|_| ())
    }

    /// `kill -9` (whatever it is doing) and reap.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Waits until the edge has said it listens `count` times in all.
    ///
    /// # Errors
    /// When it exits or `timeout` passes first.
    pub async fn wait_listening(&mut self, count: usize, timeout: Duration) -> Result<()> {
        self.process.wait_for_log(EDGE_LISTENING, count, timeout).await
    }

    /// Kills the edge, starts it again and waits until it listens.
    ///
    /// # Errors
    /// When it does not come back within `timeout`.
    pub async fn restart(&mut self, timeout: Duration) -> Result<()> {
        self.kill();
        let before = self.listening_count();
        self.start()?;
        self.wait_listening(before + 1, timeout).await
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
    // The text is written in the background: wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        match sms_code(sms_path, phone) {
            Ok(code) => break code,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    };
    client::verify_otp(&config, phone, &code, device_name, vec![1; 32]).await.map_err(|e| failed("verify the code", e))
}

/// The last code texted to `phone` in an SMS file sink.
///
/// # Errors
/// When there is none.
pub fn sms_code(path: &Path, phone: &str) -> Result<String> {
    chorus_edge::sms::last_code(path, phone)
        .ok_or_else(|| Error::Cluster(format!("no code texted to {phone} in {}", path.display())))
}
