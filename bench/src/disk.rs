//! VM disk creation in a loop-mounted XFS pool: a 50 GiB disk from a 2 GiB golden image
//! (2 GiB of real data) as a reflink clone, against a full copy with
//! `cp --sparse=always --reflink=never`; both grown to 50 GiB and synced. Then reflink clones
//! of 10G, 50G and 500G, to show that the requested size costs nothing.
//!
//! The copy reads the golden image from the page cache (it was just written): the best case
//! for `cp`.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use boxcutter_image::{PoolConfig, StoragePool};
use boxcutter_types::ByteSize;

use crate::stats::Samples;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const GOLDEN_SIZE: u64 = 2 * GIB;
const DISK_SIZE: ByteSize = ByteSize(50 * GIB);
const SIZES: [ByteSize; 3] = [ByteSize(10 * GIB), DISK_SIZE, ByteSize(500 * GIB)];

/// Makes a pool in a temporary directory, measures, and unmounts the pool.
pub fn bench_disk(runs: usize, cp_runs: usize) -> anyhow::Result<()> {
    let data = tempfile::Builder::new()
        .prefix("bc-bench-disk-")
        .tempdir_in("/var/tmp")?;
    let pool = StoragePool::open(PoolConfig {
        data_dir: data.path().to_owned(),
        loop_size: ByteSize(64 * GIB),
        force_loop: true,
    })?;
    let result = measure(&pool, data.path(), runs.max(1), cp_runs.max(1));
    pool.close()?;
    result
}

fn measure(pool: &StoragePool, data: &Path, runs: usize, cp_runs: usize) -> anyhow::Result<()> {
    let source = data.join("golden-source.ext4");
    write_golden(&source)?;
    let started = Instant::now();
    let golden = pool.import_golden(&source, "0123456789abcdef")?;
    let mut import = Samples::new("golden import into the pool (2 GiB, once)");
    import.push(started.elapsed());
    fs::remove_file(&source)?;

    let dest = pool.root().join("vm-disk.img");
    let mut medians = (Vec::new(), Vec::new());
    let baseline = pool.usage()?.used_bytes;
    let mut reflink = Samples::new("50G disk: reflink clone + grow + fsync");
    let mut reflink_mib = Samples::with_unit("  pool space used by the new disk", "MiB");
    for _ in 0..runs {
        let (elapsed, grew) = timed_in(pool, || Ok(pool.clone_disk(&golden, &dest, DISK_SIZE)?))?;
        reflink.push(elapsed);
        medians.0.push(elapsed.as_secs_f64());
        reflink_mib.push_value(grew);
        remove_and_settle(pool, &dest, baseline)?;
    }
    let mut copy = Samples::new("50G disk: cp --sparse=always + grow + fsync");
    let mut copy_mib = Samples::with_unit("  pool space used by the new disk", "MiB");
    for _ in 0..cp_runs {
        let (elapsed, grew) = timed_in(pool, || copy_disk(&golden, &dest))?;
        anyhow::ensure!(
            grew > 1900.0,
            "cp shared blocks instead of copying ({grew} MiB)"
        );
        copy.push(elapsed);
        medians.1.push(elapsed.as_secs_f64());
        copy_mib.push_value(grew);
        remove_and_settle(pool, &dest, baseline)?;
    }

    import.print();
    reflink.print();
    reflink_mib.print();
    copy.print();
    copy_mib.print();
    println!(
        "{:<44} {:>9.0}x",
        "cp / reflink (medians)",
        median(&medians.1) / median(&medians.0)
    );
    by_size(pool, &golden, runs)
}

/// Reflink clones of every size in `SIZES`, interleaved so drift affects them alike.
fn by_size(pool: &StoragePool, golden: &Path, runs: usize) -> anyhow::Result<()> {
    let mut samples: Vec<Samples> = SIZES
        .iter()
        .map(|size| Samples::new(&format!("reflink clone + grow + fsync, {size} disk")))
        .collect();
    let dest = pool.root().join("vm-disk.img");
    let baseline = pool.usage()?.used_bytes;
    for _ in 0..runs {
        for (size, samples) in SIZES.iter().zip(&mut samples) {
            let started = Instant::now();
            pool.clone_disk(golden, &dest, *size)?;
            samples.push(started.elapsed());
            anyhow::ensure!(
                fs::metadata(&dest)?.len() == size.bytes(),
                "wrong disk size"
            );
            remove_and_settle(pool, &dest, baseline)?;
        }
    }
    samples.iter().for_each(Samples::print);
    Ok(())
}

/// Runs `make` and returns how long it took and how many MiB the pool's use grew by.
fn timed_in(
    pool: &StoragePool,
    make: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<(Duration, f64)> {
    let before = pool.usage()?.used_bytes;
    let started = Instant::now();
    make()?;
    let elapsed = started.elapsed();
    let after = pool.usage()?.used_bytes;
    Ok((elapsed, after.saturating_sub(before) as f64 / MIB as f64))
}

/// Removes a disk and waits until the pool has freed its blocks (XFS frees them in the
/// background, and the `discard` mount option punches them out of the sparse image), so
/// the next run starts from the same state and measures its own growth.
fn remove_and_settle(pool: &StoragePool, disk: &Path, baseline: u64) -> anyhow::Result<()> {
    fs::remove_file(disk)?;
    let root = File::open(pool.root())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // SAFETY: syncfs only reads the descriptor, which `root` keeps open.
        if unsafe { libc::syncfs(root.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if pool.usage()?.used_bytes <= baseline + MIB {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the pool did not free a removed disk"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a pool without reflink would do: copy every byte, then grow.
fn copy_disk(golden: &Path, dest: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp")
        .args(["--sparse=always", "--reflink=never"])
        .arg(golden)
        .arg(dest)
        .status()?;
    anyhow::ensure!(status.success(), "cp failed: {status}");
    let file = OpenOptions::new().write(true).open(dest)?;
    file.set_len(DISK_SIZE.bytes())?;
    file.sync_all()?;
    Ok(())
}

/// 2 GiB of non-zero data (so `cp --sparse=always` finds no hole), different per MiB.
fn write_golden(path: &Path) -> anyhow::Result<()> {
    let file = File::create(path)?;
    let mut block: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 | 1).collect();
    for (n, offset) in (0..GOLDEN_SIZE).step_by(MIB as usize).enumerate() {
        block[..8].copy_from_slice(&(n as u64 | 1 << 63).to_le_bytes());
        file.write_all_at(&block, offset)?;
    }
    file.sync_all()?;
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
