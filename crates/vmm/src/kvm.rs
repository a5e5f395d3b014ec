//! Whether KVM can really run a guest here. `/dev/kvm` existing proves little: on some
//! machines it opens and creates VMs, yet a normal kernel crawls and dies. So the probe
//! boots the real guest kernel with the initramfs's probe mode under `-accel kvm` and
//! waits for its marker; the verdict is cached per host boot, since it cannot change
//! before a reboot.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

/// Printed on the console by the initramfs when booted with `boxcutter.probe`.
pub const PROBE_MARKER: &str = "BOXCUTTER-PROBE-OK";

/// How long a KVM guest may take to print the marker. A working KVM boots the kernel to
/// the initramfs in well under a second; software emulation takes about two.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(6);

const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
const KVM_API_VERSION: libc::c_int = 12;

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

/// The probe's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmVerdict {
    /// The accelerator to use.
    pub accel: Accel,
    /// Why KVM is not used, when it is not.
    pub reason: Option<String>,
    /// The host boot this verdict belongs to.
    pub boot_id: String,
}

/// What the probe learnt from the device and from booting a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvidence {
    /// The device cannot be opened or refuses to create a VM.
    DeviceUnusable(String),
    /// The device works; this is what booting the probe guest under KVM showed.
    Booted(BootOutcome),
}

/// The result of booting the probe guest under KVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootOutcome {
    /// The marker appeared.
    Marker,
    /// No marker before the timeout.
    TimedOut,
    /// QEMU exited without the marker; its output, trimmed.
    Failed(String),
}

/// Turns probe evidence into a verdict. Only a guest that really booted counts.
pub fn decide(evidence: ProbeEvidence) -> (Accel, Option<String>) {
    match evidence {
        ProbeEvidence::DeviceUnusable(why) => (Accel::Tcg, Some(why)),
        ProbeEvidence::Booted(BootOutcome::Marker) => (Accel::Kvm, None),
        ProbeEvidence::Booted(BootOutcome::TimedOut) => (
            Accel::Tcg,
            Some(format!(
                "a guest kernel did not boot under KVM within {PROBE_TIMEOUT:?}"
            )),
        ),
        ProbeEvidence::Booted(BootOutcome::Failed(out)) => (
            Accel::Tcg,
            Some(format!("a guest kernel failed under KVM: {out}")),
        ),
    }
}

/// What the probe boots.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// The uncompressed guest kernel.
    pub kernel: PathBuf,
    /// The Boxcutter initramfs (it knows `boxcutter.probe`).
    pub initrd: PathBuf,
    /// Where the verdict is cached.
    pub cache_file: PathBuf,
}

/// The cached verdict for this host boot, or a fresh probe (then cached).
pub async fn kvm_verdict(config: &ProbeConfig) -> KvmVerdict {
    let boot_id = host_boot_id();
    if let Some(cached) = read_cache(&config.cache_file).filter(|v| v.boot_id == boot_id) {
        return cached;
    }
    let (accel, reason) = decide(gather_evidence(config).await);
    if let Some(why) = &reason {
        tracing::warn!(reason = %why, "KVM unusable: guests run under software emulation (TCG)");
    }
    let verdict = KvmVerdict {
        accel,
        reason,
        boot_id,
    };
    if let Ok(json) = serde_json::to_vec(&verdict) {
        if let Err(error) = boxcutter_sys::write_atomic(&config.cache_file, &json, 0o644) {
            tracing::warn!(%error, path = %config.cache_file.display(), "cannot cache KVM verdict");
        }
    }
    verdict
}

async fn gather_evidence(config: &ProbeConfig) -> ProbeEvidence {
    if let Err(why) = check_device(Path::new("/dev/kvm")) {
        return ProbeEvidence::DeviceUnusable(why);
    }
    ProbeEvidence::Booted(boot_probe_guest(config).await)
}

/// Opens the device, checks the API version and creates (and drops) one VM.
pub fn check_device(path: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an integer.
    let version = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if version != KVM_API_VERSION {
        return Err(format!(
            "{} reports KVM API version {version}",
            path.display()
        ));
    }
    // SAFETY: KVM_CREATE_VM with machine type 0 returns a new file descriptor or -1.
    let vm = unsafe { libc::ioctl(file.as_raw_fd(), KVM_CREATE_VM, 0) };
    if vm < 0 {
        return Err(format!(
            "{} cannot create a VM: {}",
            path.display(),
            errno()
        ));
    }
    // SAFETY: `vm` is a descriptor we own and close exactly once.
    unsafe { libc::close(vm) };
    Ok(())
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

async fn boot_probe_guest(config: &ProbeConfig) -> BootOutcome {
    let mut cmd = tokio::process::Command::new(&config.qemu);
    cmd.args([
        "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "1",
    ])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-serial",
        "stdio",
    ])
    .arg("-kernel")
    .arg(&config.kernel)
    .arg("-initrd")
    .arg(&config.initrd)
    .args(["-append", "console=ttyS0 quiet panic=-1 boxcutter.probe"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let Ok(mut child) = cmd.spawn() else {
        return BootOutcome::Failed(format!("cannot run {}", config.qemu.display()));
    };
    let mut out = String::new();
    let mut stdout = child.stdout.take();
    let read = async {
        if let Some(stdout) = stdout.as_mut() {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf).await;
            out = String::from_utf8_lossy(&buf).into_owned();
        }
    };
    let finished = tokio::time::timeout(PROBE_TIMEOUT, read).await.is_ok();
    let _ = child.kill().await;
    if out.contains(PROBE_MARKER) {
        BootOutcome::Marker
    } else if finished {
        BootOutcome::Failed(
            out.trim()
                .chars()
                .rev()
                .take(300)
                .collect::<String>()
                .chars()
                .rev()
                .collect(),
        )
    } else {
        BootOutcome::TimedOut
    }
}

fn host_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .into()
}

fn read_cache(path: &Path) -> Option<KvmVerdict> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_booted_guest_enables_kvm() {
        assert_eq!(
            decide(ProbeEvidence::Booted(BootOutcome::Marker)),
            (Accel::Kvm, None)
        );
        let (accel, why) = decide(ProbeEvidence::Booted(BootOutcome::TimedOut));
        assert_eq!(accel, Accel::Tcg);
        assert!(why.unwrap().contains("did not boot under KVM"));
        let (accel, why) = decide(ProbeEvidence::DeviceUnusable("cannot open /dev/kvm".into()));
        assert_eq!(
            (accel, why.as_deref()),
            (Accel::Tcg, Some("cannot open /dev/kvm"))
        );
        let (accel, why) = decide(ProbeEvidence::Booted(BootOutcome::Failed("oops".into())));
        assert_eq!(
            (accel, why.as_deref()),
            (Accel::Tcg, Some("a guest kernel failed under KVM: oops"))
        );
    }

    #[test]
    fn missing_device_is_reported_with_its_path() {
        let err = check_device(Path::new("/nonexistent/kvm")).unwrap_err();
        assert!(err.starts_with("cannot open /nonexistent/kvm"), "{err}");
    }

    #[test]
    fn a_non_kvm_device_is_refused() {
        let err = check_device(Path::new("/dev/null")).unwrap_err();
        assert!(err.contains("/dev/null"), "{err}");
    }

    #[tokio::test]
    async fn cached_verdict_of_this_boot_is_reused_and_stale_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache_file = dir.path().join("kvm.json");
        let config = ProbeConfig {
            qemu: "/nonexistent/qemu".into(),
            kernel: "/nonexistent/vmlinux".into(),
            initrd: "/nonexistent/initrd".into(),
            cache_file: cache_file.clone(),
        };
        let cached = KvmVerdict {
            accel: Accel::Kvm,
            reason: None,
            boot_id: host_boot_id(),
        };
        std::fs::write(&cache_file, serde_json::to_vec(&cached).unwrap()).unwrap();
        assert_eq!(kvm_verdict(&config).await, cached);

        let stale = KvmVerdict {
            boot_id: "another-boot".into(),
            ..cached
        };
        std::fs::write(&cache_file, serde_json::to_vec(&stale).unwrap()).unwrap();
        let fresh = kvm_verdict(&config).await;
        assert_eq!(
            fresh.accel,
            Accel::Tcg,
            "a probe that cannot run QEMU never enables KVM"
        );
        assert_eq!(read_cache(&cache_file), Some(fresh));
    }
}
