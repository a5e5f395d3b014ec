//! Boot step 4a: find and read the config drive, the VM's small raw disk carrying
//! [`GuestConfig`] (SSH keys: too large and too secret for the kernel command line).
//!
//! The drive is found by content, not by name: the first whole virtio disk that is not the
//! root disk and starts with [`CONFIG_MAGIC`]. So the node may attach it in any slot, and a
//! data disk is never mistaken for it.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boxcutter_types::guest::{BootParamsError, GuestConfig, CONFIG_BLOCK, CONFIG_MAGIC};

use crate::disks;
use crate::layout::Layout;

/// The most we read: a config is a few kilobytes; this bounds a corrupt drive.
const MAX_CONFIG_BYTES: usize = 1 << 20;

/// How long to wait for the drive to appear; virtio-blk probes before we start.
pub const DRIVE_WAIT: Duration = Duration::from_secs(2);

/// Reading the config drive failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    /// No disk other than the root carries the config header.
    #[error("no config drive among {candidates:?} after {waited_ms} ms")]
    NotFound {
        /// The disks looked at.
        candidates: Vec<String>,
        /// How long we waited.
        waited_ms: u64,
    },
    /// The drive could not be read.
    #[error("read config drive {path}")]
    Read {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The drive's contents do not decode.
    #[error("decode config drive {path}")]
    Decode {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: BootParamsError,
    },
}

/// Finds the config drive (waiting up to `wait` for it) and decodes it.
pub fn load(
    layout: &Layout,
    root_disk: &str,
    wait: Duration,
) -> Result<(PathBuf, GuestConfig), ConfigDriveError> {
    let path = wait_for_drive(layout, root_disk, wait)?;
    let config = read(&path)?;
    Ok((path, config))
}

/// The device node of the first non-root virtio disk that starts with [`CONFIG_MAGIC`].
pub fn find(layout: &Layout, root_disk: &str) -> Option<PathBuf> {
    disks::virtio_disks(&layout.sys)
        .into_iter()
        .filter(|name| name != root_disk)
        .map(|name| layout.dev.join(name))
        .find(|path| has_magic(path))
}

/// Reads and decodes the config at `path`.
pub fn read(path: &Path) -> Result<GuestConfig, ConfigDriveError> {
    let bytes = read_until_padding(path).map_err(|source| ConfigDriveError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    GuestConfig::decode(&bytes).map_err(|source| ConfigDriveError::Decode {
        path: path.to_path_buf(),
        source,
    })
}

fn wait_for_drive(
    layout: &Layout,
    root_disk: &str,
    wait: Duration,
) -> Result<PathBuf, ConfigDriveError> {
    let started = Instant::now();
    loop {
        if let Some(path) = find(layout, root_disk) {
            return Ok(path);
        }
        if started.elapsed() >= wait {
            return Err(ConfigDriveError::NotFound {
                candidates: disks::virtio_disks(&layout.sys),
                waited_ms: started.elapsed().as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn has_magic(path: &Path) -> bool {
    let mut head = [0u8; CONFIG_MAGIC.len()];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == CONFIG_MAGIC)
}

/// Reads whole blocks until one holds the NUL padding, the device ends, or the cap.
fn read_until_padding(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let mut bytes = Vec::with_capacity(CONFIG_BLOCK);
    let mut block = vec![0u8; CONFIG_BLOCK];
    while bytes.len() < MAX_CONFIG_BYTES {
        let n = read_full(&mut file, &mut block)?;
        bytes.extend_from_slice(&block[..n]);
        if n < block.len() || block[..n].contains(&0) {
            break;
        }
    }
    Ok(bytes)
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::disks::fake;

    fn config() -> GuestConfig {
        GuestConfig {
            authorized_keys: vec!["ssh-ed25519 AAAA user@laptop".into()],
            ssh_host_key: "k".repeat(5000),
        }
    }

    fn fake_system(dir: &Path) -> Layout {
        let layout = Layout::under(dir);
        fs::create_dir_all(&layout.dev).unwrap();
        fake::disk(&layout.sys, "vda", (254, 0), 8);
        fake::disk(&layout.sys, "vdb", (254, 16), 8);
        fake::disk(&layout.sys, "vdc", (254, 32), 8);
        layout
    }

    #[test]
    fn drive_is_found_by_its_header_not_its_slot() {
        let dir = tempfile::tempdir().unwrap();
        let layout = fake_system(dir.path());
        fs::write(layout.dev.join("vda"), config().encode()).unwrap();
        fs::write(layout.dev.join("vdb"), vec![0u8; 8192]).unwrap();
        fs::write(layout.dev.join("vdc"), config().encode()).unwrap();

        let (path, found) = load(&layout, "vda", Duration::ZERO).unwrap();
        assert_eq!(path, layout.dev.join("vdc"));
        assert_eq!(found, config());
    }

    #[test]
    fn config_spanning_blocks_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vdb");
        let mut image = config().encode();
        assert!(image.len() > CONFIG_BLOCK);
        image.extend(vec![0xAB; 3 * CONFIG_BLOCK]); // garbage after the padding is ignored
        fs::write(&path, image).unwrap();
        assert_eq!(read(&path).unwrap(), config());
    }

    #[test]
    fn missing_drive_names_the_disks_it_saw() {
        let dir = tempfile::tempdir().unwrap();
        let layout = fake_system(dir.path());
        let err = load(&layout, "vda", Duration::from_millis(10)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"no config drive among ["vda", "vdb", "vdc"] after"#),
            "{err}"
        );
    }

    #[test]
    fn corrupt_json_is_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vdb");
        let mut image = CONFIG_MAGIC.to_vec();
        image.extend(b"{\"authorized_keys\":");
        fs::write(&path, image).unwrap();
        assert!(matches!(read(&path), Err(ConfigDriveError::Decode { .. })));
    }
}
