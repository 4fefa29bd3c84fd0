//! A real `nats-server` process: the bus of every test and run that has one.
//! It keeps its port across restarts, so that clients reconnect to it after
//! a kill.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{io, Error, Result};

/// How long a started server may take to greet.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many ports to try when the first one is taken by another process.
const PORT_ATTEMPTS: usize = 5;

/// Whether a `nats-server` binary is on `PATH`.
pub fn nats_installed() -> bool {
    Command::new("nats-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// A `nats-server -a 127.0.0.1 -p PORT` process. Killed (and reaped) on drop.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    /// The HTTP monitoring port (`-m`): what the server holds, e.g. its
    /// subscriptions ([`NatsServer::subscriptions`]).
    monitor_port: u16,
    /// A configuration file (`-c`): TLS, users and their permissions.
    config: Option<PathBuf>,
    /// Where its output goes (discarded without one).
    log: Option<PathBuf>,
    child: Option<Child>,
}

impl NatsServer {
    /// A server without configuration on a free port, ready.
    ///
    /// # Errors
    /// When `nats-server` is not installed or does not come up.
    pub fn start() -> Result<NatsServer> {
        NatsServer::start_with(None, None)
    }

    /// A server with the configuration file `config` (its `listen` is
    /// overridden by a free port), ready.
    ///
    /// # Errors
    /// As [`NatsServer::start`].
    pub fn start_with_config(config: &Path) -> Result<NatsServer> {
        NatsServer::start_with(Some(config), None)
    }

    /// A server with an optional configuration file, its output appended to
    /// `log` if given, on a free port; waits until it greets.
    ///
    /// # Errors
    /// As [`NatsServer::start`].
    pub fn start_with(config: Option<&Path>, log: Option<&Path>) -> Result<NatsServer> {
        if !nats_installed() {
            return Err(Error::Invalid(
                "`nats-server` is not on PATH (apt-get install nats-server, or see https://nats.io)".into(),
            ));
        }
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = crate::ports::free_port().map_err(io("find a free TCP port on", "127.0.0.1"))?;
            let monitor_port = crate::ports::free_port().map_err(io("find a free TCP port on", "127.0.0.1"))?;
            let mut server = NatsServer {
                port,
                monitor_port,
                config: config.map(Path::to_path_buf),
                log: log.map(Path::to_path_buf),
                child: None,
            };
            match server.try_start(Instant::now() + READY_TIMEOUT) {
                Ok(()) => return Ok(server),
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::Cluster(format!("nats-server did not start after {PORT_ATTEMPTS} attempts: {last}")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The subject of every subscription the server holds now, of every
    /// client (from its monitoring endpoint `/subsz`), sorted.
    ///
    /// # Errors
    /// When the monitoring endpoint does not answer.
    pub fn subscriptions(&self) -> Result<Vec<String>> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.monitor_port));
        let what = format!("127.0.0.1:{}/subsz", self.monitor_port);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io("connect to", &what))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(io("read", &what))?;
        s.write_all(b"GET /subsz?subs=1&limit=1000000 HTTP/1.0\r\n\r\n").map_err(io("ask", &what))?;
        let mut body = String::new();
        s.read_to_string(&mut body).map_err(io("read", &what))?;
        // The JSON lists `"subject": "…"` once per subscription.
        let mut out: Vec<String> = body
            .split("\"subject\":")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next().map(str::to_owned))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

    /// Starts the server again on its port unless it runs (after
    /// [`NatsServer::kill`]); the old socket may linger a moment, so this
    /// retries until it greets.
    ///
    /// # Errors
    /// When it does not come up within 10 s (e.g. the port was taken meanwhile).
    pub fn ensure_running(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.try_start(deadline) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Kills the server and starts it again on the same port.
    ///
    /// # Errors
    /// As [`NatsServer::ensure_running`].
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.ensure_running()
    }

    /// One spawn on `self.port`; waits until it greets, exits or `deadline`.
    fn try_start(&mut self, deadline: Instant) -> Result<()> {
        let mut command = Command::new("nats-server");
        if let Some(c) = &self.config {
            command.arg("-c").arg(c);
        }
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-m", &self.monitor_port.to_string()])
            .stdin(Stdio::null());
        match &self.log {
            Some(path) => {
                let log = File::options().create(true).append(true).open(path).map_err(io("open", path))?;
                command.stdout(log.try_clone().map_err(io("open", path))?).stderr(log);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        self.child = Some(command.spawn().map_err(io("spawn", "nats-server"))?);
        while Instant::now() < deadline {
            if !self.is_running() {
                self.kill();
                return Err(Error::Cluster(format!("nats-server on port {} exited at start", self.port)));
            }
            if greets(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(Error::Cluster(format!("nats-server on port {} not ready in time", self.port)))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a NATS server answers on `port`: connecting alone is not enough if
/// the port belongs to someone else; a NATS server greets with `INFO` at once.
fn greets(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut hello = [0u8; 4];
    s.read_exact(&mut hello).is_ok() && &hello == b"INFO"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real server: it greets, goes away on kill, comes back on the same port.
    #[test]
    fn restarts_on_its_port() {
        let mut server = NatsServer::start().unwrap();
        let port = server.port();
        assert!(greets(port));
        server.kill();
        assert!(!server.is_running());
        server.ensure_running().unwrap();
        assert_eq!(server.port(), port);
        assert!(greets(port));
    }
}
