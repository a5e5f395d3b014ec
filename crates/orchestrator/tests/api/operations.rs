//! Every operation on an existing VM (stop, start, describe, logs, ssh, repos, copy,
//! destroy) reaches its node and the registry.

use boxcutter_types::orch::{ClusterStatus, OrchLine, SshTarget, VmInfo};
use boxcutter_types::VmState;
use reqwest::Method;
use serde_json::json;

use crate::support::{secret, Cluster, StandInNode};
use crate::QEMU;

#[tokio::test]
async fn vm_operations_reach_the_node_and_the_registry() {
    let node = StandInNode::start("node-1", &secret(), 16384, QEMU).await;
    let cluster = Cluster::start(&secret(), &[&node]).await;
    let (vm, _) = cluster.create("admin", json!({"name": "box"})).await;
    let post =
        |path: &'static str| cluster.send::<VmInfo>(Method::POST, Some("admin"), path, json!({}));

    let stopped = post("/v1/vms/box/stop").await.unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    let started = post("/v1/vms/box/start").await.unwrap();
    assert_eq!(started.state, VmState::Running);
    let described: VmInfo = cluster
        .send(
            Method::PUT,
            Some("admin"),
            "/v1/vms/box/description",
            json!({"description": "hi"}),
        )
        .await
        .unwrap();
    assert_eq!(described.description, "hi");
    let response = cluster
        .request(Method::GET, "/v1/vms/box/logs?lines=5", Some("admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "console of box\n");
    let target: SshTarget = cluster.get(Some("admin"), "/v1/vms/box/ssh").await.unwrap();
    assert_eq!(
        (target.ip, target.port, target.host_key),
        (vm.ip, 22, vm.host_key.clone())
    );

    let repos: Vec<String> = cluster
        .send(
            Method::POST,
            Some("admin"),
            "/v1/vms/box/repos",
            json!({"repo": "org/a"}),
        )
        .await
        .unwrap();
    assert_eq!(repos, ["org/a"]);
    let err = cluster
        .send::<Vec<String>>(
            Method::POST,
            Some("admin"),
            "/v1/vms/box/repos",
            json!({"repo": "x"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 400);

    let lines = cluster
        .stream("admin", "/v1/vms/box/copy", json!({"name": "box-copy"}))
        .await
        .unwrap();
    let Some(OrchLine::Done { vm: copy }) = lines.last() else {
        panic!("{lines:?}")
    };
    assert_eq!(
        (
            copy.name.as_str(),
            copy.node.as_str(),
            copy.description.as_str()
        ),
        ("box-copy", "node-1", "hi")
    );
    assert_ne!(copy.ip, vm.ip);
    let copied_repos: Vec<String> = cluster
        .get(Some("admin"), "/v1/vms/box-copy/repos")
        .await
        .unwrap();
    assert_eq!(copied_repos, ["org/a"]);

    cluster.delete("admin", "/v1/vms/box").await.unwrap();
    assert_eq!(node.vms(), ["box-copy"]);
    assert_eq!(cluster.names("admin").await, ["box-copy"]);
    let (reused, _) = cluster.create("admin", json!({})).await;
    assert_eq!(reused.ip, vm.ip, "a destroyed VM's subnet was not freed");

    let status: ClusterStatus = cluster.get(None, "/v1/status").await.unwrap();
    assert_eq!((status.nodes_up, status.nodes_down, status.vms), (1, 0, 2));
    assert_eq!(status.totals.ram_mib, 16384);
}
