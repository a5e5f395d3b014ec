//! Guest images: the Debian kernel (compressed and as an uncompressed ELF), the initramfs,
//! the golden root filesystem, the manifest that describes them, and checks that an image
//! directory is sound before a VM boots from it.

pub mod build;
pub mod cpio;
pub mod initramfs;
pub mod pool;
pub mod rootfs;
pub mod validate;
pub mod vmlinux;

pub use build::{build_image, read_manifest, BuildError, BuildOutcome, ImageBuildConfig, Manifest};
pub use pool::{allocated_bytes, supports_reflink, PoolConfig, PoolError, PoolUsage, StoragePool};
pub use validate::{validate_image, ImageError, ImagePaths};
