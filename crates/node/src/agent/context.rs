//! What every VM task of a node shares: configuration, the storage pool, the golden image,
//! the VM directories and the node's network namespace, with the operations on them that
//! a VM's create, start and destroy use. Blocking work (programs, ioctls, file copies)
//! runs on tokio's blocking pool, never on the async workers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use boxcutter_image::pool::StoragePool;
use boxcutter_image::ImagePaths;
use boxcutter_net::{tap_name, vm_link_ensure, vm_link_remove, Netns, VmLink};
use boxcutter_types::guest::{GuestNet, VmType};
use boxcutter_types::{VmName, VmSpec};
use boxcutter_vmm::kvm::Accel;
use boxcutter_vmm::qemu::{Disk, DiskFormat, RuntimePaths};
use sha2::{Digest, Sha256};

use super::error::NodeError;
use boxcutter_vmm::firecracker::jail::JailerConfig;

use crate::firecracker::FirecrackerEnv;
use crate::guest::{BootEnv, GuestNetSpec, GuestSpec, RootDisk};
use crate::hypervisor::VmPaths;
use crate::store::VmStore;

/// The root disk's file name in a VM directory.
pub const ROOT_DISK: &str = "root.img";

/// Settings of a VM's runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// KVM or TCG.
    pub accel: Accel,
    /// How long a guest may take to report ready.
    pub ready_timeout: Duration,
    /// How long a guest may take to power off before it is killed.
    pub stop_timeout: Duration,
    /// DNS servers guests are told to use (normally their gateway).
    pub guest_dns_on_gateway: bool,
    /// Short directory for the VMMs' sockets.
    pub socket_dir: PathBuf,
    /// The `firecracker` binary, when this node can run Firecracker VMs.
    pub firecracker: Option<PathBuf>,
    /// Run Firecracker under its jailer.
    pub jailer: Option<JailerConfig>,
    /// The kernel and initramfs staged for jails.
    pub jail_boot_files: Option<crate::firecracker::BootFiles>,
}

/// State shared by all VM tasks of a node.
#[derive(Debug)]
pub struct NodeContext {
    /// The node's id.
    pub node_id: String,
    /// VM directories.
    pub store: VmStore,
    /// The storage pool.
    pub pool: StoragePool,
    /// The golden image (kernel, initramfs).
    pub image: ImagePaths,
    /// The golden rootfs inside the pool, the source of every clone.
    pub golden: PathBuf,
    /// The namespace TAPs and QEMU live in (`None`: the agent's own).
    pub netns: Option<Netns>,
    /// Runtime settings.
    pub runtime: RuntimeConfig,
    /// VM types this node cannot run, with the reason (reported in health, given in
    /// refusals).
    pub unsupported: std::collections::BTreeMap<boxcutter_types::guest::VmType, String>,
}

impl NodeContext {
    /// The VM's directory.
    pub fn vm_dir(&self, name: &VmName) -> PathBuf {
        self.store.dir(name)
    }

    /// The VM's root disk.
    pub fn root_disk(&self, name: &VmName) -> PathBuf {
        self.vm_dir(name).join(ROOT_DISK)
    }

    /// The VM's runtime files (sockets in a short per-VM directory).
    pub fn runtime_paths(&self, name: &VmName) -> RuntimePaths {
        RuntimePaths::with_socket_dir(&self.vm_dir(name), &self.socket_dir(name))
    }

    /// Where to find the VM's process, by its type.
    pub fn vm_paths(&self, name: &VmName, vm_type: VmType) -> VmPaths {
        match vm_type {
            VmType::Qemu => VmPaths::Qemu(self.runtime_paths(name)),
            VmType::Firecracker => {
                let binary = self.runtime.firecracker.as_deref();
                let jailer = self.runtime.jailer.as_ref().zip(binary);
                VmPaths::Firecracker(crate::firecracker::paths(
                    name,
                    &self.vm_dir(name),
                    &self.socket_dir(name),
                    jailer,
                ))
            }
        }
    }

    /// How to run the VM under Firecracker; `None` when this node cannot.
    pub fn firecracker_env(&self, name: &VmName) -> Option<FirecrackerEnv> {
        Some(FirecrackerEnv {
            binary: self.runtime.firecracker.clone()?,
            jailer: self.runtime.jailer.clone(),
            boot_files: self.runtime.jail_boot_files.clone(),
            image_dir: self
                .image
                .vmlinux
                .parent()
                .map(Path::to_owned)
                .unwrap_or_default(),
            vm_dir: self.vm_dir(name),
            socket_dir: self.socket_dir(name),
            root_disk: self.root_disk(name),
            netns: self.netns.as_ref().map(Netns::path),
            ready_timeout: self.runtime.ready_timeout,
        })
    }

    fn socket_dir(&self, name: &VmName) -> PathBuf {
        let hash = Sha256::digest(name.as_str().as_bytes());
        self.runtime.socket_dir.join(hex::encode(&hash[..6]))
    }

    /// How to boot the VM.
    pub fn boot_env(&self, name: &VmName) -> BootEnv {
        BootEnv {
            image_dir: self
                .image
                .vmlinux
                .parent()
                .map(Path::to_owned)
                .unwrap_or_default(),
            vm_dir: self.vm_dir(name),
            root_disk: RootDisk::Prepared(Disk {
                path: self.root_disk(name),
                format: DiskFormat::Raw,
            }),
            socket_dir: Some(self.socket_dir(name)),
            qemu: self.runtime.qemu.clone(),
            accel: self.runtime.accel,
            tsc_khz: boxcutter_vmm::tsc::host_tsc_khz(),
            netns: self.netns.as_ref().map(Netns::path),
            ready_timeout: self.runtime.ready_timeout,
        }
    }

    /// What the guest is told about itself.
    pub fn guest_spec(&self, spec: &VmSpec) -> GuestSpec {
        let subnet = spec.subnet;
        GuestSpec {
            name: spec.name.clone(),
            vcpus: spec.vcpus,
            memory_mib: spec.ram_mib,
            net: Some(GuestNetSpec {
                tap: tap_name(&spec.name).to_string(),
                guest: GuestNet {
                    address: subnet.guest(),
                    prefix_len: 30,
                    gateway: subnet.gateway(),
                    dns: if self.runtime.guest_dns_on_gateway {
                        vec![subnet.gateway()]
                    } else {
                        vec![]
                    },
                },
            }),
            authorized_keys: spec.authorized_keys.clone(),
        }
    }

    fn link(spec: &VmSpec) -> VmLink {
        VmLink {
            tap: tap_name(&spec.name),
            subnet: spec.subnet,
            mode: spec.mode,
        }
    }

    /// Creates the VM's TAP, addresses and firewall entries (idempotent).
    pub async fn link_up(self: &Arc<Self>, spec: &VmSpec) -> Result<(), NodeError> {
        let (ctx, link) = (self.clone(), Self::link(spec));
        blocking(
            move || vm_link_ensure(ctx.netns.as_ref(), &link),
            "set up network",
        )
        .await
    }

    /// Removes the VM's TAP and firewall entries (idempotent).
    pub async fn link_down(self: &Arc<Self>, spec: &VmSpec) -> Result<(), NodeError> {
        let (ctx, link) = (self.clone(), Self::link(spec));
        blocking(
            move || vm_link_remove(ctx.netns.as_ref(), &link),
            "remove network",
        )
        .await
    }

    /// Clones the golden image as the VM's root disk, grown to the requested size.
    pub async fn clone_golden(self: &Arc<Self>, spec: &VmSpec) -> Result<(), NodeError> {
        let (ctx, dest, size) = (self.clone(), self.root_disk(&spec.name), spec.disk);
        blocking(
            move || ctx.pool.clone_disk(&ctx.golden, &dest, size),
            "clone disk",
        )
        .await
    }

    /// Clones a file inside the pool (a VM's disk, for `cp`).
    pub async fn clone_file(
        self: &Arc<Self>,
        src: PathBuf,
        dest: PathBuf,
    ) -> Result<(), NodeError> {
        let ctx = self.clone();
        blocking(move || ctx.pool.clone_file(&src, &dest), "copy disk").await
    }

    /// Creates the VM's directories.
    pub async fn create_dirs(self: &Arc<Self>, name: &VmName) -> Result<(), NodeError> {
        let (ctx, name) = (self.clone(), name.clone());
        blocking(
            move || {
                ctx.store
                    .create_dir(&name)
                    .map_err(|e| std::io::Error::other(crate::agent::error::chain(&e)))?;
                std::fs::create_dir_all(ctx.socket_dir(&name))
            },
            "create VM directory",
        )
        .await
    }

    /// Removes the VM's directories and everything in them.
    pub async fn remove_dirs(self: &Arc<Self>, name: &VmName) -> Result<(), NodeError> {
        let (ctx, name) = (self.clone(), name.clone());
        blocking(
            move || {
                crate::store::remove_dir(&ctx.socket_dir(&name))
                    .and_then(|()| ctx.store.remove(&name))
                    .map_err(|e| std::io::Error::other(crate::agent::error::chain(&e)))
            },
            "remove VM directory",
        )
        .await
    }
}

/// Runs blocking `work` on the blocking pool; its error becomes an internal error with
/// `context`.
pub async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
    context: &str,
) -> Result<T, NodeError>
where
    T: Send + 'static,
    E: std::error::Error + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(NodeError::internal(context, &e)),
        Err(join) => Err(NodeError::internal(context, &join)),
    }
}
