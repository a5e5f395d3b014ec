//! The node agent end to end: a real `boxcutter-node run` in its own namespace, real
//! guests under QEMU, driven through the authenticated HTTP API. See `support` for the
//! namespaces each test builds.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use boxcutter_types::api::{ErrorCode, NodeHealth};
use boxcutter_types::guest::VmType;
use boxcutter_types::{ByteSize, GuestSubnet, NetMode, VmName, VmRecord, VmSpec, VmState};
use support::{in_ns, keypair, pids_mentioning, ssh, TestNode};

fn spec(node: &TestNode, name: &str, n: u8, disk_gib: u64, mode: NetMode, key: &str) -> VmSpec {
    VmSpec {
        name: VmName::new(name).unwrap(),
        vm_type: VmType::Qemu,
        vcpus: 1,
        ram_mib: 384,
        disk: ByteSize(disk_gib << 30),
        mode,
        subnet: GuestSubnet::new(node.subnet(n)).unwrap(),
        authorized_keys: vec![key.to_string()],
        description: String::new(),
    }
}

/// Writes a known_hosts with every VM's host key, as the node reported it.
fn known_hosts(dir: &Path, vms: &[&VmRecord]) -> std::path::PathBuf {
    let path = dir.join("known_hosts");
    let lines: String = vms
        .iter()
        .map(|r| format!("{} {}\n", r.spec.subnet.guest(), r.host_key))
        .collect();
    std::fs::write(&path, lines).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_node_runs_isolated_guests_through_their_lifecycle() {
    let node = TestNode::start("lc", 31).await;
    let (key, public) = keypair(node.dir.path());
    let specs = [
        spec(&node, "vm-a", 1, 3, NetMode::Normal, &public),
        spec(&node, "vm-b", 2, 4, NetMode::Normal, &public),
        spec(&node, "vm-c", 3, 2, NetMode::Paranoid, &public),
    ];
    let (a, b, c) = tokio::join!(
        node.create(&specs[0]),
        node.create(&specs[1]),
        node.create(&specs[2])
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let hosts = known_hosts(node.dir.path(), &[&a, &b, &c]);
    let (ip_a, ip_b, ip_c) = (
        a.spec.subnet.guest(),
        b.spec.subnet.guest(),
        c.spec.subnet.guest(),
    );

    // Each guest is itself: hostname and the disk size it asked for.
    for (ip, name, gib) in [(ip_a, "vm-a", 3u64), (ip_b, "vm-b", 4), (ip_c, "vm-c", 2)] {
        assert_eq!(ssh(ip, &key, &hosts, "hostname"), (true, name.to_string()));
        let (_, size) = ssh(ip, &key, &hosts, "df -B1 --output=size / | tail -n 1");
        let size: u64 = size.trim().parse().unwrap();
        assert!(
            size > (gib << 30) * 9 / 10 && size <= gib << 30,
            "{name}: {size}"
        );
    }

    check_isolation(&node, &key, &hosts, ip_a, ip_b, ip_c);
    check_metadata(
        &key,
        &hosts,
        &[
            (ip_a, "vm-a", "normal"),
            (ip_b, "vm-b", "normal"),
            (ip_c, "vm-c", "paranoid"),
        ],
    );

    // Wrong state is refused and changes nothing.
    let response = node.post("/v1/vms/vm-a/start", "").await;
    assert_eq!(response.status(), 409);
    assert_eq!(node.record("vm-a").await.state, VmState::Running);

    check_stop_start_restart(&node, &key, &hosts, ip_a).await;
    check_copy_and_destroy(&node, &key, &public).await;
}

fn check_isolation(
    node: &TestNode,
    key: &Path,
    hosts: &Path,
    a: Ipv4Addr,
    b: Ipv4Addr,
    c: Ipv4Addr,
) {
    // Every command reports its exit status, so a failed SSH login can never pass for a
    // blocked connection.
    let run = |ip, cmd: &str| {
        let (ok, out) = ssh(ip, key, hosts, &format!("{cmd}; echo \"rc=$?\""));
        assert!(ok, "ssh to {ip} failed");
        let (text, rc) = out.rsplit_once("rc=").unwrap();
        (rc == "0", text.trim().to_string())
    };
    let inet = format!("http://{}:{}/", node.inet_ip, support::INET_HTTP_PORT);
    let reach = |ip, url: &str| run(ip, &format!("curl -sS --max-time 3 {url}")).0;

    assert!(!run(a, &format!("ping -c 1 -W 1 {b}")).0, "A pinged B");
    assert!(
        !run(a, &format!("timeout 3 bash -c '</dev/tcp/{b}/22'")).0,
        "A reached B's sshd"
    );
    assert!(
        !reach(a, &format!("http://{}:8800/v1/health", node.mgmt_node_ip)),
        "A reached the agent API"
    );
    let gateway_a = Ipv4Addr::from(u32::from(a) - 1);
    assert!(
        !reach(a, &format!("http://{gateway_a}:8800/v1/health")),
        "A reached the API on its gateway"
    );
    assert!(
        !run(a, &format!("timeout 3 bash -c '</dev/tcp/{gateway_a}/22'")).0,
        "A reached the node's port 22"
    );

    assert_eq!(
        run(a, &format!("curl -sS --max-time 5 {inet}")),
        (true, "hello from the internet".into())
    );
    assert_eq!(
        run(a, "getent hosts example.test | cut -d' ' -f1"),
        (true, "10.99.99.99".into())
    );
    let callers = node.callers.lock().unwrap().clone();
    assert!(
        callers.iter().all(|ip| *ip == Ipv4Addr::new(10, 31, 1, 1)),
        "not NATed: {callers:?}"
    );

    assert!(!reach(c, &inet), "paranoid C reached the internet");
    assert!(
        !run(c, "getent hosts example.test").0,
        "paranoid C resolved a name"
    );

    // A claims B's address: nothing it sends from there arrives.
    let before = node.callers.lock().unwrap().len();
    assert!(run(a, &format!("sudo ip addr add {b}/32 dev eth0")).0);
    assert!(
        !run(a, &format!("curl -sS --max-time 3 --interface {b} {inet}")).0,
        "spoofed request answered"
    );
    assert!(run(a, &format!("sudo ip addr del {b}/32 dev eth0")).0);
    assert_eq!(
        node.callers.lock().unwrap().len(),
        before,
        "a spoofed packet arrived"
    );
}

fn check_metadata(key: &Path, hosts: &Path, vms: &[(Ipv4Addr, &str, &str)]) {
    for (ip, name, mode) in vms {
        let (ok, json) = ssh(
            *ip,
            key,
            hosts,
            "curl -sS --max-time 3 http://169.254.169.254/v1/identity",
        );
        assert!(ok, "{name}: metadata unreachable");
        let identity: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (identity["name"].as_str(), identity["mode"].as_str()),
            (Some(*name), Some(*mode))
        );
        assert_eq!(identity["type"], "qemu");
        let (_, keys) = ssh(
            *ip,
            key,
            hosts,
            "curl -sS http://169.254.169.254/v1/ssh-keys",
        );
        assert!(keys.starts_with("ssh-ed25519 "), "{keys}");
    }
}

async fn check_stop_start_restart(node: &TestNode, key: &Path, hosts: &Path, a: Ipv4Addr) {
    assert!(ssh(a, key, hosts, "echo kept > ~/file && sync").0);
    let stopped: VmRecord = node
        .post("/v1/vms/vm-a/stop", "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    assert!(!ssh(a, key, hosts, "true").0, "a stopped VM answered");
    let started: VmRecord = node
        .post("/v1/vms/vm-a/start", "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(started.state, VmState::Running);
    assert_eq!(ssh(a, key, hosts, "cat ~/file"), (true, "kept".into()));
    let old_pid = started.pid.unwrap();
    let restarted: VmRecord = node
        .post("/v1/vms/vm-a/restart", "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(restarted.state, VmState::Running);
    assert_ne!(restarted.pid.unwrap(), old_pid);
    assert_eq!(ssh(a, key, hosts, "cat ~/file"), (true, "kept".into()));
}

async fn check_copy_and_destroy(node: &TestNode, key: &Path, public: &str) {
    let subnet = node.subnet(4);
    let body = format!(r#"{{"name":"vm-a-copy","subnet":"{subnet}"}}"#);
    let copy = node.stream("/v1/vms/vm-a/copy", &body).await.unwrap();
    assert_eq!(copy.spec.authorized_keys, vec![public.to_string()]);
    let hosts = known_hosts(node.dir.path(), &[&copy]);
    let ip = copy.spec.subnet.guest();
    assert_eq!(
        ssh(ip, key, &hosts, "hostname; cat ~/file"),
        (true, "vm-a-copy\nkept".into())
    );
    assert_eq!(
        ssh(
            ip,
            key,
            &hosts,
            "ip -4 -o addr show eth0 | awk '{print $4}'"
        ),
        (true, format!("{ip}/30"))
    );

    // Blocks only the copy holds must go back to the pool when it is destroyed.
    assert!(
        ssh(
            ip,
            key,
            &hosts,
            "dd if=/dev/urandom of=~/blob bs=1M count=64 2>/dev/null && sync"
        )
        .0
    );
    let health: NodeHealth = node.get("/v1/health").await.unwrap().json().await.unwrap();
    assert_eq!(health.vms.running, 4);
    assert!(node.delete("/v1/vms/vm-a-copy").await.status().is_success());
    let mut freed = 0;
    for _ in 0..50 {
        let now: NodeHealth = node.get("/v1/health").await.unwrap().json().await.unwrap();
        freed = health.disk_used_bytes.saturating_sub(now.disk_used_bytes);
        if freed >= 48 << 20 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        freed >= 48 << 20,
        "destroy freed only {freed} bytes of the pool"
    );
    let dir = node.data_dir().join("pool/vms/vm-a-copy");
    assert!(!dir.exists(), "directory left");
    assert!(
        pids_mentioning(&dir.to_string_lossy()).is_empty(),
        "qemu left"
    );
    let tap = boxcutter_net::tap_name(&copy.spec.name);
    let links =
        String::from_utf8_lossy(&in_ns(&node.node_ns, "ip", &["-o", "link"]).stdout).into_owned();
    assert!(!links.contains(tap.as_str()), "tap left");
    let set = in_ns(
        &node.node_ns,
        "nft",
        &["list", "set", "inet", "boxcutter", "vm_links"],
    );
    assert!(
        !String::from_utf8_lossy(&set.stdout).contains(&ip.to_string()),
        "nft element left"
    );
    let after: NodeHealth = node.get("/v1/health").await.unwrap().json().await.unwrap();
    assert_eq!(after.vms.total, 3);
    assert_eq!(node.get("/v1/vms/vm-a-copy").await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_node_sigkill_keeps_running_guests_and_rolls_back_a_half_create() {
    let mut node = TestNode::start("kill", 32).await;
    let (key, public) = keypair(node.dir.path());
    let specs = [
        spec(&node, "vm-x", 1, 2, NetMode::Normal, &public),
        spec(&node, "vm-y", 2, 2, NetMode::Normal, &public),
    ];
    let (x, y) = tokio::join!(node.create(&specs[0]), node.create(&specs[1]));
    let (x, y) = (x.unwrap(), y.unwrap());
    let hosts = known_hosts(node.dir.path(), &[&x, &y]);
    let uptime = |ip| {
        ssh(ip, &key, &hosts, "cut -d' ' -f1 /proc/uptime")
            .1
            .parse::<f64>()
            .unwrap()
    };
    let x_uptime = uptime(x.spec.subnet.guest());

    // A third create is cut off by the agent's death while QEMU is starting.
    let z = spec(&node, "vm-z", 3, 2, NetMode::Normal, &public);
    let response = node
        .post("/v1/vms", &serde_json::to_string(&z).unwrap())
        .await;
    assert!(response.status().is_success());
    let z_dir = node.data_dir().join("pool/vms/vm-z");
    let mut stream = response.bytes_stream();
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        if String::from_utf8_lossy(&chunk.unwrap()).contains("\"vmm\"") {
            break;
        }
    }
    node.kill_agent();
    drop(stream);

    node.spawn_agent(&support::test_image());
    node.wait_healthy().await;
    let list: Vec<VmRecord> = node.get("/v1/vms").await.unwrap().json().await.unwrap();
    let names: Vec<&str> = list.iter().map(|r| r.spec.name.as_str()).collect();
    assert_eq!(names, ["vm-x", "vm-y"], "{}", node.agent_log());
    for (before, after) in [(&x, &list[0]), (&y, &list[1])] {
        assert_eq!(after.state, VmState::Running);
        assert_eq!(
            after.pid, before.pid,
            "{} was restarted, not re-adopted",
            after.spec.name
        );
    }
    assert!(uptime(x.spec.subnet.guest()) > x_uptime, "guest rebooted");
    assert!(!z_dir.exists(), "half-created VM left its directory");
    assert!(
        pids_mentioning(&z_dir.to_string_lossy()).is_empty(),
        "half-created VM left qemu"
    );
    let tap = boxcutter_net::tap_name(&z.name);
    let links =
        String::from_utf8_lossy(&in_ns(&node.node_ns, "ip", &["-o", "link"]).stdout).into_owned();
    assert!(
        !links.contains(tap.as_str()),
        "half-created VM left its tap"
    );

    // The re-adopted guests are fully manageable.
    assert!(node.delete("/v1/vms/vm-y").await.status().is_success());
    assert!(!y.spec.subnet.guest().is_unspecified());
    assert!(pids_mentioning("pool/vms/vm-y").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_node_rejects_bad_input_and_changes_nothing() {
    let node = TestNode::start("bad", 33).await;
    let good = spec(
        &node,
        "ok-name",
        1,
        2,
        NetMode::Normal,
        "ssh-ed25519 AAAA k",
    );
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = serde_json::to_value(&good).unwrap();
        f(&mut v);
        v.to_string()
    };
    let cases: Vec<(String, u16, ErrorCode)> = vec![
        (
            with(&|v| v["name"] = "Bad;Name".into()),
            400,
            ErrorCode::BadRequest,
        ),
        (
            with(&|v| v["ram_mib"] = 99_999_999.into()),
            400,
            ErrorCode::BadRequest,
        ),
        (
            with(&|v| v["ram_mib"] = 900_000.into()),
            507,
            ErrorCode::NoCapacity,
        ),
        (with(&|v| v["vcpus"] = 0.into()), 400, ErrorCode::BadRequest),
        (
            with(&|v| v["type"] = "vmware".into()),
            400,
            ErrorCode::BadRequest,
        ),
        (
            with(&|v| v["type"] = "firecracker".into()),
            400,
            ErrorCode::Unsupported,
        ),
        (
            with(&|v| v["subnet"] = "10.0.0.3".into()),
            400,
            ErrorCode::BadRequest,
        ),
        (
            with(&|v| v["surprise"] = 1.into()),
            400,
            ErrorCode::BadRequest,
        ),
        ("{not json".into(), 400, ErrorCode::BadRequest),
    ];
    for (body, status, code) in cases {
        let response = node.post("/v1/vms", &body).await;
        assert_eq!(response.status(), status, "{body}");
        let error: boxcutter_types::api::ApiError = response.json().await.unwrap();
        assert_eq!(error.code, code, "{body}: {}", error.message);
    }
    for path in ["/v1/vms/nope", "/v1/vms/nope/logs", "/v1/vms/Bad%3BName"] {
        assert_eq!(node.get(path).await.unwrap().status(), 404, "{path}");
    }
    assert_eq!(node.post("/v1/vms/nope/stop", "").await.status(), 404);
    assert_eq!(node.delete("/v1/vms/nope").await.status(), 404);

    let client = reqwest::Client::new();
    let anonymous = client
        .post(node.url("/v1/vms"))
        .body(serde_json::to_string(&good).unwrap());
    assert_eq!(anonymous.send().await.unwrap().status(), 401);
    let forged = boxcutter_auth::ClusterSecret::from_bytes(b"not the cluster secret!!".to_vec());
    let response = client
        .get(node.url("/v1/vms"))
        .bearer_auth(forged.issue("node", 60))
        .send()
        .await;
    assert_eq!(response.unwrap().status(), 401);
    let wrong_audience = node.secret.issue("orchestrator", 60);
    let response = client
        .get(node.url("/v1/vms"))
        .bearer_auth(wrong_audience)
        .send()
        .await;
    assert_eq!(response.unwrap().status(), 401);

    let list: Vec<VmRecord> = node.get("/v1/vms").await.unwrap().json().await.unwrap();
    assert!(list.is_empty());
    let vms_dir = node.data_dir().join("pool/vms");
    let left: Vec<_> = std::fs::read_dir(&vms_dir)
        .map(|d| d.flatten().count())
        .into_iter()
        .collect();
    assert!(
        left.iter().all(|n| *n == 0),
        "directories left in {}",
        vms_dir.display()
    );
    let status = Command::new("true").status().unwrap();
    assert!(status.success());
}
