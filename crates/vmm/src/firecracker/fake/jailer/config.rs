//! The jailer's checks before it touches anything (the real one's `Env::new`): the id, the
//! exec file and the chroot base (both must exist; symbolic links are resolved, so the jail
//! is named after the exec file's real name), uid and gid, and the cgroup and resource
//! limit formats. What passes becomes a [`JailConfig`].

use std::path::{Component, Path, PathBuf};

use super::args::Options;
use super::JailError;

/// The longest instance id Firecracker accepts.
const MAX_ID_LEN: usize = 64;

/// The open-file limit of a jailed Firecracker unless `--resource-limit` says otherwise.
const DEFAULT_NO_FILE: u64 = 2048;

/// Where the kernel lists mounts, to find the cgroup v2 hierarchy.
const PROC_MOUNTS: &str = "/proc/mounts";

/// A valid jailer invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct JailConfig {
    pub id: String,
    /// The exec file, canonical.
    pub exec_file: PathBuf,
    /// Its file name: the jail's middle component and the jailed program's name.
    pub exec_file_name: String,
    /// `<chroot_base>/<exec_file_name>/<id>/root`.
    pub chroot_dir: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub netns: Option<PathBuf>,
    pub daemonize: bool,
    pub new_pid_ns: bool,
    pub limits: ResourceLimits,
    /// The cgroup v2 the jailer moves itself into (version 2, no `--cgroup`, and it exists).
    pub parent_cgroup: Option<PathBuf>,
    /// The arguments after `--`, for Firecracker.
    pub extra_args: Vec<String>,
}

/// What `setrlimit` gets, soft and hard alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ResourceLimits {
    pub file_size: Option<u64>,
    pub no_file: u64,
}

/// Checks `options` in the real jailer's order.
pub(super) fn validate(options: Options) -> Result<JailConfig, JailError> {
    let id = options.single("id").unwrap_or_default().to_owned();
    check_id(&id)?;
    let (exec_file, exec_file_name) = check_exec_file(options.single("exec-file"))?;
    let chroot_dir = chroot_base(options.single("chroot-base-dir"))?
        .join(&exec_file_name)
        .join(&id)
        .join("root");
    let uid = parse_id(options.single("uid"), JailError::Uid)?;
    let gid = parse_id(options.single("gid"), JailError::Gid)?;
    let parent_cgroup = check_cgroups(&options, &exec_file_name)?;
    let limits = resource_limits(options.all("resource-limit"))?;
    Ok(JailConfig {
        id,
        exec_file,
        exec_file_name,
        chroot_dir,
        uid,
        gid,
        netns: options.single("netns").map(PathBuf::from),
        daemonize: options.flag("daemonize"),
        new_pid_ns: options.flag("new-pid-ns"),
        limits,
        parent_cgroup,
        extra_args: options.extra,
    })
}

/// Firecracker's instance id rule: 1 to 64 characters, each alphanumeric or `-`.
fn check_id(id: &str) -> Result<(), JailError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(JailError::InvalidInstanceId(format!(
            "Invalid len ({});  the length must be between 1 and {MAX_ID_LEN}",
            id.len()
        )));
    }
    match id
        .chars()
        .enumerate()
        .find(|(_, c)| *c != '-' && !c.is_alphanumeric())
    {
        Some((at, c)) => Err(JailError::InvalidInstanceId(format!(
            "Invalid char ({c}) at position {at}"
        ))),
        None => Ok(()),
    }
}

fn check_exec_file(given: Option<&str>) -> Result<(PathBuf, String), JailError> {
    let path = canonical(given.unwrap_or_default())?;
    if !path.is_file() {
        return Err(JailError::NotAFile(path));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains("firecracker") {
        return Err(JailError::ExecFileName(name));
    }
    Ok((path, name))
}

fn chroot_base(given: Option<&str>) -> Result<PathBuf, JailError> {
    let path = canonical(given.unwrap_or_default())?;
    if !path.is_dir() {
        return Err(JailError::NotADirectory(path));
    }
    Ok(path)
}

fn canonical(path: &str) -> Result<PathBuf, JailError> {
    std::fs::canonicalize(path).map_err(|error| JailError::Canonicalize {
        path: path.into(),
        error,
    })
}

fn parse_id(given: Option<&str>, invalid: fn(String) -> JailError) -> Result<u32, JailError> {
    let given = given.unwrap_or_default();
    given.parse().map_err(|_| invalid(given.to_owned()))
}

/// Checks the cgroup options; returns the parent cgroup to join, if any. Limitation: the
/// values of `--cgroup` are checked for format only, never written, so one the real jailer
/// would refuse (an unknown controller or file) passes here.
fn check_cgroups(options: &Options, exec_file_name: &str) -> Result<Option<PathBuf>, JailError> {
    let parent = Path::new(options.single("parent-cgroup").unwrap_or(exec_file_name));
    if !is_plain_relative(parent) {
        return Err(JailError::CgroupInvalidParentPath);
    }
    let version = options.single("cgroup-version").unwrap_or("1");
    let version: u8 = version
        .parse()
        .map_err(|_| JailError::CgroupInvalidVersion(version.to_owned()))?;
    let cgroups = options.all("cgroup");
    if cgroups.is_empty() {
        if version != 2 {
            return Ok(None);
        }
        let parent = cgroup_hierarchy(version)?.unwrap_or_default().join(parent);
        return Ok(parent.exists().then_some(parent));
    }
    cgroup_hierarchy(version)?;
    cgroups.iter().try_for_each(|cgroup| check_cgroup(cgroup))?;
    Ok(None)
}

/// The cgroup v2 hierarchy for version 2 (`None` for version 1).
fn cgroup_hierarchy(version: u8) -> Result<Option<PathBuf>, JailError> {
    match version {
        1 => Ok(None),
        2 => {
            let mounts = std::fs::read_to_string(PROC_MOUNTS).unwrap_or_default();
            let root = mounts.lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
            });
            root.map(Some)
                .ok_or_else(|| JailError::CgroupHierarchyMissing("cgroup2".into()))
        }
        other => Err(JailError::CgroupInvalidVersion(other.to_string())),
    }
}

/// `<controller>.<property>=<value>`.
fn check_cgroup(cgroup: &str) -> Result<(), JailError> {
    let parts: Vec<&str> = cgroup.split('=').collect();
    if parts.len() != 2 || parts[1].is_empty() {
        return Err(JailError::CgroupFormat(cgroup.to_owned()));
    }
    let file = parts[0];
    if !is_plain_relative(Path::new(file)) || file.split('.').count() != 2 {
        return Err(JailError::CgroupInvalidFile(file.to_owned()));
    }
    Ok(())
}

/// A relative path without `.` or `..`.
fn is_plain_relative(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// `<resource>=<value>` for `fsize` and `no-file`.
fn resource_limits(given: &[String]) -> Result<ResourceLimits, JailError> {
    let mut limits = ResourceLimits {
        file_size: None,
        no_file: DEFAULT_NO_FILE,
    };
    for limit in given {
        let (name, value) = limit
            .split_once('=')
            .ok_or_else(|| JailError::ResLimitFormat(limit.clone()))?;
        let value: u64 = value.parse().map_err(|e: std::num::ParseIntError| {
            JailError::ResLimitValue(value.to_owned(), e.to_string())
        })?;
        match name {
            "fsize" => limits.file_size = Some(value),
            "no-file" => limits.no_file = value,
            other => return Err(JailError::ResLimitArgument(other.to_owned())),
        }
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::super::args::{parse, Command};
    use super::*;

    /// A base directory holding an exec file named `name`.
    struct Files {
        dir: tempfile::TempDir,
        exec: PathBuf,
    }

    fn files(name: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let exec = dir.path().join(name);
        std::fs::write(&exec, b"").unwrap();
        Files { dir, exec }
    }

    fn validate_line(files: &Files, rest: &str) -> Result<JailConfig, JailError> {
        let line = format!(
            "--id vm-1 --exec-file {} --uid 64123 --gid 64124 --chroot-base-dir {} {rest}",
            files.exec.display(),
            files.dir.path().display()
        );
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        match parse(&args) {
            Ok(Command::Jail(options)) => validate(options),
            other => panic!("{other:?}"),
        }
    }

    fn refusal(files: &Files, rest: &str) -> String {
        validate_line(files, rest).unwrap_err().to_string()
    }

    #[test]
    fn a_valid_invocation_names_the_jail_after_the_exec_files_real_name() {
        let files = files("firecracker-v1.16.1");
        let link = files.dir.path().join("firecracker");
        std::os::unix::fs::symlink(&files.exec, &link).unwrap();
        let linked = Files {
            exec: link,
            ..files
        };
        let config = validate_line(&linked, "-- --api-sock /fc.sock").unwrap();
        let base = linked.dir.path().canonicalize().unwrap();
        assert_eq!(config.exec_file_name, "firecracker-v1.16.1");
        assert_eq!(
            config.chroot_dir,
            base.join("firecracker-v1.16.1/vm-1/root")
        );
        assert_eq!((config.uid, config.gid), (64123, 64124));
        assert_eq!(config.limits.no_file, DEFAULT_NO_FILE);
        assert_eq!(config.extra_args, ["--api-sock", "/fc.sock"]);
    }

    #[test]
    fn ids_follow_firecrackers_rule() {
        assert!(check_id("551e7604-e35c-42b3-b825-416853441234").is_ok());
        assert!(check_id(&"a".repeat(64)).is_ok());
        assert!(check_id(&"a".repeat(65)).is_err());
        assert!(check_id("").is_err());
        let refused = check_id("vm_1").unwrap_err().to_string();
        assert!(
            refused.contains("Invalid char (_) at position 2"),
            "{refused}"
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_jailers_messages() {
        let files = files("fake-firecracker");
        assert!(refusal(&files, "--parent-cgroup ../x").contains("Parent cgroup path"));
        assert!(refusal(&files, "--cgroup-version x").contains("invalid cgroup version"));
        assert!(refusal(&files, "--cgroup cpu.weight").contains("Invalid format for cgroups"));
        assert!(refusal(&files, "--cgroup cpuweight=1").contains("Cgroup invalid file"));
        assert!(refusal(&files, "--resource-limit nofile=1").contains("Invalid resource"));
        assert!(refusal(&files, "--resource-limit no-file").contains("Invalid format"));
        assert!(refusal(&files, "--resource-limit fsize=x").contains("Invalid limit value"));
        let limits = validate_line(
            &files,
            "--resource-limit fsize=9 --resource-limit no-file=7",
        );
        let limits = limits.unwrap().limits;
        assert_eq!((limits.file_size, limits.no_file), (Some(9), 7));
    }

    #[test]
    fn the_exec_file_must_exist_and_be_named_firecracker() {
        let files = files("vmm");
        assert!(refusal(&files, "").contains("must contain \"firecracker\": vmm"));
        let missing = Files {
            exec: files.dir.path().join("firecracker"),
            ..files
        };
        assert!(refusal(&missing, "").contains("Failed to canonicalize path"));
    }
}
