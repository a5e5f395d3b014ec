//! Guest images: the Debian kernel (compressed and as an uncompressed ELF), the initramfs, the golden root filesystem and copy-on-write disk clones.

pub mod vmlinux;
