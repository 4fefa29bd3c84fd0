//! One OS process a test or the harness starts, again and again: the same
//! command line each time, stdout and stderr appended to one log file, so
//! that every incarnation's output stays readable after a crash.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{io, Error, Result};

/// What a process is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    Stopped,
    Running,
    /// Stopped with `SIGSTOP` (see [`Process::pause`]).
    Paused,
}

/// A restartable child process with a log file. Dropping it kills it.
#[derive(Debug)]
pub struct Process {
    /// What failure messages call it (`log-node-2`, `edge-0`, `projector`).
    pub name: String,
    binary: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Process {
    /// `binary subcommand --config config` with `RUST_LOG=log_filter`, its
    /// output appended to `log_path`; nothing is started.
    pub fn chorus(
        name: impl Into<String>,
        binary: &Path,
        subcommand: &str,
        config: &Path,
        log_path: PathBuf,
        log_filter: &str,
    ) -> Process {
        Process {
            name: name.into(),
            binary: binary.to_path_buf(),
            args: vec![subcommand.into(), "--config".into(), config.into()],
            env: vec![("RUST_LOG".into(), log_filter.into())],
            log_path,
            child: None,
            paused: false,
        }
    }

    /// Adds an environment variable of every later start.
    pub fn env(&mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> &mut Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Stdout and stderr of every incarnation.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn state(&mut self) -> ProcState {
        let alive = self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        match (alive, self.paused) {
            (false, _) => ProcState::Stopped,
            (true, true) => ProcState::Paused,
            (true, false) => ProcState::Running,
        }
    }

    /// Whether it is alive (running or paused).
    pub fn is_running(&mut self) -> bool {
        self.state() != ProcState::Stopped
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process unless it is alive. Returns whether it started it.
    ///
    /// # Errors
    /// When the log cannot be opened or the process cannot be spawned.
    pub fn start(&mut self) -> Result<bool> {
        if self.is_running() {
            return Ok(false);
        }
        let log = File::options().create(true).append(true).open(&self.log_path).map_err(io("open", &self.log_path))?;
        let err_log = log.try_clone().map_err(io("open", &self.log_path))?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(io("spawn", &self.binary))?;
        self.child = Some(child);
        self.paused = false;
        Ok(true)
    }

    /// `kill -9` (paused or not, whatever it was doing) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// `SIGTERM`, then waits up to `grace` for a clean exit (else `kill -9`).
    pub fn stop(&mut self, grace: Duration) {
        if self.signal(Signal::SIGCONT).is_ok() && self.signal(Signal::SIGTERM).is_ok() {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && self.is_running() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// Sends `signal` to the process.
    ///
    /// # Errors
    /// When it is not running or the signal cannot be sent.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self.pid().ok_or_else(|| Error::Cluster(format!("{} is not running", self.name)))?;
        let pid = i32::try_from(pid).map_err(|_| Error::Cluster(format!("{} has pid {pid}", self.name)))?;
        kill(Pid::from_raw(pid), signal).map_err(|e| Error::Cluster(format!("{signal} to {}: {e}", self.name)))
    }

    /// `SIGSTOP` if it runs. Returns whether it did.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn pause(&mut self) -> Result<bool> {
        if self.state() != ProcState::Running {
            return Ok(false);
        }
        self.signal(Signal::SIGSTOP)?;
        self.paused = true;
        Ok(true)
    }

    /// `SIGCONT` if it is paused.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn resume(&mut self) -> Result<()> {
        if self.state() == ProcState::Paused {
            self.signal(Signal::SIGCONT)?;
            self.paused = false;
        }
        Ok(())
    }

    /// The whole log file (empty if there is none yet).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// How many times the log shows `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_text(), lines)
    }

    /// Waits until the log shows `needle` at least `count` times.
    ///
    /// # Errors
    /// When the process exits or `timeout` passes first (with the log's tail).
    pub async fn wait_for_log(&mut self, needle: &str, count: usize, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.log_count(needle) >= count {
                return Ok(());
            }
            let running = self.is_running();
            if !running || tokio::time::Instant::now() > deadline {
                let why = if running { format!("did not log {needle:?} within {timeout:?}") } else { "exited".into() };
                return Err(Error::Cluster(format!("{} {why}; its log ends:\n{}", self.name, self.log_tail(30))));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Peak resident set size and current, in KiB (Linux `VmHWM`, `VmRSS`).
    pub fn rss_kib(&self) -> Option<(u64, u64)> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let mut last: Vec<&str> = text.lines().rev().take(lines).collect();
    last.reverse();
    last.join("\n")
}
