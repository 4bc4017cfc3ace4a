//! Redis servers of a test's own: [`PrivateRedis`] (a `redis-server` on a free port, no
//! persistence, plain or TLS-only) and [`SentinelGroup`] (a primary, a replica and three Sentinels watching them),
//! for outage and failover tests that must never touch the machine's shared Redis. Every
//! process is killed when its handle is dropped, so a failing test leaves nothing running.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;

/// A free loopback port (bound and released: another process could take it in between, which
/// the caller sees as a start that fails, not as a wrong server).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `redis-server` of this test's own on a free port, killed when dropped.
pub struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    /// Starts one with `extra` arguments (e.g. `["--replicaof", "127.0.0.1", "6400"]`).
    pub fn start(extra: &[&str]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a private redis-server (is it installed?)")?;
        Ok(Self { child, port })
    }

    /// Starts one that speaks TLS only: `--port 0 --tls-port <free>` with the server's
    /// certificate and key and the CA file (PEM paths); clients need no certificate.
    /// [`PrivateRedis::port`] is the TLS port. Fails, saying what to install, when
    /// `redis-server` is missing or was built without TLS.
    pub async fn start_tls(
        cert_file: &Path,
        key_file: &Path,
        ca_file: &Path,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(cert_file)
            .arg("--tls-key-file")
            .arg(key_file)
            .arg("--tls-ca-cert-file")
            .arg(ca_file)
            .args(["--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a private redis-server (apt-get install redis-server, 6.0 or later built with TLS)")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "redis-server with --tls-port exited with {status}: is it built with TLS                      (Debian's redis-server is)?"
                );
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("redis-server did not listen on its TLS port {port} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { child, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP (`stop = true`) or SIGCONT: the process stands still with its data and sockets.
    pub fn signal(&self, stop: bool) -> anyhow::Result<()> {
        let signal = if stop { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .context("kill")?;
        anyhow::ensure!(status.success(), "kill {signal} failed: {status}");
        Ok(())
    }

    /// `kill -9`: gone at once, with whatever it had not yet sent to its replica.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        self.kill();
    }
}

/// A primary, a replica of it and three Sentinels (quorum 2) that watch them under `master`,
/// each on a free port, with the Sentinels' rewritable configuration in a temporary folder.
/// The Sentinels call the primary down after `down_after` without answers.
pub struct SentinelGroup {
    pub primary: PrivateRedis,
    pub replica: PrivateRedis,
    pub sentinels: Vec<PrivateRedis>,
    pub master: String,
    _dir: tempfile::TempDir,
}

impl SentinelGroup {
    /// Starts the five processes and waits (up to 30 s) until the replica is in sync and every
    /// Sentinel has found the replica and the other Sentinels.
    pub async fn start(master: &str, down_after: Duration) -> anyhow::Result<Self> {
        let primary = PrivateRedis::start(&[])?;
        let port = primary.port().to_string();
        let replica = PrivateRedis::start(&["--replicaof", "127.0.0.1", &port])?;
        let dir = tempfile::tempdir().context("a folder for the Sentinels' configuration")?;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let file = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &file,
                format!(
                    "sentinel monitor {master} 127.0.0.1 {port} 2\n\
                     sentinel down-after-milliseconds {master} {}\n\
                     sentinel failover-timeout {master} 10000\n\
                     sentinel parallel-syncs {master} 1\n",
                    down_after.as_millis()
                ),
            )
            .with_context(|| format!("writing {}", file.display()))?;
            let path = file.to_string_lossy().into_owned();
            sentinels.push(PrivateRedis::start_sentinel(&path)?);
        }
        let group = Self {
            primary,
            replica,
            sentinels,
            master: master.to_owned(),
            _dir: dir,
        };
        group.wait_until_formed(Duration::from_secs(30)).await?;
        Ok(group)
    }

    /// `redis+sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/<master>`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), self.master)
    }

    /// The port of the primary as the first Sentinel that answers tells it.
    pub async fn primary_port(&self) -> anyhow::Result<u16> {
        let mut last = anyhow::anyhow!("no Sentinel");
        for sentinel in &self.sentinels {
            match ask(
                sentinel.port(),
                &["SENTINEL", "get-master-addr-by-name", &self.master],
            )
            .await
            .and_then(|v| {
                let addr: Vec<String> = v.convert()?;
                let port = addr.get(1).context("no port in the answer")?;
                Ok(port.parse::<u16>()?)
            }) {
                Ok(port) => return Ok(port),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn wait_until_formed(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut formed = replica_in_sync(self.replica.port()).await.unwrap_or(false);
            for sentinel in &self.sentinels {
                if !formed {
                    break;
                }
                let replicas = ask(sentinel.port(), &["SENTINEL", "replicas", &self.master])
                    .await
                    .map(|v| v.array_len().unwrap_or(0))
                    .unwrap_or(0);
                let others = ask(sentinel.port(), &["SENTINEL", "sentinels", &self.master])
                    .await
                    .map(|v| v.array_len().unwrap_or(0))
                    .unwrap_or(0);
                formed = replicas >= 1 && others >= 2;
            }
            if formed {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the Sentinel group did not form within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl PrivateRedis {
    /// `redis-server <file> --sentinel` on a free port.
    fn start_sentinel(config_file: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args([config_file, "--sentinel"])
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a private Sentinel (redis-server --sentinel)")?;
        Ok(Self { child, port })
    }
}

/// Whether the server on `port` is a replica whose link to its primary is up.
async fn replica_in_sync(port: u16) -> anyhow::Result<bool> {
    let info: String = ask(port, &["INFO", "replication"]).await?.convert()?;
    Ok(info.contains("role:slave") && info.contains("master_link_status:up"))
}

/// One command to the server on `port` over a connection of its own (Sentinels take no
/// pooled client: they answer a few commands only).
pub async fn ask(port: u16, command: &[&str]) -> anyhow::Result<fred::types::Value> {
    let config = fred::types::config::Config::from_url(&format!("redis://127.0.0.1:{port}"))?;
    let client = fred::clients::Client::new(config, None, None, None);
    client
        .init()
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    let (name, args) = command.split_first().context("an empty command")?;
    let answer = client
        .custom::<fred::types::Value, _>(
            fred::types::CustomCommand::new(
                name.to_string(),
                fred::types::ClusterHash::FirstKey,
                false,
            ),
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        )
        .await;
    let _ = client.quit().await;
    Ok(answer?)
}
