//! Reflink copies: probing whether a filesystem can make them, cloning a disk from its
//! golden image (or from another disk), and copying a file with its holes kept where
//! reflink is not available.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use boxcutter_types::ByteSize;
use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

use super::{io_err, PoolError, StoragePool};

const COPY_CHUNK: usize = 1 << 20;

/// `FICLONE` from `<linux/fs.h>`: `_IOW(0x94, 9, int)` = 0x4004_9409. Its argument is the
/// source file descriptor; it makes the target share all of the source's extents.
pub(super) const FICLONE: nix::sys::ioctl::ioctl_num_type = 0x4004_9409;

nix::ioctl_write_int_bad!(
    /// Issues `FICLONE` on the destination `fd` with the source descriptor as argument.
    ficlone,
    FICLONE
);

impl StoragePool {
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
pub(super) fn copy_keeping_holes(src: &File, dest: &File) -> io::Result<()> {
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

pub(super) fn is_zero(bytes: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128.
    let (head, middle, tail) = unsafe { bytes.align_to::<u128>() };
    head.iter().all(|&b| b == 0) && middle.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}
