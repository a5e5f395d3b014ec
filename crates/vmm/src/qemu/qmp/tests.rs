//! Unit tests of the wire format and of the serde forms of commands and events: no socket.

use super::fake::GREETING;
use super::wire::{encode_command, parse_message, ServerMessage};
use super::*;

fn parse(line: &str) -> ServerMessage {
    parse_message(line.as_bytes()).expect("valid message")
}

#[test]
fn greeting_parse_keeps_version_and_capabilities() {
    let ServerMessage::Greeting(greeting) = parse(GREETING) else {
        panic!("not a greeting");
    };
    assert_eq!(
        greeting.version.qemu,
        VersionTriple {
            major: 10,
            minor: 0,
            micro: 2
        }
    );
    assert_eq!(greeting.version.qemu.to_string(), "10.0.2");
    assert_eq!(greeting.version.package, "Debian 1:10.0.2+ds-2");
    assert_eq!(greeting.capabilities, ["oob"]);
}

#[test]
fn commands_without_arguments_serialise_exactly() {
    assert_eq!(
        encode_command(&QueryStatus, 1).expect("encodes"),
        "{\"execute\":\"query-status\",\"id\":1}\n"
    );
    assert_eq!(
        encode_command(&QmpCapabilities, 42).expect("encodes"),
        "{\"execute\":\"qmp_capabilities\",\"id\":42}\n"
    );
    let empty = MigrateIncoming::default();
    assert_eq!(
        encode_command(&empty, 3).expect("encodes"),
        "{\"execute\":\"migrate-incoming\",\"id\":3}\n"
    );
}

#[test]
fn command_arguments_serialise_exactly() {
    let migrate = Migrate::to_uri("unix:/run/vm/migrate.sock");
    assert_eq!(
        encode_command(&migrate, 7).expect("encodes"),
        r#"{"execute":"migrate","arguments":{"uri":"unix:/run/vm/migrate.sock"},"id":7}"#
            .to_owned()
            + "\n"
    );

    let caps = MigrateSetCapabilities::new([
        (MigrationCapability::Events, true),
        (MigrationCapability::PauseBeforeSwitchover, false),
    ]);
    assert_eq!(
        serde_json::to_string(&caps).expect("encodes"),
        r#"{"capabilities":[{"capability":"events","state":true},{"capability":"pause-before-switchover","state":false}]}"#
    );

    let params = MigrateSetParameters {
        downtime_limit: Some(300),
        max_bandwidth: Some(1 << 30),
        ..MigrateSetParameters::default()
    };
    assert_eq!(
        serde_json::to_string(&params).expect("encodes"),
        r#"{"max-bandwidth":1073741824,"downtime-limit":300}"#
    );

    let incoming = MigrateIncoming {
        exit_on_error: Some(false),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_string(&incoming).expect("encodes"),
        r#"{"exit-on-error":false}"#
    );
}

#[test]
fn migrate_channels_serialise_as_flat_unions() {
    let inet = InetSocketAddress {
        host: "dest.example".into(),
        port: "4444".into(),
    };
    let migrate = Migrate::to_address(MigrationAddress::Socket(SocketAddress::Inet(inet)));
    let json = serde_json::to_string(&migrate).expect("encodes");
    assert_eq!(
        json,
        r#"{"channels":[{"channel-type":"main","addr":{"transport":"socket","type":"inet","host":"dest.example","port":"4444"}}]}"#
    );

    let file = MigrationAddress::File {
        filename: "/srv/vm.state".into(),
        offset: 0,
    };
    let decoded: MigrationAddress =
        serde_json::from_str(r#"{"transport":"file","filename":"/srv/vm.state","offset":0}"#)
            .expect("decodes");
    assert_eq!(decoded, file);
}

#[test]
fn success_response_decodes_with_its_id() {
    let ServerMessage::Return { id, value } =
        parse(r#"{"return": {"status": "prelaunch", "running": false}, "id": 5}"#)
    else {
        panic!("not a return");
    };
    assert_eq!(id, Some(Value::from(5)));
    let status: StatusInfo = serde_json::from_value(value).expect("status");
    assert_eq!(
        status,
        StatusInfo {
            running: false,
            status: RunState::Prelaunch
        }
    );
}

#[test]
fn error_response_decodes_class_and_desc() {
    let line = r#"{"id": 9, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#;
    let ServerMessage::Error { id, error } = parse(line) else {
        panic!("not an error");
    };
    assert_eq!(id, Some(Value::from(9)));
    assert_eq!(error.class, "CommandNotFound");
    assert_eq!(error.desc, "The command nope has not been found");
}

#[test]
fn events_decode_with_timestamp_and_typed_data() {
    let line = r#"{"timestamp": {"seconds": 1796309673, "microseconds": 463755}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}"#;
    let ServerMessage::Event(event) = parse(line) else {
        panic!("not an event");
    };
    assert_eq!(event.name, "SHUTDOWN");
    assert_eq!(
        event.timestamp,
        Timestamp {
            seconds: 1796309673,
            microseconds: 463755
        }
    );
    let shutdown = event.decode::<ShutdownEvent>().expect("decodes");
    let expected = ShutdownEvent {
        guest: false,
        reason: ShutdownCause::HostQmpQuit,
    };
    assert_eq!(shutdown, Some(expected));
    assert_eq!(event.decode::<StopEvent>().expect("other event"), None);

    let stop = parse(r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#);
    let ServerMessage::Event(stop) = stop else {
        panic!("not an event")
    };
    assert_eq!(stop.data, Value::Null);
    assert_eq!(
        stop.decode::<StopEvent>().expect("decodes"),
        Some(StopEvent {})
    );
}

#[test]
fn unknown_event_names_and_enum_values_are_kept() {
    let line = r#"{"timestamp": {"seconds": -1, "microseconds": -1}, "event": "X_NEW_THING", "data": {"a": 1}}"#;
    let ServerMessage::Event(event) = parse(line) else {
        panic!("unknown events must decode");
    };
    assert_eq!(event.name, "X_NEW_THING");
    assert_eq!(event.data, serde_json::json!({"a": 1}));

    let status: StatusInfo =
        serde_json::from_str(r#"{"running": false, "status": "hibernating"}"#).expect("ok");
    assert_eq!(status.status, RunState::Other("hibernating".into()));
    assert_eq!(status.status.to_string(), "hibernating");
}

#[test]
fn run_states_round_trip_their_wire_names() {
    let names = [
        "debug",
        "inmigrate",
        "internal-error",
        "io-error",
        "paused",
        "postmigrate",
        "prelaunch",
        "finish-migrate",
        "restore-vm",
        "running",
        "save-vm",
        "shutdown",
        "suspended",
        "watchdog",
        "guest-panicked",
        "colo",
    ];
    for name in names {
        let state: RunState = serde_json::from_value(Value::from(name)).expect("decodes");
        assert!(
            !matches!(state, RunState::Other(_)),
            "{name} is a known state"
        );
        assert_eq!(
            serde_json::to_value(&state).expect("encodes"),
            Value::from(name)
        );
    }
}

#[test]
fn query_migrate_answer_decodes() {
    let answer = serde_json::json!({
        "status": "active", "total-time": 12345, "setup-time": 12, "expected-downtime": 300,
        "ram": {"transferred": 123, "remaining": 123, "total": 246, "duplicate": 0,
                "normal": 0, "normal-bytes": 0, "dirty-sync-count": 2, "mbps": 937.5,
                "x-future-counter": 1}
    });
    let info: MigrationInfo = serde_json::from_value(answer).expect("decodes");
    assert_eq!(info.status, Some(MigrationStatus::Active));
    assert_eq!(info.expected_downtime, Some(300));
    let ram = info.ram.expect("ram stats");
    assert_eq!(
        (ram.transferred, ram.dirty_sync_count, ram.mbps),
        (123, 2, 937.5)
    );

    let idle: MigrationInfo = serde_json::from_str("{}").expect("decodes");
    assert_eq!(idle, MigrationInfo::default());
}

#[test]
fn unrecognised_and_invalid_lines_are_told_apart() {
    assert!(matches!(
        parse(r#"{"surprise": 1}"#),
        ServerMessage::Unknown(_)
    ));
    assert!(parse_message(b"{\"return\": ").is_err());
    assert!(parse_message(b"[1, 2]").is_err());
}
