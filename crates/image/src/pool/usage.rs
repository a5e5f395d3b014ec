//! How full the pool is: its filesystem's own counters (which count a shared block once)
//! and, for one file, the blocks it holds.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{io_err, PoolError, StoragePool};

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

impl StoragePool {
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
}

/// Bytes allocated to `path` (`st_blocks`). A reflinked file counts every extent it shares
/// as its own, so for clones this is their logical footprint, not what the pool holds: use
/// [`StoragePool::usage`] for that.
pub fn allocated_bytes(path: &Path) -> Result<u64, PoolError> {
    let meta = fs::symlink_metadata(path).map_err(io_err("stat file", path))?;
    Ok(meta.blocks() * 512)
}

fn statvfs(path: &Path) -> Result<nix::sys::statvfs::Statvfs, PoolError> {
    nix::sys::statvfs::statvfs(path).map_err(|errno| io_err("statvfs", path)(errno.into()))
}
