//! File helpers for the set-up steps.
//!
//! Every file the agent writes is regenerated at each boot, so it is replaced by a rename
//! (readers never see a torn file, and the owner and mode are right before the name
//! appears) but not fsynced: on a TCG guest each fsync costs tens of milliseconds, and a
//! crash only means the next boot writes the file again.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A numeric owner for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Replaces `path` with `contents`, with exactly `mode` and, if given, `owner`.
pub fn replace(path: &Path, contents: &[u8], mode: u32, owner: Option<Owner>) -> io::Result<()> {
    let tmp = temporary_beside(path)?;
    let written = write_new(&tmp, contents, mode, owner).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Makes sure `path` is a directory with exactly `mode` and, if given, `owner`.
pub fn dir_ensure(path: &Path, mode: u32, owner: Option<Owner>) -> io::Result<()> {
    match DirBuilder::new().mode(mode).create(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
        other => other?,
    }
    // The umask and an existing directory's mode both need overriding.
    fs::set_permissions(path, Permissions::from_mode(mode))?;
    if let Some(owner) = owner {
        std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))?;
    }
    Ok(())
}

/// Creates the directory `path` with `mode` if it is missing; an existing one is left alone.
pub fn dir_ensure_exists(path: &Path, mode: u32) -> io::Result<()> {
    match DirBuilder::new().mode(mode).create(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        other => other,
    }
}

fn write_new(tmp: &Path, contents: &[u8], mode: u32, owner: Option<Owner>) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    if let Some(owner) = owner {
        std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid))?;
    }
    file.set_permissions(Permissions::from_mode(mode))?;
    file.write_all(contents)
}

fn temporary_beside(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let tmp = path.with_file_name(format!(".{}.boxcutter-tmp", name.to_string_lossy()));
    // A leftover from a crash mid-write would make create_new fail.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(tmp),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn me() -> Owner {
        Owner {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    }

    #[test]
    fn replace_sets_exact_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        replace(&path, b"old", 0o644, None).unwrap();
        replace(&path, b"new", 0o600, Some(me())).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!((meta.uid(), meta.gid()), (me().uid, me().gid));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn replace_survives_a_stale_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        fs::write(dir.path().join(".hosts.boxcutter-tmp"), b"stale").unwrap();
        replace(&path, b"fresh", 0o644, None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"fresh");
    }

    #[test]
    fn dir_ensure_fixes_the_mode_of_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".ssh");
        DirBuilder::new().mode(0o777).create(&path).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o777)).unwrap();
        dir_ensure(&path, 0o700, Some(me())).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o700);
    }
}
