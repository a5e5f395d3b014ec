//! What the Firecracker test lists run against: a [`Target`] is either `FakeFirecracker`
//! (the `fake-firecracker` binary, always available) or the real binary named by
//! `BOXCUTTER_TEST_FIRECRACKER` on a machine where KVM works. Both are launched the same
//! way (`--api-sock PATH --id ID`) and driven through the same client; the tests only
//! differ where a real guest cannot be relied upon (marked at the place).

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use boxcutter_vmm::firecracker::api::{
    ApiClient, BootSource, Drive, MacAddr, MachineConfig, NetworkInterface, Vsock,
};

/// The real binary; setting it makes the `real::` tests run.
pub const FIRECRACKER_ENV: &str = "BOXCUTTER_TEST_FIRECRACKER";
/// The guest kernel (`vmlinux`) for the real binary; required with it.
pub const KERNEL_ENV: &str = "BOXCUTTER_TEST_FIRECRACKER_KERNEL";
/// An initramfs for the real binary (optional).
pub const INITRD_ENV: &str = "BOXCUTTER_TEST_FIRECRACKER_INITRD";
/// A root filesystem image for the real binary, attached read-only (optional).
pub const ROOTFS_ENV: &str = "BOXCUTTER_TEST_FIRECRACKER_ROOTFS";
/// An existing TAP device for the real binary's network interface (optional).
pub const TAP_ENV: &str = "BOXCUTTER_TEST_FIRECRACKER_TAP";

/// Guest memory of every test guest.
pub const MEM_MIB: u32 = 128;

/// How long a freshly launched process may take to create its API socket.
const SOCKET_WAIT: Duration = Duration::from_secs(5);

/// What a test runs against.
#[derive(Debug, Clone)]
pub enum Target {
    /// The `fake-firecracker` binary.
    Fake,
    /// The real `firecracker` binary and the guest files it boots.
    Real(RealGuest),
}

/// The real binary and what it boots, from the environment.
#[derive(Debug, Clone)]
pub struct RealGuest {
    pub binary: PathBuf,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
    pub tap: Option<String>,
}

impl Target {
    /// The fake.
    pub fn fake() -> Self {
        Target::Fake
    }

    /// The real binary when [`FIRECRACKER_ENV`] is set. Panics when it is set but the run
    /// cannot be honest: no kernel given, or KVM unusable.
    pub fn real() -> Option<Self> {
        let binary = PathBuf::from(std::env::var_os(FIRECRACKER_ENV)?);
        let kernel = std::env::var_os(KERNEL_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!("{FIRECRACKER_ENV} is set: {KERNEL_ENV} must name a vmlinux")
            });
        if let Err(why) = boxcutter_vmm::kvm::check_device(Path::new("/dev/kvm")) {
            panic!("{FIRECRACKER_ENV} is set but KVM is unusable: {why}");
        }
        Some(Target::Real(RealGuest {
            binary,
            kernel,
            initrd: std::env::var_os(INITRD_ENV).map(PathBuf::from),
            rootfs: std::env::var_os(ROOTFS_ENV).map(PathBuf::from),
            tap: std::env::var(TAP_ENV).ok(),
        }))
    }

    /// Whether this is the fake.
    pub fn is_fake(&self) -> bool {
        matches!(self, Target::Fake)
    }

    fn binary(&self) -> PathBuf {
        match self {
            Target::Fake => PathBuf::from(env!("CARGO_BIN_EXE_fake-firecracker")),
            Target::Real(real) => real.binary.clone(),
        }
    }

    /// Starts the binary with its API socket at `<dir>/<name>.sock`, passing `extra`
    /// arguments and `env`, without waiting for the socket.
    pub fn spawn(
        &self,
        dir: &Path,
        name: &str,
        extra: &[String],
        env: &[(&str, &str)],
    ) -> Instance {
        let socket = dir.join(format!("{name}.sock"));
        let output = dir.join(format!("{name}.out"));
        let out = std::fs::File::create(&output).expect("output file");
        let err = out.try_clone().expect("output file");
        let mut command = tokio::process::Command::new(self.binary());
        command
            .arg("--api-sock")
            .arg(&socket)
            .args(["--id", name])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = command.spawn().expect("the firecracker binary starts");
        Instance {
            client: ApiClient::new(&socket),
            socket,
            output,
            child,
        }
    }

    /// Starts the binary and waits for its API socket.
    pub async fn launch(&self, dir: &Path, name: &str) -> Instance {
        eprintln!("target: {self}");
        let instance = self.spawn(dir, name, &[], &[]);
        ApiClient::wait_for_socket(&instance.socket, SOCKET_WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}; output:\n{}", instance.output()));
        instance
    }

    /// The guest to configure, its files created in `dir` where the target has none.
    pub fn guest(&self, dir: &Path) -> Guest {
        let data = dir.join("data.img");
        std::fs::write(&data, vec![0u8; 1 << 20]).expect("data disk");
        let (kernel, initrd, rootfs, tap) = match self {
            Target::Fake => {
                let (kernel, rootfs) = (dir.join("vmlinux"), dir.join("rootfs.img"));
                std::fs::write(&kernel, b"fake kernel").expect("kernel");
                std::fs::write(&rootfs, vec![0u8; 1 << 20]).expect("rootfs");
                (kernel, None, Some(rootfs), Some("bc-fc-test0".to_owned()))
            }
            Target::Real(real) => (
                real.kernel.clone(),
                real.initrd.clone(),
                real.rootfs.clone(),
                real.tap.clone(),
            ),
        };
        Guest {
            kernel,
            initrd,
            rootfs,
            data,
            tap,
            vsock: dir.join("vsock.sock"),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Fake => write!(f, "fake-firecracker (the test double)"),
            Target::Real(real) => write!(f, "real firecracker at {}", real.binary.display()),
        }
    }
}

/// Prints why a `real::` test did nothing.
pub fn skipped(test: &str) {
    eprintln!("{test}: skipped against the real binary: {FIRECRACKER_ENV} is not set");
}

/// One launched process.
#[derive(Debug)]
pub struct Instance {
    pub client: ApiClient,
    pub socket: PathBuf,
    output: PathBuf,
    child: tokio::process::Child,
}

impl Instance {
    /// What the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits up to `within` for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()?
            .ok()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// The files and names a test guest is made of.
#[derive(Debug, Clone)]
pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
    pub data: PathBuf,
    pub tap: Option<String>,
    pub vsock: PathBuf,
}

impl Guest {
    pub fn machine(&self) -> MachineConfig {
        MachineConfig::new(1, MEM_MIB).tracking_dirty_pages()
    }

    /// `panic=0`: a real guest that cannot mount its root file system waits instead of
    /// rebooting, which would end Firecracker in the middle of a test.
    pub fn boot_source(&self) -> BootSource {
        let root = if self.rootfs.is_some() {
            " root=/dev/vda ro"
        } else {
            ""
        };
        BootSource {
            kernel_image_path: self.kernel.clone(),
            boot_args: Some(format!("console=ttyS0 reboot=k panic=0{root}")),
            initrd_path: self.initrd.clone(),
        }
    }

    pub fn drives(&self) -> Vec<Drive> {
        let root = self
            .rootfs
            .as_ref()
            .map(|r| Drive::new("rootfs", r, true).as_root());
        root.into_iter()
            .chain([Drive::new("data", &self.data, false)])
            .collect()
    }

    pub fn nic(&self) -> Option<NetworkInterface> {
        let mac: MacAddr = "06:00:ac:10:00:02".parse().expect("mac");
        self.tap
            .as_ref()
            .map(|tap| NetworkInterface::new("eth0", tap, mac))
    }

    pub fn vsock(&self) -> Vsock {
        Vsock {
            guest_cid: 3,
            uds_path: self.vsock.clone(),
        }
    }

    /// Sends every pre-boot resource of this guest.
    pub async fn configure(&self, client: &ApiClient) {
        client
            .put_machine_config(&self.machine())
            .await
            .expect("machine-config");
        client
            .put_boot_source(&self.boot_source())
            .await
            .expect("boot-source");
        for drive in self.drives() {
            client.put_drive(&drive).await.expect("drive");
        }
        if let Some(nic) = self.nic() {
            client
                .put_network_interface(&nic)
                .await
                .expect("network interface");
        }
        client.put_vsock(&self.vsock()).await.expect("vsock");
    }
}
