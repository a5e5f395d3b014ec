//! Boot figures: launch → agent ready, launch → SSH banner, QEMU peak RSS.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use boxcutter_net::{bridge_ensure, tap_ensure, IfName, Ipv4Cidr, Netns, NetnsName};
use boxcutter_node::guest::{boot_guest, BootEnv, GuestNetSpec, GuestSpec, RootDisk};
use boxcutter_types::guest::GuestNet;
use boxcutter_types::{ByteSize, VmName};
use boxcutter_vmm::kvm::Accel;

use crate::stats::Samples;

/// Boots `runs` guests one after the other and prints the figures.
pub async fn bench_boot(runs: usize, ram: u32, image: &Path) -> anyhow::Result<()> {
    let netns = Netns::ensure(NetnsName::new(format!("bc-bench-{}", std::process::id()))?)?;
    let result = run_boots(&netns, runs, ram, image).await;
    netns.delete()?;
    result
}

async fn run_boots(netns: &Netns, runs: usize, ram: u32, image: &Path) -> anyhow::Result<()> {
    let (bridge, tap) = (IfName::new("br0")?, IfName::new("tap0")?);
    let gateway = Ipv4Cidr {
        address: "10.78.0.1".parse()?,
        prefix_len: 24,
    };
    bridge_ensure(Some(netns), &bridge, Some(gateway))?;
    tap_ensure(Some(netns), &tap, Some(&bridge))?;
    let mut ready = Samples::new("launch → agent ready");
    let mut banner = Samples::new("launch → SSH banner");
    let mut guest = Samples::new("guest uptime at ready (kernel + agent)");
    let mut rss = Samples::with_unit(&format!("QEMU peak RSS, {ram} MiB guest"), "MiB");
    anyhow::ensure!(runs <= 200, "at most 200 runs");
    for run in 0..runs {
        let dir = tempfile::tempdir_in("/var/tmp")?;
        let spec = GuestSpec {
            name: VmName::new(format!("bench-{run}"))?,
            vcpus: 2,
            memory_mib: ram,
            net: Some(GuestNetSpec {
                tap: tap.to_string(),
                guest: GuestNet {
                    // A fresh address per run: the bridge's neighbour cache would otherwise
                    // send to the previous guest's MAC until the entry expires.
                    address: std::net::Ipv4Addr::new(10, 78, 0, 2 + run as u8),
                    prefix_len: 24,
                    gateway: gateway.address,
                    dns: vec![],
                },
            }),
            authorized_keys: vec![],
        };
        let env = BootEnv {
            image_dir: image.to_owned(),
            vm_dir: dir.path().join("vm"),
            root_disk: RootDisk::Overlay {
                size: ByteSize(10 << 30),
            },
            socket_dir: None,
            qemu: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            tsc_khz: boxcutter_vmm::tsc::host_tsc_khz(),
            netns: Some(netns.path()),
            ready_timeout: Duration::from_secs(60),
        };
        let started = Instant::now();
        let booted = boot_guest(&spec, &env).await?;
        ready.push(booted.timings.launch + booted.timings.ready);
        guest.push(booted.timings.guest_uptime);
        let ssh_at = wait_ssh_banner(
            &netns.path(),
            SocketAddr::from(([10, 78, 0, 2 + run as u8], 22)),
        )?;
        banner.push(ssh_at.duration_since(started) - booted.timings.disk - booted.timings.config);
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push_value(peak_rss_mib(booted.vm.pid())?);
        booted.vm.kill().await;
    }
    ready.print();
    banner.print();
    guest.print();
    rss.print();
    Ok(())
}

/// Polls the guest's SSH port from inside the namespace until it sends its banner.
fn wait_ssh_banner(netns: &Path, addr: SocketAddr) -> anyhow::Result<Instant> {
    let file = std::fs::File::open(netns)?;
    let fd = file.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns only changes this short-lived thread's network namespace.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                anyhow::bail!("setns: {}", std::io::Error::last_os_error());
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                {
                    let mut buf = [0u8; 8];
                    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
                    if conn.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-2.0") {
                        return Ok(Instant::now());
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            anyhow::bail!("no SSH banner from {addr}")
        })
        .join()
        .map_err(|_| anyhow::anyhow!("banner thread panicked"))?
    })
}

fn peak_rss_mib(pid: i32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")?;
    Ok(kib / 1024.0)
}
