//! Firecracker VMs on a real node agent with `fake-firecracker` in place of Firecracker and
//! KVM: the fake answers every API call at once and reports the guest ready at once, so
//! what is measured is the control plane alone, everything a create or a live copy costs
//! except the VMM's and the guest's own work (disk clone, network, host key and config
//! drive, spawning the process, the API calls, the vsock ready report, records).
//!
//! Baseline in the same run: the control plane of a QEMU create on the same agent, from
//! the request until QEMU runs (its `boot` phase starts), which also excludes the guest.
//! `--jailed` runs Firecracker under `fake-jailer`, to see what the jail costs.

use std::path::PathBuf;
use std::time::Duration;

use boxcutter_types::api::ProgressLine;

use crate::node::{phase_times, BenchNode};
use crate::stats::Samples;

/// Runs the Firecracker control-plane benchmark; with `jailed`, under `fake-jailer`.
pub async fn bench_firecracker(runs: u32, image: PathBuf, jailed: bool) -> anyhow::Result<()> {
    let fake = std::env::current_exe()?.with_file_name("fake-firecracker");
    let jailer = fake.with_file_name("fake-jailer");
    for binary in [&fake, &jailer] {
        anyhow::ensure!(
            binary.is_file(),
            "{} missing: cargo build --release -p boxcutter-vmm --features fake-firecracker",
            binary.display()
        );
    }
    let mut args = vec!["--fake-firecracker".to_string(), fake.display().to_string()];
    if jailed {
        args.extend(["--jailer".into(), jailer.display().to_string()]);
        args.extend(["--jailer-uid", "64123", "--jailer-gid", "64123"].map(String::from));
    }
    let node = BenchNode::start(&image, &args).await?;

    let names = ["disk", "network", "vmm", "ready"];
    let mut phases: Vec<Samples> = names
        .iter()
        .map(|p| Samples::new(&format!("firecracker create phase: {p}")))
        .collect();
    let mut create = Samples::new("firecracker create, request → running");
    for n in 0..runs {
        let lines = node.create_typed(n, "firecracker", 512).await?;
        add_phases(&lines, &names, &mut phases);
        create.push(end(&lines));
        node.destroy(n).await?;
    }

    // A live copy: pause, snapshot, reflink, resume the source; restore and refresh the copy.
    node.create_typed(500, "firecracker", 512).await?;
    let mut copy = Samples::new("firecracker live copy, request → running");
    for n in 0..runs {
        let lines = node.copy(500, 600 + n).await?;
        copy.push(end(&lines));
        node.destroy(600 + n).await?;
    }
    node.destroy(500).await?;

    let mut qemu = Samples::new("qemu create, request → qemu running");
    for n in 0..runs.min(3) {
        let lines = node.create_typed(700 + n, "qemu", 384).await?;
        let launched = phase_times(&lines)
            .into_iter()
            .find(|(phase, _)| phase == "boot")
            .map(|(_, at)| at)
            .ok_or_else(|| anyhow::anyhow!("no boot phase in {lines:?}"))?;
        qemu.push(launched);
        node.destroy(700 + n).await?;
    }

    for s in phases.iter().chain([&create, &copy, &qemu]) {
        s.print();
    }
    if let (Some(fc), Some(q)) = (create.median(), qemu.median()) {
        println!(
            "{:<44} {:>9.2}× (firecracker / qemu)",
            "control plane, firecracker vs qemu",
            fc / q
        );
    }
    Ok(())
}

fn end(lines: &[(Duration, ProgressLine)]) -> Duration {
    lines.last().map(|(at, _)| *at).unwrap_or_default()
}

/// Adds each phase's duration (until the next line) to its samples.
fn add_phases(lines: &[(Duration, ProgressLine)], names: &[&str], phases: &mut [Samples]) {
    let times = phase_times(lines);
    let end = end(lines);
    for (i, (phase, at)) in times.iter().enumerate() {
        let next = times.get(i + 1).map_or(end, |(_, t)| *t);
        if let Some(k) = names.iter().position(|p| p == phase) {
            phases[k].push(next.saturating_sub(*at));
        }
    }
}
