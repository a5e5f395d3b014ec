//! The Firecracker guest, booted the closest way this machine allows: Firecracker cannot
//! run here (no usable KVM, no binary), so the golden image's `vmlinux`, initramfs and
//! root filesystem boot under QEMU's `microvm` machine, whose devices are virtio-mmio
//! devices described in the ACPI DSDT (`LNRO0005`), as Firecracker 1.8 and newer describe
//! theirs. The guest sees what a Firecracker guest sees:
//!
//! - the kernel command line `firecracker::boot_args::kernel_cmdline` makes, word for word,
//!   plus only `tsc_early_khz=<host kHz>` (under TCG the guest otherwise calibrates its TSC
//!   against emulated timers and hangs);
//! - no PCI bus; the root disk first (`/dev/vda`, raw, writable), the config drive second
//!   (read-only), a virtio-net NIC on a TAP in a network namespace of the test's own;
//! - one serial port, no RTC, no virtio-serial, no entropy device.
//!
//! The QEMU argument vector is [`QemuConfig::to_args`]'s, changed only where Firecracker
//! differs (each change is asserted, so a change to `QemuConfig` cannot silently make this
//! check something else):
//!
//! - `-M microvm,acpi=on,rtc=on,pcie=off,auto-kernel-cmdline=off`: QEMU must not append
//!   `virtio_mmio.device=` words to the command line (Debian's kernel ignores them, as it
//!   ignores those older Firecrackers append). The RTC stays, although Firecracker has
//!   none (its guests read KVM's clock): without it the kernel spends seconds probing for
//!   a CMOS clock under TCG, and the RTC plays no part in finding devices, which is what
//!   this check is about;
//! - no virtio-serial port (the QEMU guest's agent channel) and no virtio-rng device;
//! - no `-daemonize`: QEMU is the test's child, so it dies with the test.
//!
//! What stays different and so unproven here: the VMM (QEMU's virtio-mmio and ACPI code,
//! not Firecracker's), TCG instead of KVM (so boot times say nothing about the targets in
//! `docs/firecracker.md`), and vsock: Firecracker's vsock device is its own, and this host
//! has no `/dev/vhost-vsock` for QEMU's, so the guest gets no vsock device; the test checks
//! only that the vsock transport drivers are loaded, ready to bind one. The guest agent's
//! ready report is read from the console, where it logs every event.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use boxcutter_node::guest::{guest_mac, write_config_drive, GuestNetSpec, GuestSpec, CONFIG_DRIVE};
use boxcutter_types::guest::{AgentEvent, BootParams, GuestNet, VmType};
use boxcutter_types::VmName;
use boxcutter_vmm::firecracker::boot_args::kernel_cmdline;
use boxcutter_vmm::kvm::Accel;
use boxcutter_vmm::qemu::{Disk, DiskFormat, Nic, QemuConfig, RuntimePaths};
use support::guest_sandbox::{GuestSandbox, Ssh};

const GATEWAY: &str = "10.79.0.1";
const GUEST: &str = "10.79.0.2";
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const READY_MARK: &str = "agent event: ";
/// Drivers a Firecracker guest needs, as `/sys/module` names them.
const FIRECRACKER_DRIVERS: [&str; 6] = [
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
];
/// The ACPI id of a virtio-mmio device, in the sysfs path of every device it carries.
const VIRTIO_MMIO_ACPI_ID: &str = "LNRO0005";

#[test]
fn e2e_firecracker_guest_boots_on_acpi_virtio_mmio_with_its_command_line_and_answers_ssh() {
    let image = support::test_image();
    let sandbox = GuestSandbox::new("fcb", "boxcutter-fc-e2e-");
    let (key, public) = support::keypair(sandbox.dir.path());
    let spec = GuestSpec {
        name: VmName::new("fc-guest").unwrap(),
        vcpus: 2,
        memory_mib: 512,
        net: Some(GuestNetSpec {
            tap: sandbox.network(GATEWAY).to_string(),
            guest: guest_net(),
        }),
        authorized_keys: vec![public],
    };
    // The node's own config drive, as its Firecracker backend writes it.
    let host_public = write_config_drive(&spec, sandbox.dir.path()).unwrap();
    let params = boot_params(&spec);
    let cmdline = guest_cmdline(&params);
    let root = copy_raw(&sandbox, &image.join("rootfs.ext4"), "root.raw");
    let qemu = QemuConfig {
        config_drive: Some(sandbox.dir.path().join(CONFIG_DRIVE)),
        nic: spec.net.as_ref().map(|net| Nic {
            tap: net.tap.clone(),
            mac: guest_mac(&spec.name),
        }),
        ..qemu_config(&sandbox, &image, &cmdline, root)
    };

    let launched = Instant::now();
    let mut vm = launch(&sandbox, &qemu);
    let uptime_ms = vm.wait_ready();
    eprintln!(
        "boot: ready {} ms after launch, guest uptime at ready {uptime_ms} ms (TCG)",
        launched.elapsed().as_millis()
    );
    let console = vm.console();
    assert!(!console.contains(r#""event":"failed""#), "{console}");

    let ssh = Ssh::new(&sandbox, &key, GUEST, &host_public);
    assert_eq!(ssh.run_ok("cat /etc/boxcutter/vm-type"), "firecracker");
    assert_eq!(ssh.run_ok("findmnt -n -o SOURCE /"), "/dev/vda");
    assert_eq!(ssh.run_ok("cat /proc/cmdline"), cmdline);
    assert_sees_firecracker_devices(&ssh);
    let ping = sandbox
        .command("ping")
        .args(["-q", "-c", "1", "-W", "5", GUEST])
        .output();
    assert!(
        ping.unwrap().status.success(),
        "the guest does not answer ping"
    );

    drop(vm);
    sandbox.remove_and_assert_nothing_left();
}

/// The guest found its disks and NIC as ACPI-described virtio-mmio devices, has no PCI
/// device, attached the config drive read-only and loaded the vsock transport.
fn assert_sees_firecracker_devices(ssh: &Ssh) {
    let devices =
        ssh.run_ok("readlink -f /sys/class/block/vda /sys/class/block/vdb /sys/class/net/eth0");
    assert_eq!(devices.lines().count(), 3, "{devices}");
    for device in devices.lines() {
        assert!(
            device.contains(VIRTIO_MMIO_ACPI_ID),
            "not on ACPI virtio-mmio: {device}"
        );
    }
    assert_eq!(
        ssh.run_ok("ls /sys/bus/pci/devices | wc -l"),
        "0",
        "a PCI device"
    );
    assert_eq!(
        ssh.run_ok("cat /sys/class/block/vdb/ro"),
        "1",
        "config drive"
    );
    let modules = ssh.run_ok(&format!(
        "for m in {}; do test -d /sys/module/$m && echo $m; done",
        FIRECRACKER_DRIVERS.join(" ")
    ));
    assert_eq!(modules.lines().collect::<Vec<_>>(), FIRECRACKER_DRIVERS);
}

/// A guest whose root disk cannot be mounted ends the VM the way Firecracker needs: with a
/// reset (which ends Firecracker) rather than a power-off (which Firecracker lacks).
///
/// The root disk is there but blank, rather than missing: under TCG here a `microvm`
/// guest with no virtio device at all hangs in early boot about one time in three
/// (spinning in `delay_tsc` before its console starts), whatever the initramfs does.
#[test]
fn e2e_firecracker_guest_with_an_unmountable_root_disk_resets_and_says_why() {
    let image = support::test_image();
    let sandbox = GuestSandbox::new("fcr", "boxcutter-fc-e2e-");
    let blank = sandbox.dir.path().join("blank.raw");
    File::create(&blank).unwrap().set_len(64 << 20).unwrap();
    let spec = GuestSpec {
        name: VmName::new("fc-guest").unwrap(),
        vcpus: 2,
        memory_mib: 512,
        net: None,
        authorized_keys: vec![],
    };
    let cmdline = guest_cmdline(&boot_params(&spec));
    let mut vm = launch(&sandbox, &qemu_config(&sandbox, &image, &cmdline, blank));

    let status = vm.wait_exit(Duration::from_secs(60));
    let console = vm.console();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{console}");
    assert!(
        console.contains("boxcutter-initramfs: cannot mount root filesystem /dev/vda"),
        "{console}"
    );
    assert!(console.contains("reboot: Restarting system"), "{console}");
    assert!(!console.contains("reboot: Power down"), "{console}");

    drop(vm);
    sandbox.remove_and_assert_nothing_left();
}

/// The boot parameters the node's Firecracker backend gives `spec`.
fn boot_params(spec: &GuestSpec) -> BootParams {
    BootParams {
        name: spec.name.clone(),
        vm_type: VmType::Firecracker,
        net: spec.net.as_ref().map(|n| n.guest.clone()),
        vcpus: None,
    }
}

fn guest_net() -> GuestNet {
    let gateway = GATEWAY.parse().unwrap();
    GuestNet {
        address: GUEST.parse().unwrap(),
        prefix_len: 24,
        gateway,
        dns: vec![gateway],
    }
}

/// Firecracker's command line, and the one word TCG needs.
fn guest_cmdline(params: &BootParams) -> String {
    let khz = boxcutter_vmm::tsc::host_tsc_khz().expect("the host TSC rate");
    format!("{} tsc_early_khz={khz}", kernel_cmdline(params))
}

/// A writable raw copy of `image` in the sandbox: Firecracker takes raw disks only.
fn copy_raw(sandbox: &GuestSandbox, image: &Path, name: &str) -> PathBuf {
    let copy = sandbox.dir.path().join(name);
    let status = Command::new("cp")
        .args(["--sparse=always", "--reflink=auto"])
        .arg(image)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    copy
}

/// The QEMU backend's configuration of a guest of `image` on the raw disk `root`, with
/// its runtime files in the sandbox, before the test's changes.
fn qemu_config(sandbox: &GuestSandbox, image: &Path, cmdline: &str, root: PathBuf) -> QemuConfig {
    QemuConfig {
        binary: "qemu-system-x86_64".into(),
        accel: Accel::Tcg,
        vcpus: 2,
        memory_mib: 512,
        kernel: image.join("vmlinux"),
        initrd: image.join("initrd.img"),
        cmdline: cmdline.into(),
        root_disk: Disk {
            path: root,
            format: DiskFormat::Raw,
        },
        config_drive: None,
        nic: None,
        paths: RuntimePaths::in_dir(sandbox.dir.path()),
    }
}

/// Starts QEMU as Firecracker would run this guest, in the sandbox's namespace. The
/// sandbox (its directory, the namespace with the bridge and TAP inside it) must outlive
/// the returned [`Guest`], which kills QEMU on drop.
///
/// The guest is launched again (up to [`EARLY_BOOT_ATTEMPTS`] times in all) when it gets
/// stuck before any of our code runs: under TCG here a guest now and then shows nothing
/// past the firmware for a minute or more, several launches in a row, then boots normally
/// (`docs/limitations.md`). The first line of ours, from the initramfs or the guest agent,
/// ends the wait; what follows is the test's to check.
fn launch(sandbox: &GuestSandbox, config: &QemuConfig) -> Guest {
    for attempt in 1..=EARLY_BOOT_ATTEMPTS {
        let mut vm = spawn(sandbox, config, firecracker_args(config.to_args().unwrap()));
        let deadline = Instant::now() + EARLY_BOOT_LIMIT;
        loop {
            if vm.console().contains("boxcutter") {
                return vm;
            }
            let exited = vm.child.try_wait().unwrap().is_some();
            if exited || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "attempt {attempt}: the guest never reached the initramfs; launching it again:\n{}",
            vm.console()
        );
    }
    panic!("the guest never reached the initramfs in {EARLY_BOOT_ATTEMPTS} launches");
}

/// Launches of a guest stuck in early kernel boot, in all.
const EARLY_BOOT_ATTEMPTS: u32 = 6;

/// How long a guest may take to run anything of ours (normally 2–4 s under TCG).
const EARLY_BOOT_LIMIT: Duration = Duration::from_secs(20);

fn spawn(sandbox: &GuestSandbox, config: &QemuConfig, args: Vec<OsString>) -> Guest {
    let log = File::create(sandbox.dir.path().join("qemu.log")).unwrap();
    let mut cmd = Command::new(&config.binary);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let netns = sandbox.netns.path();
    let _netns = boxcutter_sys::proc::place_child(&mut cmd, Some(&netns), false).unwrap();
    Guest {
        child: cmd.spawn().unwrap(),
        console: config.paths.console.clone(),
        log: sandbox.dir.path().join("qemu.log"),
    }
}

/// [`QemuConfig::to_args`] changed where Firecracker differs; see the module docs.
fn firecracker_args(args: Vec<OsString>) -> Vec<OsString> {
    let (mut args, removed) = without_options(args, |flag, value| {
        (flag == "-device"
            && (value == "virtio-serial-device"
                || value.starts_with("virtserialport,")
                || value == "virtio-rng-device"))
            || (flag == "-chardev" && value.starts_with("socket,id=agent,"))
    });
    assert_eq!(removed, 4, "the QEMU backend's devices changed: {args:?}");
    let daemonize = args.iter().position(|a| a == "-daemonize").unwrap();
    args.remove(daemonize);
    let machine = args.iter().position(|a| a == "-M").unwrap() + 1;
    assert!(args[machine]
        .to_string_lossy()
        .starts_with("microvm,acpi=on,"));
    args[machine] = "microvm,acpi=on,rtc=on,pcie=off,auto-kernel-cmdline=off".into();
    args
}

/// `args` without the `flag value` pairs `drop` picks, and how many it dropped.
fn without_options(
    args: Vec<OsString>,
    drop: impl Fn(&str, &str) -> bool,
) -> (Vec<OsString>, usize) {
    let mut kept = Vec::new();
    let mut removed = 0;
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let value = args.peek().map(|v| v.to_string_lossy().into_owned());
        if value.is_some_and(|v| drop(&arg.to_string_lossy(), &v)) {
            args.next();
            removed += 1;
        } else {
            kept.push(arg);
        }
    }
    (kept, removed)
}

/// The running QEMU, killed on drop.
struct Guest {
    child: Child,
    console: PathBuf,
    /// QEMU's own output.
    log: PathBuf,
}

impl Guest {
    /// The serial console so far, and QEMU's own messages after it when it printed any.
    fn console(&self) -> String {
        let read =
            |path| String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
        let (console, qemu) = (read(&self.console), read(&self.log));
        if qemu.is_empty() {
            console
        } else {
            format!("{console}\n--- qemu ---\n{qemu}")
        }
    }

    /// Waits for the agent's ready report on the console; returns the guest's uptime then.
    fn wait_ready(&mut self) -> u64 {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let console = self.console();
            let event = console
                .lines()
                .filter_map(|line| Some(line.split_once(READY_MARK)?.1))
                .find_map(|json| match serde_json::from_str(json) {
                    Ok(AgentEvent::Ready { uptime_ms }) => Some(uptime_ms),
                    _ => None,
                });
            if let Some(uptime_ms) = event {
                return uptime_ms;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("QEMU exited ({status}) before the guest was ready:\n{console}");
            }
            assert!(Instant::now() < deadline, "no ready report:\n{console}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
