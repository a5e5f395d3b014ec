//! `PUT /logger` and `PUT /metrics`: where Firecracker writes its log and its metrics.

use std::path::PathBuf;

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::Request;

/// `Logger`. Allowed before boot and before a snapshot load. Firecracker opens `log_path`
/// without creating it: the file (or named pipe) must exist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// Where the log goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    /// The most verbose level written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// Prefix each line with its level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Prefix each line with its source file and line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    /// Only messages from this module path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

impl Request for Logger {
    const METHOD: Method = Method::PUT;
    type Response = super::NoContent;
    fn path(&self) -> String {
        "/logger".into()
    }
}

/// Firecracker's log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    /// Nothing.
    Off,
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warning,
    /// The default.
    Info,
    /// Verbose.
    Debug,
    /// Very verbose.
    Trace,
}

/// `Metrics`: JSON metrics lines, written on `FlushMetrics` and every minute. Allowed once,
/// before boot or a snapshot load; the file (or named pipe) must exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Where the metrics go.
    pub metrics_path: PathBuf,
}

impl Request for Metrics {
    const METHOD: Method = Method::PUT;
    type Response = super::NoContent;
    fn path(&self) -> String {
        "/metrics".into()
    }
}
