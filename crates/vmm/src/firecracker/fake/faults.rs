//! [`Fault`]: the failures `FakeFirecracker` can be told to inject, and their text form for
//! `--fake-fault` and the [`FAULTS_ENV`] variable.

use std::fmt;
use std::str::FromStr;

use hyper::Method;

/// Environment variable the `fake-firecracker` binary reads faults from, comma-separated,
/// in addition to its `--fake-fault` arguments.
pub const FAULTS_ENV: &str = "BOXCUTTER_FAKE_FIRECRACKER_FAULTS";

/// A failure to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `die-during-boot`: exit (status 1) on `InstanceStart` without answering it.
    DieDuringBoot,
    /// `no-socket`: never create the API socket; the process just waits to be killed.
    NoSocket,
    /// `snapshot-halfway`: `PUT /snapshot/create` writes the state file and half of the
    /// memory file, then answers 400 (Firecracker stays up, the guest stays paused).
    SnapshotHalfway,
    /// `ignore-ctrl-alt-del`: the guest does not react to Ctrl-Alt-Del, so the process
    /// keeps running.
    IgnoreCtrlAltDel,
    /// `500:METHOD /path`: answer that request with 500 and a fault message.
    InternalError(Endpoint),
    /// `hang:METHOD /path`: never answer that request.
    Hang(Endpoint),
}

/// One API endpoint: a method and an exact path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The method.
    pub method: Method,
    /// The path, e.g. `/snapshot/create`.
    pub path: String,
}

impl Endpoint {
    /// Whether a request for `method` on `path` is this endpoint.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.method == *method && self.path == path
    }
}

/// A fault specification that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown fake-firecracker fault {0:?} (expected die-during-boot, no-socket, \
         snapshot-halfway, ignore-ctrl-alt-del, 500:METHOD /path or hang:METHOD /path)"
)]
pub struct InvalidFault(pub String);

impl FromStr for Fault {
    type Err = InvalidFault;
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidFault(spec.to_owned());
        match spec {
            "die-during-boot" => return Ok(Fault::DieDuringBoot),
            "no-socket" => return Ok(Fault::NoSocket),
            "snapshot-halfway" => return Ok(Fault::SnapshotHalfway),
            "ignore-ctrl-alt-del" => return Ok(Fault::IgnoreCtrlAltDel),
            _ => {}
        }
        let (kind, endpoint) = spec.split_once(':').ok_or_else(invalid)?;
        let (method, path) = endpoint.split_once(' ').ok_or_else(invalid)?;
        let method = Method::from_bytes(method.as_bytes()).map_err(|_| invalid())?;
        if !path.starts_with('/') {
            return Err(invalid());
        }
        let endpoint = Endpoint {
            method,
            path: path.to_owned(),
        };
        match kind {
            "500" => Ok(Fault::InternalError(endpoint)),
            "hang" => Ok(Fault::Hang(endpoint)),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::DieDuringBoot => f.write_str("die-during-boot"),
            Fault::NoSocket => f.write_str("no-socket"),
            Fault::SnapshotHalfway => f.write_str("snapshot-halfway"),
            Fault::IgnoreCtrlAltDel => f.write_str("ignore-ctrl-alt-del"),
            Fault::InternalError(at) => write!(f, "500:{} {}", at.method, at.path),
            Fault::Hang(at) => write!(f, "hang:{} {}", at.method, at.path),
        }
    }
}

/// Parses a comma-separated list of faults (the [`FAULTS_ENV`] form).
pub fn parse_list(list: &str) -> Result<Vec<Fault>, InvalidFault> {
    list.split(',')
        .map(str::trim)
        .filter(|spec| !spec.is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_reads_back_from_its_text() {
        let put_actions = Endpoint {
            method: Method::PUT,
            path: "/actions".into(),
        };
        for fault in [
            Fault::DieDuringBoot,
            Fault::NoSocket,
            Fault::SnapshotHalfway,
            Fault::IgnoreCtrlAltDel,
            Fault::InternalError(put_actions.clone()),
            Fault::Hang(put_actions),
        ] {
            assert_eq!(fault.to_string().parse::<Fault>(), Ok(fault));
        }
    }

    #[test]
    fn lists_and_bad_specs() {
        let faults = parse_list(" no-socket, 500:GET /vm/config ,").unwrap();
        assert_eq!(faults.len(), 2);
        assert!(matches!(&faults[1], Fault::InternalError(at) if at.path == "/vm/config"));
        for bad in [
            "explode",
            "500:PUT",
            "500:PUT actions",
            "404:GET /",
            "hang:/ GET",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
    }
}
