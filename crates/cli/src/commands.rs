//! The command-line grammar: the control commands a user types after `ssh boxcutter`
//! ([`ControlLine`], [`Command`]) and the `boxcutter` binary's own arguments ([`Cli`]),
//! which add the two sshd entry points and local admin use.
//!
//! Commands, flags and defaults are the original README's. Values are validated here
//! only where the type already owns the rule (VM names, sizes) or the value is
//! meaningless (zero CPUs); capacity bounds are the orchestrator's to enforce.

use std::path::PathBuf;

use boxcutter_types::guest::VmType;
use boxcutter_types::orch::{NewVmRequest, DEFAULT_DISK, DEFAULT_RAM_MIB, DEFAULT_VCPUS};
use boxcutter_types::{ByteSize, NetMode, VmName};
use clap::{Args, ColorChoice, Parser, Subcommand, ValueEnum};

/// A control command as sshd passes it, already split into words.
#[derive(Debug, Parser, PartialEq)]
#[command(
    name = "boxcutter",
    bin_name = "ssh boxcutter",
    no_binary_name = true,
    disable_version_flag = true,
    color = ColorChoice::Never,
    about = "Boxcutter: disposable developer VMs. Every command takes --help."
)]
pub struct ControlLine {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

impl ControlLine {
    /// Parses the words of one control command.
    pub fn parse_words(words: &[String]) -> Result<Self, clap::Error> {
        Self::try_parse_from(words)
    }

    /// The top-level help, as `ssh boxcutter` and `ssh boxcutter help` print it.
    pub fn help() -> String {
        <Self as clap::CommandFactory>::command()
            .render_help()
            .to_string()
    }
}

/// The control commands.
#[derive(Debug, Subcommand, PartialEq)]
pub enum Command {
    /// Create a new VM
    New(NewArgs),
    /// List your VMs (admins see all), with their type: fc or qemu
    List,
    /// Destroy a VM
    Destroy {
        /// The VM
        name: VmName,
    },
    /// Stop a running VM
    Stop {
        /// The VM
        name: VmName,
    },
    /// Start a stopped VM
    Start {
        /// The VM
        name: VmName,
    },
    /// Clone a VM's disk into a new VM
    Cp {
        /// The VM to copy
        name: VmName,
        /// The copy's name (default: random)
        new_name: Option<VmName>,
    },
    /// View console logs for a VM
    Logs {
        /// The VM
        name: VmName,
        /// How many of the last lines to show (default: the orchestrator's)
        #[arg(long, short = 'n', value_name = "N", value_parser = at_least_one)]
        lines: Option<u32>,
    },
    /// Show detailed VM info; with TEXT, set the VM's description to TEXT
    #[command(
        long_about = "Show detailed VM info.\n\nWith TEXT after the name, set the VM's \
                      description instead (the words are joined with spaces; an empty \
                      TEXT, '', clears it) and show the result."
    )]
    Describe {
        /// The VM
        name: VmName,
        /// New description
        #[arg(value_name = "TEXT", trailing_var_arg = true)]
        description: Vec<String>,
    },
    /// Cluster capacity summary
    Status,
    /// List all nodes with health
    Nodes,
    /// Add a user with the SSH keys of a GitHub account
    Adduser {
        /// GitHub login, which becomes the Boxcutter user name
        github: String,
    },
    /// Grant GitHub repo access to a VM, or list it
    #[command(subcommand, arg_required_else_help = false)]
    Repos(ReposCommand),
    /// Pipe stdin and stdout to a VM's SSH port (for `ProxyCommand ssh boxcutter connect %h`)
    Connect {
        /// The VM
        vm: VmName,
    },
    /// Print a known_hosts line for a VM's SSH host key
    KnownHosts {
        /// The VM
        vm: VmName,
    },
}

/// `repos add|list`.
#[derive(Debug, Subcommand, PartialEq)]
pub enum ReposCommand {
    /// Grant a VM access to a GitHub repository
    Add {
        /// The VM
        vm: VmName,
        /// The repository, as owner/repo
        repo: String,
    },
    /// List the repositories a VM can access
    List {
        /// The VM
        vm: VmName,
    },
}

/// The flags of `new`, with the README's defaults.
#[derive(Debug, Args, PartialEq)]
pub struct NewArgs {
    /// VM type: firecracker (the default where a node supports it) or qemu
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub vm_type: Option<TypeArg>,
    /// Custom VM name (default: random)
    #[arg(long, value_name = "NAME")]
    pub name: Option<VmName>,
    /// Description for the VM
    #[arg(long, value_name = "TEXT")]
    pub desc: Option<String>,
    /// Clone repo on creation (repeatable)
    #[arg(long, value_name = "REPO")]
    pub clone: Vec<String>,
    /// CPU cores
    #[arg(long, value_name = "N", default_value_t = DEFAULT_VCPUS, value_parser = at_least_one)]
    pub vcpu: u32,
    /// RAM in MiB
    #[arg(long, value_name = "MiB", default_value_t = DEFAULT_RAM_MIB, value_parser = at_least_one)]
    pub ram: u32,
    /// Disk size, like 10G or 512M
    #[arg(long, value_name = "SIZE", default_value_t = DEFAULT_DISK, value_parser = disk_size)]
    pub disk: ByteSize,
    /// Network mode
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ModeArg::Normal)]
    pub mode: ModeArg,
    /// Pin to specific node
    #[arg(long, value_name = "NODE-ID")]
    pub node: Option<String>,
}

impl NewArgs {
    /// The orchestrator request these flags ask for.
    pub fn to_request(&self) -> NewVmRequest {
        NewVmRequest {
            name: self.name.clone(),
            vm_type: self.vm_type.map(VmType::from),
            description: self.desc.clone().unwrap_or_default(),
            clone: self.clone.clone(),
            vcpus: Some(self.vcpu),
            ram_mib: Some(self.ram),
            disk: Some(self.disk),
            mode: Some(self.mode.into()),
            node: self.node.clone(),
        }
    }
}

/// `--type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TypeArg {
    /// A Firecracker microVM: boots in well under a second
    Firecracker,
    /// A full QEMU VM: Docker works
    Qemu,
}

impl From<TypeArg> for VmType {
    fn from(t: TypeArg) -> Self {
        match t {
            TypeArg::Firecracker => VmType::Firecracker,
            TypeArg::Qemu => VmType::Qemu,
        }
    }
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Internet, DNS and the metadata service
    Normal,
    /// Only the metadata service and the egress proxy
    Paranoid,
}

impl From<ModeArg> for NetMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Normal => NetMode::Normal,
            ModeArg::Paranoid => NetMode::Paranoid,
        }
    }
}

fn at_least_one(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("must be a whole number".into()),
    }
}

/// A disk size needs a unit: a bare number would mean bytes, which no disk is.
fn disk_size(text: &str) -> Result<ByteSize, String> {
    if !text.trim_end().ends_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("give a unit, like {text}G or {text}M"));
    }
    let size: ByteSize = text.parse().map_err(|e| format!("{e}"))?;
    if size.bytes() == 0 {
        return Err("must be more than 0".into());
    }
    Ok(size)
}

/// The `boxcutter` binary's arguments.
#[derive(Debug, Parser)]
#[command(
    name = "boxcutter",
    version,
    color = ColorChoice::Never,
    arg_required_else_help = false,
    about = "Boxcutter's SSH control interface (sshd's ForceCommand and \
             AuthorizedKeysCommand), and the same commands for local admin use",
    after_help = "Under sshd, users type the control commands after `ssh boxcutter`; \
                  sshd runs `boxcutter ssh-command` for them. Admins on the orchestrator \
                  host run them directly with --user."
)]
pub struct Cli {
    /// Config file [default: $BOXCUTTER_CONFIG, else /etc/boxcutter/cli.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Act as this Boxcutter user (local admin use; refused inside an sshd ForceCommand)
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// What to run.
    #[command(subcommand)]
    pub entry: Entry,
}

/// The binary's entry points.
#[derive(Debug, Subcommand)]
pub enum Entry {
    /// sshd's ForceCommand: run the control command in $SSH_ORIGINAL_COMMAND as the user
    /// whose key logged in
    SshCommand,
    /// sshd's AuthorizedKeysCommand (%u %t %k): print `restrict <type> <key>` when the key
    /// belongs to a Boxcutter user, nothing otherwise
    AuthorizedKeys {
        /// The login name sshd is authenticating (%u)
        login_user: String,
        /// The key's type (%t)
        key_type: String,
        /// The key, base64 (%k)
        key: String,
    },
    /// A control command, run directly (needs --user)
    #[command(flatten)]
    Control(Command),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, clap::Error> {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        ControlLine::parse_words(&words).map(|l| l.command)
    }

    fn name(n: &str) -> VmName {
        VmName::new(n).unwrap()
    }

    #[test]
    fn new_without_flags_has_the_readme_defaults() {
        let Ok(Command::New(args)) = parse("new") else {
            panic!("new did not parse")
        };
        assert_eq!(
            args.to_request(),
            NewVmRequest {
                name: None,
                vm_type: None,
                description: String::new(),
                clone: vec![],
                vcpus: Some(2),
                ram_mib: Some(2048),
                disk: Some(ByteSize(50 << 30)),
                mode: Some(NetMode::Normal),
                node: None,
            }
        );
    }

    #[test]
    fn new_takes_every_flag() {
        let line = "new --type qemu --name my-vm --desc x --clone github.com/o/a --clone o/b \
                    --vcpu 1 --ram 1024 --disk 10G --mode paranoid --node node-2";
        let Ok(Command::New(args)) = parse(line) else {
            panic!("new did not parse")
        };
        assert_eq!(
            args.to_request(),
            NewVmRequest {
                name: Some(name("my-vm")),
                vm_type: Some(VmType::Qemu),
                description: "x".into(),
                clone: vec!["github.com/o/a".into(), "o/b".into()],
                vcpus: Some(1),
                ram_mib: Some(1024),
                disk: Some(ByteSize(10 << 30)),
                mode: Some(NetMode::Paranoid),
                node: Some("node-2".into()),
            }
        );
        let Ok(Command::New(args)) = parse("new --type firecracker") else {
            panic!("new did not parse")
        };
        assert_eq!(args.vm_type, Some(TypeArg::Firecracker));
    }

    #[test]
    fn every_other_command_parses() {
        let cases = [
            ("list", Command::List),
            ("destroy a", Command::Destroy { name: name("a") }),
            ("stop a", Command::Stop { name: name("a") }),
            ("start a", Command::Start { name: name("a") }),
            (
                "cp a",
                Command::Cp {
                    name: name("a"),
                    new_name: None,
                },
            ),
            (
                "cp a b",
                Command::Cp {
                    name: name("a"),
                    new_name: Some(name("b")),
                },
            ),
            (
                "logs a",
                Command::Logs {
                    name: name("a"),
                    lines: None,
                },
            ),
            (
                "logs a -n 5",
                Command::Logs {
                    name: name("a"),
                    lines: Some(5),
                },
            ),
            (
                "describe a",
                Command::Describe {
                    name: name("a"),
                    description: vec![],
                },
            ),
            (
                "describe a my dev box -x",
                Command::Describe {
                    name: name("a"),
                    description: vec!["my".into(), "dev".into(), "box".into(), "-x".into()],
                },
            ),
            (
                "describe a -- -starts-with-a-dash",
                Command::Describe {
                    name: name("a"),
                    description: vec!["-starts-with-a-dash".into()],
                },
            ),
            ("status", Command::Status),
            ("nodes", Command::Nodes),
            (
                "adduser octocat",
                Command::Adduser {
                    github: "octocat".into(),
                },
            ),
            (
                "repos add a org/repo",
                Command::Repos(ReposCommand::Add {
                    vm: name("a"),
                    repo: "org/repo".into(),
                }),
            ),
            (
                "repos list a",
                Command::Repos(ReposCommand::List { vm: name("a") }),
            ),
            ("connect a", Command::Connect { vm: name("a") }),
            ("known-hosts a", Command::KnownHosts { vm: name("a") }),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line).unwrap(), want, "{line}");
        }
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        let cases = [
            ("destroy", "required arguments were not provided"),
            ("cp", "required arguments were not provided"),
            ("repos add a", "required arguments were not provided"),
            ("repos", "requires a subcommand"),
            ("adduser", "required arguments were not provided"),
            ("new --bogus", "unexpected argument '--bogus'"),
            ("list extra", "unexpected argument 'extra'"),
            ("frobnicate", "unrecognized subcommand 'frobnicate'"),
            ("new --ram 0", "must be at least 1"),
            ("new --vcpu 0", "must be at least 1"),
            ("new --ram lots", "must be a whole number"),
            ("new --ram 99999999999", "must be a whole number"),
            (
                "new --type vmware",
                "invalid value 'vmware' for '--type <TYPE>'",
            ),
            (
                "new --mode open",
                "invalid value 'open' for '--mode <MODE>'",
            ),
            ("new --disk 50", "give a unit, like 50G"),
            ("new --disk 0G", "must be more than 0"),
            ("new --disk 5X", "invalid size"),
            ("new --name a;b", "invalid name \"a;b\""),
            ("new --name Bold", "invalid name"),
            ("destroy ../etc", "invalid name"),
            ("logs a -n 0", "must be at least 1"),
        ];
        for (line, want) in cases {
            let err = parse(line).expect_err(line).to_string();
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn help_is_available_everywhere() {
        for line in [
            "--help",
            "help",
            "help new",
            "new --help",
            "repos add --help",
        ] {
            let err = parse(line).expect_err(line);
            assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp, "{line}");
        }
        let help = ControlLine::help();
        for command in ["new", "list", "describe", "repos", "connect", "adduser"] {
            assert!(help.contains(command), "{command} missing from help");
        }
        assert!(help.contains("Usage: ssh boxcutter <COMMAND>"), "{help}");
    }

    #[test]
    fn the_binary_grammar_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
        <ControlLine as clap::CommandFactory>::command().debug_assert();
    }
}
