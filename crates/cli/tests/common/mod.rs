//! What the `boxcutter` binary's tests run it in: a [`Cluster`] (a
//! [`StandInOrchestrator`] holding two users and their VMs, a config file and the
//! cluster secret), the users' login keys, and the binary run the way sshd runs it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
#![allow(dead_code)] // each test binary uses its own part

mod stand_in;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use boxcutter_auth::ClusterSecret;
use boxcutter_types::guest::VmType;
use boxcutter_types::orch::{UserInfo, VmInfo};

use stand_in::vm;
pub use stand_in::{Orch, OrchState, StandInOrchestrator};

pub const ALICE_KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIALICExALICExALICExALICExALICExALICExALICE";
pub const BOB_KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBOBxBOBxBOBxBOBxBOBxBOBxBOBxBOBxBOBxBOBxB";
pub const STRANGER_KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAISTRANGERxSTRANGERxSTRANGERxSTRANGERxST";
pub const HOST_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHOSTxKEY";

/// One SSH-connection's worth of surroundings: a stand-in orchestrator with alice
/// (admin, VM `dev-box`) and bob (VM `bob-box`), a config file and the cluster secret.
pub struct Cluster {
    pub orch: Orch,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// The stand-in's base URL.
    pub url: String,
    pub secret_file: PathBuf,
}

pub struct Ran {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Cluster {
    pub fn new() -> Self {
        Self::with_ssh_port(0)
    }

    pub fn with_ssh_port(ssh_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("cluster.key");
        let secret = ClusterSecret::load_or_create(&secret_file).unwrap();
        let mut state = OrchState::default();
        for (key, name, admin) in [(ALICE_KEY, "alice", true), (BOB_KEY, "bob", false)] {
            let user = UserInfo {
                name: name.into(),
                admin,
                keys: 1,
            };
            state.users.insert(key.into(), user);
        }
        state.vms = vec![
            vm("dev-box", "alice", VmType::Firecracker, 2048),
            VmInfo {
                ip: "100.64.1.50".parse().unwrap(),
                ..vm("bob-box", "bob", VmType::Qemu, 4096)
            },
        ];
        let orch = Arc::new(StandInOrchestrator {
            secret,
            ssh_port,
            state: Mutex::new(state),
        });
        let url = orch.start();
        let config = dir.path().join("cli.toml");
        write_config(&config, &url, &secret_file, Some("boxcutter"));
        Self {
            orch,
            dir,
            config,
            url,
            secret_file,
        }
    }

    /// Registers the key `blob` as belonging to a new user `name`.
    pub fn add_user(&self, blob: &str, name: &str, admin: bool) {
        let user = UserInfo {
            name: name.into(),
            admin,
            keys: 1,
        };
        self.orch
            .state
            .lock()
            .unwrap()
            .users
            .insert(blob.into(), user);
    }

    /// Gives the VM `name` another SSH host key.
    pub fn set_host_key(&self, name: &str, host_key: &str) {
        let mut state = self.orch.state.lock().unwrap();
        for vm in state.vms.iter_mut().filter(|vm| vm.name.as_str() == name) {
            vm.host_key = host_key.into();
        }
    }

    /// `ssh boxcutter <command>` as the owner of `key`.
    pub fn ssh(&self, key: &str, command: &str) -> Ran {
        self.ssh_with_stdin(key, command, b"")
    }

    pub fn ssh_with_stdin(&self, key: &str, command: &str, stdin: &[u8]) -> Ran {
        let auth_info = self.dir.path().join(format!("auth-{}", &key[30..40]));
        std::fs::write(&auth_info, format!("publickey ssh-ed25519 {key}\n")).unwrap();
        let mut cmd = boxcutter(&self.config, &["ssh-command"]);
        cmd.env("SSH_ORIGINAL_COMMAND", command)
            .env("SSH_USER_AUTH", &auth_info);
        run(cmd, stdin)
    }

    /// sshd's `AuthorizedKeysCommand boxcutter authorized-keys %u %t %k`.
    pub fn authorized_keys(&self, login: &str, key_type: &str, key: &str) -> Ran {
        run(
            boxcutter(&self.config, &["authorized-keys", login, key_type, key]),
            b"",
        )
    }
}

pub fn write_config(path: &Path, url: &str, secret: &Path, login_user: Option<&str>) {
    let mut text = format!(
        "orchestrator_url = \"{url}\"\nsecret_file = \"{}\"\n",
        secret.display()
    );
    if let Some(user) = login_user {
        text.push_str(&format!("login_user = \"{user}\"\n"));
    }
    std::fs::write(path, text).unwrap();
}

/// The binary with a clean environment: only what sshd would set, plus the config.
pub fn boxcutter(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_boxcutter"));
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("BOXCUTTER_CONFIG", config);
    cmd
}

pub fn run(mut cmd: Command, stdin: &[u8]) -> Ran {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Ran {
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
        code: status.code().unwrap_or(-1),
    }
}

impl Ran {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        self
    }

    /// Failed with exactly one `error:` line containing `want`, and printed no output.
    #[track_caller]
    pub fn failed(&self, code: i32, want: &str) {
        assert_eq!(self.code, code, "stderr: {}", self.stderr);
        assert_eq!(self.stdout, "", "stdout of a failure");
        assert!(
            self.stderr.starts_with("error: ") && self.stderr.lines().count() == 1,
            "not one error line: {:?}",
            self.stderr
        );
        assert!(
            self.stderr.contains(want),
            "{:?} lacks {want:?}",
            self.stderr
        );
    }
}
