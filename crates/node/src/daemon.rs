//! `boxcutter-node run`: brings the agent up — storage pool, golden image, firewall,
//! recovery — and serves its API until SIGTERM or SIGINT. Stopping the agent stops no
//! guest: they run on, and the next agent re-adopts them.
//!
//! The agent manages TAP devices and QEMU in its own network namespace; in local mode the
//! host starts it inside the node's namespace.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use boxcutter_auth::ClusterSecret;
use boxcutter_image::pool::{PoolConfig, StoragePool};
use boxcutter_image::validate_image;
use boxcutter_net::{firewall_ensure, FirewallConfig};
use boxcutter_types::guest::VmType;
use boxcutter_types::ByteSize;
use boxcutter_vmm::firecracker::jail::JailerConfig;
use boxcutter_vmm::kvm::{kvm_verdict, ProbeConfig};

use crate::agent::capacity::CapacityConfig;
use crate::agent::context::{blocking, NodeContext, RuntimeConfig};
use crate::agent::Node;

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The node's id.
    pub node_id: String,
    /// Data directory (storage pool, VM directories).
    pub data_dir: PathBuf,
    /// Golden image directory.
    pub image_dir: PathBuf,
    /// Address of the API.
    pub listen: SocketAddr,
    /// The cluster secret's file.
    pub secret_file: PathBuf,
    /// Firewall settings.
    pub firewall: FirewallConfig,
    /// Size of the pool's loop file, if one is made.
    pub pool_size: ByteSize,
    /// Use a loop-mounted XFS pool even where the data directory supports reflink.
    pub force_loop_pool: bool,
    /// RAM kept for the node itself, MiB.
    pub reserved_ram_mib: u64,
    /// Guest RAM per MiB of physical RAM.
    pub ram_overcommit: f64,
    /// vCPUs per physical CPU.
    pub cpu_overcommit: f64,
    /// Where the KVM verdict is cached.
    pub cache_dir: PathBuf,
    /// Upstream DNS resolver for guests (default: the node's resolv.conf).
    pub dns_upstream: Option<SocketAddr>,
    /// Runtime directory for QEMU's sockets (short paths).
    pub run_dir: PathBuf,
    /// The Firecracker binary to look for.
    pub firecracker: PathBuf,
    /// Test-only: run Firecracker VMs with `fake-firecracker` at this path, without KVM.
    pub fake_firecracker: Option<PathBuf>,
    /// Run Firecracker under this jailer, as this uid and gid.
    pub jailer: Option<(PathBuf, u32, u32)>,
}

/// Runs the agent until a termination signal.
pub async fn run(config: DaemonConfig) -> anyhow::Result<()> {
    let secret = ClusterSecret::load_or_create(&config.secret_file)?;
    let (node, listener) = start(&config).await?;
    spawn_guest_services(&node, &config);
    tracing::info!(node = %config.node_id, listen = %config.listen, "node agent ready");
    let app = crate::api::router(node, secret);
    // Progress lines are small writes: without TCP_NODELAY each waits for the client's
    // delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(boxcutter_service::terminated())
        .await?;
    tracing::info!("node agent stopping; guests keep running");
    Ok(())
}

async fn start(config: &DaemonConfig) -> anyhow::Result<(Node, tokio::net::TcpListener)> {
    let image = validate_image(&config.image_dir)?;
    let pool_config = PoolConfig {
        data_dir: config.data_dir.clone(),
        loop_size: config.pool_size,
        force_loop: config.force_loop_pool,
    };
    let pool = blocking(move || StoragePool::open(pool_config), "open storage pool").await?;
    let (rootfs, version) = (image.rootfs.clone(), image.manifest.rootfs_version.clone());
    let (pool, golden) = blocking(
        move || {
            let golden = pool.import_golden(&rootfs, &version)?;
            Ok::<_, boxcutter_image::pool::PoolError>((pool, golden))
        },
        "import golden image",
    )
    .await?;
    let firewall = config.firewall.clone();
    blocking(move || firewall_ensure(None, &firewall), "install firewall").await?;

    let verdict = kvm_verdict(&ProbeConfig {
        qemu: "qemu-system-x86_64".into(),
        kernel: image.vmlinux.clone(),
        initrd: image.initrd.clone(),
        cache_file: config.cache_dir.join("kvm-verdict.json"),
    })
    .await;
    let accel = verdict.accel;
    let (firecracker, unsupported) = firecracker_support(config, &verdict).await;
    let mut capacity =
        CapacityConfig::from_host(config.reserved_ram_mib, pool.usage()?.total_bytes);
    capacity.ram_overcommit = config.ram_overcommit;
    capacity.cpu_overcommit = config.cpu_overcommit;

    let socket_dir = config.run_dir.clone();
    std::fs::create_dir_all(&socket_dir)
        .with_context(|| format!("create {}", socket_dir.display()))?;
    let pool_root = pool.root().to_owned();
    let jail_boot_files = match &config.jailer {
        Some(_) => {
            let (image, base) = (image.clone(), pool_root.join("jail"));
            let stage = move || crate::firecracker::stage_for_jails(&image, &base);
            Some(blocking(stage, "stage kernel and initramfs for jails").await?)
        }
        None => None,
    };
    let ctx = NodeContext {
        node_id: config.node_id.clone(),
        store: crate::store::VmStore::open(pool.root())?,
        pool,
        image,
        golden,
        netns: None,
        runtime: RuntimeConfig {
            qemu: "qemu-system-x86_64".into(),
            accel,
            ready_timeout: Duration::from_secs(120),
            stop_timeout: Duration::from_secs(30),
            guest_dns_on_gateway: true,
            socket_dir,
            firecracker,
            jail_boot_files,
            // Jails go in the pool, so that VM disks can be hard-linked into them.
            jailer: config
                .jailer
                .as_ref()
                .map(|(jailer, uid, gid)| JailerConfig {
                    jailer: jailer.clone(),
                    uid: *uid,
                    gid: *gid,
                    chroot_base: pool_root.join("jail"),
                }),
        },
        unsupported,
    };
    let node = Node::start(ctx, capacity).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    Ok((node, listener))
}

/// The Firecracker binary when this node can run Firecracker VMs; otherwise why not.
async fn firecracker_support(
    config: &DaemonConfig,
    verdict: &boxcutter_vmm::kvm::KvmVerdict,
) -> (Option<PathBuf>, std::collections::BTreeMap<VmType, String>) {
    use boxcutter_vmm::firecracker::capability::{detect, detect_fake};
    let (binary, decision) = match &config.fake_firecracker {
        Some(fake) => {
            tracing::warn!(binary = %fake.display(), "running Firecracker VMs with the test double fake-firecracker: nothing really boots");
            (fake, detect_fake(fake).await)
        }
        None => (
            &config.firecracker,
            detect(&config.firecracker, verdict).await,
        ),
    };
    match decision {
        Ok(version) => {
            tracing::info!(%version, binary = %binary.display(), "firecracker VMs available");
            (Some(binary.clone()), Default::default())
        }
        Err(unavailable) => {
            let reason = unavailable.to_string();
            tracing::info!(%reason, "firecracker VMs unavailable on this node");
            (None, [(VmType::Firecracker, reason)].into_iter().collect())
        }
    }
}

/// The metadata service and the DNS forwarder; a failure to serve either is logged, not
/// fatal, since running VMs and the API do not depend on them.
fn spawn_guest_services(node: &Node, config: &DaemonConfig) {
    let metadata = SocketAddr::from((boxcutter_net::METADATA_ADDR, boxcutter_net::METADATA_PORT));
    let md_node = node.clone();
    tokio::spawn(async move {
        if let Err(error) = crate::metadata::serve(md_node, metadata).await {
            tracing::error!(%error, %metadata, "metadata service stopped");
        }
    });
    let upstream = config.dns_upstream.or_else(|| {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        crate::dns::upstream_from_resolv_conf(&text)
    });
    let Some(upstream) = upstream else {
        tracing::warn!("no upstream DNS resolver: guests get no DNS");
        return;
    };
    let listen = SocketAddr::from(([0, 0, 0, 0], boxcutter_net::DNS_PORT));
    tokio::spawn(async move {
        if let Err(error) = crate::dns::serve(listen, upstream).await {
            tracing::error!(%error, "dns forwarder stopped");
        }
    });
}
