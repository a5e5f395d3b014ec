//! The initramfs built from this machine's Debian kernel (the one every image is built
//! from), unpacked with GNU cpio: it must carry the virtio-mmio, disk, network and vsock
//! drivers a Firecracker guest needs, each after the modules the kernel's own
//! `modules.dep` says it depends on. Needs `linux-image-amd64`, `busybox-static` and `cpio`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use boxcutter_image::initramfs::{build_initramfs, InitramfsConfig};
use boxcutter_image::ImageBuildConfig;

/// What a Firecracker guest of Debian's kernel cannot do without, in the order they must
/// load (each after those before it that it depends on).
const FIRECRACKER_MODULES: [&str; 6] = [
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
];

#[test]
fn host_kernel_initramfs_loads_firecracker_drivers_after_their_dependencies() {
    let host =
        ImageBuildConfig::from_host("/nonexistent/boxcutter-guest".into(), "/tmp".into()).unwrap();
    let archive = build_initramfs(&InitramfsConfig {
        modules_dir: host.modules_dir.clone(),
        busybox: host.busybox.clone(),
    })
    .unwrap();
    assert_eq!(archive.len() % 4096, 0, "the archive is not whole pages");

    let dir = tempfile::tempdir().unwrap();
    unpack(&archive, dir.path());
    let order = std::fs::read_to_string(dir.path().join("lib/modules/load-order")).unwrap();
    let order: Vec<&str> = order.lines().collect();
    let position = |name: &str| order.iter().position(|m| *m == name);

    let positions = FIRECRACKER_MODULES.map(position);
    assert!(
        positions.iter().all(Option::is_some) && positions.is_sorted(),
        "missing or out of order: {order:?}"
    );
    assert_eq!(position("virtio_pci"), None, "no machine of ours has PCI");

    let deps = modules_dep(&host.modules_dir);
    for (index, module) in order.iter().enumerate() {
        let file = dir.path().join(format!("lib/modules/{module}.ko"));
        assert!(file.is_file(), "{} missing", file.display());
        for dep in &deps[*module] {
            let at = position(dep).unwrap_or_else(|| panic!("{module} needs {dep}, not loaded"));
            assert!(at < index, "{module} loads before its dependency {dep}");
        }
    }
}

/// `modules.dep` as module name → the names it depends on.
fn modules_dep(modules_dir: &Path) -> BTreeMap<String, Vec<String>> {
    let name = |path: &str| {
        let file = path.rsplit('/').next().unwrap();
        file.split(".ko").next().unwrap().replace('-', "_")
    };
    let text = std::fs::read_to_string(modules_dir.join("modules.dep")).unwrap();
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(module, deps)| (name(module), deps.split_whitespace().map(name).collect()))
        .collect()
}

fn unpack(archive: &[u8], dir: &Path) {
    let mut cpio = Command::new("cpio")
        .args(["-idm", "--quiet"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    cpio.stdin.take().unwrap().write_all(archive).unwrap();
    assert!(cpio.wait().unwrap().success());
}
