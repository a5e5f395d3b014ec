//! What the `FirecrackerVm` test binaries share: a test guest run by `fake-firecracker`,
//! the checks that nothing is left, and a guard killing what a failing test started.

#![allow(dead_code)] // each test binary uses its own part

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use boxcutter_types::guest::{HostCommand, Refresh};
use boxcutter_types::VmName;
use boxcutter_vmm::firecracker::api::InstanceState;
use boxcutter_vmm::firecracker::vm::{
    FirecrackerConfig, FirecrackerNic, FirecrackerPaths, FirecrackerVm,
};

pub const FAKE: &str = env!("CARGO_BIN_EXE_fake-firecracker");

/// A guest in `dir`, with its files, run by the fake with `faults` injected.
pub fn config(dir: &Path, faults: &[&str]) -> FirecrackerConfig {
    let file = |name: &str, size: usize| {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; size]).unwrap();
        path
    };
    FirecrackerConfig {
        binary: PathBuf::from(FAKE),
        id: "vm_test".into(),
        vcpus: 1,
        memory_mib: 128,
        kernel: file("vmlinux", 64),
        initrd: Some(file("initrd.img", 64)),
        cmdline: "console=ttyS0 reboot=k panic=1 root=/dev/vda".into(),
        root_disk: file("root.img", 1 << 20),
        config_drive: Some(file("config.img", 1 << 16)),
        nic: Some(FirecrackerNic {
            tap: "bc-fc-test0".into(),
            mac: "06:00:ac:10:00:02".parse().unwrap(),
        }),
        guest_cid: 3,
        track_dirty_pages: true,
        extra_args: faults
            .iter()
            .flat_map(|fault| [OsString::from("--fake-fault"), OsString::from(fault)])
            .collect(),
        socket_wait: Duration::from_secs(5),
        paths: FirecrackerPaths::in_dir(dir),
        jailer: None,
    }
}

/// The pids of live processes whose command line names `socket`.
pub fn processes_serving(socket: &Path) -> Vec<u32> {
    let needle = socket.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

pub fn assert_nothing_left(config: &FirecrackerConfig) {
    let paths = &config.paths;
    assert_eq!(processes_serving(&paths.socket), Vec::<u32>::new());
    for file in [&paths.socket, &paths.pidfile, &paths.vsock] {
        assert!(!file.exists(), "{} left behind", file.display());
    }
}

/// Kills, when dropped, whatever Firecracker (or fake) still serves a config's socket or
/// carries its jailed id, so a failing test leaves no process behind.
pub struct Reaper(Vec<u8>);

impl Reaper {
    pub fn for_config(config: &FirecrackerConfig) -> Self {
        Self(match &config.paths.jail {
            Some(jail) => jail.process_marker(),
            None => config.paths.socket.as_os_str().as_encoded_bytes().to_vec(),
        })
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for pid in entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            if boxcutter_sys::proc::runs_with(pid, &self.0) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

pub async fn state(vm: &FirecrackerVm) -> InstanceState {
    vm.describe().await.unwrap().state
}

pub fn refresh(name: &str) -> HostCommand {
    HostCommand::Refresh(Refresh {
        name: VmName::new(name).unwrap(),
        net: None,
        unix_time_ms: 1_900_000_000_000,
        entropy: "ab".repeat(32),
        ssh_host_key: None,
    })
}
