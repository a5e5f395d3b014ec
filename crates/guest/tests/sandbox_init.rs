//! Boots the real binary as PID 1 of a sandbox (the `sandbox` module): private namespaces,
//! an overlay of this machine's root as the guest's root, and a fake `/sys` and `/dev`
//! (named so below) standing in for the VM's devices: an ext4 image as the root disk, a
//! config drive image, a plain file as the agent port, a FIFO as the power button.
//!
//! It checks the boot path end to end except what only a VM has (virtio devices, a real
//! ACPI power-off): mounts, boot parameters, keys, resize2fs, sshd readiness, the
//! agent events and the shutdown on a power button press. Needs root, overlayfs, sshd and
//! e2fsprogs; skipped where they are missing.

// A test: every unwrap failing is the test failing, with its location.
#![allow(clippy::unwrap_used)]

mod sandbox;

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use boxcutter_types::guest::GuestConfig;

const DEV_UID: u32 = 4242;
const HOST_KEY: &str = include_str!("../testdata/throwaway_host_key");
const HOST_KEY_PUB: &str = include_str!("../testdata/throwaway_host_key.pub");
const MIB: u64 = 1 << 20;

#[test]
fn init_boots_reports_ready_and_powers_off_in_a_sandbox() {
    if let Some(missing) = missing_prerequisite() {
        eprintln!("skipped: {missing}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    prepare(work);

    let mut sandbox = sandbox::spawn(work).unwrap();

    let port = work.join("dev/vport0p1");
    let ready = wait_for(&mut sandbox, Duration::from_secs(60), || {
        read(&port).contains("ready")
    });
    if ready != Waited::Done {
        let console = read(&work.join("dev/console"));
        let out = sandbox.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if console.is_empty() && stderr.contains("mount") {
            eprintln!("skipped: cannot build the sandbox here: {stderr}");
            return;
        }
        panic!("no ready event\nconsole:\n{console}\nsandbox stderr:\n{stderr}");
    }

    press_power_button(&work.join("dev/input/event0"));
    let stopped = wait_for(&mut sandbox, Duration::from_secs(30), || false);
    let console = read(&work.join("dev/console"));
    assert_eq!(stopped, Waited::Exited, "console:\n{console}");

    let events: Vec<serde_json::Value> = read(&port)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ready", "shutting_down"], "console:\n{console}");
    assert!(
        console.contains("shutdown: requested by SIGPWR"),
        "{console}"
    );
    check_guest_files(work);
    eprintln!("guest console:\n{console}"); // shown with --nocapture
}

fn check_guest_files(work: &Path) {
    let upper = work.join("upper");
    let file = |p: &str| upper.join(p.trim_start_matches('/'));
    assert_eq!(read(&file("/etc/hostname")), "sandbox-vm\n");
    assert_eq!(read(&file("/etc/boxcutter/vm-type")), "qemu\n");
    assert!(read(&file("/etc/hosts")).contains("127.0.1.1\tsandbox-vm\n"));
    assert_eq!(
        read(&file("/etc/ssh/ssh_host_ed25519_key.pub")),
        HOST_KEY_PUB
    );

    let keys = fs::metadata(file("/home/dev/.ssh/authorized_keys")).unwrap();
    assert_eq!((keys.mode() & 0o777, keys.uid()), (0o600, DEV_UID));
    let grown = boxcutter_guest::resize::filesystem_bytes(&work.join("dev/vdx")).unwrap();
    assert_eq!(grown, 64 * MIB);
}

/// What this machine lacks to build the sandbox, if anything.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    let tools = ["/usr/sbin/sshd", "mkfs.ext4", "resize2fs"];
    let path = boxcutter_guest::programs::PATH;
    tools
        .iter()
        .find(|tool| {
            !path
                .split(':')
                .any(|dir| Path::new(dir).join(tool).exists())
                && !Path::new(tool).exists()
        })
        .map(|tool| format!("{tool} is not installed"))
}

/// Lays out `work` for the sandbox: overlay directories, the guest's own files in the upper
/// layer, and the fake sysfs and /dev.
fn prepare(work: &Path) {
    for dir in ["upper", "ovl", "root", "sys", "dev"] {
        fs::create_dir(work.join(dir)).unwrap();
    }
    fs::write(
        work.join("cmdline"),
        "console=ttyS0 boxcutter.name=sandbox-vm boxcutter.type=qemu\n",
    )
    .unwrap();
    prepare_upper(&work.join("upper"));
    fake_sysfs(&work.join("sys"));
    fake_dev(&work.join("dev"));
}

fn prepare_upper(upper: &Path) {
    let mkdir = |p: &str| fs::create_dir_all(upper.join(p)).unwrap();
    mkdir("etc/ssh/sshd_config.d");
    mkdir("home/dev");
    mkdir("usr/sbin");
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let dev_line = format!("dev:x:{DEV_UID}:{DEV_UID}::/home/dev:/bin/bash\n");
    fs::write(upper.join("etc/passwd"), passwd + &dev_line).unwrap();
    // What the image builder configures: this one host key only.
    let sshd_conf = "HostKey /etc/ssh/ssh_host_ed25519_key\n";
    fs::write(
        upper.join("etc/ssh/sshd_config.d/boxcutter.conf"),
        sshd_conf,
    )
    .unwrap();
    fs::copy(
        env!("CARGO_BIN_EXE_boxcutter-guest"),
        upper.join("usr/sbin/boxcutter-guest"),
    )
    .unwrap();
}

/// FakeSysfs: two virtio disks (root `vdx`, config drive `vdb`), the agent port's name, one power button.
fn fake_sysfs(sys: &Path) {
    for (disk, mib) in [("vdx", 64), ("vdb", 1)] {
        let dir = sys.join("devices/virtio/block").join(disk);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("size"), format!("{}\n", mib * MIB / 512)).unwrap();
        fs::create_dir_all(sys.join("class/block")).unwrap();
        symlink(
            format!("../../devices/virtio/block/{disk}"),
            sys.join("class/block").join(disk),
        )
        .unwrap();
    }
    fs::create_dir_all(sys.join("dev/block")).unwrap(); // the root's number links here
    let port = sys.join("class/virtio-ports/vport0p1");
    fs::create_dir_all(&port).unwrap();
    fs::write(port.join("name"), "org.boxcutter.agent\n").unwrap();
    let button = sys.join("class/input/event0/device");
    fs::create_dir_all(&button).unwrap();
    fs::write(button.join("name"), "Power Button\n").unwrap();
}

/// FakeDev: disk images, the agent port as a plain file, the power button as a FIFO, a
/// plain file as the console, and files for the sandbox to bind the real null devices onto.
fn fake_dev(dev: &Path) {
    for node in ["null", "zero", "random", "urandom", "console", "vport0p1"] {
        File::create(dev.join(node)).unwrap();
    }
    let root = dev.join("vdx");
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096"])
        .arg(&root)
        .arg("32M")
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    File::options()
        .write(true)
        .open(&root)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();

    let config = GuestConfig {
        authorized_keys: vec![HOST_KEY_PUB.trim().to_string()],
        ssh_host_key: HOST_KEY.to_string(),
    };
    fs::write(dev.join("vdb"), config.encode()).unwrap();

    fs::create_dir(dev.join("input")).unwrap();
    nix::unistd::mkfifo(
        &dev.join("input/event0"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
}

fn press_power_button(fifo: &Path) {
    let mut record = vec![0u8; 16];
    record.extend(1u16.to_ne_bytes()); // EV_KEY
    record.extend(116u16.to_ne_bytes()); // KEY_POWER
    record.extend(1i32.to_ne_bytes()); // press
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Non-blocking, so a missing reader is an error instead of a hang.
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(mut button) => return button.write_all(&record).unwrap(),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("power button FIFO has no reader: {e}"),
        }
    }
}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
enum Waited {
    Done,
    Exited,
    /// The sandbox was killed.
    TimedOut,
}

/// Polls `done` until it holds, `sandbox` exits, or `timeout` passes.
fn wait_for(sandbox: &mut Child, timeout: Duration, done: impl Fn() -> bool) -> Waited {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return Waited::Done;
        }
        if sandbox.try_wait().unwrap().is_some() {
            return Waited::Exited;
        }
        if Instant::now() >= deadline {
            let _ = sandbox.kill();
            let _ = sandbox.wait();
            return Waited::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(path: &Path) -> String {
    match fs::read_to_string(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        other => other.unwrap(),
    }
}
