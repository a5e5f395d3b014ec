//! The user's view in local mode: `ssh boxcutter new` end to end, split into SSH/auth,
//! scheduling, node create and guest boot; and `list` with 200 registered VMs. Needs a
//! running local mode (`boxcutter-host up --local`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use boxcutter_auth::ClusterSecret;
use boxcutter_types::orch::OrchLine;

use crate::stats::Samples;

/// How to reach a running local mode.
struct Local {
    ssh_config: PathBuf,
    db: PathBuf,
    api: String,
    secret: ClusterSecret,
    admin: String,
    client: reqwest::Client,
}

impl Local {
    fn open(state: &Path) -> anyhow::Result<Self> {
        let db = state.join("orchestrator/boxcutter.db");
        let admin = sqlite(
            &db,
            "SELECT name FROM users WHERE admin = 1 ORDER BY name LIMIT 1;",
        )?;
        let state_json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(state.join("local.json")).context("local mode is not up")?,
        )?;
        let subnet: std::net::Ipv4Addr =
            state_json["subnet"].as_str().context("subnet")?.parse()?;
        let [a, b, c, _] = subnet.octets();
        Ok(Self {
            ssh_config: state.join("ssh_config"),
            db,
            api: format!("http://{a}.{b}.{c}.1:8801"),
            secret: ClusterSecret::load_or_create(&state.join("secrets/cluster.key"))?,
            admin,
            client: reqwest::Client::new(),
        })
    }

    fn ssh(&self, args: &[&str]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let out = Command::new("ssh")
            .arg("-F")
            .arg(&self.ssh_config)
            .arg("boxcutter")
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "ssh boxcutter {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(started.elapsed())
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(self.secret.issue("orchestrator", 600))
            .header(boxcutter_types::orch::USER_HEADER, &self.admin)
    }

    /// Creates a VM through the API; the time each phase began, and the total.
    async fn create(&self, name: &str) -> anyhow::Result<(Vec<(String, u64)>, Duration)> {
        let body =
            serde_json::json!({ "name": name, "type": "qemu", "ram_mib": 512, "disk": "10G" });
        let started = Instant::now();
        let mut response = self
            .request(reqwest::Method::POST, "/v1/vms")
            .json(&body)
            .send()
            .await?;
        let (mut phases, mut pending) = (Vec::new(), String::new());
        while let Some(chunk) = response.chunk().await? {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some((line, rest)) = pending.split_once('\n') {
                match serde_json::from_str::<OrchLine>(line)? {
                    OrchLine::Progress {
                        phase, elapsed_ms, ..
                    } => phases.push((phase, elapsed_ms)),
                    OrchLine::Failed { error } => anyhow::bail!("create {name}: {}", error.message),
                    OrchLine::Done { .. } => {}
                }
                pending = rest.to_string();
            }
        }
        Ok((phases, started.elapsed()))
    }
}

fn sqlite(db: &Path, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("sqlite3").arg(db).arg(sql).output()?;
    anyhow::ensure!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs the local-mode benchmarks.
pub async fn bench_local(state: PathBuf, runs: usize, list_vms: u32) -> anyhow::Result<()> {
    let local = Local::open(&state)?;
    let mut ssh_floor = Samples::new("ssh boxcutter status (SSH + auth + CLI)");
    for _ in 0..10 {
        ssh_floor.push(local.ssh(&["status"])?);
    }

    let mut wall = Samples::new("ssh boxcutter new, wall");
    let (mut api_total, mut schedule, mut node_cp, mut boot, mut control) = (
        Samples::new("new via API (no SSH), total"),
        Samples::new("  scheduling (request → node call)"),
        Samples::new("  node create: disk + network + launch"),
        Samples::new("  guest boot (qemu running → ready)"),
        Samples::new("  control plane = total − guest boot"),
    );
    for run in 0..runs {
        let name = format!("bench-ssh-{run}");
        wall.push(local.ssh(&[
            "new", "--type", "qemu", "--ram", "512", "--disk", "10G", "--name", &name,
        ])?);
        local.ssh(&["destroy", &name])?;

        let name = format!("bench-api-{run}");
        let (phases, total) = local.create(&name).await?;
        let at = |p: &str| phases.iter().find(|(n, _)| n == p).map(|(_, t)| *t as f64);
        let (disk, booting, ready) = (at("disk"), at("boot"), at("ready"));
        let (Some(disk), Some(booting), Some(ready)) = (disk, booting, ready) else {
            anyhow::bail!("missing phases in {phases:?}");
        };
        let ms = |v: f64| Duration::from_secs_f64(v / 1000.0);
        api_total.push(total);
        schedule.push(ms(disk));
        node_cp.push(ms(booting - disk));
        boot.push(ms(ready - booting));
        control.push(total.saturating_sub(ms(ready - booting)));
        local
            .request(reqwest::Method::DELETE, &format!("/v1/vms/{name}"))
            .send()
            .await?;
    }

    let (list_ssh, list_api) = bench_list(&local, list_vms).await?;
    for s in [
        &ssh_floor, &wall, &api_total, &schedule, &node_cp, &boot, &control, &list_ssh, &list_api,
    ] {
        s.print();
    }
    Ok(())
}

/// `list` latency with `count` extra VMs registered (rows on a node that does not exist,
/// removed afterwards).
async fn bench_list(local: &Local, count: u32) -> anyhow::Result<(Samples, Samples)> {
    let base = u32::from(std::net::Ipv4Addr::new(10, 250, 0, 0));
    let mut sql = String::from(
        "BEGIN; INSERT OR IGNORE INTO nodes (id, url, state, registered_at) \
         VALUES ('bench-ghost', 'http://bench-ghost.invalid:9', 'down', 0);",
    );
    for i in 0..count {
        sql.push_str(&format!(
            "INSERT INTO vms (name, owner, node, subnet, type, vcpus, ram_mib, disk_bytes, mode, \
             state, created_at) VALUES ('bench-row-{i}', '{}', 'bench-ghost', {}, 'qemu', 2, \
             2048, 53687091200, 'normal', 'stopped', 0);",
            local.admin,
            base + 4 * i
        ));
    }
    sql.push_str("COMMIT;");
    sqlite(&local.db, &sql)?;
    let result = time_lists(local, count).await;
    sqlite(
        &local.db,
        "DELETE FROM vms WHERE node = 'bench-ghost'; DELETE FROM nodes WHERE id = 'bench-ghost';",
    )?;
    result
}

async fn time_lists(local: &Local, count: u32) -> anyhow::Result<(Samples, Samples)> {
    let mut ssh = Samples::new(&format!("ssh boxcutter list, {count} VMs"));
    let mut api = Samples::new(&format!("GET /v1/vms, {count} VMs"));
    for _ in 0..10 {
        ssh.push(local.ssh(&["list"])?);
    }
    for _ in 0..20 {
        let started = Instant::now();
        let vms: Vec<serde_json::Value> = local
            .request(reqwest::Method::GET, "/v1/vms")
            .send()
            .await?
            .json()
            .await?;
        api.push(started.elapsed());
        anyhow::ensure!(vms.len() as u32 >= count, "list returned {} VMs", vms.len());
    }
    Ok((ssh, api))
}
