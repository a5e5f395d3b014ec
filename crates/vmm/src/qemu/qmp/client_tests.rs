//! The client's behaviour on a socket: against `FakeQmpServer` for the wire handling
//! (negotiation, event buffering, stale responses, errors, timeouts), then against a real
//! QEMU.

use super::fake::{FakeQmpServer, Step, GREETING};
use super::*;

fn send(line: &str) -> Step {
    Step::Send(line.to_owned())
}

fn event(name: &str) -> Step {
    Step::Send(format!(
        r#"{{"timestamp": {{"seconds": 1, "microseconds": 0}}, "event": "{name}"}}"#
    ))
}

/// Greeting and capabilities negotiation, then `rest`.
fn script(rest: Vec<Step>) -> Vec<Step> {
    let mut steps = vec![
        send(GREETING),
        Step::Expect("qmp_capabilities"),
        Step::Reply(serde_json::json!({})),
    ];
    steps.extend(rest);
    steps
}

const SHORT: Duration = Duration::from_millis(300);

async fn connect(server: &FakeQmpServer) -> QmpClient {
    QmpClient::connect_with_timeout(server.path(), Duration::from_secs(5))
        .await
        .expect("connects")
}

#[tokio::test]
async fn connect_negotiates_and_keeps_the_version() {
    let server = FakeQmpServer::start(script(vec![
        Step::Expect("query-status"),
        Step::Reply(serde_json::json!({"status": "paused", "running": false})),
    ]));
    let mut client = connect(&server).await;
    assert_eq!(client.version().qemu.major, 10);
    assert_eq!(client.greeting().capabilities, ["oob"]);

    let status = client.query_status().await.expect("query-status");
    assert_eq!(status.status, RunState::Paused);
    drop(client);

    let received = server.received().await;
    assert_eq!(
        received[0],
        serde_json::json!({"execute": "qmp_capabilities", "id": 1})
    );
    assert_eq!(
        received[1],
        serde_json::json!({"execute": "query-status", "id": 2})
    );
}

#[tokio::test]
async fn events_before_a_response_are_buffered_in_order() {
    let server = FakeQmpServer::start(script(vec![
        Step::Expect("cont"),
        event("RESUME"),
        event("X_VENDOR_EVENT"),
        Step::Reply(serde_json::json!({})),
        Step::Expect("stop"),
        event("STOP"),
        Step::Reply(serde_json::json!({})),
    ]));
    let mut client = connect(&server).await;
    client.cont().await.expect("cont");
    client.stop().await.expect("stop");

    let vendor = client
        .wait_for_event("X_VENDOR_EVENT", SHORT)
        .await
        .expect("buffered");
    assert_eq!(vendor.name, "X_VENDOR_EVENT");
    let resume = client
        .next_event(SHORT)
        .await
        .expect("read")
        .expect("buffered");
    assert_eq!(resume.name, "RESUME");
    let stop = client.wait_for::<StopEvent>(SHORT).await.expect("buffered");
    assert_eq!(stop, StopEvent {});
    assert_eq!(client.next_event(SHORT).await.expect("read"), None);
}

#[tokio::test]
async fn events_are_read_from_the_socket_while_waiting() {
    let server = FakeQmpServer::start(script(vec![
        event("POWERDOWN"),
        send(
            r#"{"timestamp": {"seconds": 2, "microseconds": 5}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#,
        ),
    ]));
    let mut client = connect(&server).await;
    let shutdown = client
        .wait_for::<ShutdownEvent>(Duration::from_secs(5))
        .await;
    assert_eq!(
        shutdown.expect("shutdown").reason,
        ShutdownCause::GuestShutdown
    );
    let taken = client.take_events();
    assert_eq!(taken.len(), 1);
    assert_eq!(
        taken[0].decode::<PowerdownEvent>().expect("ok"),
        Some(PowerdownEvent {})
    );
}

#[tokio::test]
async fn error_responses_map_to_command_errors() {
    let server = FakeQmpServer::start(script(vec![
        Step::Expect("migrate"),
        Step::ReplyError("GenericError", "There's a migration process in progress"),
    ]));
    let mut client = connect(&server).await;
    let error = client
        .execute(Migrate::to_uri("tcp:127.0.0.1:4444"))
        .await
        .unwrap_err();
    let QmpError::Command {
        command,
        class,
        desc,
    } = &error
    else {
        panic!("expected a command error, got {error:?}");
    };
    assert_eq!(
        (command.as_str(), class.as_str()),
        ("migrate", "GenericError")
    );
    assert_eq!(desc, "There's a migration process in progress");
    assert_eq!(
        error.to_string(),
        "qmp command migrate failed: GenericError: There's a migration process in progress"
    );
}

#[tokio::test]
async fn responses_to_abandoned_commands_are_dropped() {
    let server = FakeQmpServer::start(script(vec![
        Step::Expect("query-status"),
        send(r#"{"return": {"status": "running", "running": true}, "id": 1000}"#),
        Step::Reply(serde_json::json!({"status": "paused", "running": false})),
    ]));
    let mut client = connect(&server).await;
    let status = client.query_status().await.expect("query-status");
    assert_eq!(status.status, RunState::Paused);
}

#[tokio::test]
async fn eof_mid_response_is_a_clear_error() {
    const CUT: &str = r#"{"return": {"status": "#;
    let server = FakeQmpServer::start(script(vec![
        Step::Expect("query-status"),
        Step::SendPartial(CUT),
        Step::Close,
    ]));
    let mut client = connect(&server).await;
    let error = client.query_status().await.unwrap_err();
    assert!(matches!(error, QmpError::Truncated { bytes, .. } if bytes == CUT.len()));
    let message = error.to_string();
    assert!(message.contains("closed mid-message"), "{message}");
    assert!(
        message.contains("the response to `query-status`"),
        "{message}"
    );
}

#[tokio::test]
async fn eof_between_messages_is_closed() {
    let server = FakeQmpServer::start(script(vec![Step::Expect("stop"), Step::Close]));
    let mut client = connect(&server).await;
    let error = client.stop().await.unwrap_err();
    assert!(matches!(error, QmpError::Closed { .. }), "{error:?}");
}

#[tokio::test]
async fn quit_succeeds_whether_the_socket_closes_before_or_after_the_return() {
    let before = FakeQmpServer::start(script(vec![Step::Expect("quit"), Step::Close]));
    connect(&before)
        .await
        .quit()
        .await
        .expect("eof after quit is success");

    let after = FakeQmpServer::start(script(vec![
        Step::Expect("quit"),
        event("SHUTDOWN"),
        Step::Reply(serde_json::json!({})),
        Step::Close,
    ]));
    connect(&after).await.quit().await.expect("return then eof");
}

#[tokio::test]
async fn a_silent_server_times_out_instead_of_hanging() {
    let mute = FakeQmpServer::start(vec![]);
    let error = QmpClient::connect_with_timeout(mute.path(), SHORT)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, QmpError::Timeout { waiting_for, .. }
        if waiting_for == "the greeting"),
        "{error:?}"
    );

    let server = FakeQmpServer::start(script(vec![Step::Expect("cont")]));
    let mut client = connect(&server).await;
    client.set_timeout(SHORT);
    let error = client.cont().await.unwrap_err();
    assert!(matches!(error, QmpError::Timeout { .. }), "{error:?}");
    let timeout = client.wait_for_event("RESUME", SHORT).await.unwrap_err();
    assert!(matches!(timeout, QmpError::Timeout { .. }), "{timeout:?}");
}

#[tokio::test]
async fn a_command_cancelled_mid_write_poisons_the_stream() {
    let server = FakeQmpServer::start(script(vec![]));
    let mut client = connect(&server).await;
    // What a dropped `write_line` future leaves behind.
    client.write_interrupted = true;
    let error = client.query_status().await.unwrap_err();
    assert!(
        matches!(error, QmpError::Desynchronized { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn connecting_to_a_missing_socket_fails_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.sock");
    let error = QmpClient::connect(&path).await.unwrap_err();
    assert!(matches!(&error, QmpError::Connect { socket, .. } if socket == &path));
}

#[tokio::test]
async fn a_response_instead_of_a_greeting_is_a_protocol_error() {
    let server = FakeQmpServer::start(vec![send(r#"{"return": {}}"#)]);
    let error = QmpClient::connect_with_timeout(server.path(), SHORT)
        .await
        .unwrap_err();
    assert!(matches!(error, QmpError::Protocol { .. }), "{error:?}");
}

/// Kills QEMU when the test ends, however it ends.
struct KillOnDrop(tokio::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "qemu did not create {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn qemu_status_cont_stop_and_quit_against_real_qemu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("qmp.sock");
    let qmp = format!("unix:{},server=on,wait=off", socket.display());
    let child = tokio::process::Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "microvm",
            "-accel",
            "tcg",
            "-nodefaults",
            "-nographic",
            "-S",
        ])
        .args(["-qmp", &qmp, "-display", "none"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 must be installed (scripts/install-deps)");
    let mut qemu = KillOnDrop(child);
    wait_for_socket(&socket).await;

    let mut client = QmpClient::connect(&socket).await.expect("connect");
    assert!(client.version().qemu.major >= 9, "{:?}", client.version());
    let status = client.query_status().await.expect("query-status");
    assert_eq!(
        status,
        StatusInfo {
            running: false,
            status: RunState::Prelaunch
        }
    );

    client.cont().await.expect("cont");
    client
        .wait_for::<ResumeEvent>(Duration::from_secs(5))
        .await
        .expect("RESUME");
    assert!(client.query_status().await.expect("query-status").running);
    client.stop().await.expect("stop");
    client
        .wait_for::<StopEvent>(Duration::from_secs(5))
        .await
        .expect("STOP");
    let status = client.query_status().await.expect("query-status");
    assert_eq!(
        status,
        StatusInfo {
            running: false,
            status: RunState::Paused
        }
    );

    client.quit().await.expect("quit");
    let exit = tokio::time::timeout(Duration::from_secs(10), qemu.0.wait())
        .await
        .expect("qemu exits after quit")
        .expect("wait");
    assert!(exit.success(), "qemu exited with {exit}");
}
