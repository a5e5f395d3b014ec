//! The guest kernel command line of a Firecracker microVM.
//!
//! Firecracker 1.8 and newer describe their virtio-mmio devices (disks, network, vsock) to
//! the guest in ACPI tables, as QEMU's `microvm` machine does with `acpi=on`; the Debian
//! kernel finds them there (it lacks `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`, so the
//! `virtio_mmio.device=` words older Firecrackers append would be ignored). The initramfs
//! loads the modules the devices need (`virtio_blk`, `virtio_net`, the vsock transport).

use boxcutter_types::guest::BootParams;

/// The kernel command line of a Firecracker guest: console on the one serial port, root on
/// the first drive (the root disk is attached first), a reboot (Ctrl-Alt-Del, or a panic)
/// ends Firecracker (`reboot=k`, `panic=1`), no PCI probing (`pci=off`: Firecracker has no
/// PCI bus unless asked), and the Boxcutter boot parameters.
pub fn kernel_cmdline(params: &BootParams) -> String {
    let words = [
        "console=ttyS0",
        "reboot=k",
        "panic=1",
        "pci=off",
        "root=/dev/vda",
        "rw",
        "quiet",
    ];
    format!("{} {}", words.join(" "), params.to_cmdline())
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxcutter_types::guest::VmType;
    use boxcutter_types::VmName;

    #[test]
    fn names_the_root_disk_and_carries_the_boxcutter_parameters() {
        let params = BootParams {
            name: VmName::new("quick-owl").unwrap(),
            vm_type: VmType::Firecracker,
            net: None,
            vcpus: None,
        };
        assert_eq!(
            kernel_cmdline(&params),
            "console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw quiet \
             boxcutter.name=quick-owl boxcutter.type=firecracker"
        );
    }
}
