//! `boxcutter-host`: the host control plane's command. Today: local mode (`up --local`,
//! `down --local`) and `version`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use boxcutter_host::local::{self, LocalConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "boxcutter-host",
    version,
    about = "Boxcutter host control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version.
    Version,
    /// Bring Boxcutter up.
    Up {
        /// Run everything as local processes (the only mode so far).
        #[arg(long, required = true)]
        local: bool,
        /// State directory.
        #[arg(long, default_value = "/var/lib/boxcutter/local")]
        state_dir: PathBuf,
        /// Node agents to run.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=20))]
        nodes: u8,
        /// Management network (/24).
        #[arg(long, default_value = "10.239.0.0")]
        subnet: Ipv4Addr,
        /// Port of the SSH control interface on 127.0.0.1.
        #[arg(long, default_value_t = 2222)]
        ssh_port: u16,
        /// Public key of the first admin (default: the invoking user's, generated if none).
        #[arg(long)]
        admin_key: Option<PathBuf>,
        /// Name of the first admin (default: the invoking user's login).
        #[arg(long)]
        admin_name: Option<String>,
        /// Where `adduser` fetches `<login>.keys`.
        #[arg(long, default_value = "https://github.com")]
        keys_url: String,
    },
    /// Stop everything `up` started.
    Down {
        /// Local mode.
        #[arg(long, required = true)]
        local: bool,
        /// State directory.
        #[arg(long, default_value = "/var/lib/boxcutter/local")]
        state_dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Version => {
            println!("boxcutter-host {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Up {
            state_dir,
            nodes,
            subnet,
            ssh_port,
            admin_key,
            admin_name,
            keys_url,
            ..
        } => {
            let state_dir = absolute(&state_dir)?;
            let (user, home) = invoking_user()?;
            let admin_key = match admin_key {
                Some(key) => key,
                None => default_key(&home)?,
            };
            let bin_dir = std::env::current_exe()?
                .parent()
                .context("no bin dir")?
                .to_owned();
            let config = LocalConfig {
                state_dir: state_dir.clone(),
                nodes,
                subnet,
                ssh_port,
                bin_dir,
                admin_key,
                admin_name: admin_name.unwrap_or(user),
                keys_url,
            };
            local::up(&config)?;
            let cfg = state_dir.join("ssh_config");
            println!("Boxcutter is up (local mode, {nodes} node(s)). Try:\n");
            println!("  ssh -F {} boxcutter new", cfg.display());
            println!("  ssh -F {} <vm-name>", cfg.display());
            Ok(())
        }
        Command::Down { state_dir, .. } => {
            local::down(&absolute(&state_dir)?)?;
            println!("Boxcutter is down.");
            Ok(())
        }
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(std::env::current_dir()?.join(path))
}

/// The user who ran us (through sudo, if so) and their home.
fn invoking_user() -> anyhow::Result<(String, PathBuf)> {
    let name = std::env::var("SUDO_USER").unwrap_or_else(|_| "root".into());
    let user = nix::unistd::User::from_name(&name)?.with_context(|| format!("no user {name}"))?;
    Ok((name, user.dir))
}

/// `~/.ssh/id_ed25519.pub`, else `id_rsa.pub`, else a new ed25519 key.
fn default_key(home: &Path) -> anyhow::Result<PathBuf> {
    let ssh = home.join(".ssh");
    for name in ["id_ed25519.pub", "id_rsa.pub"] {
        if ssh.join(name).is_file() {
            return Ok(ssh.join(name));
        }
    }
    std::fs::create_dir_all(&ssh)?;
    let key = ssh.join("id_ed25519");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()?;
    anyhow::ensure!(status.success(), "ssh-keygen failed");
    Ok(key.with_extension("pub"))
}
