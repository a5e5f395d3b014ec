//! Creating a VM: the defaults and the fallback to QEMU where no node has KVM, every
//! flag, and validation that refuses bad input before any node is called.

use boxcutter_types::api::ErrorCode;
use boxcutter_types::guest::VmType;
use boxcutter_types::orch::VmInfo;
use boxcutter_types::{ByteSize, VmState};
use serde_json::json;

use crate::support::{secret, Cluster, StandInNode};
use crate::QEMU;

const BOTH: &[VmType] = &[VmType::Firecracker, VmType::Qemu];

#[tokio::test]
async fn new_with_defaults_falls_back_to_qemu_and_passes_the_users_keys() {
    let node = StandInNode::start("node-1", &secret(), 16384, QEMU).await;
    let cluster = Cluster::start(&secret(), &[&node]).await;

    let (vm, messages) = cluster.create("admin", json!({})).await;
    assert_eq!(
        messages[0],
        "no node supports firecracker (no usable KVM); creating a qemu VM"
    );
    assert!(
        messages.iter().any(|m| m == "creating on node node-1"),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m == "stand-in boot"),
        "node progress not relayed"
    );
    let (adjective, animal) = vm.name.as_str().split_once('-').unwrap();
    assert!(!adjective.is_empty() && !animal.is_empty());
    assert_eq!(
        (vm.vm_type, vm.vcpus, vm.ram_mib, vm.disk, vm.state),
        (VmType::Qemu, 2, 2048, ByteSize(50 << 30), VmState::Running)
    );
    assert_eq!((vm.owner.as_str(), vm.node.as_str()), ("admin", "node-1"));
    assert_eq!(vm.ip.to_string(), "10.240.0.2");
    assert_eq!(vm.host_key, format!("ssh-ed25519 AAAAstandin{}", vm.name));

    let spec = &node.specs()[0];
    assert_eq!(spec.authorized_keys, vec![cluster.admin_key.clone()]);
    assert_eq!(spec.subnet.base().to_string(), "10.240.0.0");
    let again: VmInfo = cluster
        .get(Some("admin"), &format!("/v1/vms/{}", vm.name))
        .await
        .unwrap();
    assert_eq!(again, vm, "the registry does not hold what create answered");
}

#[tokio::test]
async fn every_flag_is_honoured_and_firecracker_is_the_default_where_supported() {
    let node = StandInNode::start("node-1", &secret(), 16384, BOTH).await;
    let cluster = Cluster::start(&secret(), &[&node]).await;
    let (fc, messages) = cluster.create("admin", json!({})).await;
    assert_eq!(fc.vm_type, VmType::Firecracker);
    assert!(!messages.iter().any(|m| m.contains("creating a qemu VM")));

    let body = json!({"name": "my-vm", "type": "qemu", "vcpus": 1, "ram_mib": 1024,
        "disk": "10G", "description": "x", "mode": "paranoid", "node": "node-1",
        "clone": ["github.com/org/repo"]});
    let (vm, _) = cluster.create("admin", body).await;
    assert_eq!(
        (
            vm.name.as_str(),
            vm.vm_type,
            vm.vcpus,
            vm.ram_mib,
            vm.disk.to_string()
        ),
        ("my-vm", VmType::Qemu, 1, 1024, "10G".to_string())
    );
    assert_eq!(
        (vm.description.as_str(), vm.mode.as_str()),
        ("x", "paranoid")
    );
    let repos: Vec<String> = cluster
        .get(Some("admin"), "/v1/vms/my-vm/repos")
        .await
        .unwrap();
    assert_eq!(repos, ["org/repo"]);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let node = StandInNode::start("node-1", &secret(), 16384, QEMU).await;
    let cluster = Cluster::start(&secret(), &[&node]).await;
    cluster.create("admin", json!({"name": "taken"})).await;
    let calls_before = node.calls().len();
    let cases = [
        (
            json!({"ram_mib": 0}),
            400,
            "ram must be 128-1048576 MiB, not 0",
        ),
        (
            json!({"ram_mib": 99_999_999}),
            400,
            "ram must be 128-1048576 MiB, not 99999999",
        ),
        (json!({"vcpus": 0}), 400, "vcpus must be 1-64, not 0"),
        (
            json!({"disk": "10M"}),
            400,
            "disk must be at least 1G, not 10M",
        ),
        (
            json!({"description": "two\nlines"}),
            400,
            "description: at most 1024 characters, one line",
        ),
        (
            json!({"clone": ["not a repo"]}),
            400,
            "invalid repository \"not a repo\": use owner/repo",
        ),
        (
            json!({"name": "taken"}),
            409,
            "a VM named taken already exists",
        ),
        (json!({"node": "nope"}), 400, "no such node: nope"),
        (
            json!({"ram_mib": 900_000}),
            507,
            "every node is out of capacity for 2 vCPU, 900000 MiB",
        ),
        (
            json!({"type": "firecracker"}),
            400,
            "no node can run firecracker VMs (Firecracker needs usable KVM and a firecracker \
             binary on the node); use --type qemu",
        ),
    ];
    for (body, status, message) in cases {
        let err = cluster
            .stream("admin", "/v1/vms", body.clone())
            .await
            .unwrap_err();
        assert_eq!(err.0, status, "{body}: {}", err.1.message);
        assert!(
            err.1.message.starts_with(message) || err.1.message.contains(message),
            "{body}: {}",
            err.1.message
        );
    }
    for body in [
        json!({"name": "a;b"}),
        json!({"type": "vmware"}),
        json!({"surprise": 1}),
    ] {
        let err = cluster
            .stream("admin", "/v1/vms", body.clone())
            .await
            .unwrap_err();
        assert_eq!((err.0, err.1.code), (400, ErrorCode::BadRequest), "{body}");
        assert!(
            err.1.message.starts_with("bad request body"),
            "{}",
            err.1.message
        );
    }
    assert_eq!(
        node.calls().len(),
        calls_before,
        "a refused create reached the node"
    );
    assert_eq!(cluster.names("admin").await, ["taken"]);
    let err = cluster
        .get::<VmInfo>(Some("admin"), "/v1/vms/Bad%3BName")
        .await
        .unwrap_err();
    assert_eq!(err.0, 400);
}
