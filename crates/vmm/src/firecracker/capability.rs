//! Whether this node can run Firecracker VMs: the configured binary must run and be recent
//! enough, and KVM must really run a guest (the verdict of `crate::kvm`, which boots one).
//! The decision is a pure function of that evidence ([`decide`]), so every combination is
//! unit-tested; [`detect`] gathers the evidence.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::kvm::{Accel, KvmVerdict};

/// The oldest Firecracker Boxcutter drives:
/// - 1.8 added ACPI device discovery, which the Debian guest kernel needs: it lacks
///   `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`, so it cannot find virtio-mmio devices from the
///   kernel command line as older Firecrackers require;
/// - 1.16 added `vsock_override` to snapshot loads, without which a copy of a running VM
///   cannot be restored beside its source (both would bind the same vsock socket);
/// - 1.16.1 fixed restored guests whose vsock device stayed silent.
pub const MINIMUM_VERSION: FirecrackerVersion = FirecrackerVersion::new(1, 16, 1);

/// How long `firecracker --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// A Firecracker release number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FirecrackerVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl FirecrackerVersion {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Reads the first line of `firecracker --version`: `Firecracker v1.10.1`, possibly
    /// with a suffix (`-dev`, `-12-gabcdef`). Later lines are ignored.
    pub fn parse_version_output(output: &str) -> Option<Self> {
        let line = output.lines().next()?.trim();
        let number = line.strip_prefix("Firecracker v")?;
        let core = number
            .split(|c: char| c == '-' || c == '+' || c.is_whitespace())
            .next()?;
        let mut parts = core.split('.').map(str::parse::<u32>);
        let version = Self::new(
            parts.next()?.ok()?,
            parts.next()?.ok()?,
            parts.next()?.ok()?,
        );
        parts.next().is_none().then_some(version)
    }
}

impl fmt::Display for FirecrackerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What running `<binary> --version` showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryProbe {
    /// Nothing at that path.
    NotFound,
    /// It could not be run, or it failed; why, briefly.
    Failed(String),
    /// It ran; its standard output.
    Ran(String),
}

/// Why this node cannot run Firecracker VMs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// The configured binary does not exist.
    #[error("firecracker binary not found at {}", path.display())]
    BinaryNotFound {
        /// The configured path.
        path: PathBuf,
    },
    /// The binary exists but `--version` failed.
    #[error("firecracker binary at {} does not run: {detail}", path.display())]
    BinaryFailed {
        /// The configured path.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// `--version` printed something that is not a Firecracker version.
    #[error("{} --version printed no firecracker version: {output:?}", path.display())]
    UnknownVersion {
        /// The configured path.
        path: PathBuf,
        /// The first line it printed.
        output: String,
    },
    /// The binary is older than [`MINIMUM_VERSION`].
    #[error("firecracker at {} is {version}; {MINIMUM_VERSION} or newer is needed (ACPI \
             device discovery, vsock on restored snapshots)", path.display())]
    TooOld {
        /// The configured path.
        path: PathBuf,
        /// Its version.
        version: FirecrackerVersion,
    },
    /// KVM cannot run a guest here.
    #[error("no usable KVM: {reason}")]
    NoKvm {
        /// The KVM probe's reason.
        reason: String,
    },
}

/// `--fake-firecracker` named a binary that is not the test double.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} is not fake-firecracker (its --version does not end in -fake): only the test \
         double may run without KVM", path.display())]
pub struct NotFake {
    /// The binary named.
    pub path: PathBuf,
}

/// Every reason Firecracker is unavailable, binary first. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", join(.0))]
pub struct Unavailable(pub Vec<Unsupported>);

fn join(reasons: &[Unsupported]) -> String {
    let texts: Vec<String> = reasons.iter().map(ToString::to_string).collect();
    texts.join("; ")
}

/// Decides from the evidence: the Firecracker version when the node can run Firecracker
/// VMs, otherwise every reason it cannot.
pub fn decide(
    binary: &Path,
    probe: BinaryProbe,
    kvm: &KvmVerdict,
) -> Result<FirecrackerVersion, Unavailable> {
    let version = binary_verdict(binary, probe);
    let kvm = match (kvm.accel, &kvm.reason) {
        (Accel::Kvm, _) => Ok(()),
        (Accel::Tcg, reason) => Err(Unsupported::NoKvm {
            reason: reason
                .clone()
                .unwrap_or_else(|| "the KVM probe failed".into()),
        }),
    };
    match (version, kvm) {
        (Ok(version), Ok(())) => Ok(version),
        (Ok(_), Err(kvm)) => Err(Unavailable(vec![kvm])),
        (Err(binary), Ok(())) => Err(Unavailable(vec![binary])),
        (Err(binary), Err(kvm)) => Err(Unavailable(vec![binary, kvm])),
    }
}

fn binary_verdict(path: &Path, probe: BinaryProbe) -> Result<FirecrackerVersion, Unsupported> {
    let path = path.to_owned();
    let output = match probe {
        BinaryProbe::NotFound => return Err(Unsupported::BinaryNotFound { path }),
        BinaryProbe::Failed(detail) => return Err(Unsupported::BinaryFailed { path, detail }),
        BinaryProbe::Ran(output) => output,
    };
    let Some(version) = FirecrackerVersion::parse_version_output(&output) else {
        let output = output
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        return Err(Unsupported::UnknownVersion { path, output });
    };
    if version < MINIMUM_VERSION {
        return Err(Unsupported::TooOld { path, version });
    }
    Ok(version)
}

/// Runs `<binary> --version` and reports what happened.
pub async fn probe_binary(binary: &Path) -> BinaryProbe {
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return BinaryProbe::NotFound,
        Err(error) => return BinaryProbe::Failed(error.to_string()),
    };
    let output = match tokio::time::timeout(VERSION_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => return BinaryProbe::Failed(error.to_string()),
        Err(_) => return BinaryProbe::Failed(format!("--version hung for {VERSION_TIMEOUT:?}")),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.trim().lines().last().unwrap_or("").to_owned();
        return BinaryProbe::Failed(format!("--version exited with {}: {last}", output.status));
    }
    BinaryProbe::Ran(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Probes `binary` and decides with the node's KVM verdict.
pub async fn detect(binary: &Path, kvm: &KvmVerdict) -> Result<FirecrackerVersion, Unavailable> {
    let probe = probe_binary(binary).await;
    let decision = decide(binary, probe, kvm);
    if let Err(why) = &decision {
        tracing::info!(reason = %why, "firecracker VMs unavailable on this node");
    }
    decision
}

/// For tests on machines without KVM: accepts `binary` as this node's Firecracker without
/// a KVM verdict, but only if it is `fake-firecracker` (its version says `-fake`), so a
/// real Firecracker can never be made to look usable where KVM does not work.
pub async fn detect_fake(binary: &Path) -> Result<FirecrackerVersion, Unavailable> {
    let probe = probe_binary(binary).await;
    let is_fake = matches!(&probe, BinaryProbe::Ran(output)
        if output.lines().next().is_some_and(|line| line.trim_end().ends_with("-fake")));
    let version = binary_verdict(binary, probe).map_err(|why| Unavailable(vec![why]))?;
    if !is_fake {
        return Err(Unavailable(vec![Unsupported::BinaryFailed {
            path: binary.to_owned(),
            detail: NotFake {
                path: binary.to_owned(),
            }
            .to_string(),
        }]));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIN: &str = "/usr/local/bin/firecracker";

    fn kvm_works() -> KvmVerdict {
        KvmVerdict {
            accel: Accel::Kvm,
            reason: None,
            boot_id: "boot".into(),
        }
    }

    fn no_kvm() -> KvmVerdict {
        KvmVerdict {
            accel: Accel::Tcg,
            reason: Some("cannot open /dev/kvm: No such file or directory".into()),
            boot_id: "boot".into(),
        }
    }

    fn ran(output: &str) -> BinaryProbe {
        BinaryProbe::Ran(output.into())
    }

    #[test]
    fn version_lines_parse() {
        let parse = FirecrackerVersion::parse_version_output;
        assert_eq!(
            parse("Firecracker v1.10.1\n\n"),
            Some(FirecrackerVersion::new(1, 10, 1))
        );
        assert_eq!(
            parse("Firecracker v1.8.0-dev\nexit"),
            Some(FirecrackerVersion::new(1, 8, 0))
        );
        assert_eq!(
            parse("Firecracker v1.16.1-fake"),
            Some(FirecrackerVersion::new(1, 16, 1))
        );
        for bad in [
            "",
            "firecracker 1.10.1",
            "Firecracker v1.10",
            "Firecracker v1.x.0",
            "v1.2.3",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert!(FirecrackerVersion::new(1, 16, 2) > MINIMUM_VERSION);
        assert_eq!(MINIMUM_VERSION.to_string(), "v1.16.1");
    }

    #[test]
    fn a_working_binary_and_kvm_is_supported() {
        let decided = decide(Path::new(BIN), ran("Firecracker v1.16.1\n"), &kvm_works());
        assert_eq!(decided, Ok(FirecrackerVersion::new(1, 16, 1)));
    }

    #[test]
    fn each_missing_piece_is_named() {
        let missing = decide(Path::new(BIN), BinaryProbe::NotFound, &kvm_works()).unwrap_err();
        assert_eq!(
            missing.to_string(),
            format!("firecracker binary not found at {BIN}")
        );

        let failed = decide(
            Path::new(BIN),
            BinaryProbe::Failed("exec format error".into()),
            &kvm_works(),
        );
        assert_eq!(
            failed.unwrap_err().to_string(),
            format!("firecracker binary at {BIN} does not run: exec format error")
        );

        let garbage = decide(Path::new(BIN), ran("hello\n"), &kvm_works()).unwrap_err();
        let [Unsupported::UnknownVersion { output, .. }] = &garbage.0[..] else {
            panic!("{garbage:?}");
        };
        assert_eq!(output, "hello");

        let old = decide(Path::new(BIN), ran("Firecracker v1.7.0\n"), &kvm_works()).unwrap_err();
        assert!(
            old.to_string()
                .contains("is v1.7.0; v1.16.1 or newer is needed"),
            "{old}"
        );

        let kvm = decide(Path::new(BIN), ran("Firecracker v1.16.1"), &no_kvm()).unwrap_err();
        assert_eq!(
            kvm.to_string(),
            "no usable KVM: cannot open /dev/kvm: No such file or directory"
        );
    }

    #[test]
    fn both_reasons_when_both_are_missing() {
        let both = decide(Path::new(BIN), BinaryProbe::NotFound, &no_kvm()).unwrap_err();
        assert!(matches!(
            &both.0[..],
            [
                Unsupported::BinaryNotFound { .. },
                Unsupported::NoKvm { .. }
            ]
        ));
        assert_eq!(
            both.to_string(),
            format!(
                "firecracker binary not found at {BIN}; \
                 no usable KVM: cannot open /dev/kvm: No such file or directory"
            )
        );
        let vague = KvmVerdict {
            reason: None,
            ..no_kvm()
        };
        let vague = decide(Path::new(BIN), ran("Firecracker v1.16.1"), &vague).unwrap_err();
        assert_eq!(vague.to_string(), "no usable KVM: the KVM probe failed");
    }

    #[tokio::test]
    async fn probing_real_programs() {
        let missing = Path::new("/nonexistent/firecracker");
        assert_eq!(probe_binary(missing).await, BinaryProbe::NotFound);
        // `false --version` exits 1 whatever its arguments.
        let failing = probe_binary(Path::new("/bin/false")).await;
        assert!(
            matches!(&failing, BinaryProbe::Failed(why) if why.contains("exited")),
            "{failing:?}"
        );
        let unavailable = detect(missing, &kvm_works()).await.unwrap_err();
        assert!(
            matches!(&unavailable.0[..], [Unsupported::BinaryNotFound { path }] if path == missing)
        );
    }
}
