//! Failures injected into the `fake-firecracker` process, and what the client makes of
//! them: a process dying during boot, an API socket that never appears, a snapshot that
//! fails halfway, an endpoint answering 500, a call that never returns. Fake-only: these
//! are the failures a real Firecracker cannot be made to produce on demand.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod firecracker_support;

use std::time::Duration;

use boxcutter_vmm::firecracker::api::{ApiClient, ApiError, InstanceState, SnapshotCreate};
use boxcutter_vmm::firecracker::capability::{self, FirecrackerVersion};
use boxcutter_vmm::firecracker::fake::{Fault, FAULTS_ENV};
use boxcutter_vmm::kvm::{Accel, KvmVerdict};
use firecracker_support::{Instance, Target};
use hyper::StatusCode;

async fn launch_with(dir: &std::path::Path, name: &str, faults: &[&str]) -> Instance {
    let args: Vec<String> = faults
        .iter()
        .flat_map(|fault| ["--fake-fault".to_owned(), (*fault).to_owned()])
        .collect();
    let vm = Target::fake().spawn(dir, name, &args, &[]);
    ApiClient::wait_for_socket(&vm.socket, Duration::from_secs(5))
        .await
        .expect("the fake creates its socket");
    vm
}

#[tokio::test]
async fn firecracker_dying_during_boot_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = launch_with(dir.path(), "dies", &[&Fault::DieDuringBoot.to_string()]).await;
    Target::fake().guest(dir.path()).configure(&vm.client).await;

    let error = vm.client.start_instance().await.unwrap_err();
    assert!(matches!(&error, ApiError::Closed { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "firecracker closed api socket {} before answering PUT /actions",
            vm.socket.display()
        )
    );
    let status = vm
        .wait_exit(Duration::from_secs(2))
        .await
        .expect("the process exited");
    assert_eq!(status.code(), Some(1));
    let after = vm.client.describe_instance().await.unwrap_err();
    assert!(
        matches!(&after, ApiError::Connect { socket, .. } if socket == &vm.socket),
        "{after:?}"
    );
}

#[tokio::test]
async fn an_api_socket_that_never_appears_times_out_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = Target::fake().spawn(dir.path(), "mute", &[], &[(FAULTS_ENV, "no-socket")]);
    let error = ApiClient::wait_for_socket(&vm.socket, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "firecracker api socket {} did not appear within 300ms",
            vm.socket.display()
        )
    );
    assert!(vm.is_running(), "the process lives on without a socket");
    vm.kill().await;
}

#[tokio::test]
async fn a_snapshot_failing_halfway_reports_its_partial_files() {
    let dir = tempfile::tempdir().unwrap();
    let vm = Target::fake().spawn(dir.path(), "half", &[], &[(FAULTS_ENV, "snapshot-halfway")]);
    let client = ApiClient::wait_for_socket(&vm.socket, Duration::from_secs(5))
        .await
        .unwrap();
    Target::fake().guest(dir.path()).configure(&client).await;
    client.start_instance().await.unwrap();
    client.pause().await.unwrap();

    let snapshot = SnapshotCreate::full(dir.path().join("vm.state"), dir.path().join("vm.mem"));
    let error = client.create_snapshot(&snapshot).await.unwrap_err();
    let ApiError::SnapshotIncomplete {
        partial_files,
        source,
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(
        partial_files,
        &[
            snapshot.snapshot_path.clone(),
            snapshot.mem_file_path.clone()
        ]
    );
    assert_eq!(source.status(), Some(StatusCode::BAD_REQUEST));
    let text = error.to_string();
    assert!(
        text.contains(&snapshot.mem_file_path.display().to_string()),
        "{text}"
    );
    let memory = std::fs::metadata(&snapshot.mem_file_path).unwrap().len();
    assert!(
        memory < u64::from(firecracker_support::MEM_MIB) << 20,
        "only half written"
    );

    // Firecracker survives a failed snapshot: the guest is still paused and resumes.
    assert_eq!(
        client.describe_instance().await.unwrap().state,
        InstanceState::Paused
    );
    client.resume().await.unwrap();
}

#[tokio::test]
async fn an_endpoint_made_to_fail_answers_500() {
    let dir = tempfile::tempdir().unwrap();
    let vm = launch_with(dir.path(), "five", &["500:PUT /vsock"]).await;
    let vsock = Target::fake().guest(dir.path()).vsock();
    let error = vm.client.put_vsock(&vsock).await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert!(error.to_string().contains("PUT /vsock"), "{error}");
}

#[tokio::test]
async fn a_call_that_never_returns_times_out_naming_socket_and_request() {
    let dir = tempfile::tempdir().unwrap();
    let vm = launch_with(dir.path(), "hang", &["hang:PUT /snapshot/create"]).await;
    let client = vm
        .client
        .clone()
        .with_snapshot_timeout(Duration::from_millis(300));
    Target::fake().guest(dir.path()).configure(&client).await;
    client.start_instance().await.unwrap();
    client.pause().await.unwrap();
    let snapshot = SnapshotCreate::full(dir.path().join("s"), dir.path().join("m"));
    let error = client.create_snapshot(&snapshot).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "no answer to PUT /snapshot/create on firecracker api socket {} within 300ms",
            vm.socket.display()
        )
    );
}

#[tokio::test]
async fn a_guest_ignoring_ctrl_alt_del_keeps_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = launch_with(dir.path(), "stubborn", &["ignore-ctrl-alt-del"]).await;
    Target::fake().guest(dir.path()).configure(&vm.client).await;
    vm.client.start_instance().await.unwrap();
    vm.client.send_ctrl_alt_del().await.unwrap();
    assert!(vm.wait_exit(Duration::from_millis(300)).await.is_none());
    vm.kill().await;
}

#[tokio::test]
async fn a_stale_socket_stops_the_process_as_it_stops_firecracker() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stale.sock"), b"").unwrap();
    let mut vm = Target::fake().spawn(dir.path(), "stale", &[], &[]);
    let status = vm
        .wait_exit(Duration::from_secs(2))
        .await
        .expect("exits at once");
    assert!(!status.success());
    assert!(
        vm.output().contains("Failed to open the API socket"),
        "{}",
        vm.output()
    );
}

#[tokio::test]
async fn capability_detection_reads_the_binary_version() {
    let fake = std::path::Path::new(env!("CARGO_BIN_EXE_fake-firecracker"));
    let kvm = KvmVerdict {
        accel: Accel::Kvm,
        reason: None,
        boot_id: String::new(),
    };
    let version = capability::detect(fake, &kvm)
        .await
        .expect("a runnable binary");
    assert_eq!(version, FirecrackerVersion::new(1, 16, 1));
}
