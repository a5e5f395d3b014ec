//! Local mode: the whole of Boxcutter on one machine, as processes.
//!
//! `up` brings up, in order and idempotently: the cluster secret, the golden image, the
//! management network ([`network`]), Mosquitto (with credentials), one node agent per node
//! namespace, the orchestrator (with the first admin and the nodes registered), and an
//! OpenSSH server for the control interface; then writes `ssh_config`. `down` stops the
//! processes and removes the network, leaving the state directory (VM disks, database)
//! for the next `up`.
//!
//! ```text
//! <state>/secrets/cluster.key     <state>/image/                 <state>/orchestrator/
//! <state>/nodes/<n>/ (data, log)  <state>/mosquitto/             <state>/sshd/
//! <state>/ssh_config              <state>/local.json (what `up` made, for `down`)
//! ```

pub mod network;
mod services;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::network::LocalNet;
use crate::procs::Daemon;

/// What `up` is asked to do.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Where everything lives.
    pub state_dir: PathBuf,
    /// Node agents to run.
    pub nodes: u8,
    /// The management /24.
    pub subnet: Ipv4Addr,
    /// The control interface's SSH port on 127.0.0.1.
    pub ssh_port: u16,
    /// Where the Boxcutter binaries are (default: beside this program).
    pub bin_dir: PathBuf,
    /// The public key of the first admin.
    pub admin_key: PathBuf,
    /// The first admin's name.
    pub admin_name: String,
    /// Base URL of users' public keys for `adduser` (`<url>/<login>.keys`).
    pub keys_url: String,
}

/// What `up` made, so `down` can take exactly that away.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalState {
    /// Name prefix of devices and namespaces.
    pub prefix: String,
    /// The management /24.
    pub subnet: Ipv4Addr,
    /// Node agents.
    pub nodes: u8,
    /// The control interface's port.
    pub ssh_port: u16,
}

const STATE_FILE: &str = "local.json";

/// The prefix of a state directory's devices: short and stable for the directory.
pub fn prefix_for(state_dir: &Path) -> String {
    let hash = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    format!("bc{}", &hex::encode(hash)[..5])
}

/// Brings local mode up (or completes a previous `up`).
pub fn up(config: &LocalConfig) -> anyhow::Result<LocalState> {
    let dir = &config.state_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let state = LocalState {
        prefix: prefix_for(dir),
        subnet: config.subnet,
        nodes: config.nodes,
        ssh_port: config.ssh_port,
    };
    let json = serde_json::to_vec_pretty(&state)?;
    boxcutter_sys::write_atomic(&dir.join(STATE_FILE), &json, 0o644)?;

    let net = LocalNet::new(&state.prefix, state.subnet)?;
    net.ensure(state.nodes)?;
    let services = services::Services::new(config, &net);
    services.secret()?;
    services.image()?;
    services.mosquitto()?;
    for n in 1..=state.nodes {
        services.node(n)?;
    }
    services.orchestrator()?;
    services.register(state.nodes)?;
    services.sshd()?;
    services.ssh_config()?;
    Ok(state)
}

/// Stops everything `up` started in `state_dir` and removes its network.
pub fn down(state_dir: &Path) -> anyhow::Result<()> {
    let path = state_dir.join(STATE_FILE);
    let text =
        std::fs::read(&path).with_context(|| format!("no local mode at {}", path.display()))?;
    let state: LocalState = serde_json::from_slice(&text)?;
    for daemon in services::daemons(state_dir, state.nodes) {
        daemon.stop(Duration::from_secs(10));
    }
    // Guests belong to no daemon; they go down with local mode.
    let marker = state_dir.display().to_string();
    for pid in crate::procs::pids_with(&marker) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // A killed QEMU holds its disk until it is gone; the pool unmounts only after.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !crate::procs::pids_with(&marker).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    services::unmount_pools(state_dir, state.nodes);
    let net = LocalNet::new(&state.prefix, state.subnet)?;
    // The orchestrator's routes to guests go with the bridge they point into.
    net.remove(state.nodes);
    Ok(())
}

/// A daemon of local mode, with its files in `dir`.
fn daemon(dir: &Path, name: &str, marker: &Path) -> Daemon {
    Daemon {
        name: name.into(),
        pidfile: dir.join(format!("{name}.pid")),
        log: dir.join(format!("{name}.log")),
        marker: marker.display().to_string(),
    }
}
