//! The pre-boot resources a `FakeFirecracker` holds, each checked as Firecracker checks it
//! when the request arrives: the files it would open must open, ids must be well formed and
//! agree with the path, names and addresses must be unique.

use std::fs::{File, OpenOptions};
use std::os::unix::net::UnixListener;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::contract::Refusal;
use crate::firecracker::api::{
    Balloon, BootSource, Drive, HugePages, Logger, MachineConfig, Metrics, NetworkInterface, Vsock,
};

/// Firecracker's limit on vCPUs.
const MAX_VCPUS: u8 = 32;

/// Longest TAP name Linux accepts (`IFNAMSIZ` minus the terminating NUL).
const MAX_TAP_NAME: usize = 15;

/// What the guest is made of; what a snapshot saves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Resources {
    pub machine: MachineConfig,
    pub boot: Option<BootSource>,
    pub drives: Vec<Drive>,
    pub nics: Vec<NetworkInterface>,
    pub vsock: Option<Vsock>,
    pub balloon: Option<Balloon>,
}

impl Default for Resources {
    /// Firecracker's defaults: one vCPU and 128 MiB, nothing attached.
    fn default() -> Self {
        Self {
            machine: MachineConfig::new(1, 128),
            boot: None,
            drives: Vec::new(),
            nics: Vec::new(),
            vsock: None,
            balloon: None,
        }
    }
}

impl Resources {
    pub fn set_machine_config(&mut self, machine: MachineConfig) -> Result<(), Refusal> {
        let smt = machine.smt.unwrap_or(false);
        let vcpus = machine.vcpu_count;
        if vcpus == 0 || vcpus > MAX_VCPUS || (smt && vcpus > 1 && vcpus % 2 == 1) {
            return Err(Refusal::bad_request(
                "Machine config error: The vCPU number is invalid! The vCPU number can only \
                 be 1 or an even number when SMT is enabled.",
            ));
        }
        if machine.mem_size_mib == 0 {
            return Err(Refusal::bad_request(
                "Machine config error: The memory size (MiB) is invalid.",
            ));
        }
        self.machine = machine;
        Ok(())
    }

    pub fn set_boot_source(&mut self, boot: BootSource) -> Result<(), Refusal> {
        File::open(&boot.kernel_image_path).map_err(|e| {
            Refusal::bad_request(format!(
                "Boot source error: The kernel file cannot be opened: {e}"
            ))
        })?;
        if let Some(initrd) = &boot.initrd_path {
            File::open(initrd).map_err(|e| {
                Refusal::bad_request(format!(
                    "Boot source error: The initrd file cannot be opened: {e}"
                ))
            })?;
        }
        self.boot = Some(boot);
        Ok(())
    }

    pub fn set_drive(&mut self, path_id: &str, drive: Drive) -> Result<(), Refusal> {
        check_id(path_id, &drive.drive_id)?;
        let another_root = self
            .drives
            .iter()
            .any(|d| d.is_root_device && d.drive_id != drive.drive_id);
        if drive.is_root_device && another_root {
            return Err(Refusal::bad_request(
                "Drive config error: A root block device already exists!",
            ));
        }
        open_backing_file(&drive).map_err(|e| {
            Refusal::bad_request(format!(
                "Drive config error: Unable to create the virtio block device: {e}"
            ))
        })?;
        replace_or_push(&mut self.drives, drive, |d| &d.drive_id);
        Ok(())
    }

    /// Points an existing drive at another file, which must open as the drive says.
    pub fn update_drive_file(&mut self, id: &str, path: &Path) -> Result<(), Refusal> {
        let drive = self
            .drives
            .iter_mut()
            .find(|d| d.drive_id == id)
            .ok_or_else(|| {
                Refusal::bad_request(format!(
                    "Drive config error: Unable to patch the block device: no drive {id}"
                ))
            })?;
        let updated = Drive {
            path_on_host: path.to_owned(),
            ..drive.clone()
        };
        open_backing_file(&updated).map_err(|e| {
            Refusal::bad_request(format!(
                "Drive config error: Unable to patch the block device: {e}"
            ))
        })?;
        *drive = updated;
        Ok(())
    }

    pub fn set_nic(&mut self, path_id: &str, nic: NetworkInterface) -> Result<(), Refusal> {
        check_id(path_id, &nic.iface_id)?;
        // Limitation: the TAP device is not opened (that takes CAP_NET_ADMIN and a real
        // device), only its name is checked: a missing TAP passes here and fails for real.
        if nic.host_dev_name.is_empty() || nic.host_dev_name.len() > MAX_TAP_NAME {
            return Err(Refusal::bad_request(format!(
                "Network config error: Could not create the network device: Open tap device \
                 failed: Invalid TUN/TAP Interface name: {}",
                nic.host_dev_name
            )));
        }
        let others = self.nics.iter().filter(|n| n.iface_id != nic.iface_id);
        for other in others {
            if nic.guest_mac.is_some() && other.guest_mac == nic.guest_mac {
                return Err(Refusal::bad_request(format!(
                    "Network config error: The MAC address is already in use: {}",
                    nic.guest_mac.map(|m| m.to_string()).unwrap_or_default()
                )));
            }
            if other.host_dev_name == nic.host_dev_name {
                return Err(Refusal::bad_request(format!(
                    "Network config error: The host device name is already in use: {}",
                    nic.host_dev_name
                )));
            }
        }
        replace_or_push(&mut self.nics, nic, |n| &n.iface_id);
        Ok(())
    }

    pub fn set_balloon(&mut self, balloon: Balloon) -> Result<(), Refusal> {
        self.balloon = Some(balloon);
        Ok(())
    }

    /// Binds the vsock device's Unix socket, as Firecracker does when it builds the device.
    pub fn bind_vsock(vsock: &Vsock) -> Result<UnixListener, Refusal> {
        if vsock.guest_cid < 3 {
            return Err(Refusal::bad_request(format!(
                "Vsock config error: Invalid guest CID {}: the lowest a guest can have is 3",
                vsock.guest_cid
            )));
        }
        UnixListener::bind(&vsock.uds_path).map_err(|e| {
            Refusal::bad_request(format!(
                "Vsock config error: Cannot create backend for vsock device: {e}"
            ))
        })
    }

    /// `GET /vm/config`, shaped as Firecracker's `FullVmConfiguration`.
    pub fn vm_config_json(&self, logger: &Option<Logger>, metrics: &Option<Metrics>) -> String {
        json!({
            "balloon": self.balloon,
            "drives": self.drives,
            "boot-source": self.boot,
            "cpu-config": null,
            "logger": logger,
            "machine-config": self.machine_config_json(),
            "metrics": metrics,
            "mmds-config": null,
            "network-interfaces": self.nics,
            "vsock": self.vsock,
            "entropy": null,
        })
        .to_string()
    }

    /// `GET /machine-config`: every field, defaults included, as Firecracker answers.
    pub fn machine_config_json(&self) -> serde_json::Value {
        json!({
            "vcpu_count": self.machine.vcpu_count,
            "mem_size_mib": self.machine.mem_size_mib,
            "smt": self.machine.smt.unwrap_or(false),
            "track_dirty_pages": self.machine.track_dirty_pages.unwrap_or(false),
            "huge_pages": self.machine.huge_pages.unwrap_or(HugePages::None),
        })
    }

    /// Guest memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.machine.mem_size_mib) << 20
    }
}

/// Opens the file a logger or metrics request names, without creating it.
pub(super) fn open_existing(path: &Path, what: &str) -> Result<(), Refusal> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(drop)
        .map_err(|e| Refusal::bad_request(format!("{what}: Failed to open target file: {e}")))
}

/// Firecracker's id rules: the path's id, non-empty, letters, digits and `_`, equal to the
/// body's id.
fn check_id(path_id: &str, body_id: &str) -> Result<(), Refusal> {
    if path_id.is_empty() {
        return Err(Refusal::bad_request("The ID cannot be empty."));
    }
    if !path_id.chars().all(|c| c == '_' || c.is_alphanumeric()) {
        return Err(Refusal::bad_request(
            "API Resource IDs can only contain alphanumeric characters and underscores.",
        ));
    }
    if path_id != body_id {
        return Err(Refusal::bad_request(
            "The id from the path does not match the id from the body!",
        ));
    }
    Ok(())
}

fn open_backing_file(drive: &Drive) -> std::io::Result<File> {
    let read_only = drive.is_read_only.unwrap_or(false);
    OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(&drive.path_on_host)
}

fn replace_or_push<T>(items: &mut Vec<T>, item: T, id: impl Fn(&T) -> &String) {
    match items.iter_mut().find(|existing| id(existing) == id(&item)) {
        Some(existing) => *existing = item,
        None => items.push(item),
    }
}
