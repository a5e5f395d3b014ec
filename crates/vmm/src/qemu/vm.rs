//! One running QEMU guest.
//!
//! QEMU is started with `-daemonize`: the launching process returns once QEMU has opened
//! every device and socket (or failed to, with the reason on stderr), and the guest then
//! belongs to no daemon of ours, so it keeps running when a daemon dies or restarts. A
//! `QemuVm` is therefore only a handle: the pid (checked against the process's command
//! line, so a recycled pid is never mistaken for the guest) and the VM's runtime paths.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use boxcutter_types::guest::AgentEvent;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;

use super::args::{QemuConfig, RuntimePaths, UnsafePath};
use super::qmp::{QmpClient, QmpError};

/// How long QEMU may take to initialise before `-daemonize` returns.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How many console lines an error about the guest carries.
const CONSOLE_TAIL_LINES: usize = 15;

/// Errors driving a QEMU guest.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// A file the guest needs is missing.
    #[error("{what} {path} does not exist")]
    MissingFile {
        /// What the file is for.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A path cannot be passed to QEMU.
    #[error("invalid QEMU configuration")]
    Config(#[from] UnsafePath),
    /// The network namespace to run in cannot be opened.
    #[error("cannot open network namespace {path}")]
    Netns {
        /// The namespace's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// QEMU could not be started.
    #[error("cannot run {binary}")]
    Spawn {
        /// The QEMU binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// QEMU refused to start the guest.
    #[error("qemu failed to start the guest: {stderr}")]
    Launch {
        /// QEMU's error output.
        stderr: String,
    },
    /// QEMU did not report back in time.
    #[error("qemu did not finish starting within {0:?}")]
    LaunchTimeout(Duration),
    /// QEMU's pidfile is missing or does not name a QEMU process of this VM.
    #[error("no qemu process for {pidfile}")]
    NotRunning {
        /// The pidfile.
        pidfile: PathBuf,
    },
    /// The guest agent reported a failed step.
    #[error("guest set-up failed at {step}: {error}")]
    GuestFailed {
        /// The step.
        step: String,
        /// Why.
        error: String,
    },
    /// The guest stopped before reporting ready.
    #[error("guest stopped before it was ready; console:\n{console}")]
    GuestExited {
        /// The end of its console log.
        console: String,
    },
    /// The guest did not report ready in time.
    #[error("guest not ready within {timeout:?}; console:\n{console}")]
    ReadyTimeout {
        /// The limit.
        timeout: Duration,
        /// The end of its console log.
        console: String,
    },
    /// The agent channel failed.
    #[error("agent channel {path}")]
    Agent {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A QMP command failed.
    #[error("qmp")]
    Qmp(#[from] QmpError),
}

/// What the guest agent reported when it became ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// Guest uptime at ready, from the guest's clock.
    pub guest_uptime: Duration,
}

/// A handle on one running QEMU guest.
#[derive(Debug, Clone)]
pub struct QemuVm {
    pid: Pid,
    paths: RuntimePaths,
}

impl QemuVm {
    /// Starts QEMU for `config`, inside the network namespace at `netns` if given (the
    /// guest's TAP device lives there), and returns once QEMU runs the guest.
    pub async fn launch(config: &QemuConfig, netns: Option<&Path>) -> Result<Self, QemuError> {
        check_inputs(config)?;
        let args = config.to_args()?;
        for stale in [
            &config.paths.qmp,
            &config.paths.agent,
            &config.paths.pidfile,
        ] {
            let _ = std::fs::remove_file(stale);
        }

        let mut cmd = tokio::process::Command::new(&config.binary);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let _netns =
            boxcutter_sys::proc::place_child(cmd.as_std_mut(), netns, false).map_err(|source| {
                QemuError::Netns {
                    path: netns.map(Path::to_owned).unwrap_or_default(),
                    source,
                }
            })?;
        let child = cmd.spawn().map_err(|source| QemuError::Spawn {
            binary: config.binary.clone(),
            source,
        })?;
        let output = tokio::time::timeout(LAUNCH_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| QemuError::LaunchTimeout(LAUNCH_TIMEOUT))?
            .map_err(|source| QemuError::Spawn {
                binary: config.binary.clone(),
                source,
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            return Err(QemuError::Launch { stderr });
        }
        Self::adopt(&config.paths)
    }

    /// Finds the running QEMU of a VM from its pidfile, checking that the process really
    /// is that VM's QEMU.
    pub fn adopt(paths: &RuntimePaths) -> Result<Self, QemuError> {
        let not_running = || QemuError::NotRunning {
            pidfile: paths.pidfile.clone(),
        };
        let text = std::fs::read_to_string(&paths.pidfile).map_err(|_| not_running())?;
        let pid = Pid::from_raw(text.trim().parse().map_err(|_| not_running())?);
        let vm = Self {
            pid,
            paths: paths.clone(),
        };
        if vm.is_running() {
            Ok(vm)
        } else {
            Err(not_running())
        }
    }

    /// QEMU's process id.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The VM's runtime paths.
    pub fn paths(&self) -> &RuntimePaths {
        &self.paths
    }

    /// True while the QEMU process of this VM exists and is not a zombie.
    pub fn is_running(&self) -> bool {
        let qmp = self.paths.qmp.as_os_str().as_encoded_bytes();
        boxcutter_sys::proc::runs_with(self.pid.as_raw(), qmp)
    }

    /// Waits for the guest agent's ready report.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Ready, QemuError> {
        let deadline = Instant::now() + timeout;
        let agent_err = |source| QemuError::Agent {
            path: self.paths.agent.clone(),
            source,
        };
        let stream = UnixStream::connect(&self.paths.agent)
            .await
            .map_err(agent_err)?;
        let mut lines = BufReader::new(stream).lines();
        loop {
            let tick = tokio::time::timeout(Duration::from_millis(200), lines.next_line()).await;
            match tick {
                Ok(Ok(Some(line))) => {
                    if let Some(result) = self.agent_line(&line) {
                        return result;
                    }
                }
                Ok(Ok(None)) => return Err(self.exited_error().await),
                Ok(Err(e)) => return Err(agent_err(e)),
                Err(_) if !self.is_running() => return Err(self.exited_error().await),
                Err(_) if Instant::now() >= deadline => {
                    return Err(QemuError::ReadyTimeout {
                        timeout,
                        console: self.console_tail(),
                    })
                }
                Err(_) => {}
            }
        }
    }

    /// Interprets one agent line: `Some` when it ends the wait.
    fn agent_line(&self, line: &str) -> Option<Result<Ready, QemuError>> {
        match serde_json::from_str::<AgentEvent>(line) {
            Ok(AgentEvent::Ready { uptime_ms }) => Some(Ok(Ready {
                guest_uptime: Duration::from_millis(uptime_ms),
            })),
            Ok(AgentEvent::Failed { step, error }) => {
                Some(Err(QemuError::GuestFailed { step, error }))
            }
            Ok(AgentEvent::ShuttingDown | AgentEvent::Refreshed { .. }) => None,
            Err(error) => {
                tracing::debug!(%error, "ignoring unparsable agent line");
                None
            }
        }
    }

    async fn exited_error(&self) -> QemuError {
        // The console file may still be flushing when the socket closes.
        self.wait_exit(Duration::from_secs(2)).await;
        QemuError::GuestExited {
            console: self.console_tail(),
        }
    }

    /// A QMP connection to this VM.
    pub async fn qmp(&self) -> Result<QmpClient, QemuError> {
        Ok(QmpClient::connect(&self.paths.qmp).await?)
    }

    /// Asks the guest to power off (ACPI power button) and waits up to `timeout` for QEMU
    /// to exit; then quits QEMU, and kills it as a last resort.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), QemuError> {
        let mut qmp = self.qmp().await?;
        qmp.system_powerdown().await?;
        if self.wait_exit(timeout).await {
            return Ok(());
        }
        tracing::warn!(
            pid = self.pid(),
            "guest ignored the power button; quitting qemu"
        );
        let _ = qmp.quit().await;
        if !self.wait_exit(Duration::from_secs(5)).await {
            self.kill().await;
        }
        Ok(())
    }

    /// Kills QEMU at once and waits for it to be gone.
    pub async fn kill(&self) {
        if self.is_running() {
            let _ = kill(self.pid, Signal::SIGKILL);
        }
        self.wait_exit(Duration::from_secs(10)).await;
    }

    /// Waits up to `timeout` for QEMU to exit; true if it did.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        crate::process::wait_gone(|| self.is_running(), timeout).await
    }

    /// The last lines of the guest's serial console.
    pub fn console_tail(&self) -> String {
        console_tail(&self.paths.console, CONSOLE_TAIL_LINES)
    }
}

/// The last `lines` lines of a console log, without terminal control sequences.
pub fn console_tail(path: &Path, lines: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let clean = strip_escapes(&String::from_utf8_lossy(&bytes));
    let all: Vec<&str> = clean.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Drops ANSI escape sequences (`ESC [ ... letter` and two-character `ESC x`) and other
/// control characters except newlines.
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.next() == Some('[') {
                    chars.by_ref().find(|c| c.is_ascii_alphabetic());
                }
            }
            '\n' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn check_inputs(config: &QemuConfig) -> Result<(), QemuError> {
    let files = [
        ("kernel", config.kernel.as_path()),
        ("initramfs", config.initrd.as_path()),
        ("root disk", config.root_disk.path.as_path()),
    ];
    let config_drive = config
        .config_drive
        .iter()
        .map(|p| ("config drive", p.as_path()));
    match crate::files::first_missing(files.into_iter().chain(config_drive)) {
        Some((what, path)) => Err(QemuError::MissingFile { what, path }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_tail_drops_control_sequences_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, "\x1bc\x1b[?7lSeaBIOS\n\nline 2\nline 3\n").unwrap();
        assert_eq!(console_tail(&log, 2), "line 2\nline 3");
        assert_eq!(console_tail(&log, 10), "SeaBIOS\nline 2\nline 3");
        assert_eq!(console_tail(&dir.path().join("none"), 3), "");
    }

    #[test]
    fn adopting_without_a_process_fails() {
        let dir = tempfile::tempdir().unwrap();
        let paths = RuntimePaths::in_dir(dir.path());
        assert!(matches!(
            QemuVm::adopt(&paths),
            Err(QemuError::NotRunning { .. })
        ));
        // Our own pid exists but is not this VM's QEMU.
        std::fs::write(&paths.pidfile, std::process::id().to_string()).unwrap();
        assert!(matches!(
            QemuVm::adopt(&paths),
            Err(QemuError::NotRunning { .. })
        ));
    }
}
