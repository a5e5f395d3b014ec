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

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use boxcutter_sys::{run, CommandError};
use boxcutter_types::ByteSize;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{lseek, Whence};

/// The sparse loop file's size when [`PoolConfig::new`] is used: it costs nothing until
/// written, so it is the pool's ceiling, not its footprint.
pub const DEFAULT_LOOP_SIZE: ByteSize = ByteSize(200 << 30);

const POOL_DIR: &str = "pool";
const POOL_IMAGE: &str = "pool.img";
const POOL_LOCK: &str = "pool.lock";
const GOLDEN_DIR: &str = "golden";
const MAX_VERSION_LEN: usize = 128;
const COPY_CHUNK: usize = 1 << 20;

/// `FICLONE` from `<linux/fs.h>`: `_IOW(0x94, 9, int)` = 0x4004_9409. Its argument is the
/// source file descriptor; it makes the target share all of the source's extents.
const FICLONE: nix::sys::ioctl::ioctl_num_type = 0x4004_9409;

nix::ioctl_write_int_bad!(
    /// Issues `FICLONE` on the destination `fd` with the source descriptor as argument.
    ficlone,
    FICLONE
);

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

/// The pool's capacity, from its filesystem's own counters.
///
/// XFS counts a block shared by reflinked files once, so `used_bytes` is what the pool
/// really holds. Summing [`allocated_bytes`] over files counts a shared block once per file
/// and overstates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Size of the pool's filesystem.
    pub total_bytes: u64,
    /// Blocks allocated in it, shared ones counted once.
    pub used_bytes: u64,
    /// Bytes that can still be written. For a loop pool, also bounded by the free space of
    /// the filesystem holding the sparse image, so `used + free` can be less than `total`.
    pub free_bytes: u64,
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

    /// Creates the VM disk `dest` as a reflink clone of `golden` grown to `size`. The extra
    /// space is a hole: the guest grows its filesystem at boot. `dest` must not exist; on
    /// failure nothing is left behind.
    pub fn clone_disk(&self, golden: &Path, dest: &Path, size: ByteSize) -> Result<(), PoolError> {
        let golden_bytes = fs::metadata(golden)
            .map_err(io_err("stat golden image", golden))?
            .len();
        if size.bytes() < golden_bytes {
            return Err(PoolError::DiskTooSmall {
                golden: golden.to_owned(),
                size,
                golden_bytes,
            });
        }
        clone_into(golden, dest, Some(size))
    }

    /// Creates `dest` as a reflink clone of `src` with the same size (copying a VM disk).
    /// A disk in use is cloned as of the moment of the call; data the guest still caches is
    /// not in it. `dest` must not exist; on failure nothing is left behind.
    pub fn clone_file(&self, src: &Path, dest: &Path) -> Result<(), PoolError> {
        clone_into(src, dest, None)
    }

    /// The pool's capacity and use. For a directory pool these are the figures of the whole
    /// filesystem holding `data_dir`. Blocks of a removed file are freed in the background,
    /// so `used_bytes` can lag a deletion by a moment.
    pub fn usage(&self) -> Result<PoolUsage, PoolError> {
        let pool = statvfs(&self.root)?;
        let mut usage = PoolUsage {
            total_bytes: pool.blocks() * pool.fragment_size(),
            used_bytes: (pool.blocks() - pool.blocks_free()) * pool.fragment_size(),
            free_bytes: pool.blocks_available() * pool.fragment_size(),
        };
        if let Some(dir) = self.image.as_deref().and_then(Path::parent) {
            // The pool's free blocks are holes in the sparse image (it is mounted with
            // `discard`): writing them needs room on the filesystem below.
            let backing = statvfs(dir)?;
            let backing_free = backing.blocks_available() * backing.fragment_size();
            usage.free_bytes = usage.free_bytes.min(backing_free);
        }
        Ok(usage)
    }

    /// Unmounts a loop pool; the kernel then frees its loop device. Fails while any file in
    /// the pool is open. A directory pool has nothing to undo.
    pub fn close(self) -> Result<(), PoolError> {
        if self.image.is_some() {
            nix::mount::umount2(&self.root, nix::mount::MntFlags::empty())
                .map_err(|errno| io_err("unmount pool", &self.root)(errno.into()))?;
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

/// Whether files in `dir` can be reflinked: clones one temporary file into another.
/// `EOPNOTSUPP`, `EXDEV`, `EINVAL` and `ENOTTY` mean no; other errors are errors.
pub fn supports_reflink(dir: &Path) -> Result<bool, PoolError> {
    let temp = || {
        tempfile::Builder::new()
            .prefix(".reflink-probe-")
            .tempfile_in(dir)
    };
    let (mut src, dest) = temp()
        .and_then(|src| Ok((src, temp()?)))
        .map_err(io_err("create reflink probe", dir))?;
    src.write_all(&[0xa5; 4096])
        .map_err(io_err("write reflink probe", dir))?;
    match reflink(src.as_file(), dest.as_file()) {
        Ok(()) => Ok(true),
        Err(e) if is_unsupported(e) => Ok(false),
        Err(e) => Err(io_err("probe reflink", dir)(e.into())),
    }
}

/// Bytes allocated to `path` (`st_blocks`). A reflinked file counts every extent it shares
/// as its own, so for clones this is their logical footprint, not what the pool holds: use
/// [`StoragePool::usage`] for that.
pub fn allocated_bytes(path: &Path) -> Result<u64, PoolError> {
    let meta = fs::symlink_metadata(path).map_err(io_err("stat file", path))?;
    Ok(meta.blocks() * 512)
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

/// Clones `src` into a new `dest`, optionally growing it, and makes it durable; removes
/// `dest` on failure.
fn clone_into(src: &Path, dest: &Path, grow: Option<ByteSize>) -> Result<(), PoolError> {
    let started = Instant::now();
    let src_file = File::open(src).map_err(io_err("open clone source", src))?;
    let dest_file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(io_err("create disk", dest))?;

    let result = reflink(&src_file, &dest_file)
        .map_err(|errno| io_err("reflink clone", dest)(errno.into()))
        .and_then(|()| match grow {
            Some(size) => dest_file
                .set_len(size.bytes())
                .map_err(io_err("grow disk", dest)),
            None => Ok(()),
        })
        .and_then(|()| dest_file.sync_all().map_err(io_err("sync disk", dest)));
    if let Err(e) = result {
        drop(dest_file);
        let _ = fs::remove_file(dest);
        return Err(e);
    }
    tracing::debug!(
        src = %src.display(),
        dest = %dest.display(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "disk cloned"
    );
    Ok(())
}

/// Makes `dest` share all of `src`'s extents.
fn reflink(src: &File, dest: &File) -> Result<(), Errno> {
    // SAFETY: both descriptors are open for the duration of the call; FICLONE reads no
    // memory of ours, its argument is the source descriptor itself.
    unsafe { ficlone(dest.as_raw_fd(), src.as_raw_fd() as _) }.map(drop)
}

fn is_unsupported(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL | Errno::ENOTTY
    )
}

/// Copies `src` into the empty `dest`, reflinking when both are on one reflink filesystem
/// and otherwise copying only the data regions (and, within them, only non-zero chunks), so
/// holes stay holes.
fn copy_keeping_holes(src: &File, dest: &File) -> io::Result<()> {
    match reflink(src, dest) {
        Ok(()) => return Ok(()),
        Err(e) if is_unsupported(e) => {}
        Err(e) => return Err(e.into()),
    }
    let len = src.metadata()?.len();
    dest.set_len(len)?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut pos = 0;
    while pos < len {
        let start = match lseek(src.as_raw_fd(), pos as i64, Whence::SeekData) {
            Ok(start) => start as u64,
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = lseek(src.as_raw_fd(), start as i64, Whence::SeekHole)? as u64;
        copy_range(src, dest, start..end, &mut buf)?;
        pos = end;
    }
    Ok(())
}

fn copy_range(
    src: &File,
    dest: &File,
    range: std::ops::Range<u64>,
    buf: &mut [u8],
) -> io::Result<()> {
    let mut pos = range.start;
    while pos < range.end {
        let n = buf.len().min((range.end - pos) as usize);
        let chunk = &mut buf[..n];
        src.read_exact_at(chunk, pos)?;
        if !is_zero(chunk) {
            dest.write_all_at(chunk, pos)?;
        }
        pos += n as u64;
    }
    Ok(())
}

fn is_zero(bytes: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128.
    let (head, middle, tail) = unsafe { bytes.align_to::<u128>() };
    head.iter().all(|&b| b == 0) && middle.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

/// Mounts `image` at `root` unless it already is, making the image first if there is none.
/// Returns whether this call mounted it.
fn mount_ensure(image: &Path, root: &Path, size: ByteSize) -> Result<bool, PoolError> {
    let mount_point = fs::canonicalize(root).map_err(io_err("resolve pool root", root))?;
    if let Some(mount) = mount_at(&mount_point)? {
        return check_ours(&mount, image, &mount_point).map(|()| false);
    }
    if !image
        .try_exists()
        .map_err(io_err("look for pool image", image))?
    {
        format_image(image, size)?;
    }
    // mount(8) attaches a free loop device with autoclear, so unmounting frees it.
    // Limitation: the loop device does buffered I/O on the image, so pool data can sit in
    // the page cache twice (the pool's and the image file's); direct I/O would need
    // losetup's --direct-io and an explicit detach, which mount's loop option lacks.
    run(Command::new("mount")
        .args(["-t", "xfs", "-o", "loop,discard"])
        .arg(image)
        .arg(&mount_point))
    .map_err(cmd_err("mount pool image", image))?;
    tracing::info!(image = %image.display(), root = %mount_point.display(), "storage pool mounted");
    Ok(true)
}

/// Makes the sparse XFS image under a temporary name, so `image` existing always means a
/// formatted pool that must never be formatted again.
fn format_image(image: &Path, size: ByteSize) -> Result<(), PoolError> {
    let tmp = image.with_extension("img.tmp");
    // A leftover temporary is an interrupted format, never a pool: start it over.
    let file = File::create(&tmp).map_err(io_err("create pool image", &tmp))?;
    file.set_len(size.bytes())
        .map_err(io_err("size pool image", &tmp))?;
    let formatted = run(Command::new("mkfs.xfs")
        .args(["-q", "-m", "reflink=1"])
        .arg(&tmp))
    .map_err(cmd_err("format pool image", &tmp))
    .and_then(|_| file.sync_all().map_err(io_err("sync pool image", &tmp)))
    .and_then(|()| fs::rename(&tmp, image).map_err(io_err("rename pool image into place", image)));
    if let Err(e) = formatted {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(image.parent().unwrap_or(Path::new(".")))?;
    tracing::info!(image = %image.display(), size = %size, "storage pool formatted");
    Ok(())
}

/// Accepts a mount at the pool root only if it is XFS on a loop device backed by `image`.
fn check_ours(mount: &MountEntry, image: &Path, mount_point: &Path) -> Result<(), PoolError> {
    // The image may not exist (a foreign mount before the first open): resolve its directory.
    let dir = image.parent().unwrap_or(Path::new("."));
    let image = fs::canonicalize(dir)
        .map_err(io_err("resolve data directory", dir))?
        .join(image.file_name().unwrap_or_default());
    let backing = loop_backing_file(&mount.source);
    if mount.fstype == "xfs" && backing.as_deref() == Some(image.as_path()) {
        return Ok(());
    }
    Err(PoolError::ForeignMount {
        path: mount_point.to_owned(),
        fstype: mount.fstype.clone(),
        device: mount.source.clone(),
        image,
    })
}

/// The file behind loop device `device` (`/dev/loopN`), from sysfs.
fn loop_backing_file(device: &str) -> Option<PathBuf> {
    let name = device.strip_prefix("/dev/")?;
    if !name.starts_with("loop") || name.contains('/') {
        return None;
    }
    let text = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim_end_matches('\n')))
}

/// One line of `/proc/self/mountinfo`, the fields the pool needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    mount_point: PathBuf,
    fstype: String,
    source: String,
}

/// The topmost mount at `path` (already canonical), if any.
fn mount_at(path: &Path) -> Result<Option<MountEntry>, PoolError> {
    let table = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(table).map_err(io_err("read mount table", table))?;
    Ok(parse_mountinfo(&text)
        .into_iter()
        .rfind(|m| m.mount_point == path))
}

/// Parses mountinfo lines: `id parent major:minor root mount-point options [optional…] -
/// fstype source super-options`. Malformed lines are skipped.
fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let mount_point = fields.get(4)?;
    let separator = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    Some(MountEntry {
        mount_point: PathBuf::from(OsString::from_vec(unescape(mount_point))),
        fstype: String::from_utf8_lossy(&unescape(fields.get(separator + 1)?)).into_owned(),
        source: String::from_utf8_lossy(&unescape(fields.get(separator + 2)?)).into_owned(),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash).
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')));
        match octal.and_then(|n| u8::try_from(n).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn lock(path: &Path) -> Result<Flock<File>, PoolError> {
    let file = File::create(path).map_err(io_err("open pool lock", path))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| io_err("lock pool", path)(errno.into()))
}

fn statvfs(path: &Path) -> Result<nix::sys::statvfs::Statvfs, PoolError> {
    nix::sys::statvfs::statvfs(path).map_err(|errno| io_err("statvfs", path)(errno.into()))
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

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
46 22 7:0 / /var/tmp/data\\040dir/pool rw,relatime - xfs /dev/loop0 rw,discard
47 22 0:5 / /proc rw,nosuid shared:12 master:3 - proc proc rw
48 46 0:40 / /var/tmp/data\\040dir/pool rw - tmpfs tmpfs rw
garbage line
";

    #[test]
    fn mountinfo_fields_and_escapes() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        assert_eq!(
            mounts[1],
            MountEntry {
                mount_point: "/var/tmp/data dir/pool".into(),
                fstype: "xfs".into(),
                source: "/dev/loop0".into(),
            }
        );
        // Optional fields (`shared:12 master:3`) do not shift the filesystem type.
        assert_eq!(
            (mounts[2].fstype.as_str(), mounts[2].source.as_str()),
            ("proc", "proc")
        );
    }

    #[test]
    fn topmost_mount_wins() {
        let top = parse_mountinfo(MOUNTINFO)
            .into_iter()
            .rfind(|m| m.mount_point == Path::new("/var/tmp/data dir/pool"));
        assert_eq!(top.map(|m| m.fstype), Some("tmpfs".to_string()));
    }

    #[test]
    fn unescape_keeps_plain_text_and_bad_escapes() {
        assert_eq!(unescape(r"a\134b\011c"), b"a\\b\tc");
        assert_eq!(unescape(r"x\9y\04"), br"x\9y\04");
        assert_eq!(unescape(r"\777"), br"\777");
    }

    #[test]
    fn versions_are_lowercase_hex() {
        let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        for good in ["0", "abc123", sha] {
            assert!(validate_version(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_VERSION_LEN + 1);
        for bad in [
            "", "ABC", "../etc", "abc/def", "a.b", "g", " ab", "ab\n", &long,
        ] {
            assert!(
                matches!(validate_version(bad), Err(PoolError::InvalidVersion { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ficlone_number_matches_its_definition() {
        let defined = nix::request_code_write!(0x94, 9, std::mem::size_of::<nix::libc::c_int>());
        assert_eq!(defined as nix::sys::ioctl::ioctl_num_type, FICLONE);
    }

    #[test]
    fn zero_detection_covers_unaligned_ends() {
        let mut bytes = vec![0u8; 4099];
        assert!(is_zero(&bytes[1..]));
        bytes[4098] = 1;
        assert!(!is_zero(&bytes[1..]));
        bytes[4098] = 0;
        bytes[1] = 1;
        assert!(!is_zero(&bytes[1..]));
    }

    #[test]
    fn loop_backing_file_refuses_non_loop_devices() {
        assert_eq!(loop_backing_file("/dev/vda"), None);
        assert_eq!(loop_backing_file("tmpfs"), None);
        assert_eq!(loop_backing_file("/dev/loop0/../../x"), None);
    }
}
