//! The API types' wire forms, checked against the shapes of Firecracker's published spec,
//! and the client's handling of answers and failures on a socket (against the in-process
//! `FakeFirecracker`; the whole contract is exercised by `tests/firecracker_contract.rs`).

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::firecracker::fake::{Endpoint, FakeFirecracker, FakeOptions, Fault};

fn wire<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("serializes")
}

#[test]
fn requests_serialize_to_the_spec_shapes() {
    let machine = MachineConfig::new(2, 1024).tracking_dirty_pages();
    assert_eq!(
        wire(&machine),
        json!({"vcpu_count": 2, "mem_size_mib": 1024, "track_dirty_pages": true})
    );
    let drive = Drive::new("rootfs", "/vm/disk.img", false).as_root();
    assert_eq!(
        wire(&drive),
        json!({"drive_id": "rootfs", "path_on_host": "/vm/disk.img", "is_root_device": true,
               "is_read_only": false})
    );
    assert_eq!(drive.path(), "/drives/rootfs");
    let mac: MacAddr = "06:00:AC:10:00:02".parse().unwrap();
    let nic = NetworkInterface::new("eth0", "bc-tap1", mac);
    assert_eq!(
        wire(&nic),
        json!({"iface_id": "eth0", "host_dev_name": "bc-tap1", "guest_mac": "06:00:ac:10:00:02"})
    );
    assert_eq!(nic.path(), "/network-interfaces/eth0");
    assert_eq!(
        wire(&InstanceAction::START),
        json!({"action_type": "InstanceStart"})
    );
    let pause = VmStateUpdate {
        state: VmState::Paused,
    };
    assert_eq!(wire(&pause), json!({"state": "Paused"}));
}

#[test]
fn snapshot_requests_serialize_to_the_spec_shapes() {
    assert_eq!(
        wire(&SnapshotCreate::diff("/s/state", "/s/mem")),
        json!({"snapshot_type": "Diff", "snapshot_path": "/s/state", "mem_file_path": "/s/mem"})
    );
    let load = SnapshotLoad::from_files("/s/state", "/s/mem")
        .tracking_dirty_pages()
        .resuming();
    assert_eq!(
        wire(&load),
        json!({"snapshot_path": "/s/state",
               "mem_backend": {"backend_type": "File", "backend_path": "/s/mem"},
               "enable_diff_snapshots": true, "resume_vm": true})
    );
}

#[test]
fn request_types_refuse_unknown_and_missing_fields() {
    let unknown = json!({"vcpu_count": 1, "mem_size_mib": 128, "ht_enabled": true});
    let error = serde_json::from_value::<MachineConfig>(unknown).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `ht_enabled`"),
        "{error}"
    );
    let missing = json!({"boot_args": "console=ttyS0"});
    let error = serde_json::from_value::<BootSource>(missing).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("missing field `kernel_image_path`"),
        "{error}"
    );
    let nested = json!({"snapshot_path": "/s", "mem_backend": {"backend_path": "/m"}});
    assert!(serde_json::from_value::<SnapshotLoad>(nested).is_err());
}

#[test]
fn answers_tolerate_fields_a_newer_firecracker_adds() {
    let info: InstanceInfo = serde_json::from_value(json!({
        "id": "vm1", "state": "Not started", "vmm_version": "1.10.1",
        "app_name": "Firecracker", "memory_hotplug": null
    }))
    .unwrap();
    assert_eq!(info.state, InstanceState::NotStarted);
    let later: InstanceInfo = serde_json::from_value(json!({
        "id": "vm1", "state": "Hibernating", "vmm_version": "9.0.0", "app_name": "Firecracker"
    }))
    .unwrap();
    assert_eq!(later.state, InstanceState::Other("Hibernating".into()));

    let config: FullVmConfig = serde_json::from_value(json!({
        "balloon": null,
        "drives": [{"drive_id": "rootfs", "partuuid": null, "is_root_device": true,
                    "cache_type": "Unsafe", "is_read_only": false,
                    "path_on_host": "/vm/disk.img", "rate_limiter": null,
                    "io_engine": "Sync", "socket": null}],
        "boot-source": null,
        "cpu-config": null,
        "logger": null,
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 512, "smt": false,
                           "track_dirty_pages": true, "huge_pages": "None"},
        "metrics": null,
        "mmds-config": null,
        "network-interfaces": null,
        "vsock": {"guest_cid": 3, "uds_path": "/vm/v.sock", "vsock_id": null},
        "entropy": null
    }))
    .unwrap();
    assert_eq!(
        config.drives[0].path_on_host.as_deref(),
        Some("/vm/disk.img".as_ref())
    );
    assert_eq!(config.machine_config.unwrap().track_dirty_pages, Some(true));
    assert!(config.network_interfaces.is_empty());
    assert_eq!(config.vsock.unwrap().guest_cid, 3);
}

#[test]
fn mac_addresses_round_trip_and_bad_ones_are_refused() {
    let mac: MacAddr = "06:00:0a:00:00:ff".parse().unwrap();
    assert_eq!(mac.0, [6, 0, 10, 0, 0, 255]);
    assert_eq!(mac.to_string(), "06:00:0a:00:00:ff");
    for bad in [
        "",
        "06:00:0a:00:00",
        "06:00:0a:00:00:ff:01",
        "6:00:0a:00:00:ff",
        "zz:00:0a:00:00:ff",
    ] {
        assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
    }
}

#[test]
fn error_bodies_and_empty_answers_decode() {
    let call = Call::new(Path::new("/run/fc.sock"), Method::PUT, "/actions".into());
    let fault = decode::<NoContent>(
        &call,
        StatusCode::BAD_REQUEST,
        br#"{"fault_message": "Cannot start microvm without kernel configuration."}"#,
    )
    .unwrap_err();
    assert_eq!(
        fault.to_string(),
        "firecracker refused PUT /actions on /run/fc.sock with 400 Bad Request: \
         Cannot start microvm without kernel configuration."
    );
    assert_eq!(fault.status(), Some(StatusCode::BAD_REQUEST));
    let raw = decode::<NoContent>(&call, StatusCode::BAD_GATEWAY, b"upstream gone").unwrap_err();
    assert_eq!(raw.fault_message(), Some("upstream gone"));
    let bare = decode::<NoContent>(&call, StatusCode::INTERNAL_SERVER_ERROR, b"").unwrap_err();
    assert_eq!(bare.fault_message(), Some("(no fault message)"));
    assert_eq!(
        decode::<NoContent>(&call, StatusCode::NO_CONTENT, b"").unwrap(),
        NoContent
    );
    let shape = decode::<InstanceInfo>(&call, StatusCode::OK, b"{}").unwrap_err();
    assert!(matches!(shape, ApiError::Decode { .. }), "{shape:?}");
}

/// A fake in a temporary directory, with `faults`.
fn fake(faults: Vec<Fault>) -> (tempfile::TempDir, FakeFirecracker) {
    let dir = tempfile::tempdir().unwrap();
    let options = FakeOptions {
        faults,
        ..FakeOptions::new(dir.path().join("api.sock"))
    };
    let fake = FakeFirecracker::start(options).unwrap();
    (dir, fake)
}

fn endpoint(method: Method, path: &str) -> Endpoint {
    Endpoint {
        method,
        path: path.into(),
    }
}

#[tokio::test]
async fn a_refusal_names_the_request_the_status_and_the_socket() {
    let (_dir, fake) = fake(vec![]);
    let client = ApiClient::new(fake.socket());
    let error = client.start_instance().await.unwrap_err();
    let ApiError::Fault {
        socket,
        request,
        status,
        fault_message,
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(socket, fake.socket());
    assert_eq!(request, "PUT /actions");
    assert_eq!(*status, StatusCode::BAD_REQUEST);
    assert!(fault_message.contains("kernel"), "{fault_message}");
    assert_eq!(fake.requests(), ["PUT /actions 400"]);
}

#[tokio::test]
async fn an_injected_500_and_a_hang_are_reported_with_their_request() {
    let faults = vec![
        Fault::InternalError(endpoint(Method::GET, "/vm/config")),
        Fault::Hang(endpoint(Method::GET, "/")),
    ];
    let (_dir, fake) = fake(faults);
    let client = ApiClient::new(fake.socket()).with_timeout(Duration::from_millis(200));
    let error = client.vm_config().await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));

    let hang = client.describe_instance().await.unwrap_err();
    assert!(
        matches!(&hang, ApiError::Timeout { request, .. } if request == "GET /"),
        "{hang:?}"
    );
    let text = hang.to_string();
    assert!(
        text.contains(&fake.socket().display().to_string()),
        "{text}"
    );
    assert!(text.contains("within 200ms"), "{text}");
}

#[tokio::test]
async fn a_missing_socket_fails_to_connect_and_never_appears() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let error = ApiClient::new(&socket)
        .describe_instance()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ApiError::Connect { socket: s, .. } if s == &socket),
        "{error:?}"
    );

    let waited = ApiClient::wait_for_socket(&socket, Duration::from_millis(50)).await;
    let error = waited.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "firecracker api socket {} did not appear within 50ms",
            socket.display()
        )
    );
}

#[tokio::test]
async fn a_process_dying_mid_request_is_reported_as_closed() {
    let (dir, mut fake) = fake(vec![Fault::DieDuringBoot]);
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, b"").unwrap();
    let client = ApiClient::wait_for_socket(fake.socket(), Duration::from_secs(1))
        .await
        .unwrap();
    let boot = BootSource {
        kernel_image_path: kernel,
        boot_args: None,
        initrd_path: None,
    };
    client.put_boot_source(&boot).await.unwrap();
    let error = client.start_instance().await.unwrap_err();
    assert!(
        matches!(&error, ApiError::Closed { request, .. } if request == "PUT /actions"),
        "{error:?}"
    );
    assert_eq!(fake.wait_exit(Duration::from_secs(1)).await, Some(1));
}
