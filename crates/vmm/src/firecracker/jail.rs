//! Running Firecracker under its `jailer` (Firecracker's docs/jailer.md): the jailer makes
//! a chroot for the VM, `<chroot_base>/<exec_file_name>/<id>/root`, drops to an
//! unprivileged uid/gid and execs Firecracker inside it, keeping its pid. Firecracker then
//! sees only the jail: every path it is given is relative to the jail's root, and every
//! file it uses (kernel, initramfs, disks, log, snapshots) must be put there by us, with
//! the right owner. [`Jail`] does that: files are hard-linked in (copied when they live
//! on another filesystem), the writable ones handed to the jail's uid/gid, and paths
//! translated between the host's view and the jail's.
//!
//! Each VM's jail holds only links, sockets and the jailer's device nodes, so it is
//! removed whole when the VM's Firecracker ends; the VM's own files stay in its
//! directory. The jailer refuses a jail left from an earlier run, so a launch must start
//! without one. No cgroup is asked for (no `--cgroup`), so the jailer writes none.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// How to run Firecracker under the jailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerConfig {
    /// The `jailer` binary.
    pub jailer: PathBuf,
    /// The uid Firecracker runs as.
    pub uid: u32,
    /// The gid Firecracker runs as.
    pub gid: u32,
    /// Where jails are made (`--chroot-base-dir`). Must be on the filesystem of the VMs'
    /// disks, so that they can be hard-linked in.
    pub chroot_base: PathBuf,
}

/// One VM's jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    /// The jail's root as the host sees it (the jailer's `chroot_dir`).
    pub root: PathBuf,
    /// The instance id (`--id`), which the jailer passes on to Firecracker.
    pub id: String,
    /// The uid Firecracker runs as.
    pub uid: u32,
    /// The gid Firecracker runs as.
    pub gid: u32,
}

impl Jail {
    /// The jail the jailer makes for `exec_file` and `id` under `config`'s base. The
    /// jailer names the jail after the exec file's real name, symlinks resolved.
    pub fn new(config: &JailerConfig, exec_file: &Path, id: &str) -> Self {
        let exec_file = exec_file
            .canonicalize()
            .unwrap_or_else(|_| exec_file.to_owned());
        let exec_name = exec_file.file_name().unwrap_or_default();
        Self {
            root: config.chroot_base.join(exec_name).join(id).join("root"),
            id: id.to_owned(),
            uid: config.uid,
            gid: config.gid,
        }
    }

    /// The directory the jailer makes for this VM (`<chroot_base>/<exec_file_name>/<id>`).
    pub fn dir(&self) -> &Path {
        self.root.parent().unwrap_or(&self.root)
    }

    /// A file named `name` at the jail's root, as the host sees it.
    pub fn host_path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// How Firecracker, inside the jail, names the host path `host` (which must be in the
    /// jail).
    pub fn inside(&self, host: &Path) -> io::Result<PathBuf> {
        let relative = host.strip_prefix(&self.root).map_err(|_| {
            io::Error::other(format!(
                "{} is outside the jail {}",
                host.display(),
                self.root.display()
            ))
        })?;
        Ok(Path::new("/").join(relative))
    }

    /// Makes `file` visible in the jail as `/<name>`: a hard link, or a copy when it lives
    /// on another filesystem. With `writable`, the jail's uid/gid own it (a hard link
    /// shares the owner with the original). Returns the path inside the jail.
    pub fn admit(&self, file: &Path, name: &str, writable: bool) -> io::Result<PathBuf> {
        std::fs::create_dir_all(&self.root)?;
        let dest = self.host_path(name);
        match std::fs::remove_file(&dest) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        match std::fs::hard_link(file, &dest) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                std::fs::copy(file, &dest).map(drop)?;
            }
            Err(e) => return Err(e),
        }
        if writable {
            self.hand_over(&dest)?;
        }
        self.inside(&dest)
    }

    /// Gives `path` to the jail's uid/gid.
    pub fn hand_over(&self, path: &Path) -> io::Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
    }

    /// The jailer's command line for `config`'s Firecracker, with `firecracker_args` for
    /// Firecracker itself (after `--`).
    pub fn command_line(
        &self,
        config: &JailerConfig,
        exec_file: &Path,
        firecracker_args: impl IntoIterator<Item = OsString>,
    ) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--id".into(),
            self.id.clone().into(),
            "--exec-file".into(),
            exec_file.into(),
            "--uid".into(),
            self.uid.to_string().into(),
            "--gid".into(),
            self.gid.to_string().into(),
            "--chroot-base-dir".into(),
            config.chroot_base.clone().into(),
            "--".into(),
        ];
        args.extend(firecracker_args);
        args
    }

    /// What the jailed process's command line holds, to recognise it: the jailer passes
    /// the id on as `--id <id>` (two arguments, NUL-separated in `/proc/<pid>/cmdline`).
    pub fn process_marker(&self) -> Vec<u8> {
        format!("--id\0{}\0", self.id).into_bytes()
    }

    /// Removes the jail (its links and sockets; the VM's own files stay).
    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(self.dir()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jail(base: &Path) -> (JailerConfig, Jail) {
        let config = JailerConfig {
            jailer: "/usr/bin/jailer".into(),
            uid: 64123,
            gid: 64124,
            chroot_base: base.to_owned(),
        };
        let jail = Jail::new(&config, Path::new("/usr/bin/firecracker"), "vm-1");
        (config, jail)
    }

    #[test]
    fn the_jail_is_where_the_jailer_makes_it_and_paths_translate() {
        let (_, jail) = jail(Path::new("/srv/jailer"));
        assert_eq!(jail.root, Path::new("/srv/jailer/firecracker/vm-1/root"));
        assert_eq!(jail.dir(), Path::new("/srv/jailer/firecracker/vm-1"));
        assert_eq!(
            jail.inside(&jail.host_path("fc.sock")).unwrap(),
            Path::new("/fc.sock")
        );
        assert!(jail.inside(Path::new("/etc/passwd")).is_err());
        assert_eq!(jail.process_marker(), b"--id\0vm-1\0");
    }

    #[test]
    fn files_are_linked_in_and_writable_ones_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let (_, jail) = jail(&dir.path().join("jails"));
        let disk = dir.path().join("root.img");
        std::fs::write(&disk, b"disk").unwrap();
        assert_eq!(
            jail.admit(&disk, "rootfs.img", true).unwrap(),
            Path::new("/rootfs.img")
        );
        use std::os::unix::fs::MetadataExt;
        let inside = std::fs::metadata(jail.host_path("rootfs.img")).unwrap();
        let original = std::fs::metadata(&disk).unwrap();
        assert_eq!(inside.ino(), original.ino(), "a hard link, not a copy");
        assert_eq!((inside.uid(), inside.gid()), (64123, 64124));
        // Admitting again replaces the link.
        jail.admit(&disk, "rootfs.img", false).unwrap();
        jail.remove().unwrap();
        assert!(!jail.dir().exists());
        assert!(disk.exists(), "the VM's own file stays");
    }

    #[test]
    fn the_command_line_follows_the_jailer_usage() {
        let (config, jail) = jail(Path::new("/srv/jailer"));
        let args = jail.command_line(
            &config,
            Path::new("/usr/bin/firecracker"),
            ["--api-sock".into(), "/fc.sock".into()],
        );
        let text: Vec<_> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            text.join(" "),
            "--id vm-1 --exec-file /usr/bin/firecracker --uid 64123 --gid 64124 \
             --chroot-base-dir /srv/jailer -- --api-sock /fc.sock"
        );
    }
}
