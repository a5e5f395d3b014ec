//! Checks that an image directory is sound before a VM boots from it, so a missing or
//! corrupted file is reported by name at once instead of as a guest that never boots.
//! The checks read headers and sizes only: fast enough to run before every launch.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::build::{read_manifest, Manifest, INITRD, MANIFEST, ROOTFS, VMLINUX, VMLINUZ};

/// What is wrong with an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The manifest is missing or unreadable.
    #[error("{path} is missing or not a valid image manifest (build the image with `boxcutter-node image build`)")]
    Manifest {
        /// The manifest's path.
        path: PathBuf,
    },
    /// A file is missing or cannot be read.
    #[error("image file {path} cannot be read")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file's size differs from the manifest's record.
    #[error("image file {path} is {actual} bytes, the manifest says {expected}: it was changed or truncated")]
    Size {
        /// The file.
        path: PathBuf,
        /// Bytes on disk.
        actual: u64,
        /// Bytes recorded.
        expected: u64,
    },
    /// A file does not start the way its format requires.
    #[error("image file {path} is not {format}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The expected format.
        format: &'static str,
    },
}

/// The files of a checked image.
#[derive(Debug, Clone)]
pub struct ImagePaths {
    /// The compressed kernel.
    pub vmlinuz: PathBuf,
    /// The uncompressed kernel ELF.
    pub vmlinux: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The golden root filesystem.
    pub rootfs: PathBuf,
    /// The image's manifest.
    pub manifest: Manifest,
}

/// Checks the image in `dir` against its manifest and the files' formats.
pub fn validate_image(dir: &Path) -> Result<ImagePaths, ImageError> {
    let manifest = read_manifest(dir).ok_or_else(|| ImageError::Manifest {
        path: dir.join(MANIFEST),
    })?;
    for (name, record) in &manifest.files {
        let path = dir.join(name);
        let actual = std::fs::metadata(&path)
            .map_err(|source| ImageError::Unreadable {
                path: path.clone(),
                source,
            })?
            .len();
        if actual != record.size {
            return Err(ImageError::Size {
                path,
                actual,
                expected: record.size,
            });
        }
    }
    let paths = ImagePaths {
        vmlinuz: dir.join(VMLINUZ),
        vmlinux: dir.join(VMLINUX),
        initrd: dir.join(INITRD),
        rootfs: dir.join(ROOTFS),
        manifest,
    };
    expect_bytes(&paths.vmlinuz, 0x202, b"HdrS", "a Linux bzImage")?;
    expect_bytes(
        &paths.vmlinux,
        0,
        b"\x7fELF\x02\x01",
        "a 64-bit little-endian ELF kernel",
    )?;
    expect_bytes(&paths.initrd, 0, b"070701", "a newc cpio initramfs")?;
    expect_bytes(&paths.rootfs, 0x438, &[0x53, 0xEF], "an ext4 filesystem")?;
    Ok(paths)
}

fn expect_bytes(
    path: &Path,
    offset: u64,
    magic: &[u8],
    format: &'static str,
) -> Result<(), ImageError> {
    let unreadable = |source| ImageError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(unreadable)?;
    file.seek(SeekFrom::Start(offset)).map_err(unreadable)?;
    let mut found = vec![0u8; magic.len()];
    match file.read_exact(&mut found) {
        Ok(()) if found == magic => Ok(()),
        _ => Err(ImageError::Format {
            path: path.to_owned(),
            format,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::build::ManifestFile;

    /// A directory whose files carry just the right magic bytes.
    fn fake_image(dir: &Path) {
        let mut bzimage = vec![0u8; 0x300];
        bzimage[0x202..0x206].copy_from_slice(b"HdrS");
        let mut ext4 = vec![0u8; 0x1000];
        ext4[0x438..0x43a].copy_from_slice(&[0x53, 0xEF]);
        let files: [(&str, Vec<u8>); 4] = [
            (VMLINUZ, bzimage),
            (VMLINUX, b"\x7fELF\x02\x01\x01\0rest".to_vec()),
            (INITRD, b"070701000000".to_vec()),
            (ROOTFS, ext4),
        ];
        let mut records = BTreeMap::new();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), &bytes).unwrap();
            records.insert(
                name.to_string(),
                ManifestFile {
                    size: bytes.len() as u64,
                },
            );
        }
        let manifest = Manifest {
            kernel_version: "6.1.0-test".into(),
            rootfs_version: "v".into(),
            input_key: "k".into(),
            built_at: 0,
            build_ms: 0,
            files: records,
        };
        std::fs::write(dir.join(MANIFEST), serde_json::to_vec(&manifest).unwrap()).unwrap();
    }

    #[test]
    fn a_sound_image_passes() {
        let dir = tempfile::tempdir().unwrap();
        fake_image(dir.path());
        let paths = validate_image(dir.path()).unwrap();
        assert_eq!(paths.manifest.kernel_version, "6.1.0-test");
    }

    #[test]
    fn missing_manifest_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = validate_image(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&dir.path().join(MANIFEST).display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fake_image(dir.path());
        std::fs::remove_file(dir.path().join(INITRD)).unwrap();
        let err = validate_image(dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "image file {} cannot be read",
                dir.path().join(INITRD).display()
            )
        );
    }

    #[test]
    fn truncated_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fake_image(dir.path());
        let rootfs = dir.path().join(ROOTFS);
        std::fs::write(&rootfs, [0u8; 10]).unwrap();
        let err = validate_image(dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("image file {} is 10 bytes", rootfs.display())),
            "{err}"
        );
    }

    #[test]
    fn corrupted_content_of_the_right_size_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fake_image(dir.path());
        let rootfs = dir.path().join(ROOTFS);
        std::fs::write(&rootfs, vec![0xAAu8; 0x1000]).unwrap();
        let err = validate_image(dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("image file {} is not an ext4 filesystem", rootfs.display())
        );
    }
}
