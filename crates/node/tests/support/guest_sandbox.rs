//! The sandbox of a test that boots a guest by itself, without a node: a network namespace
//! of the test's own and a directory for the VM's files, both removed on drop even when the
//! test panics midway, and SSH into the guest from inside that namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use boxcutter_net::{bridge_ensure, tap_ensure, IfName, Ipv4Cidr, Netns, NetnsName};
use boxcutter_node::guest::{BootEnv, RootDisk};
use boxcutter_types::ByteSize;
use boxcutter_vmm::kvm::Accel;
use boxcutter_vmm::qemu::{QemuVm, RuntimePaths};

/// Everything a test creates: the directory (disks, keys, console log, QEMU's sockets) and
/// the network namespace with whatever the test put inside it. On drop it kills the QEMU
/// whose pidfile is in [`GuestSandbox::vm_dir`], then deletes both.
pub struct GuestSandbox {
    pub dir: tempfile::TempDir,
    pub netns: Netns,
}

impl GuestSandbox {
    /// A namespace `bc-{tag}-{pid}` and a directory under `/var/tmp` named `{prefix}…`.
    pub fn new(tag: &str, prefix: &str) -> Self {
        let name = NetnsName::new(format!("bc-{tag}-{}", std::process::id())).unwrap();
        let netns = Netns::ensure(name).unwrap();
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/var/tmp")
            .unwrap();
        Self { dir, netns }
    }

    /// Where the VM's runtime files go; the node's boot code creates it.
    pub fn vm_dir(&self) -> PathBuf {
        self.dir.path().join("vm")
    }

    /// How the node's QEMU boot code boots a guest of `image` in this sandbox: under TCG,
    /// on an overlay root disk of `root_size`, inside the namespace, files in `vm_dir`.
    pub fn boot_env(
        &self,
        image: PathBuf,
        root_size: ByteSize,
        ready_timeout: Duration,
    ) -> BootEnv {
        BootEnv {
            image_dir: image,
            vm_dir: self.vm_dir(),
            root_disk: RootDisk::Overlay { size: root_size },
            socket_dir: None,
            qemu: "qemu-system-x86_64".into(),
            // The KVM probe has its own tests; on these machines KVM cannot run a normal kernel.
            accel: Accel::Tcg,
            tsc_khz: boxcutter_vmm::tsc::host_tsc_khz(),
            netns: Some(self.netns.path()),
            ready_timeout,
        }
    }

    /// A bridge `br0` holding `gateway`/24 and a TAP `tap0` on it; returns the TAP.
    pub fn network(&self, gateway: &str) -> IfName {
        let (bridge, tap) = (IfName::new("br0").unwrap(), IfName::new("tap0").unwrap());
        let gateway = Ipv4Cidr {
            address: gateway.parse().unwrap(),
            prefix_len: 24,
        };
        bridge_ensure(Some(&self.netns), &bridge, Some(gateway)).unwrap();
        tap_ensure(Some(&self.netns), &tap, Some(&bridge)).unwrap();
        tap
    }

    /// A command that runs `program` inside the sandbox's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.netns.name().as_str(), program]);
        cmd
    }

    /// Runs `program args` inside the sandbox's namespace; returns (success, trimmed stdout).
    pub fn run(&self, program: &str, args: &[&str]) -> (bool, String) {
        let out = self.command(program).args(args).output().unwrap();
        (out.status.success(), trimmed_stdout(&out))
    }

    /// Removes everything, as dropping does, then asserts that no process, namespace, mount
    /// or file of the test survives it.
    pub fn remove_and_assert_nothing_left(self) {
        let dir = self.dir.path().to_owned();
        let netns = self.netns.path();
        drop(self);

        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(!netns.exists(), "{} left behind", netns.display());
        let needle = dir.to_string_lossy().into_owned();
        let left: Vec<String> = super::pids_mentioning(&needle)
            .into_iter()
            .map(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                format!("{pid}: {}", String::from_utf8_lossy(&cmdline))
            })
            .collect();
        assert!(left.is_empty(), "processes left: {left:?}");
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let netns = netns.to_string_lossy();
        assert!(
            !mounts.contains(&needle) && !mounts.contains(&*netns),
            "{needle} or {netns} still mounted:\n{mounts}"
        );
    }
}

impl Drop for GuestSandbox {
    fn drop(&mut self) {
        if let Ok(vm) = QemuVm::adopt(&RuntimePaths::in_dir(&self.vm_dir())) {
            kill_now(&vm);
        }
        let _ = self.netns.delete();
    }
}

/// SIGKILLs `vm`'s QEMU and waits up to five seconds for it to be gone.
fn kill_now(vm: &QemuVm) {
    let pid = nix::unistd::Pid::from_raw(vm.pid());
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while vm.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SSH from inside a sandbox's namespace into its guest as `dev`, trusting only one host key.
pub struct Ssh<'a> {
    sandbox: &'a GuestSandbox,
    key: PathBuf,
    known_hosts: PathBuf,
    address: String,
}

impl<'a> Ssh<'a> {
    /// Logs in to `address` with the private key `key`, trusting only `host_key` (an
    /// OpenSSH public key line), which it writes to a known_hosts file of its own.
    pub fn new(sandbox: &'a GuestSandbox, key: &Path, address: &str, host_key: &str) -> Self {
        let (_, known_hosts) = tempfile::Builder::new()
            .prefix("known_hosts.")
            .tempfile_in(sandbox.dir.path())
            .unwrap()
            .keep()
            .unwrap();
        std::fs::write(&known_hosts, format!("{address} {host_key}\n")).unwrap();
        Self {
            sandbox,
            key: key.to_owned(),
            known_hosts,
            address: address.into(),
        }
    }

    /// Runs `remote` as `dev` in the guest; returns (success, trimmed stdout).
    pub fn run(&self, remote: &str) -> (bool, String) {
        let out = self.output(remote);
        (out.status.success(), trimmed_stdout(&out))
    }

    /// Runs `remote` as `dev` in the guest and returns its trimmed stdout; panics, with
    /// ssh's stderr, unless it succeeds.
    pub fn run_ok(&self, remote: &str) -> String {
        let out = self.output(remote);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ssh {remote:?}: {stderr}");
        trimmed_stdout(&out)
    }

    fn output(&self, remote: &str) -> Output {
        self.sandbox
            .command("ssh")
            .arg("-i")
            .arg(&self.key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
            .args(["-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"])
            .arg(format!("dev@{}", self.address))
            .arg(remote)
            .output()
            .unwrap()
    }
}

fn trimmed_stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
