//! The contract on its own, request by request, without HTTP: what it refuses, in which
//! state, with which message, and what it leaves on disk.

use std::path::PathBuf;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::contract::{After, Contract, Reply};
use super::Fault;
use crate::firecracker::api::InstanceState;

/// A contract in a temporary directory holding a kernel and a disk.
struct Bench {
    dir: tempfile::TempDir,
    contract: Contract,
}

impl Bench {
    fn new() -> Self {
        Self::with_faults(vec![])
    }

    fn with_faults(faults: Vec<Fault>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for file in ["vmlinux", "disk.img", "fc.log", "metrics.json"] {
            std::fs::write(dir.path().join(file), b"").unwrap();
        }
        let contract = Contract::new("test".into(), faults);
        Self { dir, contract }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn call(&mut self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| b.to_string());
        self.contract
            .handle(&method, path, body.as_deref().map(str::as_bytes))
    }

    fn put(&mut self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body))
    }

    fn ok(&mut self, method: Method, path: &str, body: Value) {
        let reply = self.call(method, path, Some(body));
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "{path}: {:?}",
            reply.body
        );
    }

    fn boot_source(&self) -> Value {
        json!({"kernel_image_path": self.path("vmlinux")})
    }

    fn drive(&self) -> Value {
        json!({"drive_id": "rootfs", "path_on_host": self.path("disk.img"),
               "is_root_device": true, "is_read_only": false})
    }

    fn vsock(&self) -> Value {
        json!({"guest_cid": 3, "uds_path": self.path("v.sock")})
    }

    /// Configured and started, with dirty page tracking.
    fn running(mut self) -> Self {
        let machine = json!({"vcpu_count": 1, "mem_size_mib": 64, "track_dirty_pages": true});
        self.ok(Method::PUT, "/machine-config", machine);
        let (boot, drive, vsock) = (self.boot_source(), self.drive(), self.vsock());
        self.ok(Method::PUT, "/boot-source", boot);
        self.ok(Method::PUT, "/drives/rootfs", drive);
        self.ok(Method::PUT, "/vsock", vsock);
        self.ok(
            Method::PUT,
            "/actions",
            json!({"action_type": "InstanceStart"}),
        );
        self
    }

    fn paused(mut self) -> Self {
        self.ok(Method::PATCH, "/vm", json!({"state": "Paused"}));
        self
    }

    fn snapshot(&mut self, kind: &str, state: &str, memory: &str) -> Reply {
        let body = json!({"snapshot_type": kind, "snapshot_path": self.path(state),
                          "mem_file_path": self.path(memory)});
        self.put("/snapshot/create", body)
    }
}

fn fault(reply: &Reply) -> String {
    let body: Value = serde_json::from_str(reply.body.as_deref().expect("a fault body")).unwrap();
    body["fault_message"]
        .as_str()
        .expect("fault_message")
        .to_owned()
}

fn refused(reply: &Reply, needle: &str) {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    let message = fault(reply);
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

#[test]
fn every_pre_boot_resource_is_refused_once_running() {
    let mut bench = Bench::new().running();
    let logger = json!({"log_path": bench.path("fc.log")});
    let requests = [
        (
            "/machine-config",
            json!({"vcpu_count": 2, "mem_size_mib": 128}),
        ),
        ("/boot-source", bench.boot_source()),
        ("/drives/rootfs", bench.drive()),
        (
            "/network-interfaces/eth0",
            json!({"iface_id": "eth0", "host_dev_name": "tap0"}),
        ),
        (
            "/vsock",
            json!({"guest_cid": 4, "uds_path": bench.path("w.sock")}),
        ),
        ("/balloon", json!({"amount_mib": 0, "deflate_on_oom": true})),
        ("/logger", logger),
        ("/actions", json!({"action_type": "InstanceStart"})),
    ];
    for (path, body) in requests {
        refused(
            &bench.put(path, body),
            "not supported after starting the microVM",
        );
    }
    let load = json!({"snapshot_path": "/s", "mem_file_path": "/m"});
    refused(&bench.put("/snapshot/load", load), "after starting");
}

#[test]
fn runtime_requests_are_refused_before_boot() {
    let mut bench = Bench::new();
    refused(
        &bench.call(Method::PATCH, "/vm", Some(json!({"state": "Paused"}))),
        "not supported before starting the microVM",
    );
    for action in ["SendCtrlAltDel", "FlushMetrics"] {
        refused(
            &bench.put("/actions", json!({"action_type": action})),
            "before starting",
        );
    }
    refused(&bench.snapshot("Full", "s", "m"), "before starting");
    assert!(!bench.path("s").exists());
}

#[test]
fn start_needs_a_kernel_but_machine_config_has_defaults() {
    let mut bench = Bench::new();
    refused(
        &bench.put("/actions", json!({"action_type": "InstanceStart"})),
        "kernel",
    );
    let boot = bench.boot_source();
    bench.ok(Method::PUT, "/boot-source", boot);
    bench.ok(
        Method::PUT,
        "/actions",
        json!({"action_type": "InstanceStart"}),
    );
    assert_eq!(bench.contract.state(), InstanceState::Running);
    let config = bench.call(Method::GET, "/machine-config", None);
    let config: Value = serde_json::from_str(config.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        (
            config["vcpu_count"].as_u64(),
            config["mem_size_mib"].as_u64()
        ),
        (Some(1), Some(128))
    );
}

#[test]
fn files_are_checked_when_the_request_arrives() {
    let mut bench = Bench::new();
    let missing = json!({"kernel_image_path": bench.path("nope")});
    refused(
        &bench.put("/boot-source", missing),
        "The kernel file cannot be opened",
    );
    let drive = json!({"drive_id": "data", "path_on_host": bench.path("nope"),
                       "is_root_device": false});
    refused(
        &bench.put("/drives/data", drive),
        "Unable to create the virtio block device",
    );
    let logger = json!({"log_path": bench.path("nope.log")});
    refused(&bench.put("/logger", logger), "Failed to open target file");

    let vsock = bench.vsock();
    bench.ok(Method::PUT, "/vsock", vsock);
    assert!(
        bench.path("v.sock").exists(),
        "the vsock socket is bound at once"
    );
    let metrics = json!({"metrics_path": bench.path("metrics.json")});
    bench.ok(Method::PUT, "/metrics", metrics.clone());
    refused(
        &bench.put("/metrics", metrics),
        "Reinitialization of metrics not allowed",
    );
}

#[test]
fn ids_names_and_addresses_are_checked() {
    let mut bench = Bench::new();
    let drive = bench.drive();
    refused(
        &bench.put("/drives/other", drive),
        "does not match the id from the body",
    );
    let bad_id = json!({"iface_id": "eth-0", "host_dev_name": "tap0"});
    refused(
        &bench.put("/network-interfaces/eth-0", bad_id),
        "alphanumeric",
    );
    let long = json!({"iface_id": "eth0", "host_dev_name": "a-name-far-too-long"});
    refused(
        &bench.put("/network-interfaces/eth0", long),
        "Invalid TUN/TAP Interface name",
    );
    let nic = |id: &str, tap: &str| {
        json!({"iface_id": id, "host_dev_name": tap,
                                           "guest_mac": "06:00:00:00:00:01"})
    };
    bench.ok(Method::PUT, "/network-interfaces/eth0", nic("eth0", "tap0"));
    refused(
        &bench.put("/network-interfaces/eth1", nic("eth1", "tap1")),
        "MAC address is already in use",
    );
    refused(
        &bench.put("/vsock", json!({"guest_cid": 2, "uds_path": "/x"})),
        "Invalid guest CID",
    );
    let smt = json!({"vcpu_count": 3, "mem_size_mib": 128, "smt": true});
    refused(&bench.put("/machine-config", smt), "vCPU number is invalid");
}

#[test]
fn malformed_requests_are_refused_as_firecracker_refuses_them() {
    let mut bench = Bench::new();
    refused(
        &bench.call(Method::PUT, "/boot-source", None),
        "Empty PUT request.",
    );
    refused(
        &bench.call(Method::GET, "/", Some(json!({}))),
        "GET request cannot have a body.",
    );
    refused(
        &bench.call(Method::DELETE, "/vm", None),
        "Invalid request method and/or path",
    );
    refused(
        &bench.put("/cpu-config", json!({})),
        "Invalid request method and/or path",
    );
    let reply = bench
        .contract
        .handle(&Method::PUT, "/machine-config", Some(b"{not json"));
    refused(
        &reply,
        "An error occurred when deserializing the json body of a request",
    );
    refused(
        &bench.put("/actions", json!({"action_type": "Reboot"})),
        "unknown variant `Reboot`",
    );
}

#[test]
fn snapshots_need_a_paused_guest_and_diffs_need_tracking() {
    let mut bench = Bench::new().running();
    refused(
        &bench.snapshot("Full", "s", "m"),
        "save/restore unavailable while running",
    );
    assert!(!bench.path("s").exists() && !bench.path("m").exists());

    let mut bench = bench.paused();
    assert_eq!(
        bench.snapshot("Full", "s", "m").status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(std::fs::metadata(bench.path("m")).unwrap().len(), 64 << 20);
    assert_eq!(
        bench.snapshot("Diff", "d", "dm").status,
        StatusCode::NO_CONTENT
    );
    refused(
        &bench.snapshot("Full", "no-such-dir/s", "m2"),
        "snapshot backing file",
    );

    let mut untracked = Bench::new();
    let boot = untracked.boot_source();
    untracked.ok(Method::PUT, "/boot-source", boot);
    untracked.ok(
        Method::PUT,
        "/actions",
        json!({"action_type": "InstanceStart"}),
    );
    let mut untracked = untracked.paused();
    refused(
        &untracked.snapshot("Diff", "d", "dm"),
        "dirty page tracking disabled",
    );
}

#[test]
fn a_snapshot_stopped_halfway_leaves_its_partial_files() {
    let mut bench = Bench::with_faults(vec![Fault::SnapshotHalfway])
        .running()
        .paused();
    refused(
        &bench.snapshot("Full", "s", "m"),
        "Cannot write memory file",
    );
    assert!(bench.path("s").exists());
    assert_eq!(std::fs::metadata(bench.path("m")).unwrap().len(), 32 << 20);
    assert_eq!(bench.contract.state(), InstanceState::Paused);
}

#[test]
fn a_snapshot_loads_only_on_a_fresh_instance() {
    let mut source = Bench::new().running().paused();
    assert_eq!(
        source.snapshot("Full", "s", "m").status,
        StatusCode::NO_CONTENT
    );
    let load = json!({"snapshot_path": source.path("s"),
                      "mem_backend": {"backend_type": "File", "backend_path": source.path("m")}});

    let mut configured = Bench::new();
    let boot = configured.boot_source();
    configured.ok(Method::PUT, "/boot-source", boot);
    let reply = configured.put("/snapshot/load", load.clone());
    refused(
        &reply,
        "not allowed after configuring boot-specific resources",
    );
    assert_eq!(reply.after, After::Nothing, "not fatal: nothing was loaded");

    // The first process still holds the vsock socket path: the load must fail, fatally.
    let mut fresh = Bench::new();
    let reply = fresh.put("/snapshot/load", load.clone());
    refused(&reply, "Address already in use");
    assert_eq!(reply.after, After::Exit(1));

    std::fs::remove_file(source.path("v.sock")).unwrap();
    let mut fresh = Bench::new();
    let logger = json!({"log_path": fresh.path("fc.log")});
    fresh.ok(Method::PUT, "/logger", logger);
    fresh.ok(Method::PUT, "/snapshot/load", load);
    assert_eq!(fresh.contract.state(), InstanceState::Paused);
    let config = fresh.call(Method::GET, "/vm/config", None);
    let config: Value = serde_json::from_str(config.body.as_deref().unwrap()).unwrap();
    assert_eq!(config["boot-source"], Value::Null);
    assert_eq!(config["drives"][0]["drive_id"], "rootfs");
    assert_eq!(config["machine-config"]["mem_size_mib"], 64);
}

#[test]
fn load_requires_exactly_one_memory_source() {
    let mut bench = Bench::new();
    let neither = json!({"snapshot_path": "/s"});
    refused(
        &bench.put("/snapshot/load", neither),
        "either `mem_backend` or `mem_file_path` is required",
    );
    let both = json!({"snapshot_path": "/s", "mem_file_path": "/m",
                      "mem_backend": {"backend_type": "File", "backend_path": "/m"}});
    refused(&bench.put("/snapshot/load", both), "exclusively");
    let missing = json!({"snapshot_path": bench.path("none"), "mem_file_path": "/m"});
    let reply = bench.put("/snapshot/load", missing);
    refused(&reply, "Failed to restore from snapshot");
    assert_eq!(reply.after, After::Exit(1));
}

#[test]
fn ctrl_alt_del_ends_a_running_guest_and_waits_for_a_paused_one() {
    let mut running = Bench::new().running();
    let reply = running.put("/actions", json!({"action_type": "SendCtrlAltDel"}));
    assert_eq!(
        (reply.status, reply.after),
        (StatusCode::NO_CONTENT, After::Exit(0))
    );

    let mut paused = Bench::new().running().paused();
    let reply = paused.put("/actions", json!({"action_type": "SendCtrlAltDel"}));
    assert_eq!(reply.after, After::Nothing);
    let reply = paused.call(Method::PATCH, "/vm", Some(json!({"state": "Resumed"})));
    assert_eq!(reply.after, After::Exit(0));

    let mut stubborn = Bench::with_faults(vec![Fault::IgnoreCtrlAltDel]).running();
    let reply = stubborn.put("/actions", json!({"action_type": "SendCtrlAltDel"}));
    assert_eq!(reply.after, After::Nothing);
}

#[test]
fn injected_boot_death_leaves_no_reply() {
    let mut bench = Bench::with_faults(vec![Fault::DieDuringBoot]);
    let boot = bench.boot_source();
    bench.ok(Method::PUT, "/boot-source", boot);
    let reply = bench.put("/actions", json!({"action_type": "InstanceStart"}));
    assert_eq!(reply.after, After::Die(1));
    assert_eq!(
        bench.contract.log().last().map(String::as_str),
        Some("PUT /actions 204")
    );
}

#[test]
fn instance_info_follows_the_state() {
    let mut bench = Bench::new().running().paused();
    let info = bench.call(Method::GET, "/", None);
    let info: Value = serde_json::from_str(info.body.as_deref().unwrap()).unwrap();
    assert_eq!(info["state"], "Paused");
    assert_eq!(info["id"], "test");
    assert_eq!(info["app_name"], "Firecracker");
}
