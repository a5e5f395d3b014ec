//! Firecracker VMs on a real node agent (`boxcutter-node run` in its own namespace, real
//! TAPs, nftables, storage pool and records), with `fake-firecracker` standing in for
//! Firecracker and KVM, which this machine cannot provide (`--fake-firecracker`): it
//! checks every API call against Firecracker's contract and plays the guest agent's part
//! on the vsock device. The same node code drives a real Firecracker on a KVM machine.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;

use boxcutter_types::api::NodeHealth;
use boxcutter_types::guest::VmType;
use boxcutter_types::{ByteSize, GuestSubnet, NetMode, VmName, VmRecord, VmSpec, VmState};
use boxcutter_vmm::firecracker::api::{ApiClient, InstanceState};
use support::{fake_firecracker, in_ns, keypair, pids_mentioning, TestNode};

fn spec(node: &TestNode, name: &str, n: u8, key: &str) -> VmSpec {
    VmSpec {
        name: VmName::new(name).unwrap(),
        vm_type: VmType::Firecracker,
        vcpus: 2,
        ram_mib: 512,
        disk: ByteSize(4 << 30),
        mode: NetMode::Normal,
        subnet: GuestSubnet::new(node.subnet(n)).unwrap(),
        authorized_keys: vec![key.to_string()],
        description: String::new(),
    }
}

/// The API socket a Firecracker process serves, from its command line.
fn api_socket(pid: i32) -> PathBuf {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let at = args.iter().position(|a| *a == b"--api-sock").unwrap();
    PathBuf::from(String::from_utf8(args[at + 1].to_vec()).unwrap())
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

async fn running_pid(node: &TestNode, name: &str) -> i32 {
    let record = node.record(name).await;
    assert_eq!(record.state, VmState::Running, "{record:?}");
    let pid = record.pid.unwrap();
    assert!(alive(pid), "{name}'s firecracker is not running");
    pid
}

fn assert_gone(node: &TestNode, record: &VmRecord, pid: i32) {
    assert!(!alive(pid), "firecracker of {} left", record.spec.name);
    let dir = node
        .data_dir()
        .join("pool/vms")
        .join(record.spec.name.as_str());
    assert!(!dir.exists(), "{} left", dir.display());
    let tap = boxcutter_net::tap_name(&record.spec.name);
    let links =
        String::from_utf8_lossy(&in_ns(&node.node_ns, "ip", &["-o", "link"]).stdout).into_owned();
    assert!(!links.contains(tap.as_str()), "tap {tap} left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_node_runs_firecracker_vms_through_their_lifecycle_and_copies_them_live() {
    let fake = fake_firecracker();
    let fake_arg = fake.to_string_lossy().into_owned();
    let mut node = TestNode::start_with("fc", 37, &["--fake-firecracker", &fake_arg]).await;
    let (_key, public) = keypair(node.dir.path());

    let health: NodeHealth = node.get("/v1/health").await.unwrap().json().await.unwrap();
    assert_eq!(health.supports, [VmType::Firecracker, VmType::Qemu]);
    assert!(health.unsupported.is_empty(), "{:?}", health.unsupported);

    // Create: the agent's ready report arrives over vsock.
    let a = node.create(&spec(&node, "fc-a", 1, &public)).await.unwrap();
    assert_eq!(a.state, VmState::Running);
    assert!(a.host_key.starts_with("ssh-ed25519 "), "{}", a.host_key);
    let pid_a = running_pid(&node, "fc-a").await;
    let socket_a = api_socket(pid_a);
    let client_a = ApiClient::new(&socket_a);
    let config = client_a.vm_config().await.unwrap();
    let machine = config.machine_config.unwrap();
    assert_eq!((machine.vcpu_count, machine.mem_size_mib), (2, 512));
    let boot = config.boot_source.unwrap();
    assert!(boot.kernel_image_path.ends_with("vmlinux"));
    let args = boot.boot_args.unwrap();
    assert!(
        args.contains("boxcutter.name=fc-a")
            && args.contains("boxcutter.type=firecracker")
            && args.contains(&format!("boxcutter.net={}/30", a.spec.subnet.guest())),
        "{args}"
    );
    let tap_a = boxcutter_net::tap_name(&a.spec.name);
    assert_eq!(config.network_interfaces[0].host_dev_name, tap_a.as_str());
    let links =
        String::from_utf8_lossy(&in_ns(&node.node_ns, "ip", &["-o", "link"]).stdout).into_owned();
    assert!(links.contains(tap_a.as_str()), "tap {tap_a} missing");

    // Stop (Ctrl-Alt-Del ends Firecracker) and start again.
    let stopped: VmRecord = node
        .post("/v1/vms/fc-a/stop", "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    assert!(!alive(pid_a), "firecracker survived stop");
    let started: VmRecord = node
        .post("/v1/vms/fc-a/start", "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(started.state, VmState::Running);
    let pid_a = running_pid(&node, "fc-a").await;
    assert_eq!(started.host_key, a.host_key, "a VM keeps its host key");

    // A live copy: snapshot of the running guest, loaded on the copy's TAP, vsock socket
    // and disks, then told its new identity; the source runs on.
    let body = format!(r#"{{"name":"fc-b","subnet":"{}"}}"#, node.subnet(2));
    let b = node.stream("/v1/vms/fc-a/copy", &body).await.unwrap();
    assert_eq!(b.state, VmState::Running);
    assert_eq!(b.spec.vm_type, VmType::Firecracker);
    assert_ne!(
        b.host_key, a.host_key,
        "the copy gets a host key of its own"
    );
    let pid_b = running_pid(&node, "fc-b").await;
    assert_ne!(pid_a, pid_b);
    assert_eq!(running_pid(&node, "fc-a").await, pid_a, "source runs on");
    let client_b = ApiClient::new(api_socket(pid_b));
    assert_eq!(
        client_b.describe_instance().await.unwrap().state,
        InstanceState::Running
    );
    let config_b = client_b.vm_config().await.unwrap();
    let dir_b = node.data_dir().join("pool/vms/fc-b");
    let drives: Vec<PathBuf> = config_b
        .drives
        .iter()
        .map(|d| d.path_on_host.clone().unwrap())
        .collect();
    assert_eq!(drives, [dir_b.join("root.img"), dir_b.join("config.img")]);
    assert_eq!(
        config_b.network_interfaces[0].host_dev_name,
        boxcutter_net::tap_name(&b.spec.name).as_str()
    );
    let vsock_b = config_b.vsock.unwrap().uds_path;
    assert_ne!(
        vsock_b,
        client_a.vm_config().await.unwrap().vsock.unwrap().uds_path
    );
    assert!(
        !dir_b.join("snapshot.mem").exists() && !dir_b.join("snapshot.state").exists(),
        "snapshot files left in the copy's directory"
    );
    assert_eq!(
        client_a.describe_instance().await.unwrap().state,
        InstanceState::Running,
        "the source was resumed"
    );

    // An agent restart re-adopts both processes, and kills a Firecracker of its run
    // directory that no VM claims.
    node.kill_agent();
    let stray_dir = node.dir.path().join("run/stray");
    std::fs::create_dir_all(&stray_dir).unwrap();
    let mut stray = std::process::Command::new(&fake)
        .arg("--api-sock")
        .arg(stray_dir.join("firecracker.sock"))
        .spawn()
        .unwrap();
    node.spawn_agent(&support::test_image());
    node.wait_healthy().await;
    assert_eq!(running_pid(&node, "fc-a").await, pid_a);
    assert_eq!(running_pid(&node, "fc-b").await, pid_b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = stray.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = stray.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        status.is_some_and(|s| !s.success()),
        "the stray firecracker was not killed"
    );

    // Destroy leaves nothing.
    for (record, pid) in [(&a, pid_a), (&b, pid_b)] {
        let path = format!("/v1/vms/{}", record.spec.name);
        assert!(node.delete(&path).await.status().is_success());
        assert_gone(&node, record, pid);
    }
    // Firecracker's sockets are under the run directory (the agent's own argument names
    // the directory itself).
    let sockets = format!("{}/", node.dir.path().join("run").display());
    assert!(
        pids_mentioning(&sockets).is_empty(),
        "a firecracker is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_node_without_firecracker_says_why_and_still_runs_qemu() {
    let node =
        TestNode::start_with("nofc", 38, &["--firecracker", "/nonexistent/firecracker"]).await;
    let (_key, public) = keypair(node.dir.path());
    let health: NodeHealth = node.get("/v1/health").await.unwrap().json().await.unwrap();
    assert_eq!(health.supports, [VmType::Qemu]);
    let why = &health.unsupported[&VmType::Firecracker];
    assert!(
        why.contains("firecracker binary not found at /nonexistent/firecracker"),
        "{why}"
    );
    let err = node
        .create(&spec(&node, "fc-x", 1, &public))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("cannot run firecracker VMs")
            && err
                .message
                .contains("not found at /nonexistent/firecracker"),
        "{err:?}"
    );
    assert!(!node.data_dir().join("pool/vms/fc-x").exists());
}

/// `fake-firecracker` reads faults to inject from this variable, which the agent's
/// environment passes on to every Firecracker it starts.
const FAULTS_ENV: &str = "BOXCUTTER_FAKE_FIRECRACKER_FAULTS";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_node_rolls_back_a_firecracker_that_dies_during_boot() {
    let fake = fake_firecracker();
    let fake_arg = fake.to_string_lossy().into_owned();
    let node = TestNode::start_with_env(
        "fcdie",
        35,
        &["--fake-firecracker", &fake_arg],
        &[(FAULTS_ENV, "die-during-boot")],
    )
    .await;
    let (_key, public) = keypair(node.dir.path());
    let vm = spec(&node, "fc-dies", 1, &public);
    let err = node.create(&vm).await.unwrap_err();
    assert!(
        err.message
            .contains("firecracker exited during boot (at instance start)"),
        "{err:?}"
    );
    assert_eq!(node.get("/v1/vms/fc-dies").await.unwrap().status(), 404);
    assert!(!node.data_dir().join("pool/vms/fc-dies").exists());
    let tap = boxcutter_net::tap_name(&vm.name);
    let links =
        String::from_utf8_lossy(&in_ns(&node.node_ns, "ip", &["-o", "link"]).stdout).into_owned();
    assert!(!links.contains(tap.as_str()), "tap {tap} left");
    let sockets = format!("{}/", node.dir.path().join("run").display());
    assert!(
        pids_mentioning(&sockets).is_empty(),
        "a firecracker is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_node_a_failed_live_copy_leaves_the_source_running_and_nothing_else() {
    let fake = fake_firecracker();
    let fake_arg = fake.to_string_lossy().into_owned();
    let node = TestNode::start_with_env(
        "fcsnap",
        36,
        &["--fake-firecracker", &fake_arg],
        &[(FAULTS_ENV, "snapshot-halfway")],
    )
    .await;
    let (_key, public) = keypair(node.dir.path());
    node.create(&spec(&node, "fc-src", 1, &public))
        .await
        .unwrap();
    let pid = running_pid(&node, "fc-src").await;

    let body = format!(r#"{{"name":"fc-copy","subnet":"{}"}}"#, node.subnet(2));
    let err = node.stream("/v1/vms/fc-src/copy", &body).await.unwrap_err();
    assert!(err.message.contains("snapshot for copy"), "{err:?}");
    assert!(err.message.contains("partial files removed"), "{err:?}");

    assert_eq!(running_pid(&node, "fc-src").await, pid);
    let client = ApiClient::new(api_socket(pid));
    assert_eq!(
        client.describe_instance().await.unwrap().state,
        InstanceState::Running,
        "the source was resumed"
    );
    assert_eq!(node.get("/v1/vms/fc-copy").await.unwrap().status(), 404);
    assert!(!node.data_dir().join("pool/vms/fc-copy").exists());
    let sockets = format!("{}/", node.dir.path().join("run").display());
    assert_eq!(pids_mentioning(&sockets), [pid], "only the source runs");
}

/// The `fake-jailer` test double, built with the workspace's tests.
fn fake_jailer() -> PathBuf {
    let path = fake_firecracker().with_file_name("fake-jailer");
    assert!(path.is_file(), "{} missing", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_node_runs_jailed_firecracker_vms_and_copies_them_live() {
    let (fake, jailer) = (fake_firecracker(), fake_jailer());
    let (fake, jailer) = (fake.display().to_string(), jailer.display().to_string());
    let mut node = TestNode::start_with(
        "fcjail",
        39,
        &[
            "--fake-firecracker",
            &fake,
            "--jailer",
            &jailer,
            "--jailer-uid",
            "64123",
            "--jailer-gid",
            "64123",
        ],
    )
    .await;
    let (_key, public) = keypair(node.dir.path());
    let a = node.create(&spec(&node, "fc-j", 1, &public)).await.unwrap();
    let pid = running_pid(&node, "fc-j").await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("64123")),
        "firecracker runs as the jail's uid:\n{status}"
    );
    let jail = node.data_dir().join("pool/jail/fake-firecracker/fc-j/root");
    assert!(jail.join("fc.sock").exists(), "api socket in the jail");
    // The kernel is staged once in the pool and hard-linked into each jail, not copied.
    use std::os::unix::fs::MetadataExt;
    let kernel = std::fs::metadata(jail.join("vmlinux")).unwrap();
    assert!(kernel.nlink() >= 2, "the jail's kernel is a copy");
    let client = ApiClient::new(jail.join("fc.sock"));
    let drives = client.vm_config().await.unwrap().drives;
    assert_eq!(
        drives[0].path_on_host.as_deref(),
        Some(std::path::Path::new("/rootfs.img"))
    );

    let body = format!(r#"{{"name":"fc-j2","subnet":"{}"}}"#, node.subnet(2));
    let b = node.stream("/v1/vms/fc-j/copy", &body).await.unwrap();
    assert_eq!(b.state, VmState::Running);
    let pid_b = running_pid(&node, "fc-j2").await;

    node.kill_agent();
    node.spawn_agent(&support::test_image());
    node.wait_healthy().await;
    assert_eq!(
        running_pid(&node, "fc-j").await,
        pid,
        "a jailed VM is re-adopted"
    );

    // Stop and start: the old jail is gone and a new one is made.
    let stopped: VmRecord = node
        .post("/v1/vms/fc-j/stop", "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    assert!(!jail.exists(), "the jail goes with its firecracker");
    let started: VmRecord = node
        .post("/v1/vms/fc-j/start", "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(started.state, VmState::Running, "{started:?}");

    for (record, pid) in [(&a, running_pid(&node, "fc-j").await), (&b, pid_b)] {
        let path = format!("/v1/vms/{}", record.spec.name);
        assert!(node.delete(&path).await.status().is_success());
        assert_gone(&node, record, pid);
    }
    let jails = node.data_dir().join("pool/jail/fake-firecracker");
    let left: Vec<_> = std::fs::read_dir(&jails)
        .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "jails left: {left:?}");
}
