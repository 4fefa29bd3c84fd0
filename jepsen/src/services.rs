//! The processes around the log: a nats-server (the bus) and a projector
//! (`chorus projector`), each a real OS process the nemesis can kill.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_log_node::network::tls;
use chorus_projections::bus_auth::{BusRole, Provisioned};
use chorus_projections::projector::Config as ProjectorConfig;

use crate::error::{io, Error, Result};

/// Whether a `nats-server` binary is on `PATH`.
pub fn nats_installed() -> bool {
    Command::new("nats-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn free_tcp_port() -> Result<u16> {
    chorus_testkit::ports::free_port().map_err(io("find a free TCP port on", "127.0.0.1"))
}

/// A nats-server on a fixed loopback port (restarts reuse it).
#[derive(Debug)]
pub struct Nats {
    pub port: u16,
    /// Its configuration: TLS and the users with their permissions.
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Nats {
    /// Starts a server on a free port, logging to `log`.
    ///
    /// # Errors
    /// When it cannot be spawned or does not greet within 5 s.
    pub fn start(conf: &Path, log: &Path) -> Result<Nats> {
        let mut nats = Nats { port: free_tcp_port()?, conf: conf.to_path_buf(), log: log.to_path_buf(), child: None };
        nats.restart()?;
        Ok(nats)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again) on its port unless it runs.
    ///
    /// # Errors
    /// When it cannot be spawned or does not greet within 5 s.
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = File::options().create(true).append(true).open(&self.log).map_err(io("open", &self.log))?;
            let child = Command::new("nats-server")
                .arg("-c")
                .arg(&self.conf)
                .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(io("open", &self.log))?)
                .stderr(log)
                .spawn()
                .map_err(io("spawn", "nats-server"))?;
            self.child = Some(child);
            while Instant::now() < deadline {
                if !self.is_running() {
                    break; // the port may still be held by the killed one: try again
                }
                if greets(self.port) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.kill();
            if Instant::now() >= deadline {
                return Err(Error::Cluster(format!("nats-server did not come up on port {}", self.port)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn greets(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut hello = [0u8; 4];
    s.read_exact(&mut hello).is_ok() && &hello == b"INFO"
}

/// A `chorus projector` process with its own store directory.
#[derive(Debug)]
pub struct ProjectorProc {
    pub dir: PathBuf,
    pub config: ProjectorConfig,
    config_path: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
}

impl ProjectorProc {
    /// Writes the projector's config (tailing `log_nodes`, publishing on the
    /// NATS at `nats_url`) under `dir`; nothing is started.
    ///
    /// # Errors
    /// On IO failure or an invalid config.
    pub fn create(
        dir: &Path,
        binary: &Path,
        log_nodes: Vec<String>,
        tls_dir: &Path,
        bus: &Provisioned,
        nats_url: String,
    ) -> Result<ProjectorProc> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let config = ProjectorConfig {
            log_nodes,
            log_tls: tls::issue(tls_dir, &tls::Principal::new(tls::Role::Projector, "jepsen")?)?,
            view_key: bus.view_key.clone(),
            store_dir: dir.join("views"),
            bus: bus.bus(&nats_url, BusRole::Projector, "jepsen"),
            ..ProjectorConfig::default()
        };
        config.validate().map_err(|e| Error::Invalid(e.to_string()))?;
        let config_path = dir.join("projector.toml");
        let text =
            toml::to_string(&config).map_err(|e| Error::Encode { what: "projector config", reason: e.to_string() })?;
        std::fs::write(&config_path, text).map_err(io("write", &config_path))?;
        Ok(ProjectorProc { dir: dir.to_path_buf(), config, config_path, binary: binary.to_path_buf(), child: None })
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// How many times the projector has opened its store and subscribed to
    /// the view queries (once per incarnation).
    pub fn opened_count(&self) -> usize {
        std::fs::read_to_string(self.dir.join("projector.log")).unwrap_or_default().matches("projector opened").count()
    }

    /// Starts the process unless it runs, and waits until it serves view
    /// queries (or `timeout` passes: then it is left starting).
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

    /// Starts the process unless it runs.
    ///
    /// # Errors
    /// When it cannot be spawned.
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let log_path = self.dir.join("projector.log");
        self.child = Some(spawn_logged(&self.binary, "projector", &self.config_path, &log_path, "info")?);
        Ok(())
    }

    /// `kill -9` (mid-batch, whatever it was doing) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `SIGTERM`, then waits up to `grace` for a clean exit (else `kill -9`).
    pub fn stop(&mut self, grace: Duration) {
        if let Some(c) = &self.child {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && self.is_running() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }
}

impl Drop for ProjectorProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `binary subcommand --config config`, its stdout and stderr appended
/// to `log_path`, with `RUST_LOG=rust_log`.
///
/// # Errors
/// When the log cannot be opened or the process cannot be spawned.
pub(crate) fn spawn_logged(
    binary: &Path,
    subcommand: &str,
    config: &Path,
    log_path: &Path,
    rust_log: &str,
) -> Result<Child> {
    let log = File::options().create(true).append(true).open(log_path).map_err(io("open", log_path))?;
    Command::new(binary)
        .arg(subcommand)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io("open", log_path))?)
        .stderr(log)
        .spawn()
        .map_err(io("spawn", binary))
}
