//! End to end: the orchestrator in-process over a real registry, driving a REAL node
//! agent (`boxcutter-node run` in its own network namespaces, started by the node
//! crate's own test harness) that boots a real QEMU guest. One VM is created through the
//! orchestrator's API, reached over SSH with the host key the orchestrator recorded,
//! survives an orchestrator restart, and is destroyed, leaving nothing on the node and
//! nothing in the registry.

#![allow(clippy::unwrap_used)]

#[path = "../../node/tests/support/mod.rs"]
mod node_support;
mod support;

use std::time::Instant;

use boxcutter_types::orch::{NodeState, VmInfo};
use boxcutter_types::{VmRecord, VmState};
use serde_json::json;
use support::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_orchestrator_creates_reaches_and_destroys_a_real_guest() {
    let node = node_support::TestNode::start("orch", 41).await;
    let mut cluster = Cluster::start_with_range(&node.secret, &[], &node.guest_range()).await;
    let url = format!("http://{}:8800", node.mgmt_node_ip);
    cluster.register("node-orch", &url).await;
    cluster.wait_node("node-orch", NodeState::Up).await;

    let started = Instant::now();
    let body = json!({"name": "e2e-vm", "type": "qemu", "vcpus": 1, "ram_mib": 512,
        "disk": "2G", "description": "through the orchestrator"});
    let (vm, messages) = cluster.create("admin", body).await;
    eprintln!(
        "created in {} ms: {messages:#?}",
        started.elapsed().as_millis()
    );
    assert_eq!(
        (vm.state, vm.node.as_str()),
        (VmState::Running, "node-orch")
    );
    assert!(vm.host_key.starts_with("ssh-"), "no host key: {vm:?}");

    let hosts = cluster.dir.path().join("known_hosts");
    std::fs::write(&hosts, format!("{} {}\n", vm.ip, vm.host_key)).unwrap();
    let key = cluster.admin_identity();
    let run = |cmd: &str| node_support::ssh(vm.ip, &key, &hosts, cmd);
    assert_eq!(
        run("hostname"),
        (true, "e2e-vm".to_string()),
        "{}",
        node.agent_log()
    );
    assert_eq!(
        run("cat /etc/boxcutter/vm-type"),
        (true, "qemu".to_string())
    );

    // A restarted orchestrator finds the VM as it was, and the guest never noticed.
    cluster.halt().await;
    cluster.boot().await;
    cluster.wait_node("node-orch", NodeState::Up).await;
    let listed: Vec<VmInfo> = cluster.get(Some("admin"), "/v1/vms").await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&vm));
    assert_eq!(run("hostname"), (true, "e2e-vm".to_string()));

    cluster.delete("admin", "/v1/vms/e2e-vm").await.unwrap();
    let left: Vec<VmRecord> = node.get("/v1/vms").await.unwrap().json().await.unwrap();
    assert!(left.is_empty(), "the node still has {left:?}");
    let listed: Vec<VmInfo> = cluster.get(Some("admin"), "/v1/vms").await.unwrap();
    assert!(listed.is_empty());
    assert!(
        !node.data_dir().join("pool/vms/e2e-vm").exists(),
        "VM directory left"
    );
}
