//! Synthetic kernels for the tests: a minimal x86_64 vmlinux, compressed the way the kernel
//! build compresses it, wrapped in a bzImage with a real setup header.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use liblzma::stream::{Check, Filters, LzmaOptions, Stream};
use object::elf;

use super::elf::XEN_ELFNOTE_PHYS32_ENTRY;
use super::header::{
    HEADER_MAGIC, HEADER_MAGIC_AT, KERNEL_VERSION_AT, PAYLOAD_LENGTH_AT, PAYLOAD_OFFSET_AT,
    PROTOCOL_AT, SETUP_SECTS_AT,
};
use super::Compression;

/// Physical and virtual load addresses of the synthetic kernel, as in a real vmlinux.
pub(super) const LOAD_PADDR: u64 = 0x100_0000;
pub(super) const LOAD_VADDR: u64 = 0xffff_ffff_8100_0000;
pub(super) const ENTRY: u64 = LOAD_PADDR + 0x100;
pub(super) const PVH_ENTRY: u64 = LOAD_PADDR + 0x180;
const VERSION: &str = "6.1.0-99-test (builder@example) #1 SMP PREEMPT_DYNAMIC";

/// Offsets into the synthetic ELF that tests corrupt.
pub(super) const ELF_CLASS_AT: usize = 4;
pub(super) const ELF_ENTRY_AT: usize = 24;
pub(super) const PHDR_AT: usize = 64;
const PHDR_LEN: usize = 56;

/// A minimal x86_64 vmlinux: one PT_LOAD covering the file, one PT_NOTE holding a Xen
/// PHYS32_ENTRY note (or, without `pvh`, a GNU build-id note), and some code bytes.
pub(super) fn tiny_elf(pvh: Option<u64>) -> Vec<u8> {
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
pub(super) fn kernel_payload(compression: Compression, data: &[u8]) -> Vec<u8> {
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

pub(super) fn gzip(data: &[u8]) -> Vec<u8> {
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
pub(super) fn make_bzimage(payload: &[u8]) -> Vec<u8> {
    let mut image = vec![0u8; 1024];
    image[SETUP_SECTS_AT] = 1;
    image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    image[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4].copy_from_slice(HEADER_MAGIC);
    image[PROTOCOL_AT..PROTOCOL_AT + 2].copy_from_slice(&0x020fu16.to_le_bytes());
    image[KERNEL_VERSION_AT..KERNEL_VERSION_AT + 2].copy_from_slice(&0x100u16.to_le_bytes());
    image[0x300..0x300 + VERSION.len()].copy_from_slice(VERSION.as_bytes());
    let payload_offset = 0x40u32;
    image[PAYLOAD_OFFSET_AT..PAYLOAD_OFFSET_AT + 4].copy_from_slice(&payload_offset.to_le_bytes());
    image[PAYLOAD_LENGTH_AT..PAYLOAD_LENGTH_AT + 4]
        .copy_from_slice(&(payload.len() as u32).to_le_bytes());

    image.extend([0xcc; 0x40]);
    image.extend(payload);
    image.extend([0u8; 64]);
    image
}

pub(super) fn set_payload_length(image: &mut [u8], length: u32) {
    image[PAYLOAD_LENGTH_AT..PAYLOAD_LENGTH_AT + 4].copy_from_slice(&length.to_le_bytes());
}

/// Writes `image` to a fresh directory; returns the directory, bzImage and output paths.
pub(super) fn write_image(image: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bzimage = dir.path().join("vmlinuz");
    fs::write(&bzimage, image).unwrap();
    let out = dir.path().join("vmlinux");
    (dir, bzimage, out)
}

pub(super) fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
