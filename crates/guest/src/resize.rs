//! Boot step 5: grow the root filesystem to fill its disk.
//!
//! A VM's disk is cloned from a golden image and then enlarged to the requested size, so
//! at first boot the ext4 filesystem is smaller than its device. The agent compares the
//! superblock's size with the device's and runs `resize2fs`, which grows a mounted ext4
//! online, only when they differ. Boot runs this on its own thread beside the other steps
//! and waits for it before reporting ready, since the node checks the size right after.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use boxcutter_sys::CommandError;

use crate::disks::{self, DiskError};
use crate::layout::Layout;
use crate::programs;

/// Smaller differences are not worth a `resize2fs` run: ext4 may leave a partial last
/// block group unused, and that must not trigger a run at every boot.
pub const GROW_SLACK_BYTES: u64 = 1 << 20;

const SUPERBLOCK_OFFSET: u64 = 1024;
const EXT4_MAGIC: u16 = 0xEF53;
const INCOMPAT_64BIT: u32 = 0x80;

/// Growing the root filesystem failed.
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    /// The root device could not be identified or measured.
    #[error("find the root disk")]
    Disk(#[from] DiskError),
    /// Limitation: the root filesystem is on a partition; growing the partition first
    /// (growpart) is not implemented, and images are built without partition tables.
    #[error("root filesystem is on partition {name}; only whole-disk roots are grown")]
    Partition {
        /// The partition.
        name: String,
    },
    /// The superblock could not be read.
    #[error("read superblock of {path}")]
    Superblock {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The device does not hold ext2/3/4.
    #[error("{path} holds no ext4 filesystem")]
    NotExt4 {
        /// The device.
        path: PathBuf,
    },
    /// `resize2fs` failed.
    #[error("grow {path}")]
    Resize2fs {
        /// The device.
        path: PathBuf,
        /// Its failure, with its stderr.
        #[source]
        source: CommandError,
    },
}

/// What growing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrowOutcome {
    /// The filesystem already filled its device.
    AlreadyFull {
        /// The filesystem's size in bytes.
        fs_bytes: u64,
    },
    /// `resize2fs` grew the filesystem.
    Grown {
        /// Size before, in bytes.
        from: u64,
        /// Size after, in bytes.
        to: u64,
        /// How long `resize2fs` took.
        elapsed_ms: u64,
    },
}

/// Grows the filesystem mounted at `layout.root` if its whole-disk device is larger.
pub fn grow_root(layout: &Layout) -> Result<GrowOutcome, ResizeError> {
    let number = disks::device_number(&layout.root)?;
    let root = disks::device_by_number(&layout.sys, number)?;
    if !root.is_whole_disk() {
        return Err(ResizeError::Partition { name: root.name });
    }
    let device_bytes = disks::size_bytes(&layout.sys, &root.name)?;
    grow_device(&layout.dev.join(&root.name), device_bytes)
}

/// Grows the ext4 filesystem on `device` (`device_bytes` long) if it is smaller.
pub fn grow_device(device: &Path, device_bytes: u64) -> Result<GrowOutcome, ResizeError> {
    let from = filesystem_bytes(device)?;
    if !needs_grow(device_bytes, from) {
        return Ok(GrowOutcome::AlreadyFull { fs_bytes: from });
    }
    let started = Instant::now();
    let mut resize2fs = programs::command("resize2fs");
    resize2fs.arg(device);
    boxcutter_sys::run(&mut resize2fs).map_err(|source| ResizeError::Resize2fs {
        path: device.to_path_buf(),
        source,
    })?;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let to = filesystem_bytes(device).unwrap_or(device_bytes);
    Ok(GrowOutcome::Grown {
        from,
        to,
        elapsed_ms,
    })
}

/// Whether a filesystem of `fs_bytes` on a device of `device_bytes` should be grown.
pub fn needs_grow(device_bytes: u64, fs_bytes: u64) -> bool {
    device_bytes > fs_bytes.saturating_add(GROW_SLACK_BYTES)
}

/// The size in bytes of the ext2/3/4 filesystem on `device`, from its superblock.
pub fn filesystem_bytes(device: &Path) -> Result<u64, ResizeError> {
    let mut superblock = vec![0u8; 1024];
    File::open(device)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(SUPERBLOCK_OFFSET))?;
            f.read_exact(&mut superblock)
        })
        .map_err(|source| ResizeError::Superblock {
            path: device.to_path_buf(),
            source,
        })?;
    ext4_bytes(&superblock).ok_or_else(|| ResizeError::NotExt4 {
        path: device.to_path_buf(),
    })
}

/// The filesystem size a 1024-byte ext2/3/4 superblock records, `None` if it is not one.
pub fn ext4_bytes(superblock: &[u8]) -> Option<u64> {
    let u32_at = |at: usize| {
        Some(u32::from_le_bytes(
            superblock.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let magic = u16::from_le_bytes(superblock.get(0x38..0x3A)?.try_into().ok()?);
    if magic != EXT4_MAGIC {
        return None;
    }
    let log_block_size = u32_at(0x18)?;
    if log_block_size > 6 {
        return None;
    }
    let mut blocks = u64::from(u32_at(0x04)?);
    if u32_at(0x60)? & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(u32_at(0x150)?) << 32;
    }
    Some(blocks << (10 + log_block_size))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn superblock(blocks: u64, log_block_size: u32, incompat: u32) -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[0x04..0x08].copy_from_slice(&(blocks as u32).to_le_bytes());
        sb[0x18..0x1C].copy_from_slice(&log_block_size.to_le_bytes());
        sb[0x38..0x3A].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        sb[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&((blocks >> 32) as u32).to_le_bytes());
        sb
    }

    #[test]
    fn superblock_size_honours_block_size_and_64bit_counts() {
        assert_eq!(ext4_bytes(&superblock(1000, 2, 0)), Some(1000 * 4096));
        let huge = (1u64 << 32) + 5;
        assert_eq!(
            ext4_bytes(&superblock(huge, 2, INCOMPAT_64BIT)),
            Some(huge * 4096)
        );
        // Without the 64bit feature the high word is not part of the count.
        assert_eq!(ext4_bytes(&superblock(huge, 2, 0)), Some(5 * 4096));
        assert_eq!(ext4_bytes(&[0u8; 1024]), None);
        assert_eq!(ext4_bytes(&[0u8; 10]), None);
    }

    #[test]
    fn only_a_real_difference_triggers_a_grow() {
        let gib = 1 << 30;
        assert!(needs_grow(10 * gib, 2 * gib));
        assert!(!needs_grow(2 * gib, 2 * gib));
        assert!(!needs_grow(2 * gib + 4096, 2 * gib));
        assert!(!needs_grow(gib, 2 * gib));
    }

    fn tool_exists(name: &str) -> bool {
        programs::PATH
            .split(':')
            .any(|dir| Path::new(dir).join(name).exists())
    }

    #[test]
    fn real_ext4_image_is_measured_and_grown_to_its_file() {
        if !tool_exists("mkfs.ext4") || !tool_exists("resize2fs") {
            eprintln!("skipped: e2fsprogs not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("root.ext4");
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096"])
            .arg(&image)
            .arg("32M")
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        assert_eq!(filesystem_bytes(&image).unwrap(), 32 << 20);
        assert_eq!(
            grow_device(&image, 32 << 20).unwrap(),
            GrowOutcome::AlreadyFull { fs_bytes: 32 << 20 }
        );

        File::options()
            .write(true)
            .open(&image)
            .unwrap()
            .set_len(96 << 20)
            .unwrap();
        let outcome = grow_device(&image, 96 << 20).unwrap();
        assert!(
            matches!(outcome, GrowOutcome::Grown { from, to, .. } if from == 32 << 20 && to == 96 << 20),
            "{outcome:?}"
        );
    }
}
