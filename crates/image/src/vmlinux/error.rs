//! [`VmlinuxError`]: why reading a bzImage or extracting its kernel failed, each naming the
//! file involved.

use std::io;
use std::path::{Path, PathBuf};

use super::{Compression, EntryKind};

/// Errors from reading a bzImage and extracting its kernel.
#[derive(Debug, thiserror::Error)]
pub enum VmlinuxError {
    /// The bzImage could not be opened or read.
    #[error("cannot read {path}")]
    Read {
        /// The bzImage.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// The file ends before the structure being read.
    #[error("{path} is truncated: it ends inside its {what}")]
    Truncated {
        /// The bzImage.
        path: PathBuf,
        /// The structure that was cut off.
        what: &'static str,
    },
    /// No "HdrS" magic: the file is not a bzImage.
    #[error("{path} is not a bzImage: no \"HdrS\" setup header magic at 0x202")]
    NotBzImage {
        /// The file.
        path: PathBuf,
    },
    /// The boot protocol predates the payload location fields.
    #[error(
        "{path} uses boot protocol {}.{:02}; 2.08 or later is needed to locate the payload",
        version >> 8,
        version & 0xff
    )]
    ProtocolTooOld {
        /// The bzImage.
        path: PathBuf,
        /// The raw protocol version, major in the high byte.
        version: u16,
    },
    /// The setup header places the payload beyond the end of the file.
    #[error(
        "payload of {path} ({length} bytes at offset {offset}) runs past the end of the file \
         ({file_len} bytes)"
    )]
    PayloadOutOfBounds {
        /// The bzImage.
        path: PathBuf,
        /// File offset of the payload.
        offset: u64,
        /// Payload length from the setup header.
        length: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// The payload is too short to hold a compressed kernel.
    #[error("payload of {path} is only {length} bytes long")]
    PayloadTooShort {
        /// The bzImage.
        path: PathBuf,
        /// Payload length from the setup header.
        length: u64,
    },
    /// The payload starts with no known compressor magic.
    #[error("payload of {path} has an unknown compression (first bytes {magic})")]
    UnknownCompression {
        /// The bzImage.
        path: PathBuf,
        /// The payload's first bytes, in hex.
        magic: String,
    },
    /// The payload's compression is recognised but not supported.
    #[error("payload of {path} is {compression}-compressed, which is not supported")]
    UnsupportedCompression {
        /// The bzImage.
        path: PathBuf,
        /// The compression found.
        compression: Compression,
    },
    /// The compressed stream is corrupt or cut short.
    #[error("cannot decompress the {compression} payload of {path}")]
    Decompress {
        /// The bzImage.
        path: PathBuf,
        /// The compression found.
        compression: Compression,
        /// The decoder's failure.
        #[source]
        source: io::Error,
    },
    /// The decompressed size disagrees with the size trailer the kernel build appends.
    #[error(
        "payload of {path} decompressed to {actual} bytes but its trailer says {expected} \
         (mod 2^32)"
    )]
    SizeMismatch {
        /// The bzImage.
        path: PathBuf,
        /// Size from the payload's last four bytes.
        expected: u32,
        /// Bytes actually decompressed.
        actual: u64,
    },
    /// The output (or its temporary file) could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The output path.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// The decompressed kernel does not start with an ELF header.
    #[error("kernel in {path} is not an ELF file")]
    NotElf {
        /// The bzImage.
        path: PathBuf,
    },
    /// The decompressed kernel's ELF structures are malformed.
    #[error("kernel in {path} is a malformed ELF file")]
    Elf {
        /// The bzImage.
        path: PathBuf,
        /// The parser's failure.
        #[source]
        source: object::read::Error,
    },
    /// The decompressed kernel is an ELF file, but not one we can boot.
    #[error("kernel in {path} is not a 64-bit little-endian x86_64 executable: {reason}")]
    WrongElfKind {
        /// The bzImage.
        path: PathBuf,
        /// Which property is wrong.
        reason: &'static str,
    },
    /// The kernel has nothing to load.
    #[error("kernel in {path} has no PT_LOAD segment")]
    NoLoadSegment {
        /// The bzImage.
        path: PathBuf,
    },
    /// A PT_LOAD segment refers to bytes past the end of the kernel.
    #[error(
        "a PT_LOAD segment of the kernel in {path} ({size} bytes at offset {offset}) runs past \
         its end"
    )]
    SegmentPastEnd {
        /// The bzImage.
        path: PathBuf,
        /// File offset of the segment.
        offset: u64,
        /// File size of the segment.
        size: u64,
    },
    /// An entry point lies outside every PT_LOAD segment.
    #[error(
        "{kind} entry point {addr:#x} of the kernel in {path} lies outside every PT_LOAD segment"
    )]
    EntryOutsideLoad {
        /// The bzImage.
        path: PathBuf,
        /// Which entry point.
        kind: EntryKind,
        /// Its address.
        addr: u64,
    },
    /// The PVH note's descriptor is neither a 32- nor a 64-bit address.
    #[error("PVH entry note of the kernel in {path} has a {size}-byte descriptor, not 4 or 8")]
    MalformedPvhNote {
        /// The bzImage.
        path: PathBuf,
        /// Descriptor size.
        size: usize,
    },
    /// The setup header has no usable version string.
    #[error("{path} has no kernel version string")]
    NoKernelVersion {
        /// The bzImage.
        path: PathBuf,
    },
}

pub(super) fn read_error(path: &Path, source: io::Error) -> VmlinuxError {
    VmlinuxError::Read {
        path: path.to_owned(),
        source,
    }
}
