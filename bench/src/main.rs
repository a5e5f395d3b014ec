//! Boxcutter's benchmarks: measure and print figures, on demand (not timed tests).
//!
//! `image`: golden image build, cold (empty cache) and cached.
//! `boot`:  QEMU launch → guest agent ready, launch → SSH banner, and QEMU's peak RSS.
//! `node`:  create latency by phase, ten concurrent creates, agent memory.
//! `local`: `ssh boxcutter new` split by phase, and `list` with 200 VMs (local mode).
//! `disk`:  a 50 GiB VM disk from a 2 GiB golden image: reflink clone against a full copy.
//! `firecracker`: control-plane time of a Firecracker create and live copy, against
//!          `fake-firecracker`, with a QEMU create's control plane as the baseline.
//! Every figure is the median of several runs, with min and max beside it.

mod boot;
mod disk;
mod firecracker;
mod local;
mod node;
mod stats;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use boxcutter_image::{build_image, ImageBuildConfig};
use clap::{Parser, Subcommand};

use crate::stats::Samples;

#[derive(Parser)]
#[command(about = "Boxcutter benchmarks (run as root)")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Image build time: cold (fresh cache) and cached.
    Image {
        /// Cold builds to run (each downloads Debian packages again).
        #[arg(long, default_value_t = 2)]
        cold_runs: usize,
        /// Cached builds to run.
        #[arg(long, default_value_t = 5)]
        cached_runs: usize,
        /// The guest agent to put in the image.
        #[arg(long)]
        guest_agent: Option<PathBuf>,
    },
    /// Boot figures for guests of the given RAM size.
    Boot {
        /// Boots to measure.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Guest RAM in MiB.
        #[arg(long, default_value_t = 512)]
        ram: u32,
        /// Image directory (built if missing).
        #[arg(long, default_value = "/var/cache/boxcutter/bench-image")]
        image: PathBuf,
        /// The guest agent to put in the image.
        #[arg(long)]
        guest_agent: Option<PathBuf>,
    },
    /// Node agent: create latency by phase, concurrent creates, agent memory.
    Node {
        /// Sequential creates to measure phases on.
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Creates issued at once.
        #[arg(long, default_value_t = 10)]
        concurrent: u32,
        /// Image directory (built if missing).
        #[arg(long, default_value = "/var/cache/boxcutter/bench-image")]
        image: PathBuf,
    },
    /// Local mode, as users see it: `ssh boxcutter new` split by phase; `list` with many VMs.
    Local {
        /// A running local mode's state directory.
        #[arg(long, default_value = "/var/lib/boxcutter/local")]
        state_dir: PathBuf,
        /// Creates to measure (each through SSH and through the API).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// VMs registered for the `list` measurement.
        #[arg(long, default_value_t = 200)]
        list_vms: u32,
    },
    /// Firecracker control plane (against fake-firecracker): create and live copy.
    Firecracker {
        /// Creates and copies to measure.
        #[arg(long, default_value_t = 10)]
        runs: u32,
        /// Image directory (built if missing).
        #[arg(long, default_value = "/var/cache/boxcutter/bench-image")]
        image: PathBuf,
        /// Run Firecracker under fake-jailer.
        #[arg(long)]
        jailed: bool,
    },
    /// VM disk creation in a loop-mounted XFS pool: reflink clone against `cp`.
    Disk {
        /// Reflink clones to time (per measured size).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Full copies to time (each writes 2 GiB).
        #[arg(long, default_value_t = 3)]
        cp_runs: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Image {
            cold_runs,
            cached_runs,
            guest_agent,
        } => bench_image(cold_runs, cached_runs, agent_path(guest_agent)?),
        Bench::Boot {
            runs,
            ram,
            image,
            guest_agent,
        } => {
            let config = ImageBuildConfig::from_host(agent_path(guest_agent)?, CACHE.into())?;
            build_image(&config, &image)?;
            boot::bench_boot(runs, ram, &image).await
        }
        Bench::Disk { runs, cp_runs } => disk::bench_disk(runs, cp_runs),
        Bench::Firecracker {
            runs,
            image,
            jailed,
        } => {
            let config = ImageBuildConfig::from_host(agent_path(None)?, CACHE.into())?;
            build_image(&config, &image)?;
            firecracker::bench_firecracker(runs, image, jailed).await
        }
        Bench::Local {
            state_dir,
            runs,
            list_vms,
        } => local::bench_local(state_dir, runs, list_vms).await,
        Bench::Node {
            runs,
            concurrent,
            image,
        } => {
            let config = ImageBuildConfig::from_host(agent_path(None)?, CACHE.into())?;
            build_image(&config, &image)?;
            node::bench_node(runs, concurrent, image).await
        }
    }
}

const CACHE: &str = "/var/cache/boxcutter";

fn bench_image(cold_runs: usize, cached_runs: usize, agent: PathBuf) -> anyhow::Result<()> {
    let mut cold = Samples::new("image build, cold (empty cache)");
    let mut cached = Samples::new("image build, cached");
    for _ in 0..cold_runs {
        let cache = tempfile::tempdir_in("/var/tmp")?;
        let out = cache.path().join("image");
        let config = ImageBuildConfig::from_host(agent.clone(), cache.path().to_owned())?;
        let started = Instant::now();
        build_image(&config, &out)?;
        cold.push(started.elapsed());
        for _ in 0..cached_runs / cold_runs.max(1) + 1 {
            let started = Instant::now();
            let outcome = build_image(&config, &out)?;
            anyhow::ensure!(outcome.cached, "second build was not a cache hit");
            cached.push(started.elapsed());
        }
    }
    cold.print();
    cached.print();
    Ok(())
}

fn agent_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path);
    }
    let exe = std::env::current_exe().context("cannot locate this program")?;
    let path = exe.with_file_name("boxcutter-guest");
    anyhow::ensure!(
        path.is_file(),
        "{} missing: build the workspace",
        path.display()
    );
    Ok(path)
}
