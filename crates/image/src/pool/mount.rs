//! The loop pool: making the sparse XFS image once, mounting it, and recognising it (and
//! refusing anything else) when it is already mounted, from `/proc/self/mountinfo`.

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use boxcutter_sys::run;
use boxcutter_types::ByteSize;

use super::{cmd_err, io_err, sync_dir, PoolError};

/// Mounts `image` at `root` unless it already is, making the image first if there is none.
/// Returns whether this call mounted it.
pub(super) fn mount_ensure(image: &Path, root: &Path, size: ByteSize) -> Result<bool, PoolError> {
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
pub(super) fn loop_backing_file(device: &str) -> Option<PathBuf> {
    let name = device.strip_prefix("/dev/")?;
    if !name.starts_with("loop") || name.contains('/') {
        return None;
    }
    let text = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim_end_matches('\n')))
}

/// One line of `/proc/self/mountinfo`, the fields the pool needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MountEntry {
    pub(super) mount_point: PathBuf,
    pub(super) fstype: String,
    pub(super) source: String,
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
pub(super) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
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
pub(super) fn unescape(field: &str) -> Vec<u8> {
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
