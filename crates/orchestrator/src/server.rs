//! Starting and stopping an orchestrator: the registry, the heartbeat task and the API
//! server. Everything that matters is in SQLite, so a SIGKILL at any moment loses
//! nothing: the next start reads the registry and the heartbeats reconcile the nodes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::serve::ListenerExt;
use boxcutter_auth::ClusterSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alloc::GuestRange;
use crate::app::{App, Busy, HeartbeatConfig};
use crate::db::{Db, DbError};
use crate::node_client::NodeClient;

/// Default base URL of users' public keys (`<url>/<login>.keys`).
pub const DEFAULT_KEYS_URL: &str = "https://github.com";

/// Everything an orchestrator needs.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// The registry's database file.
    pub db: PathBuf,
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// Where guest subnets come from.
    pub guest_range: GuestRange,
    /// Base URL of `<login>.keys` files.
    pub keys_url: String,
    /// Heartbeat settings.
    pub heartbeat: HeartbeatConfig,
    /// Maintain a `/30 via <node>` route to every guest (see `routes`).
    pub route_guests: bool,
}

/// A running orchestrator.
#[derive(Debug)]
pub struct Orchestrator {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    heartbeat: JoinHandle<()>,
}

impl Orchestrator {
    /// Opens the registry and serves the API on `listener`, with heartbeats running.
    pub async fn start(config: OrchestratorConfig, listener: TcpListener) -> Result<Self, DbError> {
        let db_path = config.db.clone();
        let db = tokio::task::spawn_blocking(move || Db::open(&db_path))
            .await
            .map_err(|_| DbError::Closed)??;
        let secret = Arc::new(config.secret);
        let app = Arc::new(App {
            db,
            nodes: NodeClient::new(secret.clone()),
            http: reqwest::Client::new(),
            busy: Arc::new(Busy::default()),
            guest_range: config.guest_range,
            keys_url: config.keys_url,
            heartbeat: config.heartbeat,
            secret,
            routes: crate::routes::GuestRoutes::new(config.route_guests),
        });
        let addr = listener.local_addr().map_err(DbError::Thread)?;
        let heartbeat = tokio::spawn(crate::heartbeat::run(app.clone()));
        let (stop, mut stopped) = watch::channel(false);
        let router = crate::api::router(app);
        // Progress lines are small writes: without TCP_NODELAY each waits for the
        // client's delayed ACK (about 40 ms on Linux).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        });
        tracing::info!(%addr, "orchestrator ready");
        Ok(Self {
            addr,
            stop,
            server,
            heartbeat,
        })
    }

    /// The API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (in-flight requests finish) and stops the heartbeats.
    pub async fn shutdown(self) {
        self.heartbeat.abort();
        let _ = self.stop.send(true);
        let _ = self.server.await;
    }

    /// Waits until the server stops by itself (it only does on an I/O error).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        match (&mut self.server).await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}
