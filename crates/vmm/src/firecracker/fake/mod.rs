//! `FakeFirecracker`: a test double for the Firecracker process, for machines where the
//! real one cannot run (no KVM, no binary). Test-only: built for this crate's tests and
//! behind the `fake-firecracker` feature, never by a daemon.
//!
//! It serves Firecracker's REST API on a Unix socket and enforces the published contract
//! rather than just answering: bodies are decoded with the client's own request types,
//! which reject unknown and missing fields as Firecracker's server does; the order rules
//! live in one transition function (`contract`); the files Firecracker would open must
//! open; snapshots write real files at the requested paths. It keeps the state `GET /`
//! reports, and exits when Firecracker would (a guest reboot after Ctrl-Alt-Del, a failed
//! snapshot load). It can be told to fail ([`Fault`]).
//!
//! Two ways to run it: in-process with [`FakeFirecracker::start`] (a task on the caller's
//! runtime), or as a process, the `fake-firecracker` binary, whose command line matches
//! Firecracker's (`--api-sock PATH`, `--id ID`), so code that launches Firecracker can
//! launch it unchanged. Another crate can make its own binary from [`run_process`].
//!
//! Jailed: the `fake-jailer` binary ([`run_jailer`], module `jailer`) stands where
//! Firecracker's `jailer` would and jails `fake-firecracker` for real: a chroot at
//! `<chroot_base>/<exec_file_name>/<id>/root` in a mount namespace of its own, the device
//! nodes, the pid file, rlimits, `--netns`, `--daemonize`, `--new-pid-ns`, then an exec as
//! the unprivileged uid:gid with an empty environment. The fake opens every path exactly as
//! given and assumes no privilege, so in a jail the kernel resolves its API socket, drives,
//! kernel, vsock sockets, logger and snapshot files inside the chroot and checks them
//! against the jailed uid: a drive the uid may not open is refused, a host vsock listener it
//! may not connect to never hears the ready report, a directory it may not write refuses the
//! snapshot. Faults reach a jailed fake only as `--fake-fault` after the jailer's `--`
//! (the jailer clears the environment, [`FAULTS_ENV`] included). Where `fake-jailer`
//! differs from the real jailer (the host's `/usr` mounted read-only in the jail for the
//! dynamically linked fake, `chroot` for `pivot_root`, cgroups checked but not applied) is
//! listed in `jailer`'s docs.
//!
//! The guest is simulated only as far as the node talks to it: `guest` plays a Boxcutter
//! guest agent on the vsock device (a ready report after boot, answers to host commands).
//! What it does not model: the guest itself (nothing boots; "running" is a state), TAP
//! devices (names are checked, devices are not opened), MMDS, CPU templates, hot-plug,
//! entropy, serial, pmem and userfaultfd memory backends. Fields of the spec our client
//! never sends are refused as unknown (stricter than Firecracker); fields only newer
//! releases know (`track_dirty_pages`, `network_overrides` and `vsock_override` on a load)
//! are accepted, as the current spec does.

mod contract;
mod faults;
mod guest;
#[cfg(feature = "fake-firecracker")]
mod jailer;
mod process;
mod resources;
mod server;
mod snapshot_files;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

pub use faults::{parse_list, Endpoint, Fault, InvalidFault, FAULTS_ENV};
#[cfg(feature = "fake-firecracker")]
pub use jailer::run_jailer;
pub use process::run_process;

use crate::firecracker::api::InstanceState;
use contract::Contract;

/// The version the fake reports (`GET /`, `GET /version`, `--version`): a release newer
/// than [`MINIMUM_VERSION`](crate::firecracker::capability::MINIMUM_VERSION), marked fake.
pub const FAKE_VMM_VERSION: &str = "1.16.1-fake";

/// How to start a fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeOptions {
    /// Where to serve the API.
    pub api_sock: PathBuf,
    /// The instance id (`--id`).
    pub id: String,
    /// Failures to inject.
    pub faults: Vec<Fault>,
}

impl FakeOptions {
    /// A fake serving on `api_sock`, with Firecracker's default id and no faults.
    pub fn new(api_sock: impl Into<PathBuf>) -> Self {
        Self {
            api_sock: api_sock.into(),
            id: "anonymous-instance".into(),
            faults: Vec::new(),
        }
    }
}

/// An in-process fake Firecracker: a task serving the API on the caller's runtime. Dropping
/// it stops the task (the socket file stays, as a killed Firecracker's does).
#[derive(Debug)]
pub struct FakeFirecracker {
    socket: PathBuf,
    contract: Arc<Mutex<Contract>>,
    server: Option<JoinHandle<i32>>,
}

impl FakeFirecracker {
    /// Binds the API socket and starts serving. Must run inside a tokio runtime. With
    /// [`Fault::NoSocket`] nothing is bound and nothing served.
    pub fn start(options: FakeOptions) -> std::io::Result<Self> {
        let contract = Arc::new(Mutex::new(Contract::new(
            options.id,
            options.faults.clone(),
        )));
        let server = if options.faults.contains(&Fault::NoSocket) {
            None
        } else {
            let listener = tokio::net::UnixListener::bind(&options.api_sock)?;
            Some(tokio::spawn(server::serve(
                listener,
                contract.clone(),
                false,
            )))
        };
        Ok(Self {
            socket: options.api_sock,
            contract,
            server,
        })
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The guest's state, as `GET /` reports it.
    pub fn state(&self) -> InstanceState {
        self.lock().state()
    }

    /// Every request answered so far, as `METHOD /path STATUS`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().log().to_vec()
    }

    /// Waits up to `within` for the fake to exit (as Firecracker would have); its exit
    /// status, or `None` if it still serves (or never served).
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let server = self.server.as_mut()?;
        let status = tokio::time::timeout(within, server).await.ok()?.ok();
        self.server = None;
        status
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Contract> {
        self.contract.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for FakeFirecracker {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}
