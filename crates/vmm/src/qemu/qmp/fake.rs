//! `FakeQmpServer`: a scripted stand-in for QEMU's side of the QMP socket, for
//! tests of the client's wire handling only.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

/// QEMU 10.0.2's greeting, as Debian builds it; scripts start by sending it.
pub const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian 1:10.0.2+ds-2"}, "capabilities": ["oob"]}}"#;

/// One step of a scripted conversation.
pub enum Step {
    /// Send this text as one line (greeting, events, anything).
    Send(String),
    /// Send these bytes with no newline (a message cut short).
    SendPartial(&'static str),
    /// Read one command and check its `execute` name; its id is used by `Reply`.
    Expect(&'static str),
    /// Send `{"return": VALUE, "id": <last id>}`.
    Reply(Value),
    /// Send `{"error": {"class", "desc"}, "id": <last id>}`.
    ReplyError(&'static str, &'static str),
    /// Close the connection.
    Close,
}

/// A fake QMP server on a Unix socket in a temporary directory.
pub struct FakeQmpServer {
    _dir: tempfile::TempDir,
    path: PathBuf,
    task: JoinHandle<Vec<Value>>,
}

impl FakeQmpServer {
    /// Listens and runs `steps` against the first client.
    pub fn start(steps: Vec<Step>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let task = tokio::spawn(serve(listener, steps));
        Self {
            _dir: dir,
            path,
            task,
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the script to finish; returns every command the client sent.
    pub async fn received(self) -> Vec<Value> {
        self.task.await.expect("fake server panicked")
    }
}

async fn serve(listener: UnixListener, steps: Vec<Step>) -> Vec<Value> {
    let (stream, _) = listener.accept().await.expect("accept");
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let (mut received, mut last_id) = (Vec::new(), Value::Null);
    for step in steps {
        let line = match step {
            Step::Send(line) => line + "\n",
            Step::SendPartial(bytes) => bytes.to_owned(),
            Step::Expect(name) => {
                let command = read_command(&mut read).await;
                assert_eq!(command["execute"], name, "unexpected command {command}");
                last_id = command["id"].clone();
                received.push(command);
                continue;
            }
            Step::Reply(value) => {
                serde_json::json!({"return": value, "id": last_id}).to_string() + "\n"
            }
            Step::ReplyError(class, desc) => {
                let error = serde_json::json!({"class": class, "desc": desc});
                serde_json::json!({"error": error, "id": last_id}).to_string() + "\n"
            }
            Step::Close => return received,
        };
        write.write_all(line.as_bytes()).await.expect("write");
    }
    // Script done: hold the connection until the client hangs up.
    let mut rest = Vec::new();
    let _ = read.read_to_end(&mut rest).await;
    received
}

async fn read_command(read: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> Value {
    let mut line = String::new();
    read.read_line(&mut line).await.expect("read");
    assert!(
        line.ends_with('\n'),
        "command not newline-terminated: {line:?}"
    );
    serde_json::from_str(&line).expect("client sent invalid json")
}
