//! The storage pool on a real loop-mounted XFS in a temporary directory under /var/tmp
//! (ext4 here, so without reflink). Needs root, `mkfs.xfs` and loop devices; skipped
//! otherwise. Every test unmounts its pool and checks that neither the mount nor the loop
//! device is left, and a drop guard cleans up after a failing test too.

#![allow(clippy::unwrap_used)]

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use boxcutter_image::pool::DEFAULT_LOOP_SIZE;
use boxcutter_image::{allocated_bytes, supports_reflink, PoolConfig, PoolError, StoragePool};
use boxcutter_types::ByteSize;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const GOLDEN_SIZE: u64 = 2 * GIB;
const DATA_START: u64 = 256 * MIB;
const DATA_LEN: u64 = 64 * MIB;
const MARKERS: [u64; 4] = [0, 700 * MIB, GIB + 12345, GOLDEN_SIZE - 4096];
const VERSION: &str = "0123abcd";

#[test]
fn loop_pool_is_made_and_mounted() {
    let Some(t) = TestPool::new() else { return };
    let pool = t.open(true);
    assert_eq!(pool.loop_image(), Some(t.image().as_path()));
    assert!(is_mounted(&t.mount_point()));
    assert!(!loop_devices(&t.image()).is_empty());
    // Sparse: a 8 GiB image holds only XFS's metadata.
    assert!(allocated_bytes(&t.image()).unwrap() < 256 * MIB);
    assert!(supports_reflink(pool.root()).unwrap());
    let usage = pool.usage().unwrap();
    assert!(
        usage.total_bytes > 7 * GIB && usage.total_bytes <= 8 * GIB,
        "{usage:?}"
    );
    assert!(usage.used_bytes < usage.total_bytes / 10, "{usage:?}");
    t.finish(pool);
}

#[test]
fn opening_twice_reuses_the_mount() {
    let Some(t) = TestPool::new() else { return };
    let first = t.open(true);
    let second = t.open(true);
    assert_eq!(first.root(), second.root());
    assert_eq!(mounts_at(&t.mount_point()), 1);
    assert_eq!(loop_devices(&t.image()).len(), 1);
    drop(second);
    t.finish(first);
}

#[test]
fn reopening_after_unmount_keeps_the_data() {
    let Some(t) = TestPool::new() else { return };
    let pool = t.open(true);
    fs::write(pool.root().join("kept"), b"still here").unwrap();
    let inode = fs::metadata(t.image()).unwrap().ino();
    pool.close().unwrap();
    assert!(!is_mounted(&t.mount_point()));
    wait_loop_freed(&t.image());

    let pool = t.open(true);
    assert_eq!(fs::read(pool.root().join("kept")).unwrap(), b"still here");
    assert_eq!(fs::metadata(t.image()).unwrap().ino(), inode);
    t.finish(pool);
}

#[test]
fn something_else_mounted_at_the_pool_is_refused() {
    let Some(t) = TestPool::new() else { return };
    fs::create_dir(t.mount_point()).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(t.mount_point())
        .status()
        .unwrap();
    assert!(status.success());
    let err = StoragePool::open(t.config(true)).unwrap_err();
    assert!(matches!(err, PoolError::ForeignMount { .. }), "{err}");
    assert!(err.to_string().contains("tmpfs"), "{err}");
    assert!(
        !t.image().exists(),
        "nothing is formatted under a foreign mount"
    );
}

#[test]
fn plain_ext4_has_no_reflink_so_the_loop_is_used() {
    let Some(t) = TestPool::new() else { return };
    assert!(!supports_reflink(t.dir()).unwrap());
    // The probe leaves no files behind.
    assert_eq!(fs::read_dir(t.dir()).unwrap().count(), 0);
    let pool = t.open(false);
    assert_eq!(pool.loop_image(), Some(t.image().as_path()));
    assert!(is_mounted(&t.mount_point()));
    t.finish(pool);
}

#[test]
fn clone_shares_data_and_honours_the_size() {
    let Some(t) = TestPool::new() else { return };
    let pool = t.open(true);
    let golden = pool.import_golden(&t.write_golden(), VERSION).unwrap();
    let before = pool.usage().unwrap();
    let disk = pool.root().join("vm-disk.img");

    let started = Instant::now();
    pool.clone_disk(&golden, &disk, ByteSize(50 * GIB)).unwrap();
    let elapsed = started.elapsed();
    let after = pool.usage().unwrap();

    assert_eq!(fs::metadata(&disk).unwrap().len(), 50 * GIB);
    assert_same_bytes(&golden, &disk, GOLDEN_SIZE);
    assert!(read_at(&disk, 50 * GIB - 4096, 4096)
        .iter()
        .all(|&b| b == 0));
    let grew = after.used_bytes - before.used_bytes;
    assert!(
        grew < DATA_LEN / 16,
        "pool grew by {grew} bytes for a clone"
    );
    // Per-file accounting counts the shared extents again.
    assert!(allocated_bytes(&disk).unwrap() >= DATA_LEN);
    assert!(elapsed < Duration::from_secs(1), "clone took {elapsed:?}");

    let file = OpenOptions::new().write(true).open(&disk).unwrap();
    file.write_all_at(b"changed by the guest", MARKERS[1])
        .unwrap();
    file.sync_all().unwrap();
    assert_eq!(read_at(&disk, MARKERS[1], 20), b"changed by the guest");
    assert_eq!(read_at(&golden, MARKERS[1], 20), marker(MARKERS[1]));
    drop(file);
    t.finish(pool);
}

#[test]
fn clone_file_copies_a_disk_as_is() {
    let Some(t) = TestPool::new() else { return };
    let pool = t.open(true);
    let golden = pool.import_golden(&t.write_golden(), VERSION).unwrap();
    let (disk, copy) = (pool.root().join("a.img"), pool.root().join("b.img"));
    pool.clone_disk(&golden, &disk, ByteSize(10 * GIB)).unwrap();
    pool.clone_file(&disk, &copy).unwrap();
    assert_eq!(fs::metadata(&copy).unwrap().len(), 10 * GIB);
    assert_eq!(read_at(&copy, MARKERS[2], 20), marker(MARKERS[2]));
    // An existing destination is never overwritten.
    let err = pool.clone_file(&disk, &copy).unwrap_err();
    assert!(
        matches!(
            err,
            PoolError::Io {
                step: "create disk",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(fs::metadata(&copy).unwrap().len(), 10 * GIB);
    t.finish(pool);
}

#[test]
fn clone_smaller_than_golden_is_refused_and_leaves_nothing() {
    let Some(t) = TestPool::new() else { return };
    let pool = t.open(true);
    let golden = pool.import_golden(&t.write_golden(), VERSION).unwrap();
    let disk = pool.root().join("small.img");
    let err = pool.clone_disk(&golden, &disk, ByteSize(GIB)).unwrap_err();
    assert!(matches!(err, PoolError::DiskTooSmall { .. }), "{err}");
    assert!(err.to_string().contains("1G"), "{err}");
    assert!(!disk.exists());

    // A clone that fails halfway (here: across filesystems) removes its file too.
    let outside = t.dir().join("outside.img");
    let err = pool
        .clone_disk(&outside, &disk, ByteSize(4 * GIB))
        .unwrap_err();
    assert!(matches!(err, PoolError::Io { .. }), "{err}");
    let err = pool
        .clone_disk(&t.write_golden(), &disk, ByteSize(4 * GIB))
        .unwrap_err();
    assert!(err.to_string().starts_with("reflink clone: "), "{err}");
    assert!(!disk.exists());
    t.finish(pool);
}

#[test]
fn import_golden_once_per_version() {
    let Some(t) = TestPool::new() else { return };
    let pool = t.open(true);
    let source = t.write_golden();
    let golden = pool.import_golden(&source, VERSION).unwrap();
    assert_eq!(golden, pool.root().join("golden").join("0123abcd.ext4"));
    assert_eq!(
        fs::metadata(&golden).unwrap().permissions().mode() & 0o777,
        0o444
    );
    assert_eq!(fs::metadata(&golden).unwrap().len(), GOLDEN_SIZE);
    assert_same_bytes(&source, &golden, GOLDEN_SIZE);
    // Holes stay holes.
    let allocated = allocated_bytes(&golden).unwrap();
    assert!(allocated < DATA_LEN + 16 * MIB, "{allocated}");

    let inode = fs::metadata(&golden).unwrap().ino();
    fs::remove_file(&source).unwrap();
    assert_eq!(pool.import_golden(&source, VERSION).unwrap(), golden);
    assert_eq!(fs::metadata(&golden).unwrap().ino(), inode);
    assert_eq!(fs::read_dir(pool.root().join("golden")).unwrap().count(), 1);
    t.finish(pool);
}

#[test]
fn bad_versions_are_refused_before_any_path() {
    let Some(t) = TestPool::new() else { return };
    let pool = t.open(true);
    let source = t.write_golden();
    for bad in ["", "../../etc/passwd", "ABCDEF", "abc.ext4", "12 34"] {
        let err = pool.import_golden(&source, bad).unwrap_err();
        assert!(
            matches!(err, PoolError::InvalidVersion { .. }),
            "{bad:?}: {err}"
        );
    }
    assert_eq!(fs::read_dir(pool.root().join("golden")).unwrap().count(), 0);
    t.finish(pool);
}

#[test]
fn default_config_uses_a_sparse_200g_loop() {
    let config = PoolConfig::new("/var/lib/boxcutter".into());
    assert_eq!(config.loop_size, DEFAULT_LOOP_SIZE);
    assert_eq!(config.loop_size.to_string(), "200G");
    assert!(!config.force_loop);
}

/// A data directory with a pool that is unmounted, and its loop device freed, when the
/// test ends however it ends.
struct TestPool {
    dir: tempfile::TempDir,
}

impl TestPool {
    /// A fresh data directory, or `None` (test skipped) where pools cannot be made.
    fn new() -> Option<Self> {
        if let Some(missing) = missing_prerequisite() {
            eprintln!("skipped: {missing}");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("bc-pool-test-")
            .tempdir_in("/var/tmp")
            .unwrap();
        Some(Self { dir })
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn image(&self) -> PathBuf {
        self.dir().join("pool.img")
    }

    fn mount_point(&self) -> PathBuf {
        self.dir().join("pool")
    }

    fn config(&self, force_loop: bool) -> PoolConfig {
        PoolConfig {
            data_dir: self.dir().to_owned(),
            loop_size: ByteSize(8 * GIB),
            force_loop,
        }
    }

    fn open(&self, force_loop: bool) -> StoragePool {
        StoragePool::open(self.config(force_loop)).unwrap()
    }

    /// A 2 GiB golden image outside the pool: mostly a hole, with 64 MiB of data and a
    /// recognisable marker at a few offsets.
    fn write_golden(&self) -> PathBuf {
        let path = self.dir().join(format!("golden-{}.ext4", unique_suffix()));
        let file = File::create(&path).unwrap();
        file.set_len(GOLDEN_SIZE).unwrap();
        let block: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 | 1).collect();
        for offset in (DATA_START..DATA_START + DATA_LEN).step_by(MIB as usize) {
            file.write_all_at(&block, offset).unwrap();
        }
        for offset in MARKERS {
            file.write_all_at(&marker(offset), offset).unwrap();
        }
        file.sync_all().unwrap();
        path
    }

    /// Closes the pool and checks that nothing of it stays mounted or attached.
    fn finish(self, pool: StoragePool) {
        pool.close().unwrap();
        assert!(!is_mounted(&self.mount_point()));
        wait_loop_freed(&self.image());
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        let mount_point = self.mount_point();
        while is_mounted(&mount_point) {
            let status = Command::new("umount").arg(&mount_point).status();
            if !status.is_ok_and(|s| s.success()) {
                let _ = Command::new("umount").arg("-l").arg(&mount_point).status();
                break;
            }
        }
        for device in loop_devices(&self.image()) {
            let _ = Command::new("losetup").arg("-d").arg(device).status();
        }
    }
}

fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no loop devices".into());
    }
    let has_mkfs = Command::new("mkfs.xfs").arg("-V").output().is_ok();
    (!has_mkfs).then(|| "mkfs.xfs is not installed".into())
}

/// A name no other call in this process uses.
fn unique_suffix() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn marker(offset: u64) -> Vec<u8> {
    format!("marker@{offset:>13}").into_bytes()
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

fn assert_same_bytes(a: &Path, b: &Path, len: u64) {
    let (a, b) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut x, mut y) = (vec![0u8; 8 * MIB as usize], vec![0u8; 8 * MIB as usize]);
    for offset in (0..len).step_by(x.len()) {
        a.read_exact_at(&mut x, offset).unwrap();
        b.read_exact_at(&mut y, offset).unwrap();
        assert!(x == y, "contents differ in the 8 MiB at {offset}");
    }
    for offset in MARKERS {
        let mut m = vec![0u8; 20];
        b.read_exact_at(&mut m, offset).unwrap();
        assert_eq!(m, marker(offset));
    }
}

/// Mount points in /proc/self/mountinfo (the test paths have no characters to escape).
fn mounts_at(path: &Path) -> usize {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    text.lines()
        .filter(|l| l.split(' ').nth(4) == path.to_str())
        .count()
}

fn is_mounted(path: &Path) -> bool {
    mounts_at(path) > 0
}

/// Loop devices attached to `image`, from `losetup -j`.
fn loop_devices(image: &Path) -> Vec<String> {
    let out = Command::new("losetup")
        .arg("-j")
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').next().map(str::to_string))
        .collect()
}

/// Waits briefly for the kernel's autoclear to free the image's loop device.
fn wait_loop_freed(image: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !loop_devices(image).is_empty() {
        assert!(
            Instant::now() < deadline,
            "loop device still attached to {}",
            image.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
