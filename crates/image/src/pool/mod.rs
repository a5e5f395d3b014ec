//! The node's storage pool: the filesystem where VM disks live as reflink clones of golden
//! images, so a disk of any size is created in milliseconds and shares every unchanged block
//! with its golden image.
//!
//! ```text
//! <data_dir>/pool/                 pool root: a directory, or the loop-mounted XFS below
//! <data_dir>/pool.img              sparse XFS image, only when data_dir lacks reflink
//! <data_dir>/pool.lock             held while opening, so two openers never both mount
//! <pool>/golden/<version>.ext4     imported golden root filesystems, read-only
//! ```
//!
//! When `data_dir` is on a filesystem with reflink (XFS, btrfs) the pool is a plain
//! directory. Otherwise the pool is an XFS filesystem made once (`reflink=1`) in a sparse
//! file and mounted through a loop device that the kernel frees on unmount. Opening is
//! idempotent: a mounted pool is reused, an unmounted one is mounted again, and an existing
//! image is never formatted again.
//!
//! Every call blocks (system calls, `mkfs.xfs`, `mount`, copies of gigabytes): async callers
//! run them with `spawn_blocking`. The pool keeps no state beyond its paths; any number of
//! threads may clone at once.
//!
//! Layout: this file opens the pool and imports golden images; `mount` makes and mounts the
//! loop pool, `clone` makes reflink copies, `usage` measures the pool.

mod clone;
mod mount;
mod usage;

#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use boxcutter_sys::CommandError;
use boxcutter_types::ByteSize;
use nix::fcntl::{Flock, FlockArg};

pub use clone::supports_reflink;
pub use usage::{allocated_bytes, PoolUsage};

use clone::copy_keeping_holes;
use mount::mount_ensure;

/// The sparse loop file's size when [`PoolConfig::new`] is used: it costs nothing until
/// written, so it is the pool's ceiling, not its footprint.
pub const DEFAULT_LOOP_SIZE: ByteSize = ByteSize(200 << 30);

const POOL_DIR: &str = "pool";
const POOL_IMAGE: &str = "pool.img";
const POOL_LOCK: &str = "pool.lock";
const GOLDEN_DIR: &str = "golden";
const MAX_VERSION_LEN: usize = 128;
/// Errors of the storage pool. Each says which step failed and on which path.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A file operation or system call failed.
    #[error("{step}: {path}")]
    Io {
        /// The step that failed.
        step: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An external program (`mkfs.xfs`, `mount`) failed.
    #[error("{step}: {path}")]
    Command {
        /// The step that failed.
        step: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The program's failure, with its stderr.
        #[source]
        source: CommandError,
    },
    /// Something other than this pool's image is mounted where the pool belongs.
    #[error("{path} has {fstype} from {device} mounted, not the pool image {image}")]
    ForeignMount {
        /// The pool's mount point.
        path: PathBuf,
        /// The mounted filesystem's type.
        fstype: String,
        /// The mounted device.
        device: String,
        /// The image that should be mounted there.
        image: PathBuf,
    },
    /// The pool's filesystem cannot make reflink copies.
    #[error("storage pool {path} does not support reflink copies")]
    NoReflink {
        /// The pool root.
        path: PathBuf,
    },
    /// A golden image version that is not lowercase hex.
    #[error("invalid golden image version {version:?}: expected 1 to 128 lowercase hex digits")]
    InvalidVersion {
        /// The rejected version.
        version: String,
    },
    /// A disk was requested smaller than the golden image it is cloned from.
    #[error("disk size {size} is smaller than its golden image {golden} ({golden_bytes} bytes)")]
    DiskTooSmall {
        /// The golden image.
        golden: PathBuf,
        /// The requested size.
        size: ByteSize,
        /// The golden image's size.
        golden_bytes: u64,
    },
}

/// Where and how to open the storage pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The node's data directory; the pool lives in `data_dir/pool`.
    pub data_dir: PathBuf,
    /// Size of the sparse loop file when one has to be made.
    // Limitation: an existing pool image keeps the size it was made with; a larger
    // `loop_size` later does not grow it (that would take `losetup -c` and `xfs_growfs`).
    pub loop_size: ByteSize,
    /// Use a loop-mounted XFS even when `data_dir` supports reflink (tests, benchmarks).
    pub force_loop: bool,
}

impl PoolConfig {
    /// The configuration for a pool in `data_dir` with the default loop size.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            loop_size: DEFAULT_LOOP_SIZE,
            force_loop: false,
        }
    }
}

/// An open storage pool.
#[derive(Debug)]
pub struct StoragePool {
    root: PathBuf,
    image: Option<PathBuf>,
}

impl StoragePool {
    /// Opens the pool in `config.data_dir`, making and mounting it as needed.
    pub fn open(config: PoolConfig) -> Result<Self, PoolError> {
        let data_dir = &config.data_dir;
        fs::create_dir_all(data_dir).map_err(io_err("create data directory", data_dir))?;
        let _lock = lock(&data_dir.join(POOL_LOCK))?;
        let root = data_dir.join(POOL_DIR);
        let image = data_dir.join(POOL_IMAGE);
        let image_exists = image
            .try_exists()
            .map_err(io_err("look for pool image", &image))?;
        let use_loop = config.force_loop || image_exists || !supports_reflink(data_dir)?;
        fs::create_dir_all(&root).map_err(io_err("create pool root", &root))?;

        let pool = if use_loop {
            Self::open_loop(root, image, config.loop_size)?
        } else {
            Self { root, image: None }
        };
        let golden = pool.golden_dir();
        fs::create_dir_all(&golden).map_err(io_err("create golden directory", &golden))?;
        tracing::info!(root = %pool.root.display(), loop_image = use_loop, "storage pool open");
        Ok(pool)
    }

    /// The pool's root directory: VM disks must be created under it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The sparse XFS image behind the pool, when it is loop-mounted.
    pub fn loop_image(&self) -> Option<&Path> {
        self.image.as_deref()
    }

    /// Where the golden root filesystem of `version` lives once imported.
    pub fn golden_path(&self, version: &str) -> Result<PathBuf, PoolError> {
        validate_version(version)?;
        Ok(self.golden_dir().join(format!("{version}.ext4")))
    }

    /// Copies a golden root filesystem into the pool once per version and returns its path
    /// there; an already imported version is returned as is. The copy keeps holes, is
    /// written under a temporary name and renamed into place read-only.
    pub fn import_golden(&self, image_rootfs: &Path, version: &str) -> Result<PathBuf, PoolError> {
        let dest = self.golden_path(version)?;
        // Limitation: the version is trusted as given, not checked against the content's
        // hash (that would read the whole image); a caller passing the wrong version for a
        // file would publish that file under it.
        if dest
            .try_exists()
            .map_err(io_err("look for golden image", &dest))?
        {
            return Ok(dest);
        }
        let started = Instant::now();
        let dir = self.golden_dir();
        let tmp = tempfile::Builder::new()
            .prefix(".import-")
            .tempfile_in(&dir)
            .map_err(io_err("create temporary golden image", &dir))?;
        let src = File::open(image_rootfs).map_err(io_err("open golden image", image_rootfs))?;
        copy_keeping_holes(&src, tmp.as_file()).map_err(io_err("copy golden image", &dest))?;
        let file = tmp.as_file();
        file.sync_all()
            .and_then(|()| file.set_permissions(fs::Permissions::from_mode(0o444)))
            .map_err(io_err("write golden image", &dest))?;
        tmp.persist(&dest)
            .map_err(|e| io_err("rename golden image into place", &dest)(e.error))?;
        sync_dir(&dir)?;
        tracing::info!(
            version,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "golden image imported"
        );
        Ok(dest)
    }

    /// Unmounts a loop pool; the kernel then frees its loop device. Fails while any file in
    /// the pool is open. A directory pool has nothing to undo.
    pub fn close(self) -> Result<(), PoolError> {
        if self.image.is_some() {
            unmount_patiently(&self.root)?;
            tracing::info!(root = %self.root.display(), "storage pool unmounted");
        }
        Ok(())
    }

    /// Mounts (making it first if needed) the loop pool and checks that it can reflink;
    /// unmounts again if it cannot.
    fn open_loop(root: PathBuf, image: PathBuf, size: ByteSize) -> Result<Self, PoolError> {
        let mounted_now = mount_ensure(&image, &root, size)?;
        if !supports_reflink(&root)? {
            if mounted_now {
                let _ = nix::mount::umount2(&root, nix::mount::MntFlags::empty());
            }
            return Err(PoolError::NoReflink { path: root });
        }
        Ok(Self {
            root,
            image: Some(image),
        })
    }

    fn golden_dir(&self) -> PathBuf {
        self.root.join(GOLDEN_DIR)
    }
}

/// Checks that a golden image version is 1 to 128 lowercase hex digits (a content hash)
/// before it becomes part of a path. Uppercase is refused so a version has one file name.
pub fn validate_version(version: &str) -> Result<(), PoolError> {
    let hex = version
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex && !version.is_empty() && version.len() <= MAX_VERSION_LEN {
        return Ok(());
    }
    Err(PoolError::InvalidVersion {
        version: version.to_string(),
    })
}

fn lock(path: &Path) -> Result<Flock<File>, PoolError> {
    let file = File::create(path).map_err(io_err("open pool lock", path))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| io_err("lock pool", path)(errno.into()))
}

fn sync_dir(dir: &Path) -> Result<(), PoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PoolError + 'a {
    move |source| PoolError::Io {
        step,
        path: path.to_owned(),
        source,
    }
}

fn cmd_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(CommandError) -> PoolError + 'a {
    move |source| PoolError::Command {
        step,
        path: path.to_owned(),
        source,
    }
}

/// Unmounts `root`, retrying briefly while it is busy: a process forked elsewhere in this
/// program holds copies of our descriptors until it execs, which takes milliseconds.
fn unmount_patiently(root: &Path) -> Result<(), PoolError> {
    let mut tries = 0;
    loop {
        match nix::mount::umount2(root, nix::mount::MntFlags::empty()) {
            Err(nix::errno::Errno::EBUSY) if tries < 40 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            result => return result.map_err(|errno| io_err("unmount pool", root)(errno.into())),
        }
    }
}
