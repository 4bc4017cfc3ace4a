//! RabbitMQ nodes of a test's own: [`PrivateRabbit`] starts `rabbitmq-server` (Debian's
//! package, `/usr/lib/rabbitmq/bin`) as a separate Erlang node beside the machine's shared
//! broker, with its own node name, AMQP port, distribution port and an optional TLS listener,
//! and all of its state (Mnesia, logs, pid file, configuration, an empty plugin list) in a
//! temporary folder. The node is stopped (`rabbitmqctl stop`, then SIGKILL of its Erlang VM by
//! its pid file) when the handle is dropped, so a failing test leaves nothing running.
//!
//! The node name and ports are parameters ([`RabbitOptions`]) so that several nodes can run
//! side by side, e.g. a 3-node cluster (they share the user's Erlang cookie,
//! `~/.erlang.cookie`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::redis_server::free_port;

/// Where Debian's package keeps the scripts that run as any user (`/usr/sbin/*` insist on root
/// or `rabbitmq`). `RABBITMQ_BIN` names another folder.
fn bin_dir() -> PathBuf {
    std::env::var_os("RABBITMQ_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/rabbitmq/bin"))
}

/// The TLS listener of a node: its port and the PEM files it serves.
#[derive(Debug, Clone)]
pub struct RabbitTls {
    pub port: u16,
    /// The CA the node would check client certificates with (it asks for none: `verify_none`).
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// How to start one node.
#[derive(Debug, Clone)]
pub struct RabbitOptions {
    /// `RABBITMQ_NODENAME`, e.g. `dl-tls-5673@localhost`.
    pub node_name: String,
    /// The plain AMQP listener (`RABBITMQ_NODE_PORT`).
    pub amqp_port: u16,
    /// The Erlang distribution port (`RABBITMQ_DIST_PORT`), for `rabbitmqctl` and clustering.
    pub dist_port: u16,
    pub tls: Option<RabbitTls>,
    /// Extra lines for `rabbitmq.conf`.
    pub extra_config: Vec<String>,
}

impl RabbitOptions {
    /// A node named `<prefix>-<amqp port>@localhost` on free ports, without TLS.
    pub fn on_free_ports(prefix: &str) -> anyhow::Result<Self> {
        let amqp_port = free_port()?;
        Ok(Self {
            node_name: format!("{prefix}-{amqp_port}@localhost"),
            amqp_port,
            dist_port: free_port()?,
            tls: None,
            extra_config: Vec::new(),
        })
    }
}

/// One running node, stopped when dropped.
pub struct PrivateRabbit {
    child: Child,
    options: RabbitOptions,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for PrivateRabbit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateRabbit")
            .field("node", &self.options.node_name)
            .field("amqp_port", &self.options.amqp_port)
            .finish()
    }
}

impl PrivateRabbit {
    /// Starts the node and waits (up to `limit`) until `rabbitmqctl status` answers and its
    /// listeners are up. Fails, saying what to install, when RabbitMQ is missing.
    pub async fn start(options: RabbitOptions, limit: Duration) -> anyhow::Result<Self> {
        let server = bin_dir().join("rabbitmq-server");
        anyhow::ensure!(
            server.is_file(),
            "{} not found: install RabbitMQ (apt-get install rabbitmq-server) or set RABBITMQ_BIN",
            server.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("dl-rabbit-")
            .tempdir()
            .context("a folder for the private RabbitMQ node")?;
        let plugins = dir.path().join("enabled_plugins");
        std::fs::write(&plugins, "[].\n").context("writing enabled_plugins")?;
        let config = dir.path().join("rabbitmq.conf");
        let mut lines = vec![
            format!("listeners.tcp.default = {}", options.amqp_port),
            "loopback_users = none".to_owned(),
        ];
        if let Some(tls) = &options.tls {
            lines.extend([
                format!("listeners.ssl.default = {}", tls.port),
                format!("ssl_options.cacertfile = {}", tls.ca_file.display()),
                format!("ssl_options.certfile = {}", tls.cert_file.display()),
                format!("ssl_options.keyfile = {}", tls.key_file.display()),
                "ssl_options.verify = verify_none".to_owned(),
                "ssl_options.fail_if_no_peer_cert = false".to_owned(),
            ]);
        }
        lines.extend(options.extra_config.iter().cloned());
        std::fs::write(&config, lines.join("\n") + "\n").context("writing rabbitmq.conf")?;
        let log = std::fs::File::create(dir.path().join("server.out"))
            .context("creating the node's output file")?;
        let child = Command::new(&server)
            .env("RABBITMQ_NODENAME", &options.node_name)
            .env("RABBITMQ_NODE_PORT", options.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", options.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.path().join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.path().join("log"))
            .env("RABBITMQ_PID_FILE", dir.path().join("node.pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
            .env("RABBITMQ_CONFIG_FILE", &config)
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                dir.path().join("advanced.config"),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("the node's output file")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", server.display()))?;
        let mut node = Self {
            child,
            options,
            dir,
        };
        node.wait_until_up(limit).await?;
        Ok(node)
    }

    async fn wait_until_up(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for the node")? {
                anyhow::bail!(
                    "rabbitmq-server {} exited with {status} at start; its output:\n{}",
                    self.options.node_name,
                    self.output_tail()
                );
            }
            let status = tokio::process::Command::new(bin_dir().join("rabbitmqctl"))
                .args(["-n", &self.options.node_name, "-q", "await_startup"])
                .args(["--timeout", "5"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .context("running rabbitmqctl")?;
            if status.success() && self.listening().await {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "RabbitMQ node {} did not start within {limit:?}; its output:\n{}",
                self.options.node_name,
                self.output_tail()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Whether the AMQP (and TLS) ports take connections.
    async fn listening(&self) -> bool {
        let mut ports = vec![self.options.amqp_port];
        ports.extend(self.options.tls.as_ref().map(|t| t.port));
        for port in ports {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    fn output_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.out")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn node_name(&self) -> &str {
        &self.options.node_name
    }

    pub fn options(&self) -> &RabbitOptions {
        &self.options
    }

    /// The node's state folder (Mnesia, logs, configuration).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `amqp://guest:guest@127.0.0.1:<amqp port>/%2f`.
    pub fn amqp_url(&self) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f",
            self.options.amqp_port
        )
    }

    /// `amqps://guest:guest@<host>:<tls port>/%2f`, when the node has a TLS listener.
    pub fn amqps_url(&self, host: &str) -> Option<String> {
        self.options
            .tls
            .as_ref()
            .map(|t| format!("amqps://guest:guest@{host}:{}/%2f", t.port))
    }

    /// Runs `rabbitmqctl -n <node> <args>` and returns its standard output.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = tokio::process::Command::new(bin_dir().join("rabbitmqctl"))
            .args(["-n", &self.options.node_name])
            .args(args)
            .output()
            .await
            .context("running rabbitmqctl")?;
        anyhow::ensure!(
            output.status.success(),
            "rabbitmqctl -n {} {}: {}",
            self.options.node_name,
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Stops the node: `rabbitmqctl stop` (bounded), then SIGKILL of what is left of it.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("timeout")
                .args(["20"])
                .arg(bin_dir().join("rabbitmqctl"))
                .args(["-n", &self.options.node_name, "-q", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // The Erlang VM's own pid, should it outlive the script that started it. Only this
        // node's processes are signalled: epmd and other nodes are left alone.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("node.pid")) {
            let pid = pid.trim();
            if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) {
                let _ = Command::new("kill")
                    .args(["-KILL", pid])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.stop();
    }
}
