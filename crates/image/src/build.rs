//! `image build`: assembles a complete guest image directory from the host's Debian
//! packages, and reuses a previous build when nothing that shapes it changed.
//!
//! An image directory holds `vmlinuz`, `vmlinux`, `initrd.img`, `rootfs.ext4` and
//! `manifest.json`; the manifest is written last, so a directory with a manifest is
//! complete. Finished images live in the cache under their input key and are hard-linked
//! (or copied) into the requested output directory; their files are read-only.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::initramfs::{build_initramfs, InitramfsConfig, InitramfsError, INIT_SCRIPT, MODULES};
use crate::rootfs::{build_rootfs, RootfsConfig, RootfsError};
use crate::vmlinux::{extract_vmlinux, kernel_version, VmlinuxError};

/// Bumped whenever the build recipe changes in a way its inputs do not show (v2: the
/// initramfs is padded to whole pages).
const BUILD_RECIPE: &str = "image-v2";

/// File names inside an image directory.
pub const VMLINUZ: &str = "vmlinuz";
/// The uncompressed kernel ELF.
pub const VMLINUX: &str = "vmlinux";
/// The initramfs.
pub const INITRD: &str = "initrd.img";
/// The golden root filesystem.
pub const ROOTFS: &str = "rootfs.ext4";
/// The manifest, written last.
pub const MANIFEST: &str = "manifest.json";

const IMAGE_FILES: [&str; 4] = [VMLINUZ, VMLINUX, INITRD, ROOTFS];

/// Errors building an image.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No kernel to build from.
    #[error("no Debian kernel found in {dir} (install linux-image-amd64)")]
    NoKernel {
        /// Where kernels were looked for.
        dir: PathBuf,
    },
    /// A file operation failed.
    #[error("{step}: {path}")]
    Io {
        /// The step.
        step: &'static str,
        /// The file involved.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel could not be read or unpacked.
    #[error("kernel")]
    Kernel(#[from] VmlinuxError),
    /// The initramfs could not be built.
    #[error("initramfs")]
    Initramfs(#[from] InitramfsError),
    /// The root filesystem could not be built.
    #[error("root filesystem")]
    Rootfs(#[from] RootfsError),
}

/// Everything an image is built from.
#[derive(Debug, Clone)]
pub struct ImageBuildConfig {
    /// The compressed kernel (`/boot/vmlinuz-*`).
    pub kernel: PathBuf,
    /// Its modules directory (`/lib/modules/<release>`).
    pub modules_dir: PathBuf,
    /// A statically linked busybox for the initramfs.
    pub busybox: PathBuf,
    /// The root filesystem recipe.
    pub rootfs: RootfsConfig,
    /// Where finished images and base tarballs are cached.
    pub cache_dir: PathBuf,
}

/// One file of an image, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Size in bytes.
    pub size: u64,
}

/// `manifest.json`: what an image is, so nodes can check and compare images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Kernel release, e.g. `6.1.0-57-amd64`.
    pub kernel_version: String,
    /// Content version of the root filesystem: SHA-256 of `rootfs.ext4`.
    pub rootfs_version: String,
    /// Hash of the build's inputs; equal keys mean equal images.
    pub input_key: String,
    /// Seconds since the Unix epoch when the image was built.
    pub built_at: u64,
    /// How long the build took, in milliseconds.
    pub build_ms: u64,
    /// The image's files by name.
    pub files: std::collections::BTreeMap<String, ManifestFile>,
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The image's manifest.
    pub manifest: Manifest,
    /// True when nothing had to be built.
    pub cached: bool,
}

impl ImageBuildConfig {
    /// The configuration for building from this machine's newest installed Debian kernel,
    /// busybox-static and apt sources.
    pub fn from_host(guest_agent: PathBuf, cache_dir: PathBuf) -> Result<Self, BuildError> {
        let kernel = newest_kernel(Path::new("/boot"))?;
        let release = kernel_version(&kernel)?;
        Ok(Self {
            modules_dir: Path::new("/lib/modules").join(&release),
            kernel,
            busybox: PathBuf::from("/bin/busybox"),
            rootfs: RootfsConfig {
                suite: "bookworm".into(),
                apt_sources: debian_sources(Path::new("/etc/apt/sources.list.d"))?,
                packages: crate::rootfs::DEFAULT_PACKAGES
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
                guest_agent,
                cache_dir: cache_dir.join("base"),
            },
            cache_dir,
        })
    }

    /// Hash of everything that shapes the image.
    pub fn input_key(&self) -> Result<String, BuildError> {
        let mut hash = Sha256::new();
        hash.update(BUILD_RECIPE);
        hash.update(self.rootfs.base_key()?);
        hash.update(MODULES.join(","));
        hash.update(INIT_SCRIPT);
        hash.update(self.modules_dir.to_string_lossy().as_bytes());
        for file in [&self.kernel, &self.busybox, &self.rootfs.guest_agent] {
            hash.update(sha256_file(file)?);
        }
        Ok(hex::encode(&hash.finalize()[..12]))
    }
}

/// Builds the image into `out`, reusing the cache when the inputs are unchanged.
pub fn build_image(config: &ImageBuildConfig, out: &Path) -> Result<BuildOutcome, BuildError> {
    let key = config.input_key()?;
    if let Some(manifest) = read_manifest(out).filter(|m| m.input_key == key && files_ok(out, m)) {
        return Ok(BuildOutcome {
            manifest,
            cached: true,
        });
    }
    // Builds sharing a cache (parallel tests, two nodes on one host) take turns.
    let _lock = lock_cache(&config.cache_dir)?;
    let cached_dir = config.cache_dir.join("images").join(&key);
    let cached = read_manifest(&cached_dir).filter(|m| files_ok(&cached_dir, m));
    let (manifest, cached) = match cached {
        Some(manifest) => (manifest, true),
        None => (build_into(config, &key, &cached_dir)?, false),
    };
    publish(&cached_dir, out, &manifest)?;
    Ok(BuildOutcome { manifest, cached })
}

/// Holds an exclusive lock on the cache until dropped.
fn lock_cache(cache_dir: &Path) -> Result<nix::fcntl::Flock<fs::File>, BuildError> {
    fs::create_dir_all(cache_dir).map_err(io_err("create cache directory", cache_dir))?;
    let path = cache_dir.join("build.lock");
    let file = fs::File::create(&path).map_err(io_err("open cache lock", &path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
        BuildError::Io {
            step: "lock cache",
            path,
            source: errno.into(),
        }
    })
}

/// Builds every file into `dir` (the cache entry), manifest last.
fn build_into(config: &ImageBuildConfig, key: &str, dir: &Path) -> Result<Manifest, BuildError> {
    let started = Instant::now();
    fs::create_dir_all(dir).map_err(io_err("create image directory", dir))?;
    let kernel_version = kernel_version(&config.kernel)?;

    copy(&config.kernel, &dir.join(VMLINUZ))?;
    extract_vmlinux(&config.kernel, &dir.join(VMLINUX))?;
    let initramfs = build_initramfs(&InitramfsConfig {
        modules_dir: config.modules_dir.clone(),
        busybox: config.busybox.clone(),
    })?;
    write_file(&dir.join(INITRD), &initramfs)?;
    build_rootfs(&config.rootfs, &dir.join(ROOTFS))?;

    let mut files = std::collections::BTreeMap::new();
    for name in IMAGE_FILES {
        let path = dir.join(name);
        let meta = fs::metadata(&path).map_err(io_err("stat image file", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444))
            .map_err(io_err("make image file read-only", &path))?;
        files.insert(name.to_string(), ManifestFile { size: meta.len() });
    }
    let manifest = Manifest {
        kernel_version,
        rootfs_version: hex::encode(sha256_file(&dir.join(ROOTFS))?),
        input_key: key.to_string(),
        built_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        build_ms: started.elapsed().as_millis() as u64,
        files,
    };
    write_manifest(dir, &manifest)?;
    Ok(manifest)
}

/// Links (or copies) a finished image from the cache into `out`, manifest last.
fn publish(from: &Path, out: &Path, manifest: &Manifest) -> Result<(), BuildError> {
    if from == out {
        return Ok(());
    }
    fs::create_dir_all(out).map_err(io_err("create output directory", out))?;
    let _ = fs::remove_file(out.join(MANIFEST));
    for name in IMAGE_FILES {
        let (src, dst) = (from.join(name), out.join(name));
        let _ = fs::remove_file(&dst);
        if fs::hard_link(&src, &dst).is_err() {
            copy(&src, &dst)?;
        }
    }
    write_manifest(out, manifest)
}

/// Reads `dir/manifest.json`, or `None` when absent or unreadable.
pub fn read_manifest(dir: &Path) -> Option<Manifest> {
    let bytes = fs::read(dir.join(MANIFEST)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn files_ok(dir: &Path, manifest: &Manifest) -> bool {
    IMAGE_FILES.iter().all(|name| {
        let size = fs::metadata(dir.join(name)).map(|m| m.len()).ok();
        manifest.files.get(*name).map(|f| f.size) == size
    })
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), BuildError> {
    let path = dir.join(MANIFEST);
    let mut json = serde_json::to_vec_pretty(manifest).unwrap_or_default();
    json.push(b'\n');
    boxcutter_sys::write_atomic(&path, &json, 0o644).map_err(io_err("write manifest", &path))
}

/// The newest `vmlinuz-*` in `dir`, by version order.
fn newest_kernel(dir: &Path) -> Result<PathBuf, BuildError> {
    let entries = fs::read_dir(dir).map_err(io_err("list kernels", dir))?;
    let mut kernels: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort_by_key(|p| version_key(&p.to_string_lossy()));
    kernels.pop().ok_or_else(|| BuildError::NoKernel {
        dir: dir.to_owned(),
    })
}

/// Sort key comparing the numbers in a kernel file name numerically.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// apt's deb822 file that names the Debian mirror: the only Debian host guaranteed
/// reachable is the one apt is already configured with.
fn debian_sources(dir: &Path) -> Result<PathBuf, BuildError> {
    let entries = fs::read_dir(dir).map_err(io_err("list apt sources", dir))?;
    let mut candidates: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sources"))
        .filter(|p| fs::read_to_string(p).is_ok_and(|t| t.contains("bookworm")))
        .filter(|p| !p.to_string_lossy().contains("backports"))
        .collect();
    candidates.sort();
    candidates.into_iter().next().ok_or_else(|| BuildError::Io {
        step: "find a deb822 file for bookworm",
        path: dir.to_owned(),
        source: std::io::ErrorKind::NotFound.into(),
    })
}

fn sha256_file(path: &Path) -> Result<[u8; 32], BuildError> {
    let mut file = fs::File::open(path).map_err(io_err("open for hashing", path))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io_err("read for hashing", path))?;
        if n == 0 {
            return Ok(hash.finalize().into());
        }
        hash.update(&buf[..n]);
    }
}

fn copy(from: &Path, to: &Path) -> Result<(), BuildError> {
    fs::copy(from, to).map(|_| ()).map_err(io_err("copy", from))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    fs::write(path, bytes).map_err(io_err("write", path))
}

fn io_err<'a>(
    step: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        step,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_sort_numerically() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-57-amd64",
            "config-6.1.0-99-amd64",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let newest = newest_kernel(dir.path()).unwrap();
        assert!(
            newest.ends_with("vmlinuz-6.1.0-57-amd64"),
            "{}",
            newest.display()
        );
    }

    #[test]
    fn no_kernel_says_what_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let err = newest_kernel(dir.path()).unwrap_err().to_string();
        assert!(err.contains("install linux-image-amd64"), "{err}");
    }

    #[test]
    fn manifest_files_must_match_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = std::collections::BTreeMap::new();
        for name in IMAGE_FILES {
            fs::write(dir.path().join(name), b"12345").unwrap();
            files.insert(name.to_string(), ManifestFile { size: 5 });
        }
        let manifest = Manifest {
            kernel_version: "6.1".into(),
            rootfs_version: "abc".into(),
            input_key: "k".into(),
            built_at: 0,
            build_ms: 0,
            files,
        };
        assert!(files_ok(dir.path(), &manifest));
        fs::write(dir.path().join(ROOTFS), b"1234").unwrap();
        assert!(!files_ok(dir.path(), &manifest));
    }
}
