//! `boxcutter-node`: the node agent's binary. Today it builds guest images and boots or
//! powers off a single guest; the long-running agent and its API come next.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use boxcutter_image::{build_image, validate_image, ImageBuildConfig};
use boxcutter_net::{FirewallConfig, IfName, Ipv4Cidr};
use boxcutter_node::daemon;
use boxcutter_node::guest::{boot_guest, BootEnv, GuestNetSpec, GuestSpec, RootDisk};
use boxcutter_types::guest::GuestNet;
use boxcutter_types::{ByteSize, VmName};
use boxcutter_vmm::kvm::{kvm_verdict, ProbeConfig};
use boxcutter_vmm::qemu::{QemuVm, RuntimePaths};
use clap::{Args, Parser, Subcommand};

/// Default cache of images, base root filesystems and probe verdicts.
const CACHE_DIR: &str = "/var/cache/boxcutter";

#[derive(Parser)]
#[command(name = "boxcutter-node", version, about = "Boxcutter node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent: serve its API and own the VMs in its data directory.
    Run(RunArgs),
    /// Print a token for this node's API, signed with the cluster secret.
    Token {
        /// Cluster secret file.
        #[arg(long, default_value = "/var/lib/boxcutter/secrets/cluster.key")]
        secret_file: PathBuf,
        /// Seconds the token stays valid.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Guest images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// A single guest, outside the agent's control (for bring-up and benchmarks).
    #[command(subcommand)]
    Guest(GuestCommand),
}

#[derive(Args)]
struct RunArgs {
    /// This node's id.
    #[arg(long, default_value = "boxcutter-node-1")]
    id: String,
    /// Data directory (storage pool and VM directories).
    #[arg(long, default_value = "/var/lib/boxcutter/node")]
    data_dir: PathBuf,
    /// Golden image directory (see `image build`).
    #[arg(long)]
    image: PathBuf,
    /// API address.
    #[arg(long, default_value = "0.0.0.0:8800")]
    listen: std::net::SocketAddr,
    /// Cluster secret file (created if missing).
    #[arg(long, default_value = "/var/lib/boxcutter/secrets/cluster.key")]
    secret_file: PathBuf,
    /// Cluster-wide guest address range(s); guests never reach them.
    #[arg(long = "guest-range", default_value = "10.240.0.0/12", value_parser = parse_cidr)]
    guest_ranges: Vec<Ipv4Cidr>,
    /// Interface to the internet.
    #[arg(long, default_value = "eth0")]
    uplink: String,
    /// Egress proxy port on guests' gateways (paranoid mode).
    #[arg(long, default_value_t = 3128)]
    proxy_port: u16,
    /// Networks guests never reach (management networks).
    #[arg(long = "block", value_parser = parse_cidr)]
    blocked: Vec<Ipv4Cidr>,
    /// Size of the storage pool's loop file, when one is needed.
    #[arg(long, default_value = "200G")]
    pool_size: ByteSize,
    /// Use a loop-mounted XFS pool even where reflink works.
    #[arg(long)]
    force_loop_pool: bool,
    /// RAM kept for the node itself, MiB.
    #[arg(long, default_value_t = 1024)]
    reserved_ram: u64,
    /// Guest RAM per MiB of physical RAM.
    #[arg(long, default_value_t = 1.0)]
    ram_overcommit: f64,
    /// vCPUs per physical CPU.
    #[arg(long, default_value_t = 4.0)]
    cpu_overcommit: f64,
    /// Upstream DNS server for guests (default: from /etc/resolv.conf).
    #[arg(long)]
    dns_upstream: Option<std::net::SocketAddr>,
    /// Directory for QEMU's sockets (default: /run/boxcutter/<id>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// The Firecracker binary (a name is looked up on PATH).
    #[arg(long, default_value = "firecracker")]
    firecracker: PathBuf,
    /// For tests on machines without KVM: run Firecracker VMs with the test double
    /// `fake-firecracker` at this path (nothing boots; it plays the guest agent's part).
    /// Refused unless the binary is that fake.
    #[arg(long, hide = true)]
    fake_firecracker: Option<PathBuf>,
    /// Run Firecracker under its jailer (a chroot per VM, as an unprivileged uid/gid);
    /// needs --jailer-uid and --jailer-gid.
    #[arg(long, requires_all = ["jailer_uid", "jailer_gid"])]
    jailer: Option<PathBuf>,
    /// The uid jailed Firecrackers run as.
    #[arg(long, requires = "jailer")]
    jailer_uid: Option<u32>,
    /// The gid jailed Firecrackers run as.
    #[arg(long, requires = "jailer")]
    jailer_gid: Option<u32>,
}

fn parse_cidr(text: &str) -> Result<Ipv4Cidr, String> {
    let (addr, prefix) = text.split_once('/').ok_or("expected ADDRESS/PREFIX")?;
    let address = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
    let prefix_len: u8 = prefix
        .parse()
        .map_err(|_| format!("bad prefix {prefix:?}"))?;
    if prefix_len > 32 {
        return Err(format!("bad prefix {prefix_len}"));
    }
    Ok(Ipv4Cidr {
        address,
        prefix_len,
    })
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build (or reuse) a guest image from this machine's Debian kernel and packages.
    Build {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Cache directory.
        #[arg(long, default_value = CACHE_DIR)]
        cache_dir: PathBuf,
        /// The guest agent binary (default: boxcutter-guest next to this program).
        #[arg(long)]
        guest_agent: Option<PathBuf>,
    },
    /// Check an image directory.
    Check {
        /// The image directory.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum GuestCommand {
    /// Boot a guest and wait until it is ready; prints its details as JSON.
    Boot(BootArgs),
    /// Whether the guest of a VM directory is running (exit status 0) and its pid.
    Status {
        /// The VM directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Power a guest off through QMP (ACPI power button), killing it after a timeout.
    Poweroff {
        /// The VM directory.
        #[arg(long)]
        dir: PathBuf,
        /// Seconds to wait for a clean power-off.
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
}

#[derive(Args)]
struct BootArgs {
    /// Image directory.
    #[arg(long)]
    image: PathBuf,
    /// VM directory (disk, sockets, console log).
    #[arg(long)]
    dir: PathBuf,
    /// VM name (hostname).
    #[arg(long)]
    name: VmName,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    vcpus: u32,
    /// RAM in MiB.
    #[arg(long, default_value_t = 2048)]
    ram: u32,
    /// Disk size.
    #[arg(long, default_value = "50G")]
    disk: ByteSize,
    /// File of public keys allowed to log in as `dev`.
    #[arg(long)]
    authorized_keys: PathBuf,
    /// TAP device for the guest's NIC.
    #[arg(long, requires = "ip")]
    tap: Option<String>,
    /// Guest address with prefix, e.g. 172.30.0.2/30.
    #[arg(long, requires_all = ["tap", "gateway"])]
    ip: Option<String>,
    /// Guest default gateway.
    #[arg(long)]
    gateway: Option<std::net::Ipv4Addr>,
    /// DNS servers.
    #[arg(long)]
    dns: Vec<std::net::Ipv4Addr>,
    /// Network namespace (path) to run QEMU in.
    #[arg(long)]
    netns: Option<PathBuf>,
    /// Seconds the guest may take to report ready.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => daemon::run(daemon_config(args)?).await,
        Command::Token { secret_file, ttl } => {
            let secret = boxcutter_auth::ClusterSecret::load_or_create(&secret_file)?;
            println!("{}", secret.issue(boxcutter_node::api::AUDIENCE, ttl));
            Ok(())
        }
        Command::Image(ImageCommand::Build {
            out,
            cache_dir,
            guest_agent,
        }) => image_build(out, cache_dir, guest_agent),
        Command::Image(ImageCommand::Check { dir }) => {
            let image = validate_image(&dir)?;
            println!("{}", serde_json::to_string_pretty(&image.manifest)?);
            Ok(())
        }
        Command::Guest(GuestCommand::Boot(args)) => guest_boot(args).await,
        Command::Guest(GuestCommand::Status { dir }) => {
            let vm = QemuVm::adopt(&RuntimePaths::in_dir(&dir))?;
            println!(
                "{}",
                serde_json::json!({ "running": true, "pid": vm.pid() })
            );
            Ok(())
        }
        Command::Guest(GuestCommand::Poweroff { dir, timeout }) => {
            let vm = QemuVm::adopt(&RuntimePaths::in_dir(&dir))?;
            vm.shutdown(Duration::from_secs(timeout)).await?;
            Ok(())
        }
    }
}

fn daemon_config(args: RunArgs) -> anyhow::Result<daemon::DaemonConfig> {
    Ok(daemon::DaemonConfig {
        data_dir: args.data_dir,
        image_dir: args.image,
        listen: args.listen,
        secret_file: args.secret_file,
        firewall: FirewallConfig {
            guest_ranges: args.guest_ranges,
            uplink: IfName::new(args.uplink)?,
            proxy_port: args.proxy_port,
            blocked: args.blocked,
        },
        pool_size: args.pool_size,
        force_loop_pool: args.force_loop_pool,
        reserved_ram_mib: args.reserved_ram,
        ram_overcommit: args.ram_overcommit,
        cpu_overcommit: args.cpu_overcommit,
        cache_dir: CACHE_DIR.into(),
        dns_upstream: args.dns_upstream,
        firecracker: args.firecracker,
        fake_firecracker: args.fake_firecracker,
        jailer: args
            .jailer
            .zip(args.jailer_uid)
            .zip(args.jailer_gid)
            .map(|((jailer, uid), gid)| (jailer, uid, gid)),
        run_dir: args
            .run_dir
            .unwrap_or_else(|| Path::new("/run/boxcutter").join(&args.id)),
        node_id: args.id,
    })
}

fn image_build(out: PathBuf, cache_dir: PathBuf, agent: Option<PathBuf>) -> anyhow::Result<()> {
    let agent = match agent {
        Some(path) => path,
        None => sibling_program("boxcutter-guest")?,
    };
    let config = ImageBuildConfig::from_host(agent, cache_dir)?;
    let outcome = build_image(&config, &out)?;
    let m = &outcome.manifest;
    let how = if outcome.cached { "cached" } else { "built" };
    println!(
        "{how} image {} (kernel {}, rootfs {})",
        out.display(),
        m.kernel_version,
        &m.rootfs_version[..12]
    );
    Ok(())
}

async fn guest_boot(args: BootArgs) -> anyhow::Result<()> {
    let image = validate_image(&args.image)?;
    let verdict = kvm_verdict(&ProbeConfig {
        qemu: "qemu-system-x86_64".into(),
        kernel: image.vmlinux.clone(),
        initrd: image.initrd.clone(),
        cache_file: Path::new(CACHE_DIR).join("kvm-verdict.json"),
    })
    .await;
    if let Some(reason) = &verdict.reason {
        eprintln!("warning: KVM unusable ({reason}); using software emulation (TCG)");
    }
    let keys = std::fs::read_to_string(&args.authorized_keys)
        .with_context(|| format!("cannot read {}", args.authorized_keys.display()))?;
    let spec = GuestSpec {
        name: args.name,
        vcpus: args.vcpus,
        memory_mib: args.ram,
        net: guest_net(args.tap, args.ip.as_deref(), args.gateway, args.dns)?,
        authorized_keys: keys
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect(),
    };
    let env = BootEnv {
        image_dir: args.image,
        vm_dir: args.dir,
        root_disk: RootDisk::Overlay { size: args.disk },
        socket_dir: None,
        qemu: "qemu-system-x86_64".into(),
        accel: verdict.accel,
        tsc_khz: boxcutter_vmm::tsc::host_tsc_khz(),
        netns: args.netns,
        ready_timeout: Duration::from_secs(args.timeout),
    };
    let booted = boot_guest(&spec, &env).await?;
    if let Some(net) = &spec.net {
        // The host key is known before first contact: nobody has to trust on first use.
        let known_hosts = env.vm_dir.join("known_hosts");
        let line = format!("{} {}\n", net.guest.address, booted.host_public_key);
        std::fs::write(&known_hosts, line)
            .with_context(|| format!("cannot write {}", known_hosts.display()))?;
    }
    let report = serde_json::json!({
        "name": spec.name,
        "pid": booted.vm.pid(),
        "accel": verdict.accel,
        "host_key": booted.host_public_key,
        "ready_ms": booted.timings.ready.as_millis() as u64,
    });
    println!("{report}");
    Ok(())
}

fn guest_net(
    tap: Option<String>,
    ip: Option<&str>,
    gateway: Option<std::net::Ipv4Addr>,
    dns: Vec<std::net::Ipv4Addr>,
) -> anyhow::Result<Option<GuestNetSpec>> {
    let (Some(tap), Some(ip), Some(gateway)) = (tap, ip, gateway) else {
        return Ok(None);
    };
    let (address, prefix) = ip
        .split_once('/')
        .context("--ip needs a prefix, e.g. 172.30.0.2/30")?;
    let guest = GuestNet {
        address: address.parse().context("--ip address")?,
        prefix_len: prefix.parse().context("--ip prefix")?,
        gateway,
        dns,
    };
    Ok(Some(GuestNetSpec { tap, guest }))
}

fn sibling_program(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate this program")?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(
        path.is_file(),
        "{} not found (build it, or pass --guest-agent)",
        path.display()
    );
    Ok(path)
}
