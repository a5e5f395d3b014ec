//! Local mode end to end, as a user lives it: `boxcutter-host up --local`, then the real
//! OpenSSH client against the control interface (`ssh -F <state>/ssh_config boxcutter
//! new`), into the new VM by name through `connect`, and `down` leaving nothing behind.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join(name)
}

fn host(args: &[&str]) -> Output {
    Command::new(bin("boxcutter-host"))
        .args(args)
        .output()
        .unwrap()
}

fn ssh(config: &Path, target: &str, remote: &[&str]) -> (bool, String, String) {
    let out = Command::new("ssh")
        .arg("-F")
        .arg(config)
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20", target])
        .args(remote)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Brings the instance down even when the test fails midway.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = host(&["down", "--local", "--state-dir", self.0.to_str().unwrap()]);
    }
}

#[test]
fn e2e_local_mode_up_new_connect_down() {
    let dir = tempfile::Builder::new()
        .prefix("boxcutter-local-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let state = dir.path().join("state");
    let key = dir.path().join("id_ed25519");
    let mut keygen = Command::new("ssh-keygen");
    keygen
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key);
    assert!(keygen.status().unwrap().success());
    let port = (2300 + std::process::id() % 500).to_string();
    let state_arg = state.to_str().unwrap();
    let key_pub = key.with_extension("pub");
    let up_args = [
        "up",
        "--local",
        "--state-dir",
        state_arg,
        "--subnet",
        "10.237.0.0",
        "--ssh-port",
        &port,
        "--admin-key",
        key_pub.to_str().unwrap(),
        "--admin-name",
        "tester",
    ];
    let guard = Down(state.clone());
    let up = host(&up_args);
    assert!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let again = host(&up_args);
    assert!(
        again.status.success(),
        "second up failed: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    let config = state.join("ssh_config");

    let (ok, out, err) = ssh(
        &config,
        "boxcutter",
        &[
            "new", "--type", "qemu", "--ram", "1024", "--disk", "4G", "--name", "my-vm",
        ],
    );
    assert!(ok, "new failed: {err}");
    assert!(
        out.starts_with("Name: my-vm\nNode: boxcutter-node-1\nvCPU: 2\nRAM: 1G\nDisk: 4G\n"),
        "{out}"
    );
    assert!(
        out.ends_with("Status: running\nConnect: ssh my-vm"),
        "{out}"
    );

    let (ok, out, err) = ssh(&config, "my-vm", &["cat", "/etc/boxcutter/vm-type"]);
    assert_eq!((ok, out.as_str()), (true, "qemu"), "{err}");

    let (ok, out, _) = ssh(&config, "boxcutter", &["list"]);
    assert!(
        ok && out.lines().nth(1).unwrap_or_default().starts_with("my-vm "),
        "{out}"
    );
    let (ok, _, err) = ssh(&config, "boxcutter", &["destroy", "my-vm"]);
    assert!(ok, "{err}");

    drop(guard);
    let marker = state.to_string_lossy().into_owned();
    assert!(
        boxcutter_host::procs::pids_with(&marker).is_empty(),
        "processes left"
    );
    let prefix = boxcutter_host::local::prefix_for(&state);
    let netns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!netns.contains(&prefix), "namespace left: {netns}");
    let links = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!links.contains(&prefix), "device left");
    let tables = String::from_utf8_lossy(
        &Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!tables.contains(&prefix), "nft table left: {tables}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&marker), "mount left");
}
