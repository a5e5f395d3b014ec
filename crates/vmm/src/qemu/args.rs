//! QEMU's argument vector for one guest. Everything is a separate argument (no shell ever
//! sees it); paths are passed as they are, after a check that QEMU's option syntax (where
//! `,` separates properties) cannot be confused by them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use boxcutter_types::guest::AGENT_PORT_NAME;

use crate::kvm::Accel;

/// Everything QEMU needs to run one guest.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// The `qemu-system-x86_64` binary.
    pub binary: PathBuf,
    /// KVM or TCG.
    pub accel: Accel,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// The guest kernel: the uncompressed `vmlinux` boots three times faster under TCG.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The whole kernel command line.
    pub cmdline: String,
    /// The root disk.
    pub root_disk: Disk,
    /// The config drive, attached read-only as the second disk.
    pub config_drive: Option<PathBuf>,
    /// The TAP device the guest's NIC is attached to.
    pub nic: Option<Nic>,
    /// The VM's runtime files (sockets, pidfile, console log).
    pub paths: RuntimePaths,
}

/// A disk image and its format.
#[derive(Debug, Clone)]
pub struct Disk {
    /// The image file.
    pub path: PathBuf,
    /// `qcow2` or `raw`.
    pub format: DiskFormat,
}

/// Disk image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    /// A plain image.
    Raw,
    /// A qcow2 image, usually an overlay over the golden image.
    Qcow2,
}

impl DiskFormat {
    fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// The guest's network card.
#[derive(Debug, Clone)]
pub struct Nic {
    /// The TAP device, which must already exist in QEMU's network namespace.
    pub tap: String,
    /// The guest MAC address, `52:54:00:xx:xx:xx`.
    pub mac: String,
}

/// Where a VM's runtime files live: all in the VM's directory.
#[derive(Debug, Clone)]
pub struct RuntimePaths {
    /// QMP socket.
    pub qmp: PathBuf,
    /// The guest agent's virtio-serial socket.
    pub agent: PathBuf,
    /// The serial console log.
    pub console: PathBuf,
    /// QEMU's pidfile.
    pub pidfile: PathBuf,
}

impl RuntimePaths {
    /// The standard names inside a VM directory.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            qmp: dir.join("qmp.sock"),
            agent: dir.join("agent.sock"),
            console: dir.join("console.log"),
            pidfile: dir.join("qemu.pid"),
        }
    }

    /// Files in the VM directory, sockets in `socket_dir`: a Unix socket path must fit in
    /// 108 bytes, which a deep VM directory with a long VM name can exceed.
    pub fn with_socket_dir(dir: &Path, socket_dir: &Path) -> Self {
        Self {
            qmp: socket_dir.join("qmp.sock"),
            agent: socket_dir.join("agent.sock"),
            ..Self::in_dir(dir)
        }
    }
}

/// A path QEMU's option syntax would misread.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("path {0:?} contains ',' or is not UTF-8; QEMU options cannot carry it")]
pub struct UnsafePath(pub PathBuf);

impl QemuConfig {
    /// The full argument vector, without the binary itself.
    pub fn to_args(&self) -> Result<Vec<OsString>, UnsafePath> {
        let p = |path: &Path| option_path(path);
        let mut args: Vec<String> = vec![
            "-M".into(),
            "microvm,acpi=on,rtc=on,pcie=off".into(),
            "-accel".into(),
            match self.accel {
                Accel::Kvm => "kvm".into(),
                Accel::Tcg => "tcg".into(),
            },
            "-cpu".into(),
            match self.accel {
                Accel::Kvm => "host".into(),
                Accel::Tcg => "max".into(),
            },
            "-smp".into(),
            self.vcpus.to_string(),
            "-m".into(),
            format!("{}M", self.memory_mib),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-nographic".into(),
            "-no-reboot".into(),
            "-kernel".into(),
            p(&self.kernel)?,
            "-initrd".into(),
            p(&self.initrd)?,
            "-append".into(),
            self.cmdline.clone(),
            "-serial".into(),
            format!("file:{}", p(&self.paths.console)?),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", p(&self.paths.qmp)?),
            "-pidfile".into(),
            p(&self.paths.pidfile)?,
            "-daemonize".into(),
        ];
        args.extend(self.disk_args()?);
        args.extend(self.agent_args()?);
        args.extend(["-device".into(), "virtio-rng-device".into()]);
        if let Some(nic) = &self.nic {
            args.extend(nic_args(nic)?);
        }
        Ok(args.into_iter().map(OsString::from).collect())
    }

    fn disk_args(&self) -> Result<Vec<String>, UnsafePath> {
        let root = &self.root_disk;
        let mut args = vec![
            "-drive".into(),
            format!(
                "id=root,file={},format={},if=none,cache=unsafe,discard=unmap",
                option_path(&root.path)?,
                root.format.as_str()
            ),
            "-device".into(),
            "virtio-blk-device,drive=root".into(),
        ];
        if let Some(config) = &self.config_drive {
            args.extend([
                "-drive".into(),
                format!(
                    "id=config,file={},format=raw,if=none,readonly=on",
                    option_path(config)?
                ),
                "-device".into(),
                "virtio-blk-device,drive=config".into(),
            ]);
        }
        Ok(args)
    }

    fn agent_args(&self) -> Result<Vec<String>, UnsafePath> {
        Ok(vec![
            "-device".into(),
            "virtio-serial-device".into(),
            "-chardev".into(),
            format!(
                "socket,id=agent,path={},server=on,wait=off",
                option_path(&self.paths.agent)?
            ),
            "-device".into(),
            format!("virtserialport,chardev=agent,name={AGENT_PORT_NAME}"),
        ])
    }
}

fn nic_args(nic: &Nic) -> Result<Vec<String>, UnsafePath> {
    let safe = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    };
    if !safe(&nic.tap) || !safe(&nic.mac) {
        return Err(UnsafePath(PathBuf::from(format!(
            "{}/{}",
            nic.tap, nic.mac
        ))));
    }
    Ok(vec![
        "-netdev".into(),
        format!("tap,id=net0,ifname={},script=no,downscript=no", nic.tap),
        "-device".into(),
        format!("virtio-net-device,netdev=net0,mac={}", nic.mac),
    ])
}

fn option_path(path: &Path) -> Result<String, UnsafePath> {
    match path.to_str() {
        Some(s) if !s.contains(',') => Ok(s.to_string()),
        _ => Err(UnsafePath(path.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> QemuConfig {
        QemuConfig {
            binary: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            vcpus: 2,
            memory_mib: 512,
            kernel: "/img/vmlinux".into(),
            initrd: "/img/initrd.img".into(),
            cmdline: "console=ttyS0 boxcutter.name=a".into(),
            root_disk: Disk {
                path: "/vm/a/root.qcow2".into(),
                format: DiskFormat::Qcow2,
            },
            config_drive: Some("/vm/a/config.img".into()),
            nic: Some(Nic {
                tap: "bc-a".into(),
                mac: "52:54:00:12:34:56".into(),
            }),
            paths: RuntimePaths::in_dir(Path::new("/vm/a")),
        }
    }

    fn args(config: &QemuConfig) -> Vec<String> {
        config
            .to_args()
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn microvm_with_the_uncompressed_kernel_under_tcg() {
        let a = args(&config());
        assert_eq!(value_after(&a, "-M"), ["microvm,acpi=on,rtc=on,pcie=off"]);
        assert_eq!(value_after(&a, "-accel"), ["tcg"]);
        assert_eq!(value_after(&a, "-cpu"), ["max"]);
        assert_eq!(value_after(&a, "-kernel"), ["/img/vmlinux"]);
        assert_eq!(
            value_after(&a, "-append"),
            ["console=ttyS0 boxcutter.name=a"]
        );
        assert_eq!(value_after(&a, "-m"), ["512M"]);
        assert!(a.contains(&"-daemonize".to_string()) && a.contains(&"-no-reboot".to_string()));
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let a = args(&QemuConfig {
            accel: Accel::Kvm,
            ..config()
        });
        assert_eq!(value_after(&a, "-accel"), ["kvm"]);
        assert_eq!(value_after(&a, "-cpu"), ["host"]);
    }

    #[test]
    fn disks_sockets_and_nic_are_wired() {
        let a = args(&config());
        assert_eq!(
            value_after(&a, "-drive"),
            [
                "id=root,file=/vm/a/root.qcow2,format=qcow2,if=none,cache=unsafe,discard=unmap",
                "id=config,file=/vm/a/config.img,format=raw,if=none,readonly=on"
            ]
        );
        assert_eq!(
            value_after(&a, "-qmp"),
            ["unix:/vm/a/qmp.sock,server=on,wait=off"]
        );
        assert_eq!(value_after(&a, "-serial"), ["file:/vm/a/console.log"]);
        assert_eq!(
            value_after(&a, "-netdev"),
            ["tap,id=net0,ifname=bc-a,script=no,downscript=no"]
        );
        assert!(value_after(&a, "-device")
            .contains(&"virtserialport,chardev=agent,name=org.boxcutter.agent"));
    }

    #[test]
    fn the_cmdline_stays_one_argument_whatever_it_holds() {
        let cfg = QemuConfig {
            cmdline: "a=1 b=\"x y\" ; rm -rf /".into(),
            ..config()
        };
        assert_eq!(
            value_after(&args(&cfg), "-append"),
            ["a=1 b=\"x y\" ; rm -rf /"]
        );
    }

    #[test]
    fn commas_in_paths_are_refused() {
        let mut cfg = config();
        cfg.root_disk.path = "/vm/a,file=/etc/shadow/root.qcow2".into();
        assert_eq!(
            cfg.to_args().unwrap_err(),
            UnsafePath(cfg.root_disk.path.clone())
        );
        let mut cfg = config();
        cfg.nic = Some(Nic {
            tap: "x,script=/evil".into(),
            mac: "52:54:00:00:00:01".into(),
        });
        assert!(cfg.to_args().is_err());
    }
}
