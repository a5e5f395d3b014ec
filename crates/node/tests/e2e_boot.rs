//! End to end: build (or reuse) the golden image, boot it under the real QEMU driver on a
//! TAP in a network namespace of the test's own, wait for the guest agent's ready report,
//! SSH in with the real OpenSSH client, power off through QMP, and check that nothing is
//! left behind. Needs root, QEMU and the Debian packages `scripts/install-deps` installs.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use boxcutter_image::{build_image, ImageBuildConfig};
use boxcutter_net::{bridge_ensure, tap_ensure, IfName, Ipv4Cidr, Netns, NetnsName};
use boxcutter_node::guest::{boot_guest, BootEnv, BootError, GuestNetSpec, GuestSpec, RootDisk};
use boxcutter_types::guest::GuestNet;
use boxcutter_types::{ByteSize, VmName};
use boxcutter_vmm::kvm::Accel;
use boxcutter_vmm::qemu::{QemuVm, RuntimePaths};

const CACHE_DIR: &str = "/var/cache/boxcutter";

/// The golden image every test boots, built once per input change.
fn test_image() -> PathBuf {
    let out = Path::new(CACHE_DIR).join("test-image");
    let config = ImageBuildConfig::from_host(guest_agent_binary(), CACHE_DIR.into()).unwrap();
    build_image(&config, &out).unwrap();
    out
}

/// `boxcutter-guest`, built beside this test binary (target/<profile>/deps/..).
fn guest_agent_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("boxcutter-guest");
    assert!(
        path.is_file(),
        "{} missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// Everything a test creates, torn down on drop even when the test panics midway.
struct Sandbox {
    dir: tempfile::TempDir,
    netns: Netns,
}

impl Sandbox {
    fn new(tag: &str) -> Self {
        let name = NetnsName::new(format!("bc-{tag}-{}", std::process::id())).unwrap();
        let netns = Netns::ensure(name).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("boxcutter-e2e-")
            .tempdir()
            .unwrap();
        Self { dir, netns }
    }

    fn vm_dir(&self) -> PathBuf {
        self.dir.path().join("vm")
    }

    /// Runs a program inside the sandbox's namespace.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.netns.name().as_str(), program]);
        cmd
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Ok(vm) = QemuVm::adopt(&RuntimePaths::in_dir(&self.vm_dir())) {
            let _ = kill_now(&vm);
        }
        let _ = self.netns.delete();
    }
}

fn kill_now(vm: &QemuVm) -> std::io::Result<()> {
    let pid = nix::unistd::Pid::from_raw(vm.pid());
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while vm.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn ssh_keypair(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "e2e", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

fn env(sandbox: &Sandbox, image: PathBuf) -> BootEnv {
    BootEnv {
        image_dir: image,
        vm_dir: sandbox.vm_dir(),
        root_disk: RootDisk::Overlay {
            size: ByteSize(3 << 30),
        },
        socket_dir: None,
        qemu: "qemu-system-x86_64".into(),
        // The KVM probe has its own tests; on these machines KVM cannot run a normal kernel.
        accel: Accel::Tcg,
        tsc_khz: boxcutter_vmm::tsc::host_tsc_khz(),
        netns: Some(sandbox.netns.path()),
        ready_timeout: Duration::from_secs(60),
    }
}

struct Ssh<'a> {
    sandbox: &'a Sandbox,
    key: PathBuf,
    known_hosts: PathBuf,
    address: String,
}

impl Ssh<'_> {
    /// Runs `remote` as `dev` in the guest; returns (success, stdout).
    fn run(&self, remote: &str) -> (bool, String) {
        let out = self
            .sandbox
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
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_guest_boots_answers_ssh_and_powers_off_cleanly() {
    let image = test_image();
    let sandbox = Sandbox::new("e2e");
    let (bridge, tap) = (IfName::new("br0").unwrap(), IfName::new("tap0").unwrap());
    let gateway = Ipv4Cidr {
        address: "10.77.0.1".parse().unwrap(),
        prefix_len: 24,
    };
    bridge_ensure(Some(&sandbox.netns), &bridge, Some(gateway)).unwrap();
    tap_ensure(Some(&sandbox.netns), &tap, Some(&bridge)).unwrap();
    let (key, public) = ssh_keypair(sandbox.dir.path());

    let spec = GuestSpec {
        name: VmName::new("e2e-guest").unwrap(),
        vcpus: 2,
        memory_mib: 512,
        net: Some(GuestNetSpec {
            tap: tap.to_string(),
            guest: GuestNet {
                address: "10.77.0.2".parse().unwrap(),
                prefix_len: 24,
                gateway: gateway.address,
                dns: vec![gateway.address],
            },
        }),
        authorized_keys: vec![public],
    };
    let booted = boot_guest(&spec, &env(&sandbox, image)).await.unwrap();
    eprintln!("timings: {:?}", booted.timings);

    let known_hosts = sandbox.dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("10.77.0.2 {}\n", booted.host_public_key),
    )
    .unwrap();
    let ssh = Ssh {
        sandbox: &sandbox,
        key,
        known_hosts,
        address: "10.77.0.2".into(),
    };
    assert_eq!(ssh.run("hostname"), (true, "e2e-guest".into()));
    assert_eq!(ssh.run("cat /etc/boxcutter/vm-type"), (true, "qemu".into()));
    let (ok, id) = ssh.run("id dev");
    assert!(ok && id.contains("(dev)") && id.contains("(sudo)"), "{id}");
    assert_eq!(
        ssh.run("sudo -n true && echo root-ok"),
        (true, "root-ok".into())
    );
    let (ok, size) = ssh.run("df -B1 --output=size / | tail -n 1");
    let size: u64 = size.trim().parse().unwrap_or(0);
    assert!(
        ok && size > (3u64 << 30) * 9 / 10 && size <= 3 << 30,
        "root fs is {size} bytes"
    );

    let vm = booted.vm.clone();
    vm.shutdown(Duration::from_secs(30)).await.unwrap();
    assert!(!vm.is_running());
    let console = std::fs::read_to_string(vm.paths().console.clone()).unwrap();
    assert!(
        console.contains("reboot: Power down"),
        "not a clean power-off:\n{console}"
    );

    let dir = sandbox.dir.path().to_owned();
    let netns = sandbox.netns.path();
    drop(sandbox);
    assert_nothing_left(&dir, &netns);
}

/// No process, namespace, mount or file of the test survives its sandbox.
fn assert_nothing_left(dir: &Path, netns: &Path) {
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!netns.exists(), "{} left behind", netns.display());
    let needle = dir.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !cmdline.contains(&needle),
            "process {:?} left: {cmdline}",
            entry.file_name()
        );
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&needle) && !mounts.contains(&*netns.to_string_lossy()));
}

#[tokio::test]
async fn e2e_corrupted_or_missing_image_is_named_without_booting() {
    let image = test_image();
    let sandbox = Sandbox::new("bad");
    let spec = GuestSpec {
        name: VmName::new("broken").unwrap(),
        vcpus: 1,
        memory_mib: 256,
        net: None,
        authorized_keys: vec![],
    };

    let missing = sandbox.dir.path().join("no-image");
    let err = boot_guest(&spec, &env(&sandbox, missing.clone()))
        .await
        .unwrap_err();
    assert!(
        chain(&err).contains(&missing.join("manifest.json").display().to_string()),
        "{}",
        chain(&err)
    );

    // A copy of the image whose root filesystem lost its superblock.
    let bad = sandbox.dir.path().join("bad-image");
    std::fs::create_dir(&bad).unwrap();
    for name in ["vmlinuz", "vmlinux", "initrd.img", "manifest.json"] {
        std::fs::copy(image.join(name), bad.join(name)).unwrap();
    }
    let rootfs_size = std::fs::metadata(image.join("rootfs.ext4")).unwrap().len();
    let file = std::fs::File::create(bad.join("rootfs.ext4")).unwrap();
    file.set_len(rootfs_size).unwrap();
    let started = Instant::now();
    let err = boot_guest(&spec, &env(&sandbox, bad.clone()))
        .await
        .unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, BootError::Image(_)), "{text}");
    assert!(
        text.contains(&format!(
            "{} is not an ext4 filesystem",
            bad.join("rootfs.ext4").display()
        )),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        !sandbox.vm_dir().join("root.qcow2").exists(),
        "a failed boot left its disk"
    );
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
