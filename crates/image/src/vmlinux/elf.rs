//! Checking that the decompressed kernel is a bootable x86_64 ELF: its header, its PT_LOAD
//! segments, and its entry points (the ELF one and, if present, the PVH note).

use std::fs::File;
use std::path::Path;

use object::elf::{FileHeader64, ProgramHeader64};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{elf, LittleEndian, ReadCache, ReadRef};

use super::{EntryKind, VmlinuxError};

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit physical PVH entry point.
pub(super) const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// The entry points of a validated kernel ELF.
pub(super) struct ElfEntries {
    pub(super) entry: u64,
    pub(super) pvh_entry: Option<u64>,
}

/// Checks that the `size`-byte ELF in `file` is a bootable x86_64 kernel.
///
/// The file is read through a cache of only the parts looked at (headers and notes), so
/// the loaded segments are never copied into memory.
pub(super) fn inspect_elf(file: &File, size: u64, path: &Path) -> Result<ElfEntries, VmlinuxError> {
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
