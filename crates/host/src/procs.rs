//! Long-running processes the host starts and stops: each is detached (its own session,
//! so it outlives the command that started it and no terminal signal reaches it), may be
//! placed in a network namespace (with `setns` alone, so it shares the host's mounts),
//! logs to a file, and is found again by a pidfile checked against the process's command
//! line, so a recycled pid is never mistaken for it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Errors starting or stopping a process.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// A file of the process (log, pidfile, namespace) could not be used.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be started.
    #[error("cannot start {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A process the host supervises, described by where its files live.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// A short name for messages.
    pub name: String,
    /// Its pidfile (written by us).
    pub pidfile: PathBuf,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
    /// A string its command line must contain (e.g. its state directory) to be ours.
    pub marker: String,
}

impl Daemon {
    /// The pid of the running process, if it runs and is ours.
    pub fn running_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        is_ours(pid, &self.marker).then_some(pid)
    }

    /// Starts `program args` unless it already runs; returns its pid.
    pub fn ensure(
        &self,
        program: &Path,
        args: &[String],
        netns: Option<&Path>,
    ) -> Result<i32, ProcError> {
        if let Some(pid) = self.running_pid() {
            return Ok(pid);
        }
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| ProcError::Io {
                action,
                path,
                source,
            }
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io("open log", &self.log))?;
        let err = log.try_clone().map_err(io("open log", &self.log))?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(log).stderr(err);
        let ns_path = netns.unwrap_or(Path::new(""));
        let _ns = boxcutter_sys::proc::place_child(&mut cmd, netns, true)
            .map_err(io("open namespace", ns_path))?;
        let child = cmd.spawn().map_err(|source| ProcError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
        let pid = child.id() as i32;
        // The child is reaped by init once we exit; we never wait for it.
        std::mem::forget(child);
        boxcutter_sys::write_atomic(&self.pidfile, pid.to_string().as_bytes(), 0o644)
            .map_err(io("write pidfile", &self.pidfile))?;
        Ok(pid)
    }

    /// Stops the process: SIGTERM, then SIGKILL after `grace`. Absent is fine.
    pub fn stop(&self, grace: Duration) {
        if let Some(pid) = self.running_pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            if !wait_gone(pid, &self.marker, grace) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                wait_gone(pid, &self.marker, Duration::from_secs(5));
            }
        }
        let _ = std::fs::remove_file(&self.pidfile);
    }
}

/// True when `pid` runs (not a zombie) and its command line contains `marker`.
pub fn is_ours(pid: i32, marker: &str) -> bool {
    boxcutter_sys::proc::runs_with(pid, marker.as_bytes())
}

fn wait_gone(pid: i32, marker: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_ours(pid, marker) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Pids of every live process whose command line contains `marker`.
pub fn pids_with(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me && is_ours(*pid, marker))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_once_finds_itself_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let followed = dir.path().join("followed.log");
        std::fs::write(&followed, b"").unwrap();
        let daemon = Daemon {
            name: "follower".into(),
            pidfile: dir.path().join("follower.pid"),
            log: dir.path().join("follower.log"),
            marker: followed.display().to_string(),
        };
        let args = vec!["-f".to_string(), followed.display().to_string()];
        let pid = daemon.ensure(Path::new("tail"), &args, None).unwrap();
        assert_eq!(daemon.running_pid(), Some(pid));
        let again = daemon.ensure(Path::new("tail"), &args, None).unwrap();
        assert_eq!(again, pid, "ensure must not start a second copy");
        daemon.stop(Duration::from_secs(2));
        assert_eq!(daemon.running_pid(), None);
        assert!(pids_with(&daemon.marker).is_empty());
    }

    #[test]
    fn a_recycled_pid_is_not_ours() {
        assert!(!is_ours(std::process::id() as i32, "/no/such/marker"));
    }
}
