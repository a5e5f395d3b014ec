//! Boot step 1: the kernel filesystems every later step and every program relies on.
//!
//! The initramfs has mounted the root read-write and, normally, devtmpfs on `/dev`; the
//! rest is ours. Each mount is skipped if something is already mounted there, so the step
//! is idempotent.

use std::io;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use crate::files;
use crate::layout::Layout;

/// One filesystem to mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountSpec {
    /// Where, as an absolute guest path.
    pub target: &'static str,
    /// Filesystem type (also used as the source name).
    pub fstype: &'static str,
    /// Mount flags.
    pub flags: MsFlags,
    /// Filesystem options.
    pub data: Option<&'static str>,
    /// Mode of the mount point if it has to be created.
    pub dir_mode: u32,
}

const SECURE: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const SECURE_NOEXEC: MsFlags = SECURE.union(MsFlags::MS_NOEXEC);

/// The mounts, parents before children.
pub const MOUNTS: &[MountSpec] = &[
    spec("/proc", "proc", SECURE_NOEXEC, None, 0o555),
    spec("/sys", "sysfs", SECURE_NOEXEC, None, 0o555),
    spec(
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
        0o755,
    ),
    spec("/run", "tmpfs", SECURE, Some("mode=0755"), 0o755),
    spec(
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        Some("gid=5,mode=620,ptmxmode=666"),
        0o755,
    ),
    spec("/dev/shm", "tmpfs", SECURE, Some("mode=1777"), 0o1777),
];

/// Symlinks programs expect in `/dev` that devtmpfs does not create (bash's `<(...)`).
pub const DEV_LINKS: &[(&str, &str)] = &[
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
];

const fn spec(
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
    dir_mode: u32,
) -> MountSpec {
    MountSpec {
        target,
        fstype,
        flags,
        data,
        dir_mode,
    }
}

/// A mount or a directory failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// Mounting a filesystem failed.
    #[error("mount {fstype} on {target}")]
    Mount {
        /// The mount point.
        target: &'static str,
        /// The filesystem type.
        fstype: &'static str,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// Preparing a directory or link failed.
    #[error("prepare {path}")]
    Prepare {
        /// The directory or link.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Mounts everything in [`MOUNTS`] that is not mounted yet, then prepares `/tmp`, `/run`
/// and `/dev`; returns the targets it mounted.
///
/// Only for PID 1 on the real system: mounting is never done against a fake layout.
pub fn mount_all() -> Result<Vec<&'static str>, MountError> {
    let mut mounted = Vec::new();
    for spec in MOUNTS {
        if mount_ensure(spec)? {
            mounted.push(spec.target);
        }
    }
    prepare_dirs(&Layout::system())?;
    Ok(mounted)
}

/// Creates the directories and links a Debian system expects once the mounts exist:
/// `/tmp` (on the root disk, sticky and world-writable), `/run/lock` and the `/dev` links.
pub fn prepare_dirs(layout: &Layout) -> Result<(), MountError> {
    for (path, mode) in [("/tmp", 0o1777), ("/run/lock", 0o1777)] {
        let path = layout.file(path);
        files::dir_ensure(&path, mode, None).map_err(|source| prepare(&path, source))?;
    }
    for (link, target) in DEV_LINKS {
        let link = layout.file(link);
        match symlink(target, &link) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(prepare(&link, e));
            }
            _ => {}
        }
    }
    Ok(())
}

fn mount_ensure(spec: &MountSpec) -> Result<bool, MountError> {
    let target = Path::new(spec.target);
    files::dir_ensure_exists(target, spec.dir_mode).map_err(|source| prepare(target, source))?;
    if is_mount_point(target) {
        return Ok(false);
    }
    mount(
        Some(spec.fstype),
        target,
        Some(spec.fstype),
        spec.flags,
        spec.data,
    )
    .map_err(|source| MountError::Mount {
        target: spec.target,
        fstype: spec.fstype,
        source,
    })?;
    Ok(true)
}

/// Whether `path` is on a different filesystem than its parent, which is what a mount
/// point is (bind mounts of the same filesystem aside, which we never make).
pub fn is_mount_point(path: &Path) -> bool {
    let parent = path.parent().unwrap_or(Path::new("/"));
    match (path.metadata(), parent.metadata()) {
        (Ok(here), Ok(above)) => here.dev() != above.dev(),
        _ => false,
    }
}

fn prepare(path: &Path, source: io::Error) -> MountError {
    MountError::Prepare {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn parents_are_mounted_before_children() {
        for (i, child) in MOUNTS.iter().enumerate() {
            for parent in &MOUNTS[i + 1..] {
                assert!(
                    !child.target.starts_with(&format!("{}/", parent.target)),
                    "{} comes before its parent {}",
                    child.target,
                    parent.target
                );
            }
        }
    }

    #[test]
    fn devpts_gives_ttys_to_group_tty() {
        let pts = MOUNTS.iter().find(|m| m.fstype == "devpts").unwrap();
        assert_eq!(pts.data, Some("gid=5,mode=620,ptmxmode=666"));
    }

    #[test]
    fn prepare_dirs_makes_tmp_sticky_and_links_dev() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        for sub in ["tmp", "run", "dev"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        fs::set_permissions(dir.path().join("tmp"), fs::Permissions::from_mode(0o755)).unwrap();
        prepare_dirs(&layout).unwrap();
        prepare_dirs(&layout).unwrap();

        let tmp = fs::metadata(dir.path().join("tmp")).unwrap();
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
        let link = fs::read_link(dir.path().join("dev/fd")).unwrap();
        assert_eq!(link, Path::new("/proc/self/fd"));
    }

    #[test]
    fn proc_is_a_mount_point_and_a_plain_directory_is_not() {
        assert!(is_mount_point(Path::new("/proc")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()));
    }
}
