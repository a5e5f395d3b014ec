//! The orchestrator's API against a real registry file and stand-in nodes (see
//! `support::stand_in`): create with defaults and the type fallback, ownership between
//! two users, validation, spreading and pinning, retry on another node, capacity errors,
//! heartbeats and reconciliation, and every VM operation.

#![allow(clippy::unwrap_used)]

mod support;

use boxcutter_types::api::ErrorCode;
use boxcutter_types::guest::VmType;
use boxcutter_types::orch::{
    ClusterStatus, NodeInfo, NodeState, OrchLine, SshTarget, UserInfo, VmInfo,
};
use boxcutter_types::{ByteSize, VmState};
use reqwest::Method;
use serde_json::json;
use support::{keygen, progress_messages, secret, Behaviour, Cluster, StandInNode};

const QEMU: &[VmType] = &[VmType::Qemu];
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
async fn users_see_and_touch_only_their_own_vms() {
    let node = StandInNode::start("node-1", &secret(), 16384, QEMU).await;
    let cluster = Cluster::start(&secret(), &[&node]).await;
    let (_, bob_key) = keygen(cluster.dir.path(), "bob");
    cluster.keys.publish("bob", &format!("{bob_key}\n"));
    let bob: UserInfo = cluster
        .send(
            Method::POST,
            Some("admin"),
            "/v1/users",
            json!({"github": "bob"}),
        )
        .await
        .unwrap();
    assert_eq!((bob.name.as_str(), bob.admin, bob.keys), ("bob", false, 1));

    let (admins, _) = cluster.create("admin", json!({"name": "admins-vm"})).await;
    let (bobs, _) = cluster.create("bob", json!({"name": "bobs-vm"})).await;
    assert_eq!(bobs.owner, "bob");
    assert_eq!(node.specs()[1].authorized_keys, vec![bob_key.clone()]);
    assert_eq!(cluster.names("bob").await, ["bobs-vm"]);
    assert_eq!(cluster.names("admin").await, ["admins-vm", "bobs-vm"]);

    // Another user's VM answers exactly like a missing one, for every operation.
    let calls_before = node.calls().len();
    for path in ["/v1/vms/admins-vm", "/v1/vms/nope"] {
        let name = path.rsplit('/').next().unwrap();
        let missing = format!("no such VM: {name}");
        let err = cluster.get::<VmInfo>(Some("bob"), path).await.unwrap_err();
        assert_eq!(
            (err.0, err.1.code, err.1.message.as_str()),
            (404, ErrorCode::NotFound, missing.as_str())
        );
        let err = cluster.delete("bob", path).await.unwrap_err();
        assert_eq!((err.0, err.1.message.as_str()), (404, missing.as_str()));
        for op in ["start", "stop"] {
            let err = cluster
                .send::<VmInfo>(
                    Method::POST,
                    Some("bob"),
                    &format!("{path}/{op}"),
                    json!({}),
                )
                .await
                .unwrap_err();
            assert_eq!(err.0, 404, "{op}");
        }
        let err = cluster
            .get::<SshTarget>(Some("bob"), &format!("{path}/ssh"))
            .await
            .unwrap_err();
        assert_eq!(err.1.message, missing);
        let err = cluster
            .stream("bob", &format!("{path}/copy"), json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.1.message, missing);
    }
    assert_eq!(
        node.calls().len(),
        calls_before,
        "a foreign VM's node was called"
    );
    assert_eq!(cluster.names("admin").await, ["admins-vm", "bobs-vm"]);

    // Admins reach every VM; bob cannot add users.
    let seen: VmInfo = cluster.get(Some("admin"), "/v1/vms/bobs-vm").await.unwrap();
    assert_eq!(seen.name, bobs.name);
    let err = cluster
        .send::<UserInfo>(
            Method::POST,
            Some("bob"),
            "/v1/users",
            json!({"github": "eve"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.0, 401);
    let status: ClusterStatus = cluster.get(Some("bob"), "/v1/status").await.unwrap();
    assert_eq!(status.vms, 1);
    assert_ne!(admins.ip, bobs.ip);
}

#[tokio::test]
async fn adduser_and_key_lookup_fail_clearly() {
    let node = StandInNode::start("node-1", &secret(), 16384, QEMU).await;
    let cluster = Cluster::start(&secret(), &[&node]).await;
    let add = |login: &str| {
        let body = json!({"github": login});
        cluster.send::<UserInfo>(Method::POST, Some("admin"), "/v1/users", body)
    };
    let err = add("ghost").await.unwrap_err();
    assert_eq!(err.0, 400);
    assert!(
        err.1.message.starts_with("no GitHub user ghost"),
        "{}",
        err.1.message
    );
    cluster.keys.publish("keyless", "");
    assert_eq!(
        add("keyless").await.unwrap_err().1.message,
        "GitHub user keyless has no public SSH keys"
    );
    assert_eq!(add("bad;name").await.unwrap_err().0, 400);
    cluster.keys.publish("thief", &cluster.admin_key);
    let err = add("thief").await.unwrap_err();
    assert_eq!(err.0, 409);
    assert!(
        err.1.message.contains("already belongs to user admin"),
        "{}",
        err.1.message
    );
    let (_, carol_key) = keygen(cluster.dir.path(), "carol");
    cluster.keys.publish("carol", &carol_key);
    add("carol").await.unwrap();
    assert_eq!(
        add("carol").await.unwrap_err().1.message,
        "user carol already exists"
    );

    // sshd's AuthorizedKeysCommand: the key's blob names its owner (`+` may arrive as ' ').
    let blob = carol_key.split_whitespace().nth(1).unwrap();
    let path = format!(
        "/v1/auth/key?key={}",
        blob.replace('+', "%2B").replace('/', "%2F")
    );
    let owner: UserInfo = cluster.get(None, &path).await.unwrap();
    assert_eq!(owner.name, "carol");
    let err = cluster
        .get::<UserInfo>(None, "/v1/auth/key?key=AAAAunknown")
        .await
        .unwrap_err();
    assert_eq!(err.0, 404);
    assert_eq!(
        cluster
            .get::<UserInfo>(None, "/v1/auth/key")
            .await
            .unwrap_err()
            .0,
        400
    );
}

#[tokio::test]
async fn requests_without_valid_credentials_are_refused() {
    let node = StandInNode::start("node-1", &secret(), 16384, QEMU).await;
    let cluster = Cluster::start(&secret(), &[&node]).await;
    let client = reqwest::Client::new();
    let anonymous = client
        .get(cluster.url("/v1/vms"))
        .header("x-boxcutter-user", "admin");
    assert_eq!(anonymous.send().await.unwrap().status(), 401);
    let node_token = cluster.secret.issue("node", 60);
    let wrong = client.get(cluster.url("/v1/vms")).bearer_auth(node_token);
    assert_eq!(wrong.send().await.unwrap().status(), 401);
    let err = cluster
        .get::<Vec<VmInfo>>(Some("mallory"), "/v1/vms")
        .await
        .unwrap_err();
    assert_eq!(
        (err.0, err.1.message.as_str()),
        (401, "unauthorized: unknown user")
    );
    let err = cluster
        .get::<Vec<VmInfo>>(None, "/v1/vms")
        .await
        .unwrap_err();
    assert_eq!(err.0, 401, "a VM list needs a user");
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

#[tokio::test]
async fn listing_200_vms_stays_fast() {
    let node = StandInNode::start("node-1", &secret(), 1 << 30, QEMU).await;
    let cluster = Cluster::start_with_range(&secret(), &[&node], "10.240.0.0/22").await;
    let started = std::time::Instant::now();
    for _ in 0..200 {
        cluster
            .create("admin", json!({"ram_mib": 128, "disk": "1G"}))
            .await;
    }
    let per_create = started.elapsed() / 200;
    let mut times = Vec::new();
    for _ in 0..20 {
        let at = std::time::Instant::now();
        let vms: Vec<VmInfo> = cluster.get(Some("admin"), "/v1/vms").await.unwrap();
        times.push(at.elapsed());
        assert_eq!(vms.len(), 200);
    }
    times.sort();
    eprintln!(
        "create via stand-in: {per_create:?} each; list of 200: median {:?}",
        times[10]
    );
    assert!(times[10] < std::time::Duration::from_secs(1), "{times:?}");
}
