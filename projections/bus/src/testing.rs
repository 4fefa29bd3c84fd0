//! A real `nats-server` process for tests (feature `testing`): started on a free
//! port, killed on drop. Tests of the bus and of its users share it.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many free ports to try when another process grabs the one we picked.
const PORT_ATTEMPTS: usize = 5;

/// A running `nats-server -a 127.0.0.1 -p PORT`. Killed (and reaped) on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// A configuration file (`-c`), e.g. TLS and users.
    config: Option<std::path::PathBuf>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts connections.
    ///
    /// # Panics
    /// When `nats-server` is not installed (with how to install it), or when
    /// no server came up.
    pub fn start() -> NatsServer {
        NatsServer::start_with(None)
    }

    /// As [`NatsServer::start`], with the configuration file `config` (its
    /// `listen` is overridden by the free port).
    ///
    /// # Panics
    /// As [`NatsServer::start`].
    pub fn start_with_config(config: &std::path::Path) -> NatsServer {
        NatsServer::start_with(Some(config.to_path_buf()))
    }

    fn start_with(config: Option<std::path::PathBuf>) -> NatsServer {
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match NatsServer::try_start_on(port, config.clone()) {
                Ok(server) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!("nats-server did not start after {PORT_ATTEMPTS} attempts: {last_error}");
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server process and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`NatsServer::stop`]).
    ///
    /// # Panics
    /// When it does not come up (e.g. the port was taken meanwhile).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match NatsServer::try_start_on(self.port, self.config.clone()) {
                Ok(mut server) => {
                    self.child = server.child.take();
                    return;
                }
                // The old listening socket may linger for a moment.
                Err(error) if Instant::now() > deadline => {
                    panic!("nats-server did not restart on port {}: {error}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn try_start_on(port: u16, config: Option<std::path::PathBuf>) -> Result<NatsServer, String> {
        let mut command = Command::new("nats-server");
        if let Some(c) = &config {
            command.arg("-c").arg(c);
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
                "`nats-server` is not on PATH; these tests need a real NATS server. \
                 Install it with `apt-get install -y nats-server` (tools/setup.sh does this)."
            ),
            Err(error) => panic!("cannot spawn nats-server: {error}"),
        };
        let mut server = NatsServer { child: Some(child), port, config };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = server.child.as_mut().expect("child is set");
            if let Ok(Some(status)) = child.try_wait() {
                server.child = None;
                return Err(format!("nats-server on port {port} exited early: {status}"));
            }
            // Connecting alone is not enough if the port belongs to someone
            // else; the server greets with `INFO` at once.
            if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                if greets_like_nats(&mut stream) {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("nats-server on port {port} not ready after {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn greets_like_nats(stream: &mut TcpStream) -> bool {
    use std::io::Read;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut greeting = [0u8; 4];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"INFO"
}

fn free_port() -> u16 {
    chorus_testkit::ports::free_port().expect("a free loopback port")
}
