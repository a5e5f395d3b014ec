//! Extraction round trips for each supported compressor, every rejection path, and the
//! kernel installed on this machine when there is one.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use object::elf::{self, FileHeader64};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{LittleEndian, ReadCache};

use super::fixtures::*;
use super::header::{HEADER_MAGIC_AT, KERNEL_VERSION_AT, PROTOCOL_AT};
use super::*;

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
