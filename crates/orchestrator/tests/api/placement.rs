//! Where a VM goes: spread by free RAM, pinned to a node, retried on the next node
//! after a node-side failure, and a clear error (leaving nothing behind) when every node
//! is full.

use boxcutter_types::api::ErrorCode;
use boxcutter_types::orch::{OrchLine, VmInfo};
use serde_json::json;

use crate::support::{progress_messages, secret, Behaviour, Cluster, StandInNode};
use crate::QEMU;

#[tokio::test]
async fn vms_spread_by_free_ram_and_pins_are_honoured() {
    let small = StandInNode::start("small", &secret(), 8192, QEMU).await;
    let big = StandInNode::start("big", &secret(), 12288, QEMU).await;
    let cluster = Cluster::start(&secret(), &[&small, &big]).await;
    let mut placed = Vec::new();
    for _ in 0..4 {
        let (vm, _) = cluster.create("admin", json!({"type": "qemu"})).await;
        placed.push(vm.node);
    }
    // big: 12288 → 10240 → 8192 (tie with small, ids break it) → small → ...
    assert_eq!(placed, ["big", "big", "big", "small"]);
    let (pinned, _) = cluster
        .create("admin", json!({"node": "small", "ram_mib": 512}))
        .await;
    assert_eq!(pinned.node, "small");
    let err = cluster
        .stream(
            "admin",
            "/v1/vms",
            json!({"node": "small", "ram_mib": 8192}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 507);
    assert!(err
        .1
        .message
        .starts_with("node small has no room for 2 vCPU, 8192 MiB RAM"));
    let ips: std::collections::HashSet<_> = cluster
        .get::<Vec<VmInfo>>(Some("admin"), "/v1/vms")
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.ip)
        .collect();
    assert_eq!(ips.len(), 5, "two VMs share an address");
}

#[tokio::test]
async fn a_node_side_failure_moves_on_to_the_next_node() {
    let flaky = StandInNode::start("flaky", &secret(), 16384, QEMU).await;
    let steady = StandInNode::start("steady", &secret(), 8192, QEMU).await;
    let cluster = Cluster::start(&secret(), &[&flaky, &steady]).await;

    flaky.behave(Behaviour::FailStream(ErrorCode::Internal));
    let (vm, messages) = cluster.create("admin", json!({"name": "retried"})).await;
    assert_eq!(vm.node, "steady");
    assert!(
        messages
            .iter()
            .any(|m| m == "node flaky failed: stand-in failed the create; trying node steady"),
        "{messages:#?}"
    );

    flaky.behave(Behaviour::Refuse(ErrorCode::Internal));
    let (vm, _) = cluster
        .create("admin", json!({"name": "retried-again"}))
        .await;
    assert_eq!(vm.node, "steady");

    // A validation error is final: no other node is tried.
    flaky.behave(Behaviour::Refuse(ErrorCode::BadRequest));
    let steady_creates = steady.specs().len();
    let lines = cluster
        .stream("admin", "/v1/vms", json!({"name": "invalid"}))
        .await
        .unwrap();
    let Some(OrchLine::Failed { error }) = lines.last() else {
        panic!("{lines:?}")
    };
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert_eq!(error.message, "node flaky: stand-in refuses");
    assert_eq!(steady.specs().len(), steady_creates);
    assert!(!cluster
        .names("admin")
        .await
        .contains(&"invalid".to_string()));
}

#[tokio::test]
async fn when_every_node_is_full_the_error_says_so_and_nothing_is_left() {
    let a = StandInNode::start("a", &secret(), 16384, QEMU).await;
    let b = StandInNode::start("b", &secret(), 16384, QEMU).await;
    let cluster = Cluster::start(&secret(), &[&a, &b]).await;
    a.behave(Behaviour::Refuse(ErrorCode::NoCapacity));
    b.behave(Behaviour::FailStream(ErrorCode::NoCapacity));
    let lines = cluster
        .stream("admin", "/v1/vms", json!({"name": "doomed"}))
        .await
        .unwrap();
    let Some(OrchLine::Failed { error }) = lines.last() else {
        panic!("{lines:?}")
    };
    assert_eq!(error.code, ErrorCode::NoCapacity);
    assert_eq!(
        error.message,
        "every node is out of capacity (node a: stand-in refuses; \
         node b: stand-in failed the create)"
    );
    assert!(progress_messages(&lines)
        .iter()
        .any(|m| m.contains("trying node b")));
    assert!(
        cluster.names("admin").await.is_empty(),
        "the failed VM's row was left"
    );

    // Its subnet was freed: the next VM gets the first one.
    a.behave(Behaviour::Normal);
    let (vm, _) = cluster.create("admin", json!({"name": "doomed"})).await;
    assert_eq!(vm.ip.to_string(), "10.240.0.2");
}
