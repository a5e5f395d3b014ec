//! Node agent figures: create latency by phase, ten concurrent creates, and the agent's
//! memory with 0 and 10 VMs. Runs the real `boxcutter-node run` in a namespace of its own.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use boxcutter_auth::ClusterSecret;
use boxcutter_net::{Netns, NetnsName};
use boxcutter_types::api::ProgressLine;

use crate::stats::Samples;

/// The agent under measurement and everything it needs; torn down on drop.
pub(crate) struct BenchNode {
    ns: Netns,
    dir: tempfile::TempDir,
    agent: Child,
    secret: ClusterSecret,
    client: reqwest::Client,
}

const NODE_IP: &str = "10.250.0.2";

impl BenchNode {
    pub(crate) async fn start(image: &Path, agent_args: &[String]) -> anyhow::Result<Self> {
        let ns = Netns::ensure(NetnsName::new(format!("bc-bnode-{}", std::process::id()))?)?;
        let n = ns.name().as_str().to_string();
        for args in [
            vec![
                "link", "add", "bcbn0", "type", "veth", "peer", "name", "eth0", "netns", &n,
            ],
            vec!["addr", "add", "10.250.0.1/30", "dev", "bcbn0"],
            vec!["link", "set", "bcbn0", "up"],
            vec!["-n", &n, "addr", "add", "10.250.0.2/30", "dev", "eth0"],
            vec!["-n", &n, "link", "set", "eth0", "up"],
        ] {
            let status = Command::new("ip").args(&args).status()?;
            anyhow::ensure!(status.success(), "ip {args:?} failed");
        }
        let dir = tempfile::Builder::new()
            .prefix("bench-node-")
            .tempdir_in("/var/tmp")?;
        let secret = ClusterSecret::load_or_create(&dir.path().join("secret"))?;
        let agent = spawn_agent(&ns, dir.path(), image, agent_args)?;
        let node = Self {
            ns,
            dir,
            agent,
            secret,
            client: reqwest::Client::new(),
        };
        node.wait_healthy().await?;
        Ok(node)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{NODE_IP}:8800{path}")
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let r = self
                .client
                .get(self.url("/v1/health"))
                .bearer_auth(self.token())
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "agent not healthy; see {}",
            self.dir.path().join("agent.log").display()
        )
    }

    fn token(&self) -> String {
        self.secret.issue("node", 3600)
    }

    /// Creates QEMU VM number `n` and returns its progress lines with their arrival times.
    async fn create(&self, n: u32) -> anyhow::Result<Vec<(Duration, ProgressLine)>> {
        self.create_typed(n, "qemu", 384).await
    }

    /// Creates VM number `n` of `vm_type` and returns its progress lines with their
    /// arrival times.
    pub(crate) async fn create_typed(
        &self,
        n: u32,
        vm_type: &str,
        ram_mib: u32,
    ) -> anyhow::Result<Vec<(Duration, ProgressLine)>> {
        let body = serde_json::json!({
            "name": format!("bench-{n}"), "type": vm_type, "vcpus": 1, "ram_mib": ram_mib,
            "disk": "50G", "subnet": subnet(n).to_string(),
        });
        self.stream(n, "/v1/vms", &body).await
    }

    /// Copies VM number `from` to VM number `n`; progress lines as for a create.
    pub(crate) async fn copy(
        &self,
        from: u32,
        n: u32,
    ) -> anyhow::Result<Vec<(Duration, ProgressLine)>> {
        let body =
            serde_json::json!({ "name": format!("bench-{n}"), "subnet": subnet(n).to_string() });
        self.stream(n, &format!("/v1/vms/bench-{from}/copy"), &body)
            .await
    }

    async fn stream(
        &self,
        n: u32,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<Vec<(Duration, ProgressLine)>> {
        let started = Instant::now();
        let response = self
            .client
            .post(self.url(path))
            .bearer_auth(self.token())
            .json(body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "create: {}",
            response.text().await?
        );
        let mut lines = Vec::new();
        let mut response = response;
        let mut pending = String::new();
        while let Some(chunk) = response.chunk().await? {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some((line, rest)) = pending.split_once('\n') {
                lines.push((started.elapsed(), serde_json::from_str(line)?));
                pending = rest.to_string();
            }
        }
        match lines.last() {
            Some((_, ProgressLine::Done { .. })) => Ok(lines),
            other => anyhow::bail!("create of bench-{n} failed: {other:?}"),
        }
    }

    pub(crate) async fn destroy(&self, n: u32) -> anyhow::Result<()> {
        let url = self.url(&format!("/v1/vms/bench-{n}"));
        let response = self
            .client
            .delete(url)
            .bearer_auth(self.token())
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "destroy bench-{n}");
        Ok(())
    }

    fn rss_mib(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.agent.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")?;
        Ok(kib / 1024.0)
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        let needle = self.dir.path().to_string_lossy().into_owned();
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &needle])
            .status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path().join("data/pool"))
            .status();
        let _ = self.ns.delete();
        // Deleting the namespace removed the veth pair with it.
    }
}

/// The /30 of VM number `n`.
fn subnet(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 251, 0, 0)) + 4 * n)
}

fn spawn_agent(
    ns: &Netns,
    dir: &Path,
    image: &Path,
    agent_args: &[String],
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?.with_file_name("boxcutter-node");
    let log = std::fs::File::create(dir.join("agent.log"))?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "run",
        "--id",
        "bench",
        "--listen",
        "0.0.0.0:8800",
        "--uplink",
        "eth0",
    ])
    .args([
        "--guest-range",
        "10.251.0.0/16",
        "--force-loop-pool",
        "--pool-size",
        "300G",
    ])
    // Ten 1-vCPU guests on a 2-core machine need more than the default 4× overcommit.
    .args(["--reserved-ram", "512", "--cpu-overcommit", "8"])
    .arg("--data-dir")
    .arg(dir.join("data"))
    .arg("--run-dir")
    .arg(dir.join("run"))
    .arg("--secret-file")
    .arg(dir.join("secret"))
    .arg("--image")
    .arg(image)
    .args(agent_args)
    .stdout(Stdio::from(log.try_clone()?))
    .stderr(Stdio::from(log));
    let ns_path = ns.path();
    let _ns = boxcutter_sys::proc::place_child(&mut cmd, Some(&ns_path), false)?;
    Ok(cmd.spawn()?)
}

/// When each phase began, from a create's progress lines.
pub(crate) fn phase_times(lines: &[(Duration, ProgressLine)]) -> Vec<(String, Duration)> {
    lines
        .iter()
        .filter_map(|(at, line)| match line {
            ProgressLine::Progress {
                phase, elapsed_ms, ..
            } => Some((phase.clone(), Duration::from_millis(*elapsed_ms).min(*at))),
            _ => None,
        })
        .collect()
}

/// Runs the node benchmarks.
pub async fn bench_node(runs: u32, concurrent: u32, image: PathBuf) -> anyhow::Result<()> {
    let node = BenchNode::start(&image, &[]).await?;
    let mut rss0 = Samples::with_unit("agent RSS, 0 VMs", "MiB");
    rss0.push_value(node.rss_mib()?);

    // Each phase lasts until the next line: `boot` ends at the guest's ready report.
    let names = ["disk", "network", "vmm", "boot", "ready"];
    let mut phases: Vec<Samples> = names
        .iter()
        .map(|p| Samples::new(&format!("create phase: {p}")))
        .collect();
    let mut total = Samples::new("create, 50G disk, request → running");
    for n in 0..runs {
        let lines = node.create(n).await?;
        let times = phase_times(&lines);
        let end = lines.last().map(|(at, _)| *at).unwrap_or_default();
        for (i, (phase, at)) in times.iter().enumerate() {
            let next = times.get(i + 1).map_or(end, |(_, t)| *t);
            if let Some(k) = names.iter().position(|p| p == phase) {
                phases[k].push(next.saturating_sub(*at));
            }
        }
        total.push(end);
        node.destroy(n).await?;
    }

    let started = Instant::now();
    let creates = (100..100 + concurrent).map(|n| node.create(n));
    let results = futures_util::future::join_all(creates).await;
    let wall = started.elapsed();
    let mut each = Samples::new(&format!("{concurrent} concurrent creates, per VM"));
    for result in results {
        let lines = result?;
        each.push(lines.last().map(|(at, _)| *at).unwrap_or_default());
    }
    let mut rss10 = Samples::with_unit(&format!("agent RSS, {concurrent} VMs"), "MiB");
    rss10.push_value(node.rss_mib()?);
    for n in 100..100 + concurrent {
        node.destroy(n).await?;
    }

    for s in phases.iter().chain([&total]) {
        s.print();
    }
    println!(
        "{:<44} {:>9.1} ms",
        format!("{concurrent} concurrent creates, total"),
        wall.as_secs_f64() * 1000.0
    );
    each.print();
    rss0.print();
    rss10.print();
    Ok(())
}
