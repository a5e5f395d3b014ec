//! Booting and copying Firecracker guests: the Firecracker side of a VM create on a node.
//!
//! ```text
//! boot:    validate image → host key + config drive → bind the agent's vsock listener
//!          → launch Firecracker → ready (over vsock)
//! restore: host key + config drive → Firecracker from the source's snapshot, on this
//!          VM's TAP, vsock socket and disks → refresh (new name, network, clock, RNG,
//!          host key, over vsock)
//! ```
//! Either undoes what it made when a later step fails. The root disk is prepared by the
//! caller (a reflink clone in the storage pool), as for QEMU.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use boxcutter_image::{validate_image, ImagePaths};
use boxcutter_types::guest::{BootParams, HostCommand, Refresh, VmType};
use boxcutter_types::VmName;
use boxcutter_vmm::firecracker::boot_args::kernel_cmdline;
use boxcutter_vmm::firecracker::jail::{Jail, JailerConfig};
use boxcutter_vmm::firecracker::vm::{
    FirecrackerConfig, FirecrackerError, FirecrackerNic, FirecrackerPaths, FirecrackerVm,
    SnapshotFiles, DEFAULT_SOCKET_WAIT,
};
use boxcutter_vmm::firecracker::vsock::AgentListener;

use crate::guest::{
    guest_mac, write_config_drive, BootError, BootTimings, GuestSpec, CONFIG_DRIVE, HOST_KEY,
};

/// The guest's vsock context id. Each microVM has a vsock device of its own, reached
/// through its own Unix socket, so every guest can use the same one.
const GUEST_CID: u32 = 3;

/// How long a restored guest may take to confirm its new identity.
const REFRESH_WAIT: Duration = Duration::from_secs(30);

/// Where and how a Firecracker guest runs.
#[derive(Debug, Clone)]
pub struct FirecrackerEnv {
    /// The `firecracker` binary.
    pub binary: PathBuf,
    /// Run it under the jailer.
    pub jailer: Option<JailerConfig>,
    /// The kernel and initramfs to boot instead of the image's: copies on the pool's
    /// filesystem, so that jails can hard-link them ([`stage_for_jails`]).
    pub boot_files: Option<BootFiles>,
    /// The image directory (`vmlinux`, initramfs).
    pub image_dir: PathBuf,
    /// The VM's own directory (console, logs, pidfile, config drive).
    pub vm_dir: PathBuf,
    /// A short directory for the API and vsock sockets.
    pub socket_dir: PathBuf,
    /// The root disk, a raw image the caller prepared.
    pub root_disk: PathBuf,
    /// The network namespace the TAP device lives in.
    pub netns: Option<PathBuf>,
    /// How long the guest may take to report ready.
    pub ready_timeout: Duration,
}

/// The runtime files of Firecracker VM `name`: its sockets in `socket_dir`, or in its jail
/// when `jailer` is given (with the Firecracker `binary` the jailer runs).
pub fn paths(
    name: &VmName,
    vm_dir: &Path,
    socket_dir: &Path,
    jailer: Option<(&JailerConfig, &Path)>,
) -> FirecrackerPaths {
    match jailer {
        Some((jailer, binary)) => {
            FirecrackerPaths::jailed(vm_dir, Jail::new(jailer, binary, name.as_str()))
        }
        None => FirecrackerPaths {
            socket: socket_dir.join("firecracker.sock"),
            vsock: socket_dir.join("vsock.sock"),
            ..FirecrackerPaths::in_dir(vm_dir)
        },
    }
}

/// A Firecracker guest that is running and knows who it is.
#[derive(Debug, Clone)]
pub struct StartedGuest {
    /// The running VM.
    pub vm: FirecrackerVm,
    /// The guest's SSH host public key line.
    pub host_public_key: String,
    /// How long each step took.
    pub timings: BootTimings,
}

/// Boots `spec` and waits for the guest agent's ready report over vsock.
pub async fn boot(spec: &GuestSpec, env: &FirecrackerEnv) -> Result<StartedGuest, BootError> {
    let image = validate_image(&env.image_dir)?;
    let mut timings = BootTimings::default();
    let step = Instant::now();
    let host_public_key = write_config_drive(spec, &env.vm_dir)?;
    timings.config = step.elapsed();

    let config = config(spec, env, &image);
    remove_stale_jail(&config)?;
    let listener = AgentListener::bind(&config.paths.vsock).map_err(FirecrackerError::from)?;
    if let Some(jail) = &config.paths.jail {
        listener
            .hand_over(jail.uid, jail.gid)
            .map_err(FirecrackerError::from)?;
    }
    let step = Instant::now();
    let vm = FirecrackerVm::launch(&config, env.netns.as_deref()).await?;
    timings.launch = step.elapsed();
    let step = Instant::now();
    match vm.wait_ready(&listener, env.ready_timeout).await {
        Ok(uptime) => {
            timings.ready = step.elapsed();
            timings.guest_uptime = uptime;
        }
        Err(error) => {
            vm.kill().await;
            return Err(error.into());
        }
    }
    tracing::info!(vm = %spec.name, pid = vm.pid(), ready_ms = timings.ready.as_millis() as u64, "firecracker guest ready");
    Ok(StartedGuest {
        vm,
        host_public_key,
        timings,
    })
}

/// Starts `spec` from `snapshot`, a snapshot of another running guest whose disk the
/// caller cloned as this VM's root disk at the same moment, then tells the guest it is
/// now `spec` (name, network, clock, RNG, a host key of its own).
pub async fn restore(
    spec: &GuestSpec,
    env: &FirecrackerEnv,
    snapshot: &SnapshotFiles,
) -> Result<StartedGuest, BootError> {
    let image = validate_image(&env.image_dir)?;
    let mut timings = BootTimings::default();
    let step = Instant::now();
    let host_public_key = write_config_drive(spec, &env.vm_dir)?;
    let host_key_path = env.vm_dir.join(HOST_KEY);
    let host_key = std::fs::read_to_string(&host_key_path).map_err(|source| BootError::Io {
        path: host_key_path,
        source,
    })?;
    timings.config = step.elapsed();

    let config = config(spec, env, &image);
    remove_stale_jail(&config)?;
    let step = Instant::now();
    let vm = FirecrackerVm::restore(&config, snapshot, env.netns.as_deref()).await?;
    timings.launch = step.elapsed();

    let step = Instant::now();
    let refresh = HostCommand::Refresh(Refresh {
        name: spec.name.clone(),
        net: spec.net.as_ref().map(|n| n.guest.clone()),
        unix_time_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        entropy: fresh_entropy().map_err(|source| BootError::Io {
            path: PathBuf::from("/dev/urandom"),
            source,
        })?,
        ssh_host_key: Some(host_key),
    });
    if let Err(error) = vm.refresh(&refresh, REFRESH_WAIT).await {
        vm.kill().await;
        return Err(error.into());
    }
    timings.ready = step.elapsed();
    tracing::info!(vm = %spec.name, pid = vm.pid(), "firecracker guest restored from a snapshot");
    Ok(StartedGuest {
        vm,
        host_public_key,
        timings,
    })
}

fn config(spec: &GuestSpec, env: &FirecrackerEnv, image: &ImagePaths) -> FirecrackerConfig {
    let params = BootParams {
        name: spec.name.clone(),
        vm_type: VmType::Firecracker,
        net: spec.net.as_ref().map(|n| n.guest.clone()),
        vcpus: None,
    };
    FirecrackerConfig {
        binary: env.binary.clone(),
        id: spec.name.to_string(),
        vcpus: u8::try_from(spec.vcpus).unwrap_or(u8::MAX),
        memory_mib: spec.memory_mib,
        kernel: env
            .boot_files
            .as_ref()
            .map_or_else(|| image.vmlinux.clone(), |f| f.kernel.clone()),
        initrd: Some(
            env.boot_files
                .as_ref()
                .map_or_else(|| image.initrd.clone(), |f| f.initrd.clone()),
        ),
        cmdline: kernel_cmdline(&params),
        root_disk: env.root_disk.clone(),
        config_drive: Some(env.vm_dir.join(CONFIG_DRIVE)),
        nic: spec.net.as_ref().and_then(|net| {
            let mac = guest_mac(&spec.name).parse().ok()?;
            Some(FirecrackerNic {
                tap: net.tap.clone(),
                mac,
            })
        }),
        guest_cid: GUEST_CID,
        track_dirty_pages: false,
        extra_args: Vec::new(),
        socket_wait: DEFAULT_SOCKET_WAIT,
        paths: paths(
            &spec.name,
            &env.vm_dir,
            &env.socket_dir,
            env.jailer.as_ref().map(|j| (j, env.binary.as_path())),
        ),
        jailer: env.jailer.clone(),
    }
}

/// A kernel and initramfs to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// The uncompressed kernel.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
}

/// Copies the image's kernel and initramfs once into `jail_base/image/<image key>`, on the
/// pool's filesystem, so that every jail hard-links them instead of copying tens of
/// megabytes per launch; copies of other images are removed.
pub fn stage_for_jails(image: &ImagePaths, jail_base: &Path) -> std::io::Result<BootFiles> {
    let staged = jail_base.join("image");
    let dir = staged.join(&image.manifest.input_key);
    std::fs::create_dir_all(&dir)?;
    for old in std::fs::read_dir(&staged)?.flatten() {
        if old.path() != dir {
            std::fs::remove_dir_all(old.path())?;
        }
    }
    let files = BootFiles {
        kernel: dir.join("vmlinux"),
        initrd: dir.join("initrd.img"),
    };
    for (from, to) in [
        (&image.vmlinux, &files.kernel),
        (&image.initrd, &files.initrd),
    ] {
        if !to.is_file() {
            let tmp = to.with_extension("tmp");
            std::fs::copy(from, &tmp)?;
            std::fs::rename(&tmp, to)?;
        }
    }
    Ok(files)
}

/// The jailer refuses a jail left by an earlier run of the same VM (a crash, a killed
/// agent); nothing in it is needed, the VM's own files are in its directory.
fn remove_stale_jail(config: &FirecrackerConfig) -> Result<(), BootError> {
    let Some(jail) = &config.paths.jail else {
        return Ok(());
    };
    jail.remove().map_err(|source| BootError::Io {
        path: jail.dir().to_owned(),
        source,
    })
}

/// 32 bytes from the host's RNG, hex-encoded, for a restored guest's RNG.
fn fresh_entropy() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}
