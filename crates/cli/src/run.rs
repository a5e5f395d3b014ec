//! From the process's arguments and environment to an exit status.
//!
//! Three ways in:
//! - `ssh-command` (sshd's ForceCommand): the words come from `$SSH_ORIGINAL_COMMAND`,
//!   the user from the key that logged in. There is no flag that picks a user.
//! - `authorized-keys` (sshd's AuthorizedKeysCommand): vouches for keys of known users.
//! - a control command run directly, with `--user`: local admin use by whoever can read
//!   the cluster secret (who can sign any request anyway). Refused when
//!   `$SSH_ORIGINAL_COMMAND` is set, i.e. inside a forced SSH session.
//!
//! A command prints to stdout only once it has succeeded; failures are one
//! `error: ...` line on stderr and a non-zero status.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boxcutter_types::orch::{CopyVmRequest, SshTarget, UserInfo, VmInfo};
use boxcutter_types::VmName;
use clap::error::ErrorKind;
use clap::Parser;

use crate::client::{OrchClient, Power};
use crate::commands::{Cli, Command, ControlLine, Entry, ReposCommand};
use crate::config::{CliConfig, CONFIG_ENV};
use crate::error::{usage_error, CliError};
use crate::identity::{read_login_keys, PublicKey, AUTH_INFO_ENV};
use crate::words::split_words;
use crate::{connect, output};

/// sshd waits for the AuthorizedKeysCommand; a login should never hang on us.
const KEY_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment variables `boxcutter` reads.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `$SSH_ORIGINAL_COMMAND`: what the SSH user asked for, set by sshd.
    pub ssh_original_command: Option<String>,
    /// `$SSH_USER_AUTH`: sshd's auth-info file.
    pub ssh_user_auth: Option<String>,
    /// `$BOXCUTTER_CONFIG`: the config file.
    pub config: Option<String>,
}

impl Env {
    /// The process's own environment.
    pub fn from_process() -> Self {
        let var = |name| std::env::var(name).ok();
        Self {
            ssh_original_command: var("SSH_ORIGINAL_COMMAND"),
            ssh_user_auth: var(AUTH_INFO_ENV),
            config: var(CONFIG_ENV),
        }
    }
}

/// Runs the `boxcutter` command line `args` and returns the exit status.
pub fn run(args: impl IntoIterator<Item = OsString>, env: &Env) -> i32 {
    let outcome = match Cli::try_parse_from(args) {
        Ok(cli) => execute(cli, env),
        Err(err) => help_or_error(err),
    };
    match outcome {
        Ok(()) => 0,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "{}", err.one_line());
            err.exit_code()
        }
    }
}

fn execute(cli: Cli, env: &Env) -> Result<(), CliError> {
    let config_path = CliConfig::path(cli.config.as_deref(), env.config.clone());
    match cli.entry {
        Entry::SshCommand if cli.user.is_some() => Err(CliError::Usage(
            "ssh-command takes its user from the SSH key, never from --user".into(),
        )),
        Entry::SshCommand => ssh_command(&config_path, env),
        Entry::AuthorizedKeys {
            login_user,
            key_type,
            key,
        } => authorized_keys(&config_path, &login_user, &key_type, &key),
        Entry::Control(command) => {
            let user = direct_user(cli.user, env)?;
            let client = OrchClient::new(&CliConfig::load(&config_path)?)?;
            dispatch(command, client.acting_for(user))
        }
    }
}

/// The user of a directly run command: `--user`, never inside a forced SSH session.
fn direct_user(user: Option<String>, env: &Env) -> Result<String, CliError> {
    if env.ssh_original_command.is_some() {
        return Err(CliError::Usage(
            "inside an SSH session only `boxcutter ssh-command` runs; set ForceCommand \
             to it"
                .into(),
        ));
    }
    user.ok_or_else(|| {
        CliError::Usage(
            "--user NAME is needed to run a control command directly; SSH users run \
             `ssh boxcutter <command>`"
                .into(),
        )
    })
}

/// sshd's ForceCommand: parse `$SSH_ORIGINAL_COMMAND`, learn the user from the login
/// key, run the command.
fn ssh_command(config_path: &Path, env: &Env) -> Result<(), CliError> {
    let line = env.ssh_original_command.as_deref().unwrap_or("");
    let words = split_words(line).map_err(|e| CliError::Usage(e.to_string()))?;
    if words.is_empty() {
        return write_stdout(&ControlLine::help());
    }
    let command = match ControlLine::parse_words(&words) {
        Ok(parsed) => parsed.command,
        Err(err) => return help_or_error(err),
    };
    let client = OrchClient::new(&CliConfig::load(config_path)?)?;
    let keys = read_login_keys(env.ssh_user_auth.clone())?;
    let user = runtime()?.block_on(key_user(&client, &keys))?;
    dispatch(command, client.acting_for(user))
}

/// The one Boxcutter user all the session's login keys belong to.
async fn key_user(client: &OrchClient, keys: &[PublicKey]) -> Result<String, CliError> {
    let mut user: Option<String> = None;
    for key in keys {
        let owner = client.key_owner(&key.blob).await?.ok_or_else(|| {
            CliError::Identity(format!(
                "the {} key you logged in with belongs to no Boxcutter user",
                key.key_type
            ))
        })?;
        match &user {
            Some(known) if *known != owner.name => {
                return Err(CliError::Identity(
                    "the keys you logged in with belong to different users".into(),
                ))
            }
            _ => user = Some(owner.name),
        }
    }
    user.ok_or_else(|| CliError::Identity("no login key".into()))
}

/// sshd's AuthorizedKeysCommand: one `restrict` line for a known key, else nothing.
fn authorized_keys(
    config_path: &Path,
    login_user: &str,
    key_type: &str,
    key: &str,
) -> Result<(), CliError> {
    let config = CliConfig::load(config_path)?;
    if config
        .login_user
        .as_deref()
        .is_some_and(|u| u != login_user)
    {
        return Ok(());
    }
    let Some(key) = PublicKey::new(key_type, key) else {
        return Ok(());
    };
    let client = OrchClient::new(&config)?.with_timeout(KEY_LOOKUP_TIMEOUT);
    match runtime()?.block_on(client.key_owner(&key.blob))? {
        Some(_) => write_stdout(&format!("restrict {} {}\n", key.key_type, key.blob)),
        None => Ok(()),
    }
}

/// What a control command leaves to do once the orchestrator has answered.
enum Outcome {
    /// Print this.
    Text(String),
    /// Join stdio to this VM's SSH server.
    Pipe(VmName, SshTarget),
}

/// Runs a control command as the user `client` acts for.
fn dispatch(command: Command, client: OrchClient) -> Result<(), CliError> {
    let outcome = runtime()?.block_on(perform(command, &client))?;
    match outcome {
        Outcome::Text(text) => write_stdout(&text),
        Outcome::Pipe(vm, target) => connect::pipe(&vm, &target),
    }
}

async fn perform(command: Command, client: &OrchClient) -> Result<Outcome, CliError> {
    let text = match command {
        Command::New(args) => {
            let vm = client.create_vm(&args.to_request(), report).await?;
            output::vm_block(&vm)
        }
        Command::List => output::vm_table(&client.list_vms().await?),
        Command::Destroy { name } => {
            client.destroy_vm(&name).await?;
            format!("Destroyed {name}\n")
        }
        Command::Stop { name } => state_line(&client.power(&name, Power::Stop).await?),
        Command::Start { name } => state_line(&client.power(&name, Power::Start).await?),
        Command::Cp { name, new_name } => {
            let request = CopyVmRequest { name: new_name };
            output::vm_block(&client.copy_vm(&name, &request, report).await?)
        }
        Command::Logs { name, lines } => with_newline(client.logs(&name, lines).await?),
        Command::Describe { name, description } if description.is_empty() => {
            output::describe_block(&client.vm(&name).await?)
        }
        Command::Describe { name, description } => {
            let vm = client
                .set_description(&name, &description.join(" "))
                .await?;
            output::describe_block(&vm)
        }
        Command::Status => output::status_block(&client.status().await?),
        Command::Nodes => output::node_table(&client.nodes().await?, unix_now()),
        Command::Adduser { github } => user_line(&client.add_user(&github).await?),
        Command::Repos(ReposCommand::Add { vm, repo }) => {
            client.add_repo(&vm, &repo).await?;
            format!("{vm} can now access {repo}\n")
        }
        Command::Repos(ReposCommand::List { vm }) => client
            .repos(&vm)
            .await?
            .iter()
            .map(|r| format!("{r}\n"))
            .collect(),
        Command::KnownHosts { vm } => {
            output::known_hosts_line(vm.as_str(), &client.ssh_target(&vm).await?.host_key)
        }
        Command::Connect { vm } => {
            let target = client.ssh_target(&vm).await?;
            return Ok(Outcome::Pipe(vm, target));
        }
    };
    Ok(Outcome::Text(text))
}

/// Progress of `new` and `cp`, to stderr as it happens.
fn report(phase: &str, message: &str, elapsed_ms: u64) {
    let line = output::progress_line(phase, message, elapsed_ms);
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn state_line(vm: &VmInfo) -> String {
    format!("{}: {}\n", vm.name, vm.state.as_str())
}

fn user_line(user: &UserInfo) -> String {
    let role = if user.admin { " (admin)" } else { "" };
    let plural = if user.keys == 1 { "" } else { "s" };
    format!(
        "Added user {}{role} with {} SSH key{plural}\n",
        user.name, user.keys
    )
}

fn with_newline(mut text: String) -> String {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// `--help`, `help` and `--version` print to stdout and succeed; other parse errors are
/// usage errors.
fn help_or_error(err: clap::Error) -> Result<(), CliError> {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            write_stdout(&err.render().to_string())
        }
        _ => Err(usage_error(&err)),
    }
}

fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|source| CliError::Io {
            what: "cannot write the output".into(),
            source,
        })
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            what: "cannot start the async runtime".into(),
            source,
        })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_commands_need_a_user_and_no_forced_session() {
        let plain = Env::default();
        assert_eq!(direct_user(Some("alice".into()), &plain).unwrap(), "alice");
        assert!(matches!(direct_user(None, &plain), Err(CliError::Usage(_))));
        let forced = Env {
            ssh_original_command: Some("list".into()),
            ..Env::default()
        };
        assert!(matches!(
            direct_user(Some("bob".into()), &forced),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn ssh_command_refuses_user_before_reading_anything() {
        let args = ["boxcutter", "--user", "bob", "ssh-command"].map(OsString::from);
        let env = Env {
            ssh_original_command: Some("list".into()),
            config: Some("/nonexistent/cli.toml".into()),
            ..Env::default()
        };
        assert_eq!(run(args, &env), crate::error::EXIT_USAGE);
    }

    #[test]
    fn added_users_read_naturally() {
        let user = |admin, keys| UserInfo {
            name: "octocat".into(),
            admin,
            keys,
        };
        assert_eq!(
            user_line(&user(false, 2)),
            "Added user octocat with 2 SSH keys\n"
        );
        assert_eq!(
            user_line(&user(true, 1)),
            "Added user octocat (admin) with 1 SSH key\n"
        );
    }
}
