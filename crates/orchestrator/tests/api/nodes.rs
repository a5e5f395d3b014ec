//! Nodes: registration, and heartbeats that mark a silent node down and reconcile its
//! VMs when it returns.

use boxcutter_types::orch::{NodeInfo, NodeState, UserInfo};
use boxcutter_types::VmState;
use reqwest::Method;
use serde_json::json;

use crate::support::{keygen, secret, Cluster, StandInNode};
use crate::QEMU;

#[tokio::test]
async fn a_silent_node_goes_down_gets_no_vms_and_is_reconciled_when_it_returns() {
    let mut first = StandInNode::start("first", &secret(), 16384, QEMU).await;
    let second = StandInNode::start("second", &secret(), 8192, QEMU).await;
    let cluster = Cluster::start(&secret(), &[&first, &second]).await;
    let (kept, _) = cluster.create("admin", json!({"name": "kept"})).await;
    let (lost, _) = cluster.create("admin", json!({"name": "lost"})).await;
    let (halted, _) = cluster.create("admin", json!({"name": "halted"})).await;
    assert_eq!(
        [&kept.node, &lost.node, &halted.node],
        ["first", "first", "first"]
    );

    first.go_silent().await;
    cluster.wait_node("first", NodeState::Down).await;
    let (elsewhere, _) = cluster.create("admin", json!({"type": "qemu"})).await;
    assert_eq!(elsewhere.node, "second");
    let err = cluster
        .stream("admin", "/v1/vms", json!({"node": "first"}))
        .await
        .unwrap_err();
    assert_eq!((err.0, err.1.message.as_str()), (409, "node first is down"));

    // While it was away, one VM vanished and one was stopped.
    first.forget("lost");
    first.set_state("halted", VmState::Stopped);
    first.come_back().await;
    cluster.wait_node("first", NodeState::Up).await;
    cluster
        .wait_vms("admin", "reconciled", |vms| {
            let state = |n: &str| vms.iter().find(|v| v.name.as_str() == n).map(|v| v.state);
            state("lost") == Some(VmState::Failed)
                && state("halted") == Some(VmState::Stopped)
                && state("kept") == Some(VmState::Running)
        })
        .await;
    let nodes: Vec<NodeInfo> = cluster.get(None, "/v1/nodes").await.unwrap();
    assert!(nodes
        .iter()
        .all(|n| n.state == NodeState::Up && n.health.is_some()));

    // A failed VM its node forgot can still be destroyed: it is simply forgotten.
    cluster.delete("admin", "/v1/vms/lost").await.unwrap();
    assert!(!cluster.names("admin").await.contains(&"lost".to_string()));
}

#[tokio::test]
async fn nodes_register_once_and_non_admins_cannot_register() {
    let node = StandInNode::start("node-1", &secret(), 16384, QEMU).await;
    let cluster = Cluster::start(&secret(), &[&node]).await;
    let again = cluster.register("node-1", &node.url()).await;
    assert_eq!(again.state, NodeState::Up);
    let nodes: Vec<NodeInfo> = cluster.get(None, "/v1/nodes").await.unwrap();
    assert_eq!(nodes.len(), 1);
    let unreachable = cluster.register("node-2", "http://127.0.0.1:9").await;
    assert_eq!(unreachable.state, NodeState::Down);
    let err = cluster
        .send::<NodeInfo>(
            Method::POST,
            None,
            "/v1/nodes",
            json!({"id": "Bad", "url": "http://x"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 400);

    let (_, key) = keygen(cluster.dir.path(), "dan");
    cluster.keys.publish("dan", &key);
    cluster
        .send::<UserInfo>(
            Method::POST,
            Some("admin"),
            "/v1/users",
            json!({"github": "dan"}),
        )
        .await
        .unwrap();
    let err = cluster
        .send::<NodeInfo>(
            Method::POST,
            Some("dan"),
            "/v1/nodes",
            json!({"id": "n3", "url": "http://x"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 401);
}
