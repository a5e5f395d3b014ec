//! The initramfs: busybox, the kernel modules Debian's kernel needs to reach a virtio root
//! disk (with their dependencies, in load order) and an init script that mounts the root
//! filesystem and starts the guest agent. It is left uncompressed: under software
//! emulation, decompressing costs more boot time than reading a few extra megabytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::cpio::CpioWriter;

/// The init script, run by busybox's shell.
const INIT_SCRIPT: &str = include_str!("../assets/initramfs-init");

/// Modules to load, by name. Dependencies are added automatically. Modules missing from
/// the kernel (built in, or absent) are skipped, except those in [`REQUIRED_MODULES`].
pub const MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
    "vmw_vsock_virtio_transport",
    "crc32c_intel",
    "crc32c_generic",
    "ext4",
    "button",
    "evdev",
];

/// Modules without which no guest can boot, unless the kernel has them built in.
const REQUIRED_MODULES: &[&str] = &["virtio_blk", "ext4", "virtio_console"];

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
    cpio.finish().map_err(InitramfsError::Write)
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

    const DEP: &str = "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/lib/crc16.ko:
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko
kernel/arch/x86/crypto/crc32c-intel.ko.xz:
";

    #[test]
    fn dependencies_load_before_their_users() {
        let order = load_order(Path::new("/lib/modules/x"), DEP, b"").unwrap();
        let names: Vec<_> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "virtio_ring",
                "virtio",
                "virtio_blk",
                "virtio_console",
                "crc32c_intel",
                "crc16",
                "jbd2",
                "ext4"
            ]
        );
        assert_eq!(order[4].1, "kernel/arch/x86/crypto/crc32c-intel.ko.xz");
    }

    #[test]
    fn missing_required_module_is_named() {
        let dep = "kernel/fs/ext4/ext4.ko:\n";
        let err = load_order(Path::new("/lib/modules/6.1-test"), dep, b"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel 6.1-test has no module virtio_blk (looked in /lib/modules/6.1-test)"
        );
    }

    #[test]
    fn built_in_required_modules_are_fine() {
        let builtin =
            b"kernel/drivers/block/virtio_blk.ko\nkernel/drivers/char/virtio_console.ko\n";
        let order = load_order(Path::new("/x"), "kernel/fs/ext4/ext4.ko:\n", builtin).unwrap();
        assert_eq!(
            order,
            [("ext4".to_string(), "kernel/fs/ext4/ext4.ko".to_string())]
        );
    }
}
