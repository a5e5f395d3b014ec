//! Block devices as sysfs describes them: which disk holds the root filesystem, which
//! virtio disks exist, how large they are.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Looking up a disk failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A sysfs or device file could not be read.
    #[error("read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A sysfs file did not hold what the kernel writes there.
    #[error("unexpected contents in {path}")]
    Unexpected {
        /// The file.
        path: PathBuf,
    },
}

/// The block device holding a mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDevice {
    /// The device's own name: `vda`, or `vda1` for a partition.
    pub name: String,
    /// The whole disk it is on: `vda` in both cases.
    pub disk: String,
}

impl RootDevice {
    /// Whether the filesystem fills a whole disk rather than a partition.
    pub fn is_whole_disk(&self) -> bool {
        self.name == self.disk
    }
}

/// The device number (`major:minor`) of the filesystem that holds `path`.
pub fn device_number(path: &Path) -> Result<(u64, u64), DiskError> {
    let dev = path
        .metadata()
        .map_err(|source| read_error(path, source))?
        .dev();
    Ok((nix::sys::stat::major(dev), nix::sys::stat::minor(dev)))
}

/// Resolves device number `(major, minor)` through `sys/dev/block` to its device name.
pub fn device_by_number(sys: &Path, (major, minor): (u64, u64)) -> Result<RootDevice, DiskError> {
    let link = sys.join(format!("dev/block/{major}:{minor}"));
    let target = fs::canonicalize(&link).map_err(|source| read_error(&link, source))?;
    let name = file_name(&target).ok_or_else(|| unexpected(&link))?;
    let disk = if target.join("partition").exists() {
        target
            .parent()
            .and_then(file_name)
            .ok_or_else(|| unexpected(&link))?
    } else {
        name.clone()
    };
    Ok(RootDevice { name, disk })
}

/// Whole virtio disks (`vd*`, partitions excluded) in probe order: `vda`, ..., `vdz`, `vdaa`.
pub fn virtio_disks(sys: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(sys.join("class/block")) else {
        return Vec::new();
    };
    let mut disks: Vec<String> = entries
        .flatten()
        .filter(|e| !e.path().join("partition").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with("vd"))
        .collect();
    disks.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    disks
}

/// The size of block device `name` in bytes, from sysfs (which counts 512-byte sectors).
pub fn size_bytes(sys: &Path, name: &str) -> Result<u64, DiskError> {
    let path = sys.join("class/block").join(name).join("size");
    let text = fs::read_to_string(&path).map_err(|source| read_error(&path, source))?;
    let sectors: u64 = text.trim().parse().map_err(|_| unexpected(&path))?;
    Ok(sectors * 512)
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_string)
}

fn read_error(path: &Path, source: io::Error) -> DiskError {
    DiskError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn unexpected(path: &Path) -> DiskError {
    DiskError::Unexpected {
        path: path.to_path_buf(),
    }
}

/// Builds a fake sysfs block tree for tests, shaped like the kernel's.
#[cfg(test)]
pub(crate) mod fake {
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    /// Adds disk `name` with device number `major:minor` and `sectors` 512-byte sectors.
    pub fn disk(sys: &Path, name: &str, number: (u64, u64), sectors: u64) {
        let devices = sys.join("devices/pci0000:00/virtio/block");
        let dir = devices.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("size"), format!("{sectors}\n")).unwrap();
        link(sys, name, number, &dir);
    }

    /// Adds partition `name` of disk `disk`.
    pub fn partition(sys: &Path, disk: &str, name: &str, number: (u64, u64)) {
        let devices = sys.join("devices/pci0000:00/virtio/block");
        let dir = devices.join(disk).join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("partition"), "1\n").unwrap();
        fs::write(dir.join("size"), "2048\n").unwrap();
        link(sys, name, number, &dir);
    }

    fn link(sys: &Path, name: &str, (major, minor): (u64, u64), dir: &Path) {
        fs::create_dir_all(sys.join("class/block")).unwrap();
        fs::create_dir_all(sys.join("dev/block")).unwrap();
        symlink(dir, sys.join("class/block").join(name)).unwrap();
        symlink(dir, sys.join(format!("dev/block/{major}:{minor}"))).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_number_resolves_to_disk_and_partition_to_its_disk() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        fake::disk(sys, "vda", (254, 0), 8);
        fake::partition(sys, "vda", "vda1", (254, 1));
        fake::disk(sys, "vdb", (254, 16), 8);

        let whole = device_by_number(sys, (254, 0)).unwrap();
        assert!(whole.is_whole_disk());
        let part = device_by_number(sys, (254, 1)).unwrap();
        assert_eq!((part.name.as_str(), part.disk.as_str()), ("vda1", "vda"));
        assert!(device_by_number(sys, (8, 0)).is_err());
    }

    #[test]
    fn virtio_disks_skip_partitions_and_sort_in_probe_order() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        for (i, name) in ["vdaa", "vdb", "vda", "sda"].iter().enumerate() {
            fake::disk(sys, name, (254, i as u64 * 16), 8);
        }
        fake::partition(sys, "vda", "vda1", (254, 1));
        assert_eq!(virtio_disks(sys), ["vda", "vdb", "vdaa"]);
        assert_eq!(size_bytes(sys, "vdb").unwrap(), 4096);
    }
}
