//! TLS to the stores (issue #21 §3): `rediss://` and `amqps://` against private servers of
//! this test's own (a `redis-server` with only a TLS port, a RabbitMQ node with a TLS
//! listener), with a CA and a server certificate for `localhost` and `127.0.0.1` made here, and
//! a second, unrelated CA that must be refused. The machine's shared servers are not touched.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use dropline_core::Config;
use dropline_core::clients::amqp;
use dropline_core::clients::redis::Redis;
use dropline_core::lua::Script;
use dropline_testkit::rabbit_server::{PrivateRabbit, RabbitOptions, RabbitTls};
use dropline_testkit::redis_server::{PrivateRedis, free_port};
use fred::prelude::*;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The PEM files of one test: the right CA, the server's certificate and key (signed by it, for
/// `localhost` and `127.0.0.1`), and a wrong CA that signed nothing the servers show.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    fn wrong_ca(&self) -> PathBuf {
        self.dir.path().join("wrong-ca.pem")
    }
    fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
    /// Signed by the right CA, for `elsewhere.example` only.
    fn elsewhere_cert(&self) -> PathBuf {
        self.dir.path().join("elsewhere.pem")
    }
    fn elsewhere_key(&self) -> PathBuf {
        self.dir.path().join("elsewhere.key")
    }
}

fn ca(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn pki() -> anyhow::Result<Pki> {
    let dir = tempfile::Builder::new().prefix("dl-tls-").tempdir()?;
    let right = ca("Dropline test CA")?;
    let wrong = ca("Dropline unrelated CA")?;
    let pki = Pki { dir };
    std::fs::write(pki.ca(), right.pem())?;
    std::fs::write(pki.wrong_ca(), wrong.pem())?;
    let (cert, key) = server_cert(&["localhost", "127.0.0.1"], &right)?;
    std::fs::write(pki.cert(), cert)?;
    std::fs::write(pki.key(), key)?;
    let (cert, key) = server_cert(&["elsewhere.example"], &right)?;
    std::fs::write(pki.elsewhere_cert(), cert)?;
    std::fs::write(pki.elsewhere_key(), key)?;
    Ok(pki)
}

/// A server certificate for `names` signed by `ca`, and its key: PEM both.
fn server_cert(
    names: &[&str],
    ca: &CertifiedIssuer<'static, KeyPair>,
) -> anyhow::Result<(String, String)> {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn load(overrides: &[(&str, String)]) -> anyhow::Result<Config> {
    Ok(Config::load(&dropline_core::config::Sources {
        file: None,
        env: false,
        overrides: overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    })?)
}

fn redis_config(port: u16, ca: &Path) -> anyhow::Result<Config> {
    load(&[
        ("REDIS__URL", format!("rediss://127.0.0.1:{port}")),
        ("REDIS__CA_FILE", ca.display().to_string()),
        ("REDIS__KEY_PREFIX", "dltest-tls".to_owned()),
        ("REDIS__CONNECT_TIMEOUT_SECONDS", "20".to_owned()),
    ])
}

#[tokio::test]
async fn rediss_with_the_right_ca_runs_commands_and_scripts() -> anyhow::Result<()> {
    let pki = pki()?;
    let server = PrivateRedis::start_tls(&pki.cert(), &pki.key(), &pki.ca()).await?;
    let config = redis_config(server.port(), &pki.ca())?;
    let redis = Redis::connect(&config.redis).await?;
    redis.ping().await?;
    let key = redis.key("probe");
    let pool = redis.pool();
    let _: () = pool.set(&key, "over tls", None, None, false).await?;
    let value: String = pool.get(&key).await?;
    assert_eq!(value, "over tls");

    // A script as the services run them: EVALSHA (NOSCRIPT the first time, then EVAL).
    static PROBE: Script = Script::new("tls_probe", "return redis.call('GET', KEYS[1])");
    for _ in 0..2 {
        let read: String = PROBE
            .run(&redis, vec![key.clone()], Vec::<String>::new())
            .await?;
        assert_eq!(read, "over tls");
    }
    let cached: String = pool
        .evalsha(PROBE.sha(), vec![key.clone()], Vec::<String>::new())
        .await?;
    assert_eq!(cached, "over tls");
    redis.quit().await;

    // By name too: the certificate names `localhost` as well.
    let by_name = load(&[
        (
            "REDIS__URL",
            format!("rediss://localhost:{}/0", server.port()),
        ),
        ("REDIS__CA_FILE", pki.ca().display().to_string()),
    ])?;
    let redis = Redis::connect(&by_name.redis).await?;
    redis.ping().await?;
    redis.quit().await;
    Ok(())
}

#[tokio::test]
async fn rediss_with_a_wrong_ca_is_refused_at_once_naming_the_certificate() -> anyhow::Result<()> {
    let pki = pki()?;
    let server = PrivateRedis::start_tls(&pki.cert(), &pki.key(), &pki.ca()).await?;
    let config = redis_config(server.port(), &pki.wrong_ca())?;
    let started = Instant::now();
    let error = match Redis::connect(&config.redis).await {
        Ok(_) => anyhow::bail!("a server signed by another CA was accepted"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        error.contains("TLS certificate verification failed for rediss://127.0.0.1:"),
        "{error}"
    );
    assert!(error.contains("redis.ca_file"), "{error}");

    // A certificate of the right CA for another name is refused too: the name is checked.
    let elsewhere =
        PrivateRedis::start_tls(&pki.elsewhere_cert(), &pki.elsewhere_key(), &pki.ca()).await?;
    let config = redis_config(elsewhere.port(), &pki.ca())?;
    let error = match Redis::connect(&config.redis).await {
        Ok(_) => anyhow::bail!("a certificate for another host was accepted"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("TLS certificate verification failed"),
        "{error}"
    );
    assert!(error.contains("NotValidForName"), "{error}");
    Ok(())
}

async fn rabbit(pki: &Pki) -> anyhow::Result<PrivateRabbit> {
    let mut options = RabbitOptions::on_free_ports("dl-tls")?;
    options.tls = Some(RabbitTls {
        port: free_port()?,
        ca_file: pki.ca(),
        cert_file: pki.cert(),
        key_file: pki.key(),
    });
    PrivateRabbit::start(options, Duration::from_secs(90)).await
}

fn amqp_config(url: String, ca: &Path) -> anyhow::Result<Config> {
    load(&[
        ("AMQP__URL", url),
        ("AMQP__CA_FILE", ca.display().to_string()),
        ("AMQP__PREFIX", "dltest-tls".to_owned()),
        ("AMQP__CONNECT_TIMEOUT_SECONDS", "20".to_owned()),
    ])
}

/// One RabbitMQ node serves both cases (it takes seconds to start).
#[tokio::test]
async fn amqps_with_the_right_ca_carries_messages_and_a_wrong_ca_is_refused() -> anyhow::Result<()>
{
    let pki = pki()?;
    let node = rabbit(&pki).await?;
    let url = node.amqps_url("localhost").context("a TLS listener")?;

    // The right CA: a private queue, one message there and back.
    let config = amqp_config(url.clone(), &pki.ca())?;
    let connection = amqp::connect(&config.amqp, "dropline-tls-test").await?;
    let channel = connection.create_channel().await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .basic_publish(
            "".into(),
            queue.name().clone(),
            BasicPublishOptions::default(),
            b"over tls",
            lapin::BasicProperties::default(),
        )
        .await?
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "tls-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .context("no delivery within 10 s")?
        .context("the consumer ended")??;
    assert_eq!(delivery.data, b"over tls");
    delivery.ack(BasicAckOptions::default()).await?;
    let _ = connection.close(200, "done".into()).await;

    // The Broker the services use, with its topology, over the same listener at 127.0.0.1.
    let by_ip = amqp_config(
        node.amqps_url("127.0.0.1").context("a TLS listener")?,
        &pki.ca(),
    )?;
    let broker = amqp::Broker::connect(&by_ip.amqp).await?;
    broker.publish("mail.send", "tls-1", b"{}").await?;
    assert_eq!(broker.queue_len("dltest-tls.mail").await?, 1);
    broker.close().await;

    // The wrong CA: refused at once, saying it is the certificate.
    let wrong = amqp_config(url, &pki.wrong_ca())?;
    let started = Instant::now();
    let error = match amqp::Broker::connect(&wrong.amqp).await {
        Ok(_) => anyhow::bail!("a broker signed by another CA was accepted"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        error.contains("TLS certificate verification failed for amqps://guest:***@localhost:"),
        "{error}"
    );
    assert!(error.contains("amqp.ca_file"), "{error}");
    assert!(!error.contains("guest:guest"), "{error}");
    Ok(())
}
