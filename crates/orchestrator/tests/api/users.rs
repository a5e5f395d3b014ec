//! Users and credentials: ownership between two users, `adduser` and the key lookup
//! behind sshd's AuthorizedKeysCommand, and requests without valid credentials.

use boxcutter_types::api::ErrorCode;
use boxcutter_types::orch::{ClusterStatus, SshTarget, UserInfo, VmInfo};
use reqwest::Method;
use serde_json::json;

use crate::support::{keygen, secret, Cluster, StandInNode};
use crate::QEMU;

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
