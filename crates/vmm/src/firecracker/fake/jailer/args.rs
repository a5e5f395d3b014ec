//! The jailer's command line, read as Firecracker's own argument parser reads it: options
//! are `--name value` (never `--name=value`), a value may not start with `--`, an option
//! may be given once (`--cgroup` and `--resource-limit` as often as wanted), and
//! everything after the first `--` is passed on to Firecracker. `--help` or `--version`
//! anywhere before `--` wins over everything else.

use std::collections::BTreeMap;

/// What a parsed command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Command {
    Help,
    Version,
    Jail(Options),
}

/// The options as given, not yet validated.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Options {
    given: BTreeMap<&'static str, Vec<String>>,
    /// Everything after `--`, for Firecracker.
    pub extra: Vec<String>,
}

/// A command line the parser refuses; the real jailer exits 1 on these. The messages are
/// Firecracker's.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum ArgsError {
    #[error("Argument '{0}' required, but not found.")]
    MissingArgument(&'static str),
    #[error("The argument '{0}' requires a value, but none was supplied.")]
    MissingValue(&'static str),
    #[error("Found argument '{0}' which wasn't expected, or isn't valid in this context.")]
    Unexpected(String),
    #[error("The argument '{0}' was provided more than once.")]
    Duplicate(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    Flag,
    Value,
    Values,
}

struct Spec {
    name: &'static str,
    takes: Takes,
    required: bool,
    default: Option<&'static str>,
}

const fn spec(name: &'static str, takes: Takes) -> Spec {
    Spec {
        name,
        takes,
        required: false,
        default: None,
    }
}

const fn required(name: &'static str) -> Spec {
    Spec {
        required: true,
        ..spec(name, Takes::Value)
    }
}

const fn defaulted(name: &'static str, default: &'static str) -> Spec {
    Spec {
        default: Some(default),
        ..spec(name, Takes::Value)
    }
}

/// The jailer's options (Firecracker's `build_arg_parser`).
const SPECS: &[Spec] = &[
    required("id"),
    required("exec-file"),
    required("uid"),
    required("gid"),
    defaulted("chroot-base-dir", "/srv/jailer"),
    spec("netns", Takes::Value),
    spec("daemonize", Takes::Flag),
    spec("new-pid-ns", Takes::Flag),
    spec("cgroup", Takes::Values),
    spec("resource-limit", Takes::Values),
    defaulted("cgroup-version", "1"),
    spec("parent-cgroup", Takes::Value),
    spec("version", Takes::Flag),
];

/// The help text, one line per option.
pub(super) fn help() -> String {
    let mut text = String::from("fake-jailer (a test double of Firecracker's jailer)\n\n");
    for spec in SPECS {
        let value = match spec.takes {
            Takes::Flag => String::new(),
            Takes::Value | Takes::Values => format!(" <{}>", spec.name),
        };
        text.push_str(&format!("  --{}{value}\n", spec.name));
    }
    text.push_str("\nAny arguments after the -- separator will be supplied to the jailed binary.");
    text
}

/// Parses the arguments after the program name.
pub(super) fn parse(args: &[String]) -> Result<Command, ArgsError> {
    let (own, extra) = match args.iter().position(|a| a == "--") {
        Some(at) => (&args[..at], &args[at + 1..]),
        None => (args, &[][..]),
    };
    if own.iter().any(|a| a == "--help") {
        return Ok(Command::Help);
    }
    if own.iter().any(|a| a == "--version") {
        return Ok(Command::Version);
    }

    let mut given: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut own = own.iter();
    while let Some(arg) = own.next() {
        let spec = arg
            .strip_prefix("--")
            .and_then(|name| SPECS.iter().find(|s| s.name == name))
            .ok_or_else(|| ArgsError::unexpected(arg))?;
        let seen = given.entry(spec.name).or_default();
        if !seen.is_empty() && spec.takes != Takes::Values {
            return Err(ArgsError::Duplicate(spec.name));
        }
        let value = match spec.takes {
            Takes::Flag => String::new(),
            Takes::Value | Takes::Values => own
                .next()
                .filter(|v| !v.starts_with("--"))
                .ok_or(ArgsError::MissingValue(spec.name))?
                .clone(),
        };
        seen.push(value);
    }
    // Firecracker's parser checks in name order.
    let missing = SPECS
        .iter()
        .filter(|s| s.required && !given.contains_key(s.name));
    if let Some(missing) = missing.map(|s| s.name).min() {
        return Err(ArgsError::MissingArgument(missing));
    }
    Ok(Command::Jail(Options {
        given,
        extra: extra.to_vec(),
    }))
}

impl ArgsError {
    /// Firecracker names the argument without its dashes when it has them.
    fn unexpected(arg: &str) -> Self {
        Self::Unexpected(arg.strip_prefix("--").unwrap_or(arg).to_owned())
    }
}

impl Options {
    /// The value of a single-valued option, or its default.
    pub fn single(&self, name: &'static str) -> Option<&str> {
        match self.given.get(name).and_then(|v| v.first()) {
            Some(value) => Some(value),
            None => SPECS.iter().find(|s| s.name == name)?.default,
        }
    }

    /// Whether a flag was given.
    pub fn flag(&self, name: &'static str) -> bool {
        self.given.contains_key(name)
    }

    /// Every value of a repeatable option, in order.
    pub fn all(&self, name: &'static str) -> &[String] {
        self.given.get(name).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_line(line: &str) -> Result<Command, ArgsError> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    fn options(line: &str) -> Options {
        match parse_line(line) {
            Ok(Command::Jail(options)) => options,
            other => panic!("{other:?}"),
        }
    }

    const MINIMAL: &str = "--id vm-1 --exec-file /bin/firecracker --uid 1 --gid 2";

    #[test]
    fn the_documented_command_line_parses() {
        let line = format!(
            "{MINIMAL} --chroot-base-dir /j --netns /run/netns/n --daemonize --new-pid-ns \
             --cgroup cpu.weight=10 --cgroup cpuset.cpus=0 --resource-limit no-file=64 \
             --cgroup-version 2 --parent-cgroup vms -- --api-sock /fc.sock --id x"
        );
        let options = options(&line);
        assert_eq!(options.single("id"), Some("vm-1"));
        assert_eq!(options.single("chroot-base-dir"), Some("/j"));
        assert!(options.flag("daemonize") && options.flag("new-pid-ns"));
        assert_eq!(options.all("cgroup"), ["cpu.weight=10", "cpuset.cpus=0"]);
        assert_eq!(options.all("resource-limit"), ["no-file=64"]);
        assert_eq!(options.extra, ["--api-sock", "/fc.sock", "--id", "x"]);
    }

    #[test]
    fn defaults_apply_when_options_are_absent() {
        let options = options(MINIMAL);
        assert_eq!(options.single("chroot-base-dir"), Some("/srv/jailer"));
        assert_eq!(options.single("cgroup-version"), Some("1"));
        assert_eq!(options.single("netns"), None);
        assert!(!options.flag("daemonize"));
        assert!(options.all("cgroup").is_empty() && options.extra.is_empty());
    }

    #[test]
    fn help_and_version_win() {
        assert_eq!(parse_line("--bogus --help"), Ok(Command::Help));
        assert_eq!(parse_line("--version"), Ok(Command::Version));
        assert!(
            parse_line("-- --help").is_err(),
            "after -- it is Firecracker's"
        );
    }

    #[test]
    fn command_lines_firecrackers_parser_refuses_are_refused() {
        let refused = |line: &str| parse_line(line).unwrap_err();
        assert_eq!(
            refused(&format!("{MINIMAL} --node 0")),
            ArgsError::Unexpected("node".into())
        );
        assert_eq!(
            refused("--id=vm-1 --exec-file /f --uid 1 --gid 2"),
            ArgsError::Unexpected("id=vm-1".into())
        );
        assert_eq!(
            refused(&format!("{MINIMAL} stray")),
            ArgsError::Unexpected("stray".into())
        );
        assert_eq!(
            refused(&format!("{MINIMAL} --uid 3")),
            ArgsError::Duplicate("uid")
        );
        assert_eq!(
            refused("--id --exec-file /f --uid 1 --gid 2"),
            ArgsError::MissingValue("id")
        );
        assert_eq!(
            refused("--id vm-1 --uid 1 --gid 2"),
            ArgsError::MissingArgument("exec-file")
        );
    }
}
