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

use std::fmt;
use std::fs::{File, Permissions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use flate2::bufread::GzDecoder;
use liblzma::bufread::XzDecoder;
use liblzma::stream::Stream;
use object::elf::{FileHeader64, ProgramHeader64};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{elf, LittleEndian, ReadCache, ReadRef};
use serde::{Deserialize, Serialize};
use tempfile::NamedTempFile;

/// Offset of `setup_sects`, the number of 512-byte setup sectors after the boot sector.
const SETUP_SECTS_AT: usize = 0x1f1;
/// Offset of the "HdrS" magic that marks a boot protocol 2.00+ setup header.
const HEADER_MAGIC_AT: usize = 0x202;
const HEADER_MAGIC: &[u8; 4] = b"HdrS";
/// Offset of the boot protocol version, major in the high byte.
const PROTOCOL_AT: usize = 0x206;
/// Offset of the pointer to the version string, relative to 0x200.
const KERNEL_VERSION_AT: usize = 0x20e;
const PAYLOAD_OFFSET_AT: usize = 0x248;
const PAYLOAD_LENGTH_AT: usize = 0x24c;
/// Bytes of the file the setup header fields we use span.
const HEADER_LEN: usize = 0x250;
/// The first protocol version with `payload_offset` and `payload_length`.
const MIN_PAYLOAD_PROTOCOL: u16 = 0x0208;
/// Longest version string we read; real ones are about 100 bytes.
const MAX_VERSION_LEN: u64 = 512;
/// Smallest payload that can hold a compressor magic and the 4-byte size trailer.
const MIN_PAYLOAD_LEN: u64 = 8;
/// Buffer size for both sides of the decompression stream.
const IO_BUF: usize = 1 << 20;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit physical PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

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

/// The setup header fields we use.
struct SetupHeader {
    setup_sects: u8,
    protocol: u16,
    kernel_version_ptr: u16,
    payload_offset: u32,
    payload_length: u32,
}

/// Where the compressed kernel lies in the bzImage and what it claims about itself.
struct Payload {
    start: u64,
    length: u64,
    compression: Compression,
    /// The uncompressed size mod 2^32, which the kernel build appends to every payload
    /// (gzip carries it as its own ISIZE field).
    size_trailer: u32,
}

/// The entry points of a validated kernel ELF.
struct ElfEntries {
    entry: u64,
    pvh_entry: Option<u64>,
}

fn read_setup_header(file: &mut File, path: &Path) -> Result<SetupHeader, VmlinuxError> {
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

fn locate_payload(
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

/// Compares the decompressed size with the payload's trailer, which the kernel's own
/// `mkpiggy` also reads to size the decompression buffer.
fn check_size(size: u64, payload: &Payload, path: &Path) -> Result<(), VmlinuxError> {
    // The trailer is 32 bits wide: compare modulo 2^32.
    if size as u32 != payload.size_trailer {
        return Err(VmlinuxError::SizeMismatch {
            path: path.to_owned(),
            expected: payload.size_trailer,
            actual: size,
        });
    }
    Ok(())
}

/// Streams the payload through its decoder into `out_file`, returning the bytes written.
///
/// Each decoder stops at the end of its first stream or frame, so the size trailer that
/// follows (and any padding) is never mistaken for a second, corrupt stream.
fn decompress(
    file: &mut File,
    path: &Path,
    payload: &Payload,
    out_file: &File,
    out: &Path,
) -> Result<u64, VmlinuxError> {
    file.seek(SeekFrom::Start(payload.start))
        .map_err(|source| read_error(path, source))?;
    let input = BufReader::with_capacity(IO_BUF, file.take(payload.length));
    let decode_error = |source| VmlinuxError::Decompress {
        path: path.to_owned(),
        compression: payload.compression,
        source,
    };
    let write_error = |source| VmlinuxError::Write {
        path: out.to_owned(),
        source,
    };

    let mut decoder = open_decoder(payload.compression, input, path)?;
    let mut writer = BufWriter::with_capacity(IO_BUF, out_file);
    let size = copy_stream(&mut decoder, &mut writer, decode_error, write_error)?;
    writer.flush().map_err(write_error)?;
    out_file.sync_all().map_err(write_error)?;
    Ok(size)
}

// Limitation: legacy lzma streams carry no checksum, nor do zstd frames made without
// `--check` (the kernel build's zstd CLI adds one), so corruption inside such a payload can
// go unnoticed when the size trailer still matches; the ELF checks catch only damaged headers.
fn open_decoder<'a, R: BufRead + 'a>(
    compression: Compression,
    input: R,
    path: &Path,
) -> Result<Box<dyn Read + 'a>, VmlinuxError> {
    let decoder: io::Result<Box<dyn Read + 'a>> = match compression {
        Compression::Gzip => Ok(Box::new(GzDecoder::new(input))),
        Compression::Xz => Ok(Box::new(XzDecoder::new(input))),
        Compression::Lzma => Stream::new_lzma_decoder(u64::MAX)
            .map(|stream| Box::new(XzDecoder::new_stream(input, stream)) as Box<dyn Read>)
            .map_err(io::Error::from),
        Compression::Zstd => zstd::stream::read::Decoder::with_buffer(input)
            .map(|decoder| Box::new(decoder.single_frame()) as Box<dyn Read>),
        Compression::Bzip2 | Compression::Lz4 | Compression::Lzo => {
            return Err(VmlinuxError::UnsupportedCompression {
                path: path.to_owned(),
                compression,
            })
        }
    };
    decoder.map_err(|source| VmlinuxError::Decompress {
        path: path.to_owned(),
        compression,
        source,
    })
}

/// Copies `reader` to `writer`, telling read failures from write failures.
fn copy_stream(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    read_error: impl Fn(io::Error) -> VmlinuxError,
    write_error: impl Fn(io::Error) -> VmlinuxError,
) -> Result<u64, VmlinuxError> {
    let mut buf = vec![0u8; IO_BUF];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        writer.write_all(&buf[..n]).map_err(&write_error)?;
        total += n as u64;
    }
}

/// Checks that the `size`-byte ELF in `file` is a bootable x86_64 kernel.
///
/// The file is read through a cache of only the parts looked at (headers and notes), so
/// the loaded segments are never copied into memory.
fn inspect_elf(file: &File, size: u64, path: &Path) -> Result<ElfEntries, VmlinuxError> {
    let cache = ReadCache::new(file);
    let header = parse_elf_header(&cache, path)?;
    let endian = LittleEndian;
    let elf_error = |source| VmlinuxError::Elf {
        path: path.to_owned(),
        source,
    };
    let phdrs = header.program_headers(endian, &cache).map_err(elf_error)?;

    let loads: Vec<&ProgramHeader64<LittleEndian>> = phdrs
        .iter()
        .filter(|phdr| phdr.p_type(endian) == elf::PT_LOAD)
        .collect();
    if loads.is_empty() {
        return Err(VmlinuxError::NoLoadSegment {
            path: path.to_owned(),
        });
    }
    check_segments_in_file(&loads, size, path)?;

    let entry = header.e_entry(endian);
    check_entry(&loads, EntryKind::Elf, entry, path)?;
    let pvh_entry = find_pvh_entry(phdrs, &cache, path)?;
    if let Some(addr) = pvh_entry {
        check_entry(&loads, EntryKind::Pvh, addr, path)?;
    }
    Ok(ElfEntries { entry, pvh_entry })
}

fn parse_elf_header<'a>(
    cache: &'a ReadCache<&File>,
    path: &Path,
) -> Result<&'a FileHeader64<LittleEndian>, VmlinuxError> {
    // e_ident: magic, then class and byte order, checked before the parser assumes them.
    let not_elf = || VmlinuxError::NotElf {
        path: path.to_owned(),
    };
    let ident = cache.read_bytes_at(0, 6).map_err(|()| not_elf())?;
    if ident[..4] != elf::ELFMAG {
        return Err(not_elf());
    }
    let wrong = |reason| VmlinuxError::WrongElfKind {
        path: path.to_owned(),
        reason,
    };
    if ident[4] != elf::ELFCLASS64.0 {
        return Err(wrong("not a 64-bit ELF"));
    }
    if ident[5] != elf::ELFDATA2LSB.0 {
        return Err(wrong("not little-endian"));
    }

    let header =
        FileHeader64::<LittleEndian>::parse(cache).map_err(|source| VmlinuxError::Elf {
            path: path.to_owned(),
            source,
        })?;
    if header.e_machine(LittleEndian) != elf::EM_X86_64 {
        return Err(wrong("machine is not x86_64"));
    }
    if header.e_type(LittleEndian) != elf::ET_EXEC {
        return Err(wrong("not an executable"));
    }
    Ok(header)
}

fn check_segments_in_file(
    loads: &[&ProgramHeader64<LittleEndian>],
    size: u64,
    path: &Path,
) -> Result<(), VmlinuxError> {
    for phdr in loads {
        let offset = phdr.p_offset(LittleEndian);
        let filesz = phdr.p_filesz(LittleEndian);
        if offset.checked_add(filesz).is_none_or(|end| end > size) {
            return Err(VmlinuxError::SegmentPastEnd {
                path: path.to_owned(),
                offset,
                size: filesz,
            });
        }
    }
    Ok(())
}

/// Fails unless `addr` lies in some PT_LOAD segment: the ELF entry may be given as a
/// physical or a virtual address (Linux uses the physical one), the PVH entry is physical.
fn check_entry(
    loads: &[&ProgramHeader64<LittleEndian>],
    kind: EntryKind,
    addr: u64,
    path: &Path,
) -> Result<(), VmlinuxError> {
    let within = |start: u64, len: u64| addr >= start && addr - start < len;
    let loaded = loads.iter().any(|phdr| {
        let len = phdr.p_memsz(LittleEndian);
        let physical = within(phdr.p_paddr(LittleEndian), len);
        let virtual_ = within(phdr.p_vaddr(LittleEndian), len);
        match kind {
            EntryKind::Elf => physical || virtual_,
            EntryKind::Pvh => physical,
        }
    });
    if !loaded {
        return Err(VmlinuxError::EntryOutsideLoad {
            path: path.to_owned(),
            kind,
            addr,
        });
    }
    Ok(())
}

/// Returns the address in the first Xen `PHYS32_ENTRY` note of any PT_NOTE segment.
fn find_pvh_entry(
    phdrs: &[ProgramHeader64<LittleEndian>],
    cache: &ReadCache<&File>,
    path: &Path,
) -> Result<Option<u64>, VmlinuxError> {
    let elf_error = |source| VmlinuxError::Elf {
        path: path.to_owned(),
        source,
    };
    for phdr in phdrs {
        let Some(mut notes) = phdr.notes(LittleEndian, cache).map_err(elf_error)? else {
            continue;
        };
        while let Some(note) = notes.next().map_err(elf_error)? {
            if note.name() == b"Xen" && note.n_type(LittleEndian).0 == XEN_ELFNOTE_PHYS32_ENTRY {
                return pvh_address(note.desc(), path).map(Some);
            }
        }
    }
    Ok(None)
}

/// Decodes the note's address: Linux emits it as a 64-bit word on x86_64, other kernels
/// as a 32-bit one.
fn pvh_address(desc: &[u8], path: &Path) -> Result<u64, VmlinuxError> {
    match *desc {
        [a, b, c, d] => Ok(u64::from(u32::from_le_bytes([a, b, c, d]))),
        [a, b, c, d, e, f, g, h] => Ok(u64::from_le_bytes([a, b, c, d, e, f, g, h])),
        _ => Err(VmlinuxError::MalformedPvhNote {
            path: path.to_owned(),
            size: desc.len(),
        }),
    }
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

fn read_error(path: &Path, source: io::Error) -> VmlinuxError {
    VmlinuxError::Read {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::Instant;

    use liblzma::stream::{Check, Filters, LzmaOptions};

    /// Physical and virtual load addresses of the synthetic kernel, as in a real vmlinux.
    const LOAD_PADDR: u64 = 0x100_0000;
    const LOAD_VADDR: u64 = 0xffff_ffff_8100_0000;
    const ENTRY: u64 = LOAD_PADDR + 0x100;
    const PVH_ENTRY: u64 = LOAD_PADDR + 0x180;
    const VERSION: &str = "6.1.0-99-test (builder@example) #1 SMP PREEMPT_DYNAMIC";

    /// Offsets into the synthetic ELF that tests corrupt.
    const ELF_CLASS_AT: usize = 4;
    const ELF_ENTRY_AT: usize = 24;
    const PHDR_AT: usize = 64;
    const PHDR_LEN: usize = 56;

    /// A minimal x86_64 vmlinux: one PT_LOAD covering the file, one PT_NOTE holding a Xen
    /// PHYS32_ENTRY note (or, without `pvh`, a GNU build-id note), and some code bytes.
    fn tiny_elf(pvh: Option<u64>) -> Vec<u8> {
        let notes = match pvh {
            Some(addr) => note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &addr.to_le_bytes()),
            None => note(b"GNU\0", 3, &[0xab; 20]),
        };
        let notes_at = PHDR_AT + 2 * PHDR_LEN;
        let code: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let total = (notes_at + notes.len() + code.len()) as u64;

        let mut elf = elf_header(ENTRY);
        elf.extend(phdr(elf::PT_LOAD.0, 0, LOAD_PADDR, total, total + 0x1000));
        let notes_paddr = LOAD_PADDR + notes_at as u64;
        elf.extend(phdr(
            elf::PT_NOTE.0,
            notes_at as u64,
            notes_paddr,
            notes.len() as u64,
            0,
        ));
        elf.extend(notes);
        elf.extend(code);
        elf
    }

    fn elf_header(entry: u64) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        h.extend(2u16.to_le_bytes()); // ET_EXEC
        h.extend(62u16.to_le_bytes()); // EM_X86_64
        h.extend(1u32.to_le_bytes());
        h.extend(entry.to_le_bytes());
        h.extend((PHDR_AT as u64).to_le_bytes());
        h.extend(0u64.to_le_bytes()); // no section headers
        h.extend(0u32.to_le_bytes());
        h.extend(64u16.to_le_bytes());
        h.extend((PHDR_LEN as u16).to_le_bytes());
        h.extend(2u16.to_le_bytes());
        h.extend([0u8; 6]);
        h
    }

    fn phdr(p_type: u32, offset: u64, paddr: u64, filesz: u64, extra_mem: u64) -> Vec<u8> {
        let mut p = Vec::with_capacity(PHDR_LEN);
        p.extend(p_type.to_le_bytes());
        p.extend(5u32.to_le_bytes());
        p.extend(offset.to_le_bytes());
        p.extend((paddr - LOAD_PADDR + LOAD_VADDR).to_le_bytes());
        p.extend(paddr.to_le_bytes());
        p.extend(filesz.to_le_bytes());
        p.extend((filesz + extra_mem).to_le_bytes());
        p.extend(4u64.to_le_bytes());
        p
    }

    fn note(name: &[u8; 4], n_type: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend(4u32.to_le_bytes());
        n.extend((desc.len() as u32).to_le_bytes());
        n.extend(n_type.to_le_bytes());
        n.extend(name);
        n.extend(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    /// Compresses `data` the way the kernel build does: the compressor's output followed by
    /// the uncompressed size (gzip already ends with it).
    fn kernel_payload(compression: Compression, data: &[u8]) -> Vec<u8> {
        let mut out = match compression {
            Compression::Gzip => return gzip(data),
            Compression::Xz => xz(data),
            Compression::Lzma => lzma(data),
            Compression::Zstd => zstd_with_checksum(data),
            other => panic!("no test compressor for {other}"),
        };
        out.extend((data.len() as u32).to_le_bytes());
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// zstd as the kernel build's `zstd -22 --ultra` makes it: the CLI adds a checksum.
    fn zstd_with_checksum(data: &[u8]) -> Vec<u8> {
        let mut encoder = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
        encoder.include_checksum(true).unwrap();
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// xz as `scripts/xz_wrap.sh` makes it: x86 BCJ filter, LZMA2, CRC32 check.
    fn xz(data: &[u8]) -> Vec<u8> {
        let mut filters = Filters::new();
        filters.x86().lzma2(&LzmaOptions::new_preset(6).unwrap());
        let stream = Stream::new_stream_encoder(&filters, Check::Crc32).unwrap();
        let mut encoder = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn lzma(data: &[u8]) -> Vec<u8> {
        let stream = Stream::new_lzma_encoder(&LzmaOptions::new_preset(6).unwrap()).unwrap();
        let mut encoder = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// A bzImage around `payload`: boot sector and one setup sector holding a protocol 2.15
    /// header, then a stand-in decompressor, the payload and some trailing bytes.
    fn make_bzimage(payload: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 1024];
        image[SETUP_SECTS_AT] = 1;
        image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        image[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4].copy_from_slice(HEADER_MAGIC);
        image[PROTOCOL_AT..PROTOCOL_AT + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        image[KERNEL_VERSION_AT..KERNEL_VERSION_AT + 2].copy_from_slice(&0x100u16.to_le_bytes());
        image[0x300..0x300 + VERSION.len()].copy_from_slice(VERSION.as_bytes());
        let payload_offset = 0x40u32;
        image[PAYLOAD_OFFSET_AT..PAYLOAD_OFFSET_AT + 4]
            .copy_from_slice(&payload_offset.to_le_bytes());
        image[PAYLOAD_LENGTH_AT..PAYLOAD_LENGTH_AT + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());

        image.extend([0xcc; 0x40]);
        image.extend(payload);
        image.extend([0u8; 64]);
        image
    }

    fn set_payload_length(image: &mut [u8], length: u32) {
        image[PAYLOAD_LENGTH_AT..PAYLOAD_LENGTH_AT + 4].copy_from_slice(&length.to_le_bytes());
    }

    /// Writes `image` to a fresh directory; returns the directory, bzImage and output paths.
    fn write_image(image: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let bzimage = dir.path().join("vmlinuz");
        fs::write(&bzimage, image).unwrap();
        let out = dir.path().join("vmlinux");
        (dir, bzimage, out)
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Runs an extraction that must fail; checks the error names the bzImage and that
    /// nothing was left in the directory.
    fn extract_err(image: &[u8]) -> VmlinuxError {
        let (dir, bzimage, out) = write_image(image);
        let err = extract_vmlinux(&bzimage, &out).unwrap_err();
        assert!(
            err.to_string().contains(&*bzimage.to_string_lossy()),
            "{err}"
        );
        assert_eq!(dir_entries(dir.path()), ["vmlinuz"]);
        err
    }

    fn assert_round_trip(compression: Compression) {
        let elf = tiny_elf(Some(PVH_ENTRY));
        let (dir, bzimage, out) = write_image(&make_bzimage(&kernel_payload(compression, &elf)));

        let info = extract_vmlinux(&bzimage, &out).unwrap();

        let expected = VmlinuxInfo {
            compression,
            size: elf.len() as u64,
            entry: ENTRY,
            pvh_entry: Some(PVH_ENTRY),
        };
        assert_eq!(info, expected);
        assert_eq!(fs::read(&out).unwrap(), elf);
        assert_eq!(dir_entries(dir.path()), ["vmlinux", "vmlinuz"]);
    }

    #[test]
    fn extracts_gzip_payload() {
        assert_round_trip(Compression::Gzip);
    }

    #[test]
    fn extracts_xz_payload_with_bcj_filter_and_size_trailer() {
        assert_round_trip(Compression::Xz);
    }

    #[test]
    fn extracts_zstd_payload_followed_by_size_trailer() {
        assert_round_trip(Compression::Zstd);
    }

    #[test]
    fn extracts_legacy_lzma_payload() {
        assert_round_trip(Compression::Lzma);
    }

    #[test]
    fn kernel_without_pvh_note_has_no_pvh_entry() {
        let elf = tiny_elf(None);
        let (_dir, bzimage, out) = write_image(&make_bzimage(&gzip(&elf)));

        let info = extract_vmlinux(&bzimage, &out).unwrap();

        assert_eq!((info.entry, info.pvh_entry), (ENTRY, None));
    }

    #[test]
    fn entry_given_as_virtual_address_is_accepted() {
        let mut elf = tiny_elf(None);
        let virtual_entry = ENTRY - LOAD_PADDR + LOAD_VADDR;
        elf[ELF_ENTRY_AT..ELF_ENTRY_AT + 8].copy_from_slice(&virtual_entry.to_le_bytes());
        let (_dir, bzimage, out) = write_image(&make_bzimage(&gzip(&elf)));

        assert_eq!(
            extract_vmlinux(&bzimage, &out).unwrap().entry,
            virtual_entry
        );
    }

    #[test]
    fn existing_output_is_replaced_on_success_and_kept_on_failure() {
        let elf = tiny_elf(Some(PVH_ENTRY));
        let (dir, bzimage, out) = write_image(&make_bzimage(&gzip(&elf)));
        fs::write(&out, b"old kernel").unwrap();

        extract_vmlinux(&bzimage, &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), elf);

        fs::write(&out, b"old kernel").unwrap();
        let mut corrupt = gzip(&elf);
        corrupt[40] ^= 0xff;
        fs::write(&bzimage, make_bzimage(&corrupt)).unwrap();
        extract_vmlinux(&bzimage, &out).unwrap_err();
        assert_eq!(fs::read(&out).unwrap(), b"old kernel");
        assert_eq!(dir_entries(dir.path()), ["vmlinux", "vmlinuz"]);
    }

    #[test]
    fn kernel_version_is_first_word_of_version_string() {
        let (_dir, bzimage, _) = write_image(&make_bzimage(&gzip(&tiny_elf(None))));

        assert_eq!(kernel_version(&bzimage).unwrap(), "6.1.0-99-test");
    }

    #[test]
    fn kernel_version_without_pointer_is_an_error() {
        let mut image = make_bzimage(&gzip(&tiny_elf(None)));
        image[KERNEL_VERSION_AT..KERNEL_VERSION_AT + 2].copy_from_slice(&[0, 0]);
        let (_dir, bzimage, _) = write_image(&image);

        let err = kernel_version(&bzimage).unwrap_err();

        assert!(
            matches!(err, VmlinuxError::NoKernelVersion { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_file_without_setup_header_magic() {
        let mut image = make_bzimage(&gzip(&tiny_elf(None)));
        image[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4].copy_from_slice(b"MZ\0\0");

        let err = extract_err(&image);

        assert!(matches!(err, VmlinuxError::NotBzImage { .. }), "{err:?}");
    }

    #[test]
    fn rejects_file_truncated_inside_setup_header() {
        let image = make_bzimage(&gzip(&tiny_elf(None)));

        let err = extract_err(&image[..0x230]);

        assert!(
            matches!(
                err,
                VmlinuxError::Truncated {
                    what: "setup header",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_boot_protocol_without_payload_fields() {
        let mut image = make_bzimage(&gzip(&tiny_elf(None)));
        image[PROTOCOL_AT..PROTOCOL_AT + 2].copy_from_slice(&0x0207u16.to_le_bytes());

        let err = extract_err(&image);

        assert!(
            matches!(
                err,
                VmlinuxError::ProtocolTooOld {
                    version: 0x0207,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("protocol 2.07"), "{err}");
    }

    #[test]
    fn rejects_payload_pointing_past_end_of_file() {
        let mut image = make_bzimage(&gzip(&tiny_elf(None)));
        set_payload_length(&mut image, 1 << 24);

        let err = extract_err(&image);

        assert!(
            matches!(err, VmlinuxError::PayloadOutOfBounds { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_corrupted_streams() {
        let elf = tiny_elf(Some(PVH_ENTRY));
        for compression in [Compression::Gzip, Compression::Xz, Compression::Zstd] {
            let mut payload = kernel_payload(compression, &elf);
            let middle = payload.len() / 2;
            payload[middle..middle + 8]
                .iter_mut()
                .for_each(|b| *b ^= 0x5a);

            let err = extract_err(&make_bzimage(&payload));

            assert!(
                matches!(err, VmlinuxError::Decompress { compression: c, .. } if c == compression),
                "{compression}: {err:?}"
            );
        }
    }

    #[test]
    fn rejects_streams_cut_short() {
        let elf = tiny_elf(Some(PVH_ENTRY));
        for compression in [Compression::Gzip, Compression::Xz, Compression::Zstd] {
            let payload = kernel_payload(compression, &elf);

            let err = extract_err(&make_bzimage(&payload[..payload.len() / 2]));

            assert!(
                matches!(err, VmlinuxError::Decompress { .. }),
                "{compression}: {err:?}"
            );
        }
    }

    #[test]
    fn rejects_recognised_but_unsupported_compression() {
        let err = extract_err(&make_bzimage(b"BZh91AY&SY\0\0\0\0\0\0"));

        let VmlinuxError::UnsupportedCompression { compression, .. } = err else {
            panic!("{err:?}");
        };
        assert_eq!(compression, Compression::Bzip2);
    }

    #[test]
    fn rejects_unknown_compression() {
        let err = extract_err(&make_bzimage(&[0x42; 32]));

        let VmlinuxError::UnknownCompression { magic, .. } = err else {
            panic!("{err:?}");
        };
        assert_eq!(magic, "424242424242");
    }

    #[test]
    fn rejects_wrong_size_trailer() {
        let mut payload = kernel_payload(Compression::Xz, &tiny_elf(None));
        let at = payload.len() - 4;
        payload[at..].copy_from_slice(&7u32.to_le_bytes());

        let err = extract_err(&make_bzimage(&payload));

        assert!(
            matches!(err, VmlinuxError::SizeMismatch { expected: 7, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_payload_that_is_not_elf() {
        let err = extract_err(&make_bzimage(&gzip(&[0x90; 4096])));

        assert!(matches!(err, VmlinuxError::NotElf { .. }), "{err:?}");
    }

    #[test]
    fn rejects_32_bit_elf() {
        let mut elf = tiny_elf(None);
        elf[ELF_CLASS_AT] = elf::ELFCLASS32.0;

        let err = extract_err(&make_bzimage(&gzip(&elf)));

        assert!(matches!(err, VmlinuxError::WrongElfKind { .. }), "{err:?}");
        assert!(err.to_string().contains("not a 64-bit ELF"), "{err}");
    }

    #[test]
    fn rejects_elf_without_load_segment() {
        let mut elf = tiny_elf(None);
        elf[PHDR_AT..PHDR_AT + 4].copy_from_slice(&elf::PT_NULL.0.to_le_bytes());

        let err = extract_err(&make_bzimage(&gzip(&elf)));

        assert!(matches!(err, VmlinuxError::NoLoadSegment { .. }), "{err:?}");
    }

    #[test]
    fn rejects_entry_outside_load_segments() {
        let mut elf = tiny_elf(None);
        elf[ELF_ENTRY_AT..ELF_ENTRY_AT + 8].copy_from_slice(&0x2000u64.to_le_bytes());

        let err = extract_err(&make_bzimage(&gzip(&elf)));

        let VmlinuxError::EntryOutsideLoad { kind, addr, .. } = err else {
            panic!("{err:?}");
        };
        assert_eq!((kind, addr), (EntryKind::Elf, 0x2000));
    }

    #[test]
    fn rejects_pvh_entry_outside_load_segments() {
        let err = extract_err(&make_bzimage(&gzip(&tiny_elf(Some(0x10)))));

        assert!(
            matches!(
                err,
                VmlinuxError::EntryOutsideLoad {
                    kind: EntryKind::Pvh,
                    addr: 0x10,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// The installed Debian kernel, if the machine has one: the case this module exists for.
    #[test]
    fn extracts_installed_kernel() {
        let Some(bzimage) = installed_kernel() else {
            eprintln!("no /boot/vmlinuz-* on this machine; skipping");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("vmlinux");

        let started = Instant::now();
        let info = extract_vmlinux(&bzimage, &out).unwrap();
        eprintln!(
            "extracted {} in {:?}: {info:?}",
            bzimage.display(),
            started.elapsed()
        );

        assert_eq!(fs::metadata(&out).unwrap().len(), info.size);
        let pvh_entry = info.pvh_entry.expect("a PVH entry note");
        let loads = load_ranges(&out);
        assert!(loads.iter().any(|&(paddr, vaddr, len)| {
            (paddr..paddr + len).contains(&info.entry) || (vaddr..vaddr + len).contains(&info.entry)
        }));
        assert!(loads
            .iter()
            .any(|&(paddr, _, len)| (paddr..paddr + len).contains(&pvh_entry)));

        let release = bzimage
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_start_matches("vmlinuz-");
        assert_eq!(kernel_version(&bzimage).unwrap(), release);
    }

    fn installed_kernel() -> Option<PathBuf> {
        let mut kernels: Vec<PathBuf> = fs::read_dir("/boot")
            .ok()?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.to_string_lossy().starts_with("/boot/vmlinuz-"))
            .collect();
        kernels.sort();
        kernels.pop()
    }

    /// (paddr, vaddr, memsz) of each PT_LOAD, read independently of `inspect_elf`.
    fn load_ranges(path: &Path) -> Vec<(u64, u64, u64)> {
        let file = File::open(path).unwrap();
        let cache = ReadCache::new(&file);
        let header = FileHeader64::<LittleEndian>::parse(&cache).unwrap();
        let phdrs = header.program_headers(LittleEndian, &cache).unwrap();
        phdrs
            .iter()
            .filter(|p| p.p_type(LittleEndian) == elf::PT_LOAD)
            .map(|p| {
                (
                    p.p_paddr(LittleEndian),
                    p.p_vaddr(LittleEndian),
                    p.p_memsz(LittleEndian),
                )
            })
            .collect()
    }
}
