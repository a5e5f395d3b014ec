//! Extracting the uncompressed kernel ELF (`vmlinux`) from an x86 bzImage.
//!
//! Firecracker and QEMU's PVH boot path load an ELF kernel, while distributions ship a
//! bzImage: a real-mode setup block followed by a decompressor whose payload is the
//! compressed `vmlinux`. The boot protocol (2.08 and later) records where that payload
//! lies, so we read the setup header, stream the payload through the matching
//! decompressor into a temporary file beside the output, check that the result is a
//! bootable x86_64 ELF and only then rename it into place.
//!
//! The payload is decompressed exactly as the kernel's own decompressor sees it: on
//! kernels built with `RANDOMIZE_BASE` the ELF is followed by its relocation table, and
//! that tail is kept, as `scripts/extract-vmlinux` keeps it.
//!
//! Layout: this file holds the entry points and what they return; the setup header and
//! payload location are in `header`, the decompressors in `decompress`, the checks of the
//! resulting ELF in `elf`, and [`VmlinuxError`] in `error`.

mod decompress;
mod elf;
mod error;
mod header;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{File, Permissions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tempfile::NamedTempFile;

pub use error::VmlinuxError;

use decompress::{check_size, decompress};
use elf::inspect_elf;
use error::read_error;
use header::{locate_payload, read_setup_header, MAX_VERSION_LEN};

/// Compression of a bzImage payload, as recognised by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (`CONFIG_KERNEL_GZIP`).
    Gzip,
    /// xz with the x86 BCJ filter (`CONFIG_KERNEL_XZ`, Debian's choice).
    Xz,
    /// Zstandard (`CONFIG_KERNEL_ZSTD`).
    Zstd,
    /// Legacy `.lzma` (`CONFIG_KERNEL_LZMA`).
    Lzma,
    /// bzip2 (`CONFIG_KERNEL_BZIP2`); recognised but not supported.
    Bzip2,
    /// LZ4 legacy frames (`CONFIG_KERNEL_LZ4`); recognised but not supported.
    Lz4,
    /// LZO (`CONFIG_KERNEL_LZO`); recognised but not supported.
    Lzo,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Lzma => "lzma",
            Compression::Bzip2 => "bzip2",
            Compression::Lz4 => "lz4",
            Compression::Lzo => "lzo",
        };
        f.write_str(name)
    }
}

/// Which of the kernel's entry points an address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// The ELF header's `e_entry`, used by a 64-bit ELF loader.
    Elf,
    /// The `XEN_ELFNOTE_PHYS32_ENTRY` note, used by PVH boot.
    Pvh,
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryKind::Elf => "ELF",
            EntryKind::Pvh => "PVH",
        })
    }
}

/// What [`extract_vmlinux`] found and wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmlinuxInfo {
    /// Compression of the bzImage payload.
    pub compression: Compression,
    /// Size in bytes of the written `vmlinux`.
    pub size: u64,
    /// The ELF header's entry point (`e_entry`).
    pub entry: u64,
    /// The PVH entry point from the Xen `PHYS32_ENTRY` note, if the kernel has one.
    pub pvh_entry: Option<u64>,
}

/// Extracts the kernel ELF from the bzImage at `bzimage` and writes it to `out`.
///
/// The output appears atomically: it is written to a temporary file in the same directory,
/// synced, validated as a bootable x86_64 ELF and renamed over `out`. If reading,
/// decompression or validation fails, `out` is left as it was and no temporary file remains.
pub fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<VmlinuxInfo, VmlinuxError> {
    let started = Instant::now();
    let mut file = File::open(bzimage).map_err(|source| read_error(bzimage, source))?;
    let header = read_setup_header(&mut file, bzimage)?;
    let payload = locate_payload(&mut file, bzimage, &header)?;

    let tmp = create_temp(out)?;
    let size = decompress(&mut file, bzimage, &payload, tmp.as_file(), out)?;
    check_size(size, &payload, bzimage)?;
    let entries = inspect_elf(tmp.as_file(), size, bzimage)?;
    persist(tmp, out)?;

    tracing::info!(
        bzimage = %bzimage.display(),
        out = %out.display(),
        compression = %payload.compression,
        size,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "vmlinux extracted"
    );
    Ok(VmlinuxInfo {
        compression: payload.compression,
        size,
        entry: entries.entry,
        pvh_entry: entries.pvh_entry,
    })
}

/// Returns the release of the kernel in `bzimage`, e.g. `6.1.0-57-amd64`.
///
/// This is the first word of the version string the setup header points to, the same
/// string `uname -r` prints once the kernel runs.
pub fn kernel_version(bzimage: &Path) -> Result<String, VmlinuxError> {
    let mut file = File::open(bzimage).map_err(|source| read_error(bzimage, source))?;
    let header = read_setup_header(&mut file, bzimage)?;
    let missing = || VmlinuxError::NoKernelVersion {
        path: bzimage.to_owned(),
    };
    if header.kernel_version_ptr == 0 {
        return Err(missing());
    }

    let at = u64::from(header.kernel_version_ptr) + 0x200;
    file.seek(SeekFrom::Start(at))
        .map_err(|source| read_error(bzimage, source))?;
    let mut text = Vec::new();
    file.take(MAX_VERSION_LEN)
        .read_to_end(&mut text)
        .map_err(|source| read_error(bzimage, source))?;

    let end = text.iter().position(|&b| b == 0).ok_or_else(missing)?;
    let text = std::str::from_utf8(&text[..end]).map_err(|_| missing())?;
    text.split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or_else(missing)
}

/// Creates the temporary output beside `out`, so the final rename stays on one filesystem.
fn create_temp(out: &Path) -> Result<NamedTempFile, VmlinuxError> {
    // World-readable like any kernel image: a jailed VMM may run as another user.
    tempfile::Builder::new()
        .prefix(".vmlinux-")
        .permissions(Permissions::from_mode(0o644))
        .tempfile_in(parent_dir(out))
        .map_err(|source| VmlinuxError::Write {
            path: out.to_owned(),
            source,
        })
}

/// Renames the synced temporary file over `out` and syncs the directory entry.
fn persist(tmp: NamedTempFile, out: &Path) -> Result<(), VmlinuxError> {
    let write_error = |source| VmlinuxError::Write {
        path: out.to_owned(),
        source,
    };
    tmp.persist(out).map_err(|e| write_error(e.error))?;
    File::open(parent_dir(out))
        .and_then(|dir| dir.sync_all())
        .map_err(write_error)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}
