//! The bzImage's setup header (boot protocol 2.08 and later): where the compressed kernel
//! lies, which compressor made it, and the size it claims to decompress to.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::error::read_error;
use super::{Compression, VmlinuxError};

/// Offset of `setup_sects`, the number of 512-byte setup sectors after the boot sector.
pub(super) const SETUP_SECTS_AT: usize = 0x1f1;
/// Offset of the "HdrS" magic that marks a boot protocol 2.00+ setup header.
pub(super) const HEADER_MAGIC_AT: usize = 0x202;
pub(super) const HEADER_MAGIC: &[u8; 4] = b"HdrS";
/// Offset of the boot protocol version, major in the high byte.
pub(super) const PROTOCOL_AT: usize = 0x206;
/// Offset of the pointer to the version string, relative to 0x200.
pub(super) const KERNEL_VERSION_AT: usize = 0x20e;
pub(super) const PAYLOAD_OFFSET_AT: usize = 0x248;
pub(super) const PAYLOAD_LENGTH_AT: usize = 0x24c;
/// Bytes of the file the setup header fields we use span.
const HEADER_LEN: usize = 0x250;
/// The first protocol version with `payload_offset` and `payload_length`.
const MIN_PAYLOAD_PROTOCOL: u16 = 0x0208;
/// Longest version string we read; real ones are about 100 bytes.
pub(super) const MAX_VERSION_LEN: u64 = 512;
/// Smallest payload that can hold a compressor magic and the 4-byte size trailer.
const MIN_PAYLOAD_LEN: u64 = 8;

/// Magic bytes that start each kind of payload, in the order they are tried.
const COMPRESSION_MAGICS: [(&[u8], Compression); 7] = [
    (&[0x1f, 0x8b], Compression::Gzip),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
    (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
    (&[0x5d, 0x00, 0x00], Compression::Lzma),
    (b"BZh", Compression::Bzip2),
    (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
    (&[0x89, b'L', b'Z', b'O'], Compression::Lzo),
];

/// The setup header fields we use.
pub(super) struct SetupHeader {
    setup_sects: u8,
    protocol: u16,
    pub(super) kernel_version_ptr: u16,
    payload_offset: u32,
    payload_length: u32,
}

/// Where the compressed kernel lies in the bzImage and what it claims about itself.
pub(super) struct Payload {
    pub(super) start: u64,
    pub(super) length: u64,
    pub(super) compression: Compression,
    /// The uncompressed size mod 2^32, which the kernel build appends to every payload
    /// (gzip carries it as its own ISIZE field).
    pub(super) size_trailer: u32,
}

pub(super) fn read_setup_header(file: &mut File, path: &Path) -> Result<SetupHeader, VmlinuxError> {
    let mut raw = [0u8; HEADER_LEN];
    read_exact_at(file, path, 0, &mut raw, "setup header")?;
    if &raw[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4] != HEADER_MAGIC {
        return Err(VmlinuxError::NotBzImage {
            path: path.to_owned(),
        });
    }

    let u16_at = |at: usize| u16::from_le_bytes([raw[at], raw[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
    Ok(SetupHeader {
        setup_sects: raw[SETUP_SECTS_AT],
        protocol: u16_at(PROTOCOL_AT),
        kernel_version_ptr: u16_at(KERNEL_VERSION_AT),
        payload_offset: u32_at(PAYLOAD_OFFSET_AT),
        payload_length: u32_at(PAYLOAD_LENGTH_AT),
    })
}

pub(super) fn locate_payload(
    file: &mut File,
    path: &Path,
    header: &SetupHeader,
) -> Result<Payload, VmlinuxError> {
    if header.protocol < MIN_PAYLOAD_PROTOCOL {
        return Err(VmlinuxError::ProtocolTooOld {
            path: path.to_owned(),
            version: header.protocol,
        });
    }

    // The protected-mode kernel follows the boot sector and the setup sectors; a count of
    // zero means the historical default of four.
    let setup_sects = if header.setup_sects == 0 {
        4
    } else {
        u64::from(header.setup_sects)
    };
    let start = (setup_sects + 1) * 512 + u64::from(header.payload_offset);
    let length = u64::from(header.payload_length);
    check_payload_bounds(file, path, start, length)?;

    let mut magic = [0u8; 6];
    read_exact_at(file, path, start, &mut magic, "payload")?;
    let mut trailer = [0u8; 4];
    read_exact_at(file, path, start + length - 4, &mut trailer, "payload")?;
    Ok(Payload {
        start,
        length,
        compression: detect_compression(&magic, path)?,
        size_trailer: u32::from_le_bytes(trailer),
    })
}

fn check_payload_bounds(
    file: &File,
    path: &Path,
    start: u64,
    length: u64,
) -> Result<(), VmlinuxError> {
    let file_len = file
        .metadata()
        .map_err(|source| read_error(path, source))?
        .len();
    if start + length > file_len {
        return Err(VmlinuxError::PayloadOutOfBounds {
            path: path.to_owned(),
            offset: start,
            length,
            file_len,
        });
    }
    if length < MIN_PAYLOAD_LEN {
        return Err(VmlinuxError::PayloadTooShort {
            path: path.to_owned(),
            length,
        });
    }
    Ok(())
}

fn detect_compression(magic: &[u8], path: &Path) -> Result<Compression, VmlinuxError> {
    COMPRESSION_MAGICS
        .iter()
        .find(|(prefix, _)| magic.starts_with(prefix))
        .map(|&(_, compression)| compression)
        .ok_or_else(|| VmlinuxError::UnknownCompression {
            path: path.to_owned(),
            magic: magic.iter().map(|b| format!("{b:02x}")).collect(),
        })
}

fn read_exact_at(
    file: &mut File,
    path: &Path,
    at: u64,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), VmlinuxError> {
    file.seek(SeekFrom::Start(at))
        .map_err(|source| read_error(path, source))?;
    file.read_exact(buf).map_err(|source| match source.kind() {
        io::ErrorKind::UnexpectedEof => VmlinuxError::Truncated {
            path: path.to_owned(),
            what,
        },
        _ => read_error(path, source),
    })
}
