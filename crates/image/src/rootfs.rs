//! The golden root filesystem: Debian (minbase, by mmdebstrap from the mirror apt already
//! uses) with the packages a developer VM needs, a `dev` user with passwordless sudo, sshd
//! set up for keys only, and the guest agent as init.
//!
//! Built in two stages so that changing the guest agent does not re-download Debian:
//! 1. the **base**: mmdebstrap's tarball, cached by the hash of everything that shapes it
//!    (suite, packages, apt sources);
//! 2. the **image**: the base unpacked into a staging directory, customised, and turned
//!    into an ext4 file by `mkfs.ext4 -d`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use boxcutter_sys::{run, CommandError};
use sha2::{Digest, Sha256};

/// Bumped whenever the base recipe changes in a way its inputs do not show.
const BASE_RECIPE: &str = "base-v1";

/// Packages every golden image carries, on top of Debian's minbase.
pub const DEFAULT_PACKAGES: &[&str] = &[
    "openssh-server",
    "sudo",
    "git",
    "curl",
    "ca-certificates",
    "iproute2",
    "e2fsprogs",
    "iputils-ping",
    "procps",
    "less",
];

/// The user developers log in as.
pub const DEV_USER: &str = "dev";

const SSHD_CONFIG: &str = "\
# Written by the Boxcutter image build. The node generates each VM's host key and
# hands it over on the config drive, so only that key is used.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
";

/// Errors building the root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A build step's file operation failed.
    #[error("{step}: {path}")]
    Io {
        /// The step.
        step: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An external program failed.
    #[error("{step}")]
    Command {
        /// The step.
        step: &'static str,
        /// The program's failure.
        #[source]
        source: CommandError,
    },
}

/// What the root filesystem is made of.
#[derive(Debug, Clone)]
pub struct RootfsConfig {
    /// Debian suite, e.g. `bookworm`.
    pub suite: String,
    /// apt's deb822 sources file naming the mirror to build from.
    pub apt_sources: PathBuf,
    /// Packages on top of minbase.
    pub packages: Vec<String>,
    /// The `boxcutter-guest` binary installed as init.
    pub guest_agent: PathBuf,
    /// Where base tarballs are cached.
    pub cache_dir: PathBuf,
}

impl RootfsConfig {
    /// The cache key of the base tarball: a hash of everything that shapes it.
    pub fn base_key(&self) -> Result<String, RootfsError> {
        let sources = read(&self.apt_sources, "read apt sources")?;
        let mut packages = self.packages.clone();
        packages.sort();
        let mut hash = Sha256::new();
        for part in [
            BASE_RECIPE.as_bytes(),
            self.suite.as_bytes(),
            packages.join(",").as_bytes(),
        ] {
            hash.update(part);
            hash.update([0]);
        }
        hash.update(sources);
        Ok(hex::encode(&hash.finalize()[..12]))
    }
}

/// Makes sure the base tarball exists in the cache and returns its path.
pub fn base_ensure(config: &RootfsConfig) -> Result<PathBuf, RootfsError> {
    let tarball = config
        .cache_dir
        .join(format!("base-{}.tar", config.base_key()?));
    if tarball.exists() {
        tracing::debug!(path = %tarball.display(), "base rootfs cached");
        return Ok(tarball);
    }
    mkdir(&config.cache_dir)?;
    let partial = tarball.with_extension("tar.partial");
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=minbase", "--format=tar", "--quiet"])
        .arg(format!("--include={}", config.packages.join(",")))
        .args([
            &config.suite,
            &path_str(&partial),
            &path_str(&config.apt_sources),
        ]);
    run(&mut cmd).map_err(|source| RootfsError::Command {
        step: "mmdebstrap",
        source,
    })?;
    fs::rename(&partial, &tarball).map_err(io_err("store base tarball", &tarball))?;
    Ok(tarball)
}

/// Builds the golden `rootfs.ext4` at `out` from the cached base and the guest agent.
pub fn build_rootfs(config: &RootfsConfig, out: &Path) -> Result<(), RootfsError> {
    let base = base_ensure(config)?;
    let parent = out.parent().unwrap_or(Path::new("."));
    let stage = tempfile::Builder::new()
        .prefix(".rootfs-stage-")
        .tempdir_in(parent)
        .map_err(io_err("create staging directory", parent))?;
    let root = stage.path().join("root");
    mkdir(&root)?;

    let mut untar = Command::new("tar");
    untar
        .args(["--numeric-owner", "-xpf"])
        .arg(&base)
        .arg("-C")
        .arg(&root);
    run(&mut untar).map_err(|source| RootfsError::Command {
        step: "unpack base",
        source,
    })?;
    customise(&root, &config.guest_agent)?;

    let partial = stage.path().join("rootfs.ext4");
    make_ext4(&root, &partial)?;
    fs::rename(&partial, out).map_err(io_err("store rootfs", out))
}

/// Turns an unpacked Debian into a Boxcutter guest.
fn customise(root: &Path, guest_agent: &Path) -> Result<(), RootfsError> {
    let agent = root.join("usr/sbin/boxcutter-guest");
    fs::copy(guest_agent, &agent).map_err(io_err("install guest agent", guest_agent))?;
    set_mode(&agent, 0o755)?;

    let mut useradd = Command::new("chroot");
    useradd
        .arg(root)
        .args(["useradd", "--create-home", "--shell", "/bin/bash"]);
    useradd.args(["--groups", "sudo", "--password", "*", DEV_USER]);
    run(&mut useradd).map_err(|source| RootfsError::Command {
        step: "create dev user",
        source,
    })?;

    write(
        &root.join("etc/sudoers.d/dev"),
        &format!("{DEV_USER} ALL=(ALL) NOPASSWD:ALL\n"),
        0o440,
    )?;
    write(
        &root.join("etc/ssh/sshd_config.d/boxcutter.conf"),
        SSHD_CONFIG,
        0o644,
    )?;
    remove_host_keys(&root.join("etc/ssh"))?;
    mkdir(&root.join("etc/boxcutter"))?;
    write(&root.join("etc/hostname"), "localhost\n", 0o644)
}

/// Every image would otherwise share mmdebstrap's host keys.
fn remove_host_keys(ssh_dir: &Path) -> Result<(), RootfsError> {
    let entries = fs::read_dir(ssh_dir).map_err(io_err("list ssh keys", ssh_dir))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(entry.path()).map_err(io_err("remove host key", &entry.path()))?;
        }
    }
    Ok(())
}

/// `mkfs.ext4 -d`, sized to the content plus headroom; guests grow it at first boot.
fn make_ext4(root: &Path, out: &Path) -> Result<(), RootfsError> {
    let used = disk_usage(root);
    let size_mib = (used / (1 << 20)) * 5 / 4 + 256;
    let size_mib = size_mib.div_ceil(64) * 64;
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-L", "boxcutter-root", "-d"])
        .arg(root)
        .arg(out);
    mkfs.arg(format!("{size_mib}M"));
    run(&mut mkfs).map_err(|source| RootfsError::Command {
        step: "mkfs.ext4",
        source,
    })?;
    Ok(())
}

/// Bytes allocated under `dir`, not following symlinks.
fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok().map(|m| (e.path(), m)))
        .map(|(path, meta)| meta.blocks() * 512 + if meta.is_dir() { disk_usage(&path) } else { 0 })
        .sum()
}

fn io_err<'a>(
    step: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        step,
        path: path.to_owned(),
        source,
    }
}

fn read(path: &Path, step: &'static str) -> Result<Vec<u8>, RootfsError> {
    fs::read(path).map_err(io_err(step, path))
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), RootfsError> {
    fs::write(path, contents).map_err(io_err("write file", path))?;
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RootfsError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

fn mkdir(path: &Path) -> Result<(), RootfsError> {
    fs::create_dir_all(path).map_err(io_err("create directory", path))
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, packages: &[&str]) -> RootfsConfig {
        let sources = dir.join("debian.sources");
        fs::write(&sources, "Types: deb\nURIs: http://deb.debian.org/debian\n").unwrap();
        RootfsConfig {
            suite: "bookworm".into(),
            apt_sources: sources,
            packages: packages.iter().map(|p| p.to_string()).collect(),
            guest_agent: dir.join("agent"),
            cache_dir: dir.join("cache"),
        }
    }

    #[test]
    fn base_key_ignores_package_order_but_not_content() {
        let dir = tempfile::tempdir().unwrap();
        let a = config(dir.path(), &["git", "curl"]).base_key().unwrap();
        assert_eq!(a, config(dir.path(), &["curl", "git"]).base_key().unwrap());
        assert_ne!(a, config(dir.path(), &["curl"]).base_key().unwrap());
    }

    #[test]
    fn base_key_follows_the_mirror() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &["git"]);
        let before = cfg.base_key().unwrap();
        fs::write(
            &cfg.apt_sources,
            "Types: deb\nURIs: http://mirror.example/debian\n",
        )
        .unwrap();
        assert_ne!(before, cfg.base_key().unwrap());
    }

    #[test]
    fn missing_sources_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), &["git"]);
        cfg.apt_sources = dir.path().join("nope.sources");
        let err = cfg.base_key().unwrap_err().to_string();
        assert!(err.ends_with("nope.sources"), "{err}");
    }
}
