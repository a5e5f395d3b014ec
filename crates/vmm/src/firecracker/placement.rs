//! Where the files of one Firecracker launch are, as Firecracker names them ([`Placed`]):
//! the host's own paths, or for a jailed Firecracker hard links in its jail (writable ones
//! owned by the jail's uid/gid) and the jail's paths for them.

use std::path::{Path, PathBuf};

use super::api::Drive;
use super::jail::Jail;
use super::vm::{ensure_file, SnapshotFiles, CONFIG_DRIVE_ID, ROOT_DRIVE_ID};
use super::vm_config::{FirecrackerConfig, FirecrackerError};

/// File names inside a jail.
const JAIL_KERNEL: &str = "vmlinux";
const JAIL_INITRD: &str = "initrd.img";
const JAIL_ROOT_DISK: &str = "rootfs.img";
const JAIL_CONFIG_DRIVE: &str = "config.img";
const JAIL_LOG: &str = "firecracker.log";
const JAIL_METRICS: &str = "metrics";
pub(super) const SNAPSHOT_STATE: &str = "snapshot.state";
pub(super) const SNAPSHOT_MEMORY: &str = "snapshot.mem";

/// The files of one launch as Firecracker names them.
#[derive(Debug)]
pub(super) struct Placed {
    pub socket: PathBuf,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub root_disk: PathBuf,
    pub config_drive: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub metrics: Option<PathBuf>,
    pub vsock: PathBuf,
}

/// Creates the log and metrics files, and for a jailed Firecracker puts every file it
/// needs into its jail (writable ones owned by its uid/gid); returns the paths to give it.
pub(super) fn place(config: &FirecrackerConfig) -> Result<Placed, FirecrackerError> {
    let paths = &config.paths;
    for file in paths.log.iter().chain(&paths.metrics) {
        ensure_file(file)?;
    }
    let Some(jail) = &paths.jail else {
        return Ok(Placed {
            socket: paths.socket.clone(),
            kernel: config.kernel.clone(),
            initrd: config.initrd.clone(),
            root_disk: config.root_disk.clone(),
            config_drive: config.config_drive.clone(),
            log: paths.log.clone(),
            metrics: paths.metrics.clone(),
            vsock: paths.vsock.clone(),
        });
    };
    let admit = |file: &Path, name: &str, owned: bool| admit(jail, file, name, owned);
    let inside = |host: &Path| inside(jail, host);
    Ok(Placed {
        socket: inside(&paths.socket)?,
        kernel: admit(&config.kernel, JAIL_KERNEL, false)?,
        initrd: config
            .initrd
            .as_ref()
            .map(|f| admit(f, JAIL_INITRD, false))
            .transpose()?,
        root_disk: admit(&config.root_disk, JAIL_ROOT_DISK, true)?,
        // Owned, so that the jail's uid can read it (it is 0600).
        config_drive: config
            .config_drive
            .as_ref()
            .map(|f| admit(f, JAIL_CONFIG_DRIVE, true))
            .transpose()?,
        log: paths
            .log
            .as_ref()
            .map(|f| admit(f, JAIL_LOG, true))
            .transpose()?,
        metrics: paths
            .metrics
            .as_ref()
            .map(|f| admit(f, JAIL_METRICS, true))
            .transpose()?,
        vsock: inside(&paths.vsock)?,
    })
}

/// A snapshot's files as Firecracker names them: in a jailed Firecracker's jail.
pub(super) fn place_snapshot(
    config: &FirecrackerConfig,
    files: &SnapshotFiles,
) -> Result<SnapshotFiles, FirecrackerError> {
    let Some(jail) = &config.paths.jail else {
        return Ok(files.clone());
    };
    Ok(SnapshotFiles {
        state: admit(jail, &files.state, SNAPSHOT_STATE, true)?,
        memory: admit(jail, &files.memory, SNAPSHOT_MEMORY, true)?,
    })
}

/// How a Firecracker in `jail` names the host path `host`.
pub(super) fn inside(jail: &Jail, host: &Path) -> Result<PathBuf, FirecrackerError> {
    jail.inside(host).map_err(|source| FirecrackerError::Jail {
        path: host.to_owned(),
        source,
    })
}

fn admit(jail: &Jail, file: &Path, name: &str, owned: bool) -> Result<PathBuf, FirecrackerError> {
    jail.admit(file, name, owned)
        .map_err(|source| FirecrackerError::Jail {
            path: file.to_owned(),
            source,
        })
}

/// The drives in attachment order: root disk, then the config drive.
pub(super) fn drives(placed: &Placed) -> Vec<Drive> {
    let root = Drive::new(ROOT_DRIVE_ID, &placed.root_disk, false);
    let config_drive = placed
        .config_drive
        .as_ref()
        .map(|path| Drive::new(CONFIG_DRIVE_ID, path, true));
    std::iter::once(root).chain(config_drive).collect()
}
