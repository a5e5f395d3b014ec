//! The initramfs: busybox, the kernel modules Debian's kernel needs to reach the devices of
//! a QEMU `microvm` or Firecracker guest (virtio-mmio disks, network card and vsock, with
//! their dependencies, in load order) and an init script that mounts the root filesystem
//! and starts the guest agent. It is left uncompressed: under software emulation,
//! decompressing costs more boot time than reading a few extra megabytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::cpio::CpioWriter;

/// The init script, run by busybox's shell.
pub(crate) const INIT_SCRIPT: &str = include_str!("../assets/initramfs-init");

/// Modules to load, by name, in this order; each one's dependencies are added before it.
/// Modules missing from the kernel (built in, or absent) are skipped, except those in
/// [`REQUIRED_MODULES`]. Loading a driver whose device a machine lacks costs only its
/// `insmod` (about 30 ms under TCG, far less under KVM), so QEMU and Firecracker guests
/// share one list.
///
/// No `virtio_pci`: neither machine has a PCI bus (QEMU runs `microvm` with `pcie=off`,
/// Firecracker guests boot with `pci=off`).
pub const MODULES: &[&str] = &[
    // The transport every device of both machines sits on, found through ACPI.
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    // QEMU's agent channel (virtio-serial) and entropy.
    "virtio_console",
    "virtio_rng",
    // Firecracker's agent channel: vsock over virtio.
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    // The root filesystem.
    "crc32c_intel",
    "crc32c_generic",
    "ext4",
    // QEMU's ACPI power button, which the guest agent watches.
    "button",
    "evdev",
];

/// Modules without which a guest cannot boot or cannot be reached, unless the kernel has
/// them built in: the image build fails naming the first one missing, rather than every
/// guest failing to boot (or, without vsock, a Firecracker guest never reporting ready).
const REQUIRED_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "vmw_vsock_virtio_transport",
    "ext4",
];

/// The archive's length is padded to a multiple of this. QEMU's `microvm` loads the
/// initramfs at the top of RAM, at the highest page boundary from which it still fits, so
/// its end falls inside the last page of RAM (by its length modulo a page) unless that
/// length is whole pages; SeaBIOS keeps the ACPI tables in that last page. Overwritten
/// there, the DSDT that describes the virtio-mmio devices is gone and the guest boots
/// without disks or network (seen with QEMU 10 and 512 MiB to 2 GiB of RAM). An archive of
/// whole pages ends where that page starts. The kernel skips zero padding after an archive.
const ARCHIVE_ALIGN: usize = 4096;

/// Errors building the initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A file the initramfs is made of cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A required module is neither a loadable module nor built in.
    #[error("kernel {kernel} has no module {module} (looked in {dir})")]
    MissingModule {
        /// Kernel release.
        kernel: String,
        /// Module name.
        module: String,
        /// The modules directory searched.
        dir: PathBuf,
    },
    /// The archive could not be written.
    #[error("cannot write the initramfs")]
    Write(#[source] std::io::Error),
}

/// Where the initramfs takes its parts from.
#[derive(Debug, Clone)]
pub struct InitramfsConfig {
    /// `/lib/modules/<release>` of the guest kernel.
    pub modules_dir: PathBuf,
    /// A statically linked busybox.
    pub busybox: PathBuf,
}

/// Builds the initramfs archive in memory.
pub fn build_initramfs(config: &InitramfsConfig) -> Result<Vec<u8>, InitramfsError> {
    let read = |path: &Path| {
        fs::read(path).map_err(|source| InitramfsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let deps = read(&config.modules_dir.join("modules.dep"))?;
    let builtin = read(&config.modules_dir.join("modules.builtin")).unwrap_or_default();
    let order = load_order(
        &config.modules_dir,
        &String::from_utf8_lossy(&deps),
        &builtin,
    )?;

    let mut cpio = CpioWriter::new(Vec::new());
    let write = |r: std::io::Result<()>| r.map_err(InitramfsError::Write);
    for dir in ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
        write(cpio.dir(dir, 0o755))?;
    }
    write(cpio.file("bin/busybox", 0o755, &read(&config.busybox)?))?;
    write(cpio.file("init", 0o755, INIT_SCRIPT.as_bytes()))?;
    let mut names = String::new();
    for (name, rel) in &order {
        let data = read(&config.modules_dir.join(rel))?;
        write(cpio.file(&format!("lib/modules/{name}.ko"), 0o644, &data))?;
        names.push_str(name);
        names.push('\n');
    }
    write(cpio.file("lib/modules/load-order", 0o644, names.as_bytes()))?;
    let mut archive = cpio.finish().map_err(InitramfsError::Write)?;
    archive.resize(archive.len().next_multiple_of(ARCHIVE_ALIGN), 0);
    Ok(archive)
}

/// Resolves [`MODULES`] against `modules.dep`: (name, relative path) in load order, each
/// module after everything it depends on.
fn load_order(
    modules_dir: &Path,
    modules_dep: &str,
    builtin: &[u8],
) -> Result<Vec<(String, String)>, InitramfsError> {
    let table = parse_modules_dep(modules_dep);
    let builtin = String::from_utf8_lossy(builtin);
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for wanted in MODULES {
        if table.contains_key(*wanted) {
            visit(wanted, &table, &mut seen, &mut order);
        } else if REQUIRED_MODULES.contains(wanted) && !builtin.contains(*wanted) {
            return Err(InitramfsError::MissingModule {
                kernel: release_of(modules_dir),
                module: wanted.to_string(),
                dir: modules_dir.to_owned(),
            });
        }
    }
    Ok(order
        .into_iter()
        .map(|name| (name.clone(), table[&name].0.clone()))
        .collect())
}

type DepTable = BTreeMap<String, (String, Vec<String>)>;

fn visit(name: &str, table: &DepTable, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
    if !seen.insert(name.to_string()) {
        return;
    }
    if let Some((_, deps)) = table.get(name) {
        for dep in deps {
            visit(dep, table, seen, order);
        }
        order.push(name.to_string());
    }
}

/// Parses `modules.dep`: `kernel/a/b.ko: kernel/c.ko kernel/d.ko` per line, keyed by
/// module name (file stem with `-` as `_`, as the kernel names modules).
fn parse_modules_dep(text: &str) -> DepTable {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(path, deps)| {
            let deps = deps.split_whitespace().map(module_name).collect();
            (module_name(path), (path.trim().to_string(), deps))
        })
        .collect()
}

fn module_name(path: &str) -> String {
    let file = path.trim().rsplit('/').next().unwrap_or_default();
    let stem = file.split(".ko").next().unwrap_or_default();
    stem.replace('-', "_")
}

fn release_of(modules_dir: &Path) -> String {
    modules_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of Debian 6.1's (`6.1.0-57-amd64`) `modules.dep` for the modules we load
    /// and some we must not pull in (PCI, vhost, loopback vsock), verbatim, out of order.
    const DEBIAN_6_1: &str = "\
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/fs/mbcache.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/lib/crc16.ko:
kernel/drivers/acpi/button.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko \
kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko \
kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/input/evdev.ko:
kernel/drivers/vhost/vhost_vsock.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko \
kernel/drivers/vhost/vhost.ko kernel/drivers/vhost/vhost_iotlb.ko kernel/net/vmw_vsock/vsock.ko
kernel/net/core/failover.ko:
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: \
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko \
kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vsock_loopback.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko \
kernel/net/vmw_vsock/vsock.ko
";

    fn names(order: &[(String, String)]) -> Vec<&str> {
        order.iter().map(|(name, _)| name.as_str()).collect()
    }

    fn without_module(dep: &str, module: &str) -> String {
        dep.lines()
            .filter(|line| !line.contains(&format!("/{module}.ko:")))
            .map(|line| format!("{line}\n"))
            .collect()
    }

    #[test]
    fn debian_kernel_gets_virtio_mmio_disk_net_and_vsock_after_their_dependencies() {
        let order = load_order(Path::new("/lib/modules/6.1.0-57-amd64"), DEBIAN_6_1, b"").unwrap();
        assert_eq!(
            names(&order),
            [
                "virtio_ring",
                "virtio",
                "virtio_mmio",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_console",
                "virtio_rng",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport",
                "crc32c_intel",
                "crc32c_generic",
                "crc16",
                "mbcache",
                "jbd2",
                "ext4",
                "button",
                "evdev",
            ]
        );
        let rng = order.iter().find(|(name, _)| name == "virtio_rng").unwrap();
        assert_eq!(rng.1, "kernel/drivers/char/hw_random/virtio-rng.ko");
    }

    #[test]
    fn dependencies_come_first_whatever_order_modules_dep_lists_them() {
        // virtio_net lists net_failover before the failover it needs; ext4 lists its
        // dependencies in no particular order.
        let table = parse_modules_dep(DEBIAN_6_1);
        let order = load_order(Path::new("/x"), DEBIAN_6_1, b"").unwrap();
        let position = |name: &str| order.iter().position(|(n, _)| n == name);
        for (index, (name, _)) in order.iter().enumerate() {
            for dep in &table[name].1 {
                let dep_index = position(dep).unwrap_or_else(|| panic!("{dep} missing"));
                assert!(
                    dep_index < index,
                    "{name} loads before its dependency {dep}"
                );
            }
        }
    }

    #[test]
    fn every_missing_required_module_is_named() {
        for module in REQUIRED_MODULES {
            let dep = without_module(DEBIAN_6_1, module);
            let err = load_order(Path::new("/lib/modules/6.1-test"), &dep, b"").unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("kernel 6.1-test has no module {module} (looked in /lib/modules/6.1-test)")
            );
        }
    }

    #[test]
    fn missing_optional_modules_are_skipped() {
        let mut dep = DEBIAN_6_1.to_string();
        for module in [
            "button",
            "evdev",
            "virtio-rng",
            "crc32c-intel",
            "vsock_loopback",
        ] {
            dep = without_module(&dep, module);
        }
        let order = load_order(Path::new("/x"), &dep, b"").unwrap();
        let names = names(&order);
        assert!(!names.contains(&"button") && !names.contains(&"virtio_rng"));
        assert!(names.ends_with(&["crc32c_generic", "crc16", "mbcache", "jbd2", "ext4"]));
    }

    #[test]
    fn compressed_module_files_keep_their_path() {
        let dep = DEBIAN_6_1.replace("crc32c-intel.ko:", "crc32c-intel.ko.xz:");
        let order = load_order(Path::new("/x"), &dep, b"").unwrap();
        let crc = order
            .iter()
            .find(|(name, _)| name == "crc32c_intel")
            .unwrap();
        assert_eq!(crc.1, "kernel/arch/x86/crypto/crc32c-intel.ko.xz");
    }

    #[test]
    fn built_in_drivers_are_neither_required_nor_loaded() {
        // A kernel built with Firecracker's guest config: virtio and vsock built in.
        let builtin = [
            "virtio_mmio",
            "virtio_blk",
            "virtio_net",
            "virtio_console",
            "vmw_vsock_virtio_transport",
        ]
        .map(|m| format!("kernel/drivers/{m}.ko\n"))
        .concat();
        let order = load_order(
            Path::new("/x"),
            "kernel/fs/ext4/ext4.ko:\n",
            builtin.as_bytes(),
        )
        .unwrap();
        assert_eq!(
            order,
            [("ext4".to_string(), "kernel/fs/ext4/ext4.ko".to_string())]
        );
    }

    #[test]
    fn archive_is_whole_pages_and_unpacks_with_modules_in_load_order() {
        let dir = tempfile::tempdir().unwrap();
        let modules_dir = dir.path().join("6.1.0-57-amd64");
        for line in DEBIAN_6_1.lines() {
            let path = modules_dir.join(line.split(':').next().unwrap());
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, format!("module {}", path.display())).unwrap();
        }
        fs::write(modules_dir.join("modules.dep"), DEBIAN_6_1).unwrap();
        let busybox = dir.path().join("busybox");
        fs::write(&busybox, b"busybox").unwrap();

        let archive = build_initramfs(&InitramfsConfig {
            modules_dir: modules_dir.clone(),
            busybox,
        })
        .unwrap();
        assert_eq!(archive.len() % ARCHIVE_ALIGN, 0);

        let out = dir.path().join("unpacked");
        fs::create_dir(&out).unwrap();
        unpack_with_gnu_cpio(&archive, &out);
        let order = fs::read_to_string(out.join("lib/modules/load-order")).unwrap();
        let expected = load_order(&modules_dir, DEBIAN_6_1, b"").unwrap();
        assert_eq!(order.lines().collect::<Vec<_>>(), names(&expected));
        let vsock = fs::read_to_string(out.join("lib/modules/vmw_vsock_virtio_transport.ko"));
        assert!(vsock
            .unwrap()
            .ends_with("net/vmw_vsock/vmw_vsock_virtio_transport.ko"));
        assert_eq!(fs::read_to_string(out.join("init")).unwrap(), INIT_SCRIPT);
    }

    fn unpack_with_gnu_cpio(archive: &[u8], dir: &Path) {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("cpio")
            .args(["-idm", "--quiet"])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(archive).unwrap();
        assert!(child.wait().unwrap().success());
    }
}
