//! `boxcutter-orchestrator`: thin binary over the `boxcutter_orchestrator` library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use boxcutter_auth::ClusterSecret;
use boxcutter_orchestrator::{
    cluster, GuestRange, HeartbeatConfig, Orchestrator, OrchestratorConfig, DEFAULT_KEYS_URL,
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "boxcutter-orchestrator",
    version,
    about = "Boxcutter orchestrator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API until SIGTERM or SIGINT.
    Run {
        /// The registry's database file (created if missing).
        #[arg(long, default_value = "/var/lib/boxcutter/orchestrator.db")]
        db: PathBuf,
        /// API address.
        #[arg(long, default_value = "0.0.0.0:8801")]
        listen: SocketAddr,
        /// Cluster secret file (created if missing).
        #[arg(long, default_value = "/var/lib/boxcutter/secrets/cluster.key")]
        secret_file: PathBuf,
        /// Cluster-wide guest address range; every VM gets a /30 of it.
        #[arg(long, default_value = "10.240.0.0/12")]
        guest_range: GuestRange,
        /// Base URL of users' public keys, fetched as <URL>/<login>.keys.
        #[arg(long, default_value = DEFAULT_KEYS_URL)]
        keys_url: String,
        /// Seconds between two heartbeats of a node.
        #[arg(long, default_value_t = 5)]
        heartbeat_secs: u64,
        /// Missed heartbeats after which a node is marked down.
        #[arg(long, default_value_t = 3)]
        heartbeat_misses: u32,
        /// Keep a route to every guest's /30 via its node (needs CAP_NET_ADMIN; local mode).
        #[arg(long)]
        route_guests: bool,
    },
    /// Make NAME an admin holding the keys of KEY_FILE (creating the user if needed).
    AddAdmin {
        /// The registry's database file.
        #[arg(long, default_value = "/var/lib/boxcutter/orchestrator.db")]
        db: PathBuf,
        /// The user's name.
        #[arg(long)]
        name: String,
        /// A public key file (one or more OpenSSH public keys).
        #[arg(long)]
        key_file: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run {
            db,
            listen,
            secret_file,
            guest_range,
            keys_url,
            heartbeat_secs,
            heartbeat_misses,
            route_guests,
        } => {
            let config = OrchestratorConfig {
                db,
                secret: ClusterSecret::load_or_create(&secret_file)?,
                guest_range,
                keys_url,
                heartbeat: HeartbeatConfig {
                    interval: Duration::from_secs(heartbeat_secs.max(1)),
                    misses: heartbeat_misses.max(1),
                },
                route_guests,
            };
            run(config, listen)
        }
        Command::AddAdmin { db, name, key_file } => {
            let info = cluster::add_admin(&db, &name, &key_file)?;
            println!("{} is an admin with {} key(s)", info.name, info.keys);
            Ok(())
        }
    }
}

#[tokio::main]
async fn run(config: OrchestratorConfig, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let mut orchestrator = Orchestrator::start(config, listener).await?;
    tokio::select! {
        result = orchestrator.wait() => result.context("API server")?,
        () = boxcutter_service::terminated() => {
            tracing::info!("orchestrator stopping");
            orchestrator.shutdown().await;
        }
    }
    Ok(())
}
