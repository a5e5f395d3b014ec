//! Booting one guest from an image: the steps a VM create runs on a node.
//!
//! ```text
//! validate image → root disk (qcow2 overlay, or one the caller made) → host key + config
//! drive → launch QEMU → ready
//! ```
//! Each step that creates something has an undo; if a later step fails, what this boot
//! created is removed again, so a failed boot leaves the VM directory as it found it. A
//! second boot of the same directory (a start after a stop) reuses the disk and host key.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use boxcutter_image::{validate_image, ImageError, ImagePaths};
use boxcutter_sys::{run, CommandError};
use boxcutter_types::guest::{BootParams, GuestConfig, GuestNet, VmType};
use boxcutter_types::{ByteSize, VmName};
use boxcutter_vmm::kvm::Accel;
use boxcutter_vmm::qemu::{Disk, DiskFormat, Nic, QemuConfig, QemuError, QemuVm, RuntimePaths};
use sha2::{Digest, Sha256};

/// File names inside a VM directory.
const ROOT_DISK: &str = "root.qcow2";
/// The config drive's file name in a VM directory.
pub const CONFIG_DRIVE: &str = "config.img";
/// The guest's SSH host key (private) in a VM directory.
pub const HOST_KEY: &str = "ssh_host_ed25519_key";
const HOST_KEY_PUB: &str = "ssh_host_ed25519_key.pub";

/// What to boot.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// The VM's name (its hostname).
    pub name: VmName,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// RAM in MiB.
    pub memory_mib: u32,
    /// Network: the TAP to attach to and the guest's addresses.
    pub net: Option<GuestNetSpec>,
    /// Public keys allowed to log in as `dev`.
    pub authorized_keys: Vec<String>,
}

/// A guest's network attachment.
#[derive(Debug, Clone)]
pub struct GuestNetSpec {
    /// The TAP device (in the namespace QEMU runs in).
    pub tap: String,
    /// Addresses inside the guest.
    pub guest: GuestNet,
}

/// Where and how to boot.
#[derive(Debug, Clone)]
pub struct BootEnv {
    /// The image directory.
    pub image_dir: PathBuf,
    /// The VM's own directory (created if missing).
    pub vm_dir: PathBuf,
    /// The root disk.
    pub root_disk: RootDisk,
    /// Where QEMU's sockets go (default: the VM directory).
    pub socket_dir: Option<PathBuf>,
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// KVM or TCG.
    pub accel: Accel,
    /// The host TSC rate, passed to guests under TCG.
    pub tsc_khz: Option<u64>,
    /// Network namespace to run QEMU in.
    pub netns: Option<PathBuf>,
    /// How long the guest may take to report ready.
    pub ready_timeout: Duration,
}

impl BootEnv {
    /// The VM's runtime files.
    pub fn runtime_paths(&self) -> RuntimePaths {
        match &self.socket_dir {
            Some(sockets) => RuntimePaths::with_socket_dir(&self.vm_dir, sockets),
            None => RuntimePaths::in_dir(&self.vm_dir),
        }
    }
}

/// Where the root disk comes from.
#[derive(Debug, Clone)]
pub enum RootDisk {
    /// A qcow2 overlay over the image's rootfs, created in the VM directory if missing.
    Overlay {
        /// The size the guest sees.
        size: ByteSize,
    },
    /// A disk the caller prepared (e.g. a reflink clone in the storage pool).
    Prepared(Disk),
}

/// Errors booting a guest.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The image is unusable.
    #[error("image")]
    Image(#[from] ImageError),
    /// The requested disk is smaller than the image's root filesystem.
    #[error("disk size {requested} is smaller than the image's root filesystem ({minimum})")]
    DiskTooSmall {
        /// What was asked for.
        requested: ByteSize,
        /// The golden image's size.
        minimum: ByteSize,
    },
    /// A file in the VM directory could not be written.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A helper program failed.
    #[error("{step}")]
    Command {
        /// The step.
        step: &'static str,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// QEMU failed.
    #[error("vmm")]
    Qemu(#[from] QemuError),
    /// Firecracker failed.
    #[error("vmm")]
    Firecracker(#[from] boxcutter_vmm::firecracker::vm::FirecrackerError),
}

/// A guest that reported ready.
#[derive(Debug, Clone)]
pub struct BootedGuest {
    /// The running VM.
    pub vm: QemuVm,
    /// The guest's SSH host public key line, known before first contact.
    pub host_public_key: String,
    /// How long each step took.
    pub timings: BootTimings,
}

/// Per-step durations of a boot.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootTimings {
    /// Disk overlay creation.
    pub disk: Duration,
    /// Host key and config drive.
    pub config: Duration,
    /// QEMU launch until `-daemonize` returned.
    pub launch: Duration,
    /// Launch until the agent's ready report.
    pub ready: Duration,
    /// The guest's own uptime at ready: kernel boot plus the agent's set-up.
    pub guest_uptime: Duration,
}

/// Boots `spec` and waits for the guest agent's ready report.
pub async fn boot_guest(spec: &GuestSpec, env: &BootEnv) -> Result<BootedGuest, BootError> {
    boot_guest_reporting(spec, env, &|_| {}).await
}

/// [`boot_guest`], calling `launched` with QEMU's pid as soon as QEMU runs (before the
/// guest is ready), so callers can report the two phases apart.
pub async fn boot_guest_reporting(
    spec: &GuestSpec,
    env: &BootEnv,
    launched: &(dyn Fn(i32) + Sync),
) -> Result<BootedGuest, BootError> {
    let image = validate_image(&env.image_dir)?;
    std::fs::create_dir_all(&env.vm_dir).map_err(io_err(&env.vm_dir))?;
    let mut undo = Undo::default();
    let result = boot_steps(spec, env, &image, &mut undo, launched).await;
    if result.is_err() {
        undo.run().await;
    }
    result
}

async fn boot_steps(
    spec: &GuestSpec,
    env: &BootEnv,
    image: &ImagePaths,
    undo: &mut Undo,
    launched: &(dyn Fn(i32) + Sync),
) -> Result<BootedGuest, BootError> {
    let mut timings = BootTimings::default();
    let step = Instant::now();
    let root_disk = match &env.root_disk {
        RootDisk::Prepared(disk) => disk.clone(),
        RootDisk::Overlay { size } => {
            let path = env.vm_dir.join(ROOT_DISK);
            if !path.exists() {
                undo.files.push(path.clone());
                create_overlay_disk(&image.rootfs, &path, *size)?;
            }
            Disk {
                path,
                format: DiskFormat::Qcow2,
            }
        }
    };
    timings.disk = step.elapsed();

    let step = Instant::now();
    if !env.vm_dir.join(HOST_KEY).exists() {
        undo.files
            .extend([HOST_KEY, HOST_KEY_PUB].map(|f| env.vm_dir.join(f)));
    }
    undo.files.push(env.vm_dir.join(CONFIG_DRIVE));
    let host_public_key = write_config_drive(spec, &env.vm_dir)?;
    timings.config = step.elapsed();

    let step = Instant::now();
    let config = qemu_config(spec, env, image, root_disk);
    let paths = config.paths.clone();
    undo.files.extend([
        paths.qmp.clone(),
        paths.agent.clone(),
        paths.pidfile.clone(),
    ]);
    let mut attempt = 1;
    let vm = loop {
        let vm = QemuVm::launch(&config, env.netns.as_deref()).await?;
        undo.vm = Some(vm.clone());
        launched(vm.pid());
        timings.launch = step.elapsed();

        let waited = Instant::now();
        // A guest stuck before any of our code ran is not worth the whole ready timeout.
        let first_wait = env.ready_timeout.min(EARLY_BOOT_LIMIT);
        let mut outcome = vm.wait_ready(first_wait).await;
        if let Err(QemuError::ReadyTimeout { console, .. }) = &outcome {
            if !died_before_userspace(console) && first_wait < env.ready_timeout {
                outcome = vm.wait_ready(env.ready_timeout - first_wait).await;
            }
        }
        match outcome {
            Ok(ready) => {
                timings.guest_uptime = ready.guest_uptime;
                timings.ready = waited.elapsed();
                break vm;
            }
            Err(QemuError::GuestExited { console } | QemuError::ReadyTimeout { console, .. })
                if attempt < EARLY_DEATH_ATTEMPTS && died_before_userspace(&console) =>
            {
                // Limitation: under TCG (QEMU 10, Debian's 6.1 kernel) a 1-vCPU guest often
                // panics in early kernel init ("Attempted to kill the idle task" in
                // __x86_return_thunk), and now and then any guest hangs there, before any
                // initramfs or agent line; its disk is untouched then, so launching it
                // again is safe.
                tracing::warn!(vm = %spec.name, attempt, "guest died or hung in early kernel boot; launching it again");
                vm.kill().await;
                attempt += 1;
            }
            Err(error) => return Err(error.into()),
        }
    };
    tracing::info!(vm = %spec.name, pid = vm.pid(), ready_ms = timings.ready.as_millis() as u64, "guest ready");
    Ok(BootedGuest {
        vm,
        host_public_key,
        timings,
    })
}

/// How many times a guest that dies before userspace is launched in all.
const EARLY_DEATH_ATTEMPTS: u32 = 5;

/// How long a guest may run without a line of ours on its console before it is taken for
/// stuck in early kernel boot (normally 2–4 s under TCG; ten guests booting at once on
/// two cores take up to half a minute).
const EARLY_BOOT_LIMIT: Duration = Duration::from_secs(60);

/// True when a guest's console shows no initramfs or agent line: it died in the firmware
/// or the kernel, before anything of ours ran or touched its disk.
fn died_before_userspace(console: &str) -> bool {
    !console.lines().any(|l| l.contains("boxcutter"))
}

/// What a failed boot has to take back.
#[derive(Default)]
struct Undo {
    files: Vec<PathBuf>,
    vm: Option<QemuVm>,
}

impl Undo {
    async fn run(self) {
        if let Some(vm) = self.vm {
            vm.kill().await;
        }
        for file in self.files.iter().rev() {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A qcow2 overlay over the golden image: created in milliseconds whatever its size,
/// sharing every unchanged block with the image.
pub fn create_overlay_disk(rootfs: &Path, disk: &Path, size: ByteSize) -> Result<(), BootError> {
    let minimum = std::fs::metadata(rootfs).map_err(io_err(rootfs))?.len();
    if size.bytes() < minimum {
        return Err(BootError::DiskTooSmall {
            requested: size,
            minimum: ByteSize(minimum),
        });
    }
    let mut cmd = Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(rootfs)
        .arg(disk);
    cmd.arg(size.bytes().to_string());
    run(&mut cmd).map_err(|source| BootError::Command {
        step: "create root disk",
        source,
    })?;
    Ok(())
}

/// Writes the config drive, generating the guest's host key on first boot; returns the
/// public key.
pub fn write_config_drive(spec: &GuestSpec, vm_dir: &Path) -> Result<String, BootError> {
    let key = vm_dir.join(HOST_KEY);
    if !key.exists() {
        generate_host_key(&spec.name, &key)?;
    }
    let private = std::fs::read_to_string(&key).map_err(io_err(&key))?;
    let public_path = vm_dir.join(HOST_KEY_PUB);
    let public = std::fs::read_to_string(&public_path).map_err(io_err(&public_path))?;

    let config = GuestConfig {
        authorized_keys: spec.authorized_keys.clone(),
        ssh_host_key: private,
    };
    let drive = vm_dir.join(CONFIG_DRIVE);
    boxcutter_sys::write_atomic(&drive, &config.encode(), 0o600).map_err(io_err(&drive))?;
    Ok(public.trim().to_string())
}

fn generate_host_key(name: &VmName, key: &Path) -> Result<(), BootError> {
    let _ = std::fs::remove_file(key.with_extension("pub"));
    let mut keygen = Command::new("ssh-keygen");
    keygen
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name.as_str(), "-f"])
        .arg(key);
    run(&mut keygen).map_err(|source| BootError::Command {
        step: "generate host key",
        source,
    })?;
    Ok(())
}

/// vCPUs QEMU starts a guest with, and how many the guest keeps online.
///
/// Limitation: under TCG a 1-vCPU guest of Debian's 6.1 kernel often panics in early boot
/// ("Attempted to kill the idle task" in `__x86_return_thunk`); with 2 it does not. Such
/// guests boot with 2 and the guest agent takes the second offline before sshd starts,
/// so the guest still sees the one vCPU it asked for.
fn boot_vcpus(accel: Accel, vcpus: u32) -> (u32, Option<u32>) {
    match (accel, vcpus) {
        (Accel::Tcg, 1) => (2, Some(1)),
        _ => (vcpus, None),
    }
}

fn qemu_config(spec: &GuestSpec, env: &BootEnv, image: &ImagePaths, root: Disk) -> QemuConfig {
    let (boot_vcpus, online) = boot_vcpus(env.accel, spec.vcpus);
    let params = BootParams {
        name: spec.name.clone(),
        vm_type: VmType::Qemu,
        net: spec.net.as_ref().map(|n| n.guest.clone()),
        vcpus: online,
    };
    QemuConfig {
        binary: env.qemu.clone(),
        accel: env.accel,
        vcpus: boot_vcpus,
        memory_mib: spec.memory_mib,
        kernel: image.vmlinux.clone(),
        initrd: image.initrd.clone(),
        cmdline: kernel_cmdline(&params, env.accel, env.tsc_khz),
        root_disk: root,
        config_drive: Some(env.vm_dir.join(CONFIG_DRIVE)),
        nic: spec.net.as_ref().map(|n| Nic {
            tap: n.tap.clone(),
            mac: guest_mac(&spec.name),
        }),
        paths: env.runtime_paths(),
    }
}

/// The guest kernel's command line: console on the serial port, root on the first disk,
/// reboot (which QEMU turns into exit) on panic, and the Boxcutter boot parameters.
pub fn kernel_cmdline(params: &BootParams, accel: Accel, tsc_khz: Option<u64>) -> String {
    let mut words = ["console=ttyS0", "root=/dev/vda", "rw", "quiet", "panic=-1"].join(" ");
    if let (Accel::Tcg, Some(khz)) = (accel, tsc_khz) {
        words.push_str(&format!(" tsc_early_khz={khz}"));
    }
    format!("{words} {}", params.to_cmdline())
}

/// A stable, locally administered MAC for a VM name.
pub fn guest_mac(name: &VmName) -> String {
    let hash = Sha256::digest(name.as_str().as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", hash[0], hash[1], hash[2])
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BootError + '_ {
    move |source| BootError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BootParams {
        BootParams {
            name: VmName::new("bold-fox").unwrap(),
            vm_type: VmType::Qemu,
            net: None,
            vcpus: None,
        }
    }

    #[test]
    fn only_deaths_before_our_code_ran_count_as_early() {
        assert!(died_before_userspace(
            "SeaBIOS (version 1.16.3)\nBooting from ROM.."
        ));
        assert!(died_before_userspace(
            "[    0.18] Kernel panic - not syncing: idle task"
        ));
        assert!(!died_before_userspace(
            "boxcutter-initramfs: cannot mount root filesystem"
        ));
        assert!(!died_before_userspace(
            "boxcutter-guest: [  2100 ms] sshd failed"
        ));
    }

    #[test]
    fn one_vcpu_tcg_guests_boot_with_two_and_keep_one() {
        assert_eq!(boot_vcpus(Accel::Tcg, 1), (2, Some(1)));
        assert_eq!(boot_vcpus(Accel::Tcg, 2), (2, None));
        assert_eq!(boot_vcpus(Accel::Kvm, 1), (1, None));
    }

    #[test]
    fn tcg_guests_get_the_host_tsc_rate() {
        let line = kernel_cmdline(&params(), Accel::Tcg, Some(2_600_000));
        assert_eq!(
            line,
            "console=ttyS0 root=/dev/vda rw quiet panic=-1 tsc_early_khz=2600000 \
             boxcutter.name=bold-fox boxcutter.type=qemu"
        );
        assert!(!kernel_cmdline(&params(), Accel::Kvm, Some(2_600_000)).contains("tsc_early"));
    }

    #[test]
    fn macs_are_stable_and_locally_administered() {
        let a = guest_mac(&VmName::new("a").unwrap());
        assert_eq!(a, guest_mac(&VmName::new("a").unwrap()));
        assert_ne!(a, guest_mac(&VmName::new("b").unwrap()));
        assert!(a.starts_with("52:54:00:") && a.len() == 17);
    }

    #[test]
    fn disk_smaller_than_the_image_is_refused_before_anything_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs.ext4");
        std::fs::write(&rootfs, vec![0u8; 4 << 20]).unwrap();
        let disk = dir.path().join("root.qcow2");
        let err = create_overlay_disk(&rootfs, &disk, ByteSize(1 << 20)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "disk size 1M is smaller than the image's root filesystem (4M)"
        );
        assert!(!disk.exists());
    }

    #[test]
    fn root_disk_is_an_overlay_of_the_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs.ext4");
        std::fs::write(&rootfs, vec![0u8; 1 << 20]).unwrap();
        let disk = dir.path().join("root.qcow2");
        create_overlay_disk(&rootfs, &disk, ByteSize(50 << 30)).unwrap();
        let info = run(Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&disk))
        .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["virtual-size"], 50u64 << 30);
        assert_eq!(info["backing-filename"], rootfs.to_str().unwrap());
        assert!(
            std::fs::metadata(&disk).unwrap().len() < 1 << 20,
            "overlay must be sparse"
        );
    }

    #[test]
    fn config_drive_carries_keys_and_a_fresh_host_key() {
        let dir = tempfile::tempdir().unwrap();
        let spec = GuestSpec {
            name: VmName::new("bold-fox").unwrap(),
            vcpus: 1,
            memory_mib: 256,
            net: None,
            authorized_keys: vec!["ssh-ed25519 AAAAtest user".into()],
        };
        let public = write_config_drive(&spec, dir.path()).unwrap();
        assert!(
            public.starts_with("ssh-ed25519 ") && public.ends_with(" bold-fox"),
            "{public}"
        );
        let drive = std::fs::read(dir.path().join(CONFIG_DRIVE)).unwrap();
        let config = GuestConfig::decode(&drive).unwrap();
        assert_eq!(config.authorized_keys, spec.authorized_keys);
        assert!(config.ssh_host_key.contains("BEGIN OPENSSH PRIVATE KEY"));
        let again = write_config_drive(&spec, dir.path()).unwrap();
        assert_eq!(public, again, "a VM keeps its host key across boots");
        let other = tempfile::tempdir().unwrap();
        let fresh = write_config_drive(&spec, other.path()).unwrap();
        assert_ne!(public, fresh, "every new VM gets its own host key");
    }
}
