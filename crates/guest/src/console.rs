//! Log lines on the serial console, the only place a guest's boot can be read from outside.
//!
//! Every line starts with `boxcutter-guest: [  1234 ms]`, the time since the kernel started
//! (`CLOCK_BOOTTIME`), so the console shows where boot time goes. Any thread may log; a
//! mutex keeps lines whole. Until [`open`] succeeds (and always in tests) lines go to stderr.
//! Logging never fails and never panics: the agent is PID 1.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Mutex, PoisonError};

use nix::time::{clock_gettime, ClockId};

static SINK: Mutex<Option<File>> = Mutex::new(None);

/// How serious a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Progress: a step done, a state change.
    Info,
    /// Abnormal but handled.
    Warn,
    /// A step failed.
    Error,
}

/// Sends later log lines to the console device `path` (`/dev/console`).
///
/// Does nothing if the console is already open; returns whether the console is open.
pub fn open(path: &Path) -> bool {
    let mut sink = SINK.lock().unwrap_or_else(PoisonError::into_inner);
    if sink.is_none() {
        *sink = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .ok();
    }
    sink.is_some()
}

/// Writes one line; used through the [`info!`], [`warn!`] and [`error!`] macros.
pub fn log(level: Level, args: fmt::Arguments<'_>) {
    let tag = match level {
        Level::Info => "",
        Level::Warn => "warning: ",
        Level::Error => "error: ",
    };
    let line = format!("boxcutter-guest: [{:>6} ms] {tag}{args}\n", uptime_ms());
    let mut sink = SINK.lock().unwrap_or_else(PoisonError::into_inner);
    let _ = match sink.as_mut() {
        Some(console) => console.write_all(line.as_bytes()),
        None => write_stderr(&line),
    };
}

#[cfg(not(test))]
fn write_stderr(line: &str) -> std::io::Result<()> {
    std::io::stderr().write_all(line.as_bytes())
}

/// In unit tests, through the test harness's capture, so passing tests print nothing.
#[cfg(test)]
fn write_stderr(line: &str) -> std::io::Result<()> {
    eprint!("{line}");
    Ok(())
}

/// Standard output or error for a child process: the console if open, else ours.
pub fn child_stdio() -> Stdio {
    let sink = SINK.lock().unwrap_or_else(PoisonError::into_inner);
    match sink.as_ref().map(File::try_clone) {
        Some(Ok(console)) => Stdio::from(console),
        _ => Stdio::inherit(),
    }
}

/// Milliseconds since the kernel started, counting time suspended.
pub fn uptime_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// Formats an error with its whole `source` chain, `outer: inner: innermost`.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Logs a progress line.
macro_rules! info {
    ($($arg:tt)*) => {
        $crate::console::log($crate::console::Level::Info, format_args!($($arg)*))
    };
}

/// Logs an abnormal but handled condition.
macro_rules! warn {
    ($($arg:tt)*) => {
        $crate::console::log($crate::console::Level::Warn, format_args!($($arg)*))
    };
}

/// Logs a failed action.
macro_rules! error {
    ($($arg:tt)*) => {
        $crate::console::log($crate::console::Level::Error, format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_prints_every_cause_once() {
        let error = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&error), "outer: inner");
    }

    #[test]
    fn uptime_is_monotonic() {
        let first = uptime_ms();
        assert!(first > 0);
        assert!(uptime_ms() >= first);
    }
}
