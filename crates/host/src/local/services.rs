//! The processes and files of local mode, one method per service, each idempotent.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use boxcutter_auth::ClusterSecret;
use boxcutter_sys::run;

use super::network::LocalNet;
use super::{daemon, LocalConfig};
use crate::procs::Daemon;

/// The cluster-wide guest address space in local mode.
pub const GUEST_RANGE: &str = "10.240.0.0/12";
/// The OS account the control interface's SSH logins use.
pub const LOGIN_USER: &str = "boxcutter";
const ORCHESTRATOR_PORT: u16 = 8801;
const NODE_PORT: u16 = 8800;

/// The services of one local-mode instance.
pub struct Services<'a> {
    config: &'a LocalConfig,
    net: &'a LocalNet,
    dir: PathBuf,
}

impl<'a> Services<'a> {
    /// Services of `config` on `net`.
    pub fn new(config: &'a LocalConfig, net: &'a LocalNet) -> Self {
        Self {
            config,
            net,
            dir: config.state_dir.clone(),
        }
    }

    fn secret_file(&self) -> PathBuf {
        self.dir.join("secrets/cluster.key")
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.config.bin_dir.join(name)
    }

    fn orchestrator_url(&self) -> String {
        format!("http://{}:{ORCHESTRATOR_PORT}", self.net.host_ip())
    }

    /// The cluster secret.
    pub fn secret(&self) -> anyhow::Result<ClusterSecret> {
        Ok(ClusterSecret::load_or_create(&self.secret_file())?)
    }

    /// The golden image, built from this machine's packages unless it is current.
    pub fn image(&self) -> anyhow::Result<()> {
        let agent = self.bin("boxcutter-guest");
        let config =
            boxcutter_image::ImageBuildConfig::from_host(agent, "/var/cache/boxcutter".into())?;
        boxcutter_image::build_image(&config, &self.dir.join("image"))?;
        Ok(())
    }

    /// Mosquitto on the management address, with a password.
    pub fn mosquitto(&self) -> anyhow::Result<()> {
        let dir = self.dir.join("mosquitto");
        mkdir(&dir)?;
        let password_file = self.dir.join("secrets/mqtt.key");
        ClusterSecret::load_or_create(&password_file)?;
        let password = std::fs::read_to_string(&password_file)?.trim().to_string();
        let passwd = dir.join("passwd");
        let mut cmd = Command::new("mosquitto_passwd");
        cmd.args(["-c", "-b"])
            .arg(&passwd)
            .args(["boxcutter", &password]);
        run(&mut cmd).context("create the MQTT password file")?;
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "# Written by boxcutter-host (local mode).\nuser root\npersistence false\n\
             listener 1883 {}\nallow_anonymous false\npassword_file {}\n",
            self.net.host_ip(),
            passwd.display()
        );
        std::fs::write(&conf, text)?;
        let d = daemon(&dir, "mosquitto", &conf);
        d.ensure(
            Path::new("mosquitto"),
            &["-c".into(), conf.display().to_string()],
            None,
        )?;
        wait_port(self.net.host_ip(), 1883, &d)
    }

    /// Node agent `n`, in its namespace.
    pub fn node(&self, n: u8) -> anyhow::Result<()> {
        let dir = self.dir.join(format!("nodes/{n}"));
        mkdir(&dir)?;
        let run_dir = PathBuf::from(format!("/run/boxcutter/{}-n{n}", self.net_prefix()));
        let args: Vec<String> = vec![
            "run".into(),
            "--id".into(),
            format!("boxcutter-node-{n}"),
            "--listen".into(),
            format!("0.0.0.0:{NODE_PORT}"),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--run-dir".into(),
            run_dir.display().to_string(),
            "--image".into(),
            self.dir.join("image").display().to_string(),
            "--secret-file".into(),
            self.secret_file().display().to_string(),
            "--guest-range".into(),
            GUEST_RANGE.into(),
            "--uplink".into(),
            "eth0".into(),
            "--block".into(),
            format!("{}/24", self.net.subnet()),
        ];
        let d = daemon(&dir, "node", &dir);
        let ns = self.net.node_ns(n).path();
        d.ensure(&self.bin("boxcutter-node"), &args, Some(&ns))?;
        wait_port(self.net.node_ip(n), NODE_PORT, &d)
    }

    fn net_prefix(&self) -> String {
        super::prefix_for(&self.dir)
    }

    /// The orchestrator, with the first admin.
    pub fn orchestrator(&self) -> anyhow::Result<()> {
        let dir = self.dir.join("orchestrator");
        mkdir(&dir)?;
        let db = dir.join("boxcutter.db");
        let mut admin = Command::new(self.bin("boxcutter-orchestrator"));
        admin
            .args(["add-admin", "--db"])
            .arg(&db)
            .args(["--name", &self.config.admin_name]);
        admin.arg("--key-file").arg(&self.config.admin_key);
        run(&mut admin).context("create the first admin")?;
        let args: Vec<String> = vec![
            "run".into(),
            "--db".into(),
            db.display().to_string(),
            "--listen".into(),
            format!("{}:{ORCHESTRATOR_PORT}", self.net.host_ip()),
            "--secret-file".into(),
            self.secret_file().display().to_string(),
            "--guest-range".into(),
            GUEST_RANGE.into(),
            "--route-guests".into(),
            "--keys-url".into(),
            self.config.keys_url.clone(),
            "--heartbeat-secs".into(),
            "2".into(),
        ];
        let d = daemon(&dir, "orchestrator", &db);
        d.ensure(&self.bin("boxcutter-orchestrator"), &args, None)?;
        wait_port(self.net.host_ip(), ORCHESTRATOR_PORT, &d)
    }

    /// Registers the nodes with the orchestrator (which then routes each guest via its
    /// node).
    pub fn register(&self, nodes: u8) -> anyhow::Result<()> {
        let token = self.secret()?.issue("orchestrator", 300);
        for n in 1..=nodes {
            let body = serde_json::json!({
                "id": format!("boxcutter-node-{n}"),
                "url": format!("http://{}:{NODE_PORT}", self.net.node_ip(n)),
            });
            let mut curl = Command::new("curl");
            curl.args(["-sS", "--fail-with-body", "--max-time", "10", "-X", "POST"])
                .args(["-H", &format!("Authorization: Bearer {token}")])
                .args([
                    "-H",
                    "Content-Type: application/json",
                    "--data",
                    &body.to_string(),
                ])
                .arg(format!("{}/v1/nodes", self.orchestrator_url()));
            run(&mut curl).with_context(|| format!("register node {n}"))?;
        }
        Ok(())
    }

    /// The control interface: OpenSSH on 127.0.0.1 with Boxcutter's key lookup and
    /// forced command.
    pub fn sshd(&self) -> anyhow::Result<()> {
        ensure_login_user()?;
        let runtime = PathBuf::from(format!("/run/boxcutter/{}-ssh", self.net_prefix()));
        self.install_cli(&runtime)?;
        let dir = self.dir.join("sshd");
        mkdir(&dir)?;
        let host_key = dir.join("ssh_host_ed25519_key");
        if !host_key.exists() {
            let mut keygen = Command::new("ssh-keygen");
            keygen
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&host_key);
            run(&mut keygen)?;
        }
        let conf = dir.join("sshd_config");
        std::fs::write(
            &conf,
            sshd_config(self.config.ssh_port, &host_key, &runtime),
        )?;
        let d = daemon(&dir, "sshd", &conf);
        let args = vec![
            "-D".into(),
            "-e".into(),
            "-f".into(),
            conf.display().to_string(),
        ];
        d.ensure(Path::new("/usr/sbin/sshd"), &args, None)?;
        wait_port(Ipv4Addr::LOCALHOST, self.config.ssh_port, &d)
    }

    /// Copies `boxcutter` and its config where sshd accepts them: root-owned directories,
    /// readable by the login user's group only.
    fn install_cli(&self, runtime: &Path) -> anyhow::Result<()> {
        mkdir(runtime)?;
        let gid = group_id(LOGIN_USER)?;
        let cli = runtime.join("boxcutter");
        let partial = runtime.join(".boxcutter.new");
        std::fs::copy(self.bin("boxcutter"), &partial)?;
        std::fs::rename(&partial, &cli)?;
        let secret = runtime.join("cluster.key");
        std::fs::copy(self.secret_file(), &secret)?;
        let toml = format!(
            "orchestrator_url = \"{}\"\nsecret_file = \"{}\"\nlogin_user = \"{LOGIN_USER}\"\n",
            self.orchestrator_url(),
            secret.display()
        );
        std::fs::write(runtime.join("cli.toml"), toml)?;
        for (path, mode) in [
            (runtime, 0o750),
            (&secret, 0o640),
            (&runtime.join("cli.toml"), 0o640),
        ] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(gid))?;
        }
        std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    }

    /// `ssh_config` for `ssh -F`: `boxcutter` is the control interface; every other host
    /// name is a VM, reached through `connect` with its host key from the orchestrator.
    pub fn ssh_config(&self) -> anyhow::Result<()> {
        let key = self.config.admin_key.with_extension("");
        let host_pub = std::fs::read_to_string(self.dir.join("sshd/ssh_host_ed25519_key.pub"))?;
        let known = self.dir.join("known_hosts");
        std::fs::write(
            &known,
            format!("[127.0.0.1]:{} {}", self.config.ssh_port, host_pub),
        )?;
        let cfg = self.dir.join("ssh_config");
        let text = format!(
            "# Written by boxcutter-host up --local.\n\
             Host boxcutter\n  HostName 127.0.0.1\n  Port {port}\n  User {LOGIN_USER}\n  \
             IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n  \
             StrictHostKeyChecking yes\n\n\
             Host * !boxcutter\n  User dev\n  IdentityFile {key}\n  IdentitiesOnly yes\n  \
             ProxyCommand ssh -F {cfg} boxcutter connect %h\n  \
             KnownHostsCommand /usr/bin/ssh -F {cfg} boxcutter known-hosts %h\n  \
             StrictHostKeyChecking yes\n",
            port = self.config.ssh_port,
            key = key.display(),
            known = known.display(),
            cfg = cfg.display(),
        );
        std::fs::write(&cfg, text)?;
        Ok(())
    }
}

fn sshd_config(port: u16, host_key: &Path, runtime: &Path) -> String {
    let cli = runtime.join("boxcutter");
    let conf = runtime.join("cli.toml");
    format!(
        "# Written by boxcutter-host (local mode): Boxcutter's SSH control interface.\n\
         Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile none\n\
         AuthorizedKeysFile none\n\
         AuthorizedKeysCommand {cli} --config {conf} authorized-keys %u %t %k\n\
         AuthorizedKeysCommandUser {LOGIN_USER}\n\
         ForceCommand {cli} --config {conf} ssh-command\n\
         ExposeAuthInfo yes\nDisableForwarding yes\nPermitTTY no\nPermitUserRC no\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
         PermitRootLogin no\nAllowUsers {LOGIN_USER}\n",
        key = host_key.display(),
        cli = cli.display(),
        conf = conf.display(),
    )
}

/// The dedicated login account, created once (system account, no home).
fn ensure_login_user() -> anyhow::Result<()> {
    if nix::unistd::User::from_name(LOGIN_USER)?.is_some() {
        return Ok(());
    }
    let mut useradd = Command::new("useradd");
    // `*` rather than useradd's default `!`: sshd refuses key logins to a locked account.
    useradd.args([
        "--system",
        "--shell",
        "/bin/sh",
        "--home-dir",
        "/",
        "--no-create-home",
    ]);
    useradd.args(["--password", "*"]);
    run(useradd.arg(LOGIN_USER)).context("create the boxcutter login account")?;
    Ok(())
}

fn group_id(user: &str) -> anyhow::Result<nix::unistd::Gid> {
    let user = nix::unistd::User::from_name(user)?.with_context(|| format!("no user {user}"))?;
    Ok(user.gid)
}

fn mkdir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))
}

/// Waits until `ip:port` accepts connections, failing early if the daemon died.
fn wait_port(ip: Ipv4Addr, port: u16, daemon: &Daemon) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let addr = std::net::SocketAddr::from((ip, port));
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            daemon.running_pid().is_some(),
            "{} exited; see {}",
            daemon.name,
            daemon.log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!(
        "{} does not answer on {addr}; see {}",
        daemon.name,
        daemon.log.display()
    )
}

/// Every daemon of an instance, in stopping order.
pub fn daemons(dir: &Path, nodes: u8) -> Vec<Daemon> {
    let mut all = vec![
        daemon(&dir.join("sshd"), "sshd", &dir.join("sshd/sshd_config")),
        daemon(
            &dir.join("orchestrator"),
            "orchestrator",
            &dir.join("orchestrator/boxcutter.db"),
        ),
    ];
    for n in 1..=nodes {
        let node_dir = dir.join(format!("nodes/{n}"));
        all.push(daemon(&node_dir, "node", &node_dir));
    }
    all.push(daemon(
        &dir.join("mosquitto"),
        "mosquitto",
        &dir.join("mosquitto/mosquitto.conf"),
    ));
    all
}

/// Unmounts the nodes' storage pools (their loop devices go with them). A pool still busy
/// after a few seconds (a killed process's files not yet released) is detached lazily,
/// so it never stays visible.
pub fn unmount_pools(dir: &Path, nodes: u8) {
    for n in 1..=nodes {
        let pool = dir.join(format!("nodes/{n}/data/pool"));
        if !is_mounted(&pool) {
            continue;
        }
        let unmounted = (0..20).any(|_| {
            let done = Command::new("umount")
                .arg(&pool)
                .stderr(std::process::Stdio::null())
                .status();
            let ok = done.is_ok_and(|s| s.success());
            if !ok {
                std::thread::sleep(Duration::from_millis(250));
            }
            ok
        });
        if !unmounted {
            tracing::warn!(pool = %pool.display(), "pool busy; detaching it lazily");
            let _ = Command::new("umount").arg("-l").arg(&pool).status();
        }
    }
}

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let path = path.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.as_ref()))
}
