//! RabbitMQ: a self-healing connection, publishing with publisher confirms, and the topology.
//!
//! [`Broker`] keeps one connection and one confirm-mode publishing channel. A supervisor task
//! watches them and reconnects with backoff when either breaks, declaring the topology again
//! (declarations are idempotent). Publishing while disconnected fails at once with an error
//! the caller can turn into 503, instead of hanging.
//!
//! Topology (DESIGN §7), with `P` = `amqp.prefix`:
//! - `P` (topic): every event, by routing key.
//! - work queues, quorum, bound to `P`: `P.payments` (`payment.requested`),
//!   `P.confirmations` (`payment.completed`), `P.mail` (`mail.send`, `order.confirmed`).
//!   Each sets `x-dead-letter-exchange = P.retry`, `x-dead-letter-routing-key = <queue>`,
//!   `x-delivery-limit`, and at-least-once dead-lettering (`x-overflow = reject-publish`).
//! - `P.retry` (direct) → `<queue>.retry`: holds a rejected message for `retry_delay_ms`, then
//!   dead-letters it through the default exchange back to `<queue>`.
//! - `P.parked` (direct) → `<queue>.parked`: messages that failed `max_attempts` times, kept for
//!   an operator.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use crate::clients::retry::Backoff;
use crate::clients::tls;
use crate::config::{AmqpConfig, redact_url};

/// One work queue of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    /// Name after the prefix: `payments` → `dropline.payments`.
    pub suffix: &'static str,
    /// Routing keys bound on the main exchange.
    pub routing_keys: &'static [&'static str],
}

pub const PAYMENTS: QueueSpec = QueueSpec {
    suffix: "payments",
    routing_keys: &["payment.requested", "payment.event"],
};
pub const CONFIRMATIONS: QueueSpec = QueueSpec {
    suffix: "confirmations",
    routing_keys: &["payment.completed"],
};
pub const MAIL: QueueSpec = QueueSpec {
    suffix: "mail",
    routing_keys: &["mail.send", "order.confirmed", "order.refunded"],
};

/// Every work queue.
pub const QUEUES: [QueueSpec; 3] = [PAYMENTS, CONFIRMATIONS, MAIL];

/// Names of the exchanges and queues under one prefix.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }
    pub fn exchange(&self) -> String {
        self.prefix.clone()
    }
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }
    pub fn parked_exchange(&self) -> String {
        format!("{}.parked", self.prefix)
    }
    pub fn queue(&self, spec: QueueSpec) -> String {
        format!("{}.{}", self.prefix, spec.suffix)
    }
    pub fn retry_queue(&self, spec: QueueSpec) -> String {
        format!("{}.{}.retry", self.prefix, spec.suffix)
    }
    pub fn parked_queue(&self, spec: QueueSpec) -> String {
        format!("{}.{}.parked", self.prefix, spec.suffix)
    }
    /// Every queue name, work, retry and parked.
    pub fn all_queues(&self) -> Vec<String> {
        QUEUES
            .iter()
            .flat_map(|q| [self.queue(*q), self.retry_queue(*q), self.parked_queue(*q)])
            .collect()
    }
    /// Every exchange name.
    pub fn all_exchanges(&self) -> [String; 3] {
        [
            self.exchange(),
            self.retry_exchange(),
            self.parked_exchange(),
        ]
    }
}

struct Live {
    connection: Connection,
    publisher: Channel,
}

struct Inner {
    config: AmqpConfig,
    names: Names,
    live: RwLock<Option<Live>>,
    stop: CancellationToken,
}

/// A cheap-to-clone RabbitMQ handle that reconnects by itself.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("prefix", &self.inner.config.prefix)
            .finish()
    }
}

/// How long a publish may wait for the broker's confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

impl Broker {
    /// Connects and declares the topology, waiting at most `connect_timeout_seconds` for the
    /// broker; then keeps the connection alive in the background until [`Broker::close`].
    pub async fn connect(config: &AmqpConfig) -> anyhow::Result<Self> {
        let limit = Duration::from_secs(config.connect_timeout_seconds);
        let started = tokio::time::Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let names = Names::new(&config.prefix);
        let live = loop {
            match open(config, &names).await {
                Ok(live) => break live,
                Err(error) => {
                    // A refused certificate stays refused: say so now instead of retrying.
                    if config.url.starts_with("amqps://")
                        && tls::is_certificate_error(&format!("{error:#}"))
                    {
                        return Err(error.context("could not connect to RabbitMQ (amqp.url)"));
                    }
                    if started.elapsed() + backoff.peek() >= limit {
                        return Err(error.context(format!(
                            "could not reach RabbitMQ at {} within {}s (amqp.url)",
                            redact_url(&config.url),
                            limit.as_secs()
                        )));
                    }
                    tracing::warn!(error = format!("{error:#}"), url = %redact_url(&config.url), "RabbitMQ not reachable yet, retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        };
        let inner = Arc::new(Inner {
            config: config.clone(),
            names,
            live: RwLock::new(Some(live)),
            stop: CancellationToken::new(),
        });
        tokio::spawn(supervise(Arc::clone(&inner)));
        Ok(Self { inner })
    }

    pub fn names(&self) -> &Names {
        &self.inner.names
    }

    pub fn config(&self) -> &AmqpConfig {
        &self.inner.config
    }

    /// Publishes `payload` (JSON) on the main exchange and waits for the broker's confirm.
    /// `mandatory` is set, so a message no queue takes is an error, not a silent drop.
    pub async fn publish(
        &self,
        routing_key: &str,
        message_id: &str,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let exchange = self.inner.names.exchange();
        self.publish_to(&exchange, routing_key, message_id, payload, None)
            .await
    }

    /// Publishes to any exchange of the topology, with optional AMQP headers.
    pub async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: &str,
        payload: &[u8],
        headers: Option<FieldTable>,
    ) -> anyhow::Result<()> {
        let channel = self.publisher().await?;
        let mut properties = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2) // persistent
            .with_message_id(ShortString::from(message_id));
        if let Some(headers) = headers {
            properties = properties.with_headers(headers);
        }
        let confirm = async {
            channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    payload,
                    properties,
                )
                .await?
                .await
        };
        let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .with_context(|| {
                format!("no publisher confirm for {routing_key} within {CONFIRM_TIMEOUT:?}")
            })?
            .with_context(|| format!("publishing {routing_key}"))?;
        match outcome {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => anyhow::bail!(
                "message {routing_key} was returned unroutable: {}",
                returned.reply_text
            ),
            Confirmation::Nack(_) => anyhow::bail!("broker refused message {routing_key} (nack)"),
            Confirmation::NotRequested => anyhow::bail!("publisher confirms are not enabled"),
        }
    }

    /// A new channel for a consumer, or an error when disconnected.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let guard = self.inner.live.read().await;
        let live = guard.as_ref().context("RabbitMQ is not connected")?;
        live.connection
            .create_channel()
            .await
            .context("opening a RabbitMQ channel")
    }

    /// Messages ready in `queue` (a passive declare: fails if the queue does not exist). For
    /// tests and operators' gauges; it does not count unacknowledged deliveries.
    pub async fn queue_len(&self, queue: &str) -> anyhow::Result<u32> {
        let channel = self.channel().await?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("inspecting queue {queue}"));
        let _ = channel.close(200, "done".into()).await;
        Ok(declared?.message_count())
    }

    /// Readiness probe: connected, with a working publishing channel.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let guard = self.inner.live.read().await;
        let live = guard.as_ref().context("not connected")?;
        anyhow::ensure!(live.connection.status().connected(), "connection lost");
        anyhow::ensure!(live.publisher.status().connected(), "channel closed");
        Ok(())
    }

    /// Stops reconnecting and closes the connection.
    pub async fn close(&self) {
        self.inner.stop.cancel();
        if let Some(live) = self.inner.live.write().await.take() {
            let _ = live.connection.close(200, "shutdown".into()).await;
        }
    }

    async fn publisher(&self) -> anyhow::Result<Channel> {
        let guard = self.inner.live.read().await;
        let live = guard.as_ref().context("RabbitMQ is not connected")?;
        anyhow::ensure!(
            live.publisher.status().connected(),
            "RabbitMQ publishing channel is not open"
        );
        Ok(live.publisher.clone())
    }
}

/// Opens one AMQP connection to `amqp.url`: every connection of Dropline (and of its tests)
/// goes through here. `amqps://` is TLS with rustls, trusting the platform's roots and
/// `amqp.ca_file`; the broker's certificate must name the URL's host. Waits at most 5 s; a
/// refused certificate is an error that says so, naming the URL (without its password).
pub async fn connect(config: &AmqpConfig, name: &str) -> anyhow::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: match &config.ca_file {
            Some(path) if config.url.starts_with("amqps://") => {
                Some(tls::read_ca_pem("amqp.ca_file", path)?)
            }
            _ => None,
        },
    };
    let runtime = lapin::runtime::default_runtime().context("the AMQP client's runtime")?;
    let url = redact_url(&config.url);
    tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect_with_config(&config.url, properties, tls, runtime),
    )
    .await
    .with_context(|| format!("connecting to RabbitMQ at {url} timed out"))?
    .map_err(|e| {
        let reason = tls::explain(&format!("{e:#}"), &url, "amqp.ca_file");
        anyhow::anyhow!("connecting to RabbitMQ at {url}: {reason}")
    })
}

async fn open(config: &AmqpConfig, names: &Names) -> anyhow::Result<Live> {
    let connection = connect(config, &format!("dropline-{}", std::process::id())).await?;
    declare_topology(&connection, config, names).await?;
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("enabling publisher confirms")?;
    Ok(Live {
        connection,
        publisher,
    })
}

/// Watches the connection; reopens it (and the topology) with backoff when it breaks.
async fn supervise(inner: Arc<Inner>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::select! {
            () = inner.stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let healthy = {
            let guard = inner.live.read().await;
            guard.as_ref().is_some_and(|l| {
                l.connection.status().connected() && l.publisher.status().connected()
            })
        };
        if healthy {
            backoff.reset();
            continue;
        }
        // The publishing channel alone may be closed (a channel-level error): replace just it.
        {
            let mut guard = inner.live.write().await;
            if let Some(live) = guard.as_mut()
                && live.connection.status().connected()
            {
                match reopen_publisher(&live.connection).await {
                    Ok(channel) => {
                        live.publisher = channel;
                        continue;
                    }
                    Err(error) => tracing::warn!(
                        error = format!("{error:#}"),
                        "reopening the publishing channel failed"
                    ),
                }
            }
            if let Some(old) = guard.take() {
                let _ = old.connection.close(200, "reconnecting".into()).await;
            }
        }
        metrics::counter!("dropline_amqp_reconnects_total").increment(1);
        match open(&inner.config, &inner.names).await {
            Ok(live) => {
                tracing::info!("RabbitMQ connection restored");
                *inner.live.write().await = Some(live);
                backoff.reset();
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    error = format!("{error:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "RabbitMQ reconnect failed"
                );
                tokio::select! {
                    () = inner.stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn reopen_publisher(connection: &Connection) -> anyhow::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

/// Declares exchanges, queues and bindings. Safe to repeat: same names, same arguments.
/// A queue that exists with other arguments makes the broker refuse (PRECONDITION_FAILED);
/// the error names the queue so an operator can remove or migrate it.
pub async fn declare_topology(
    connection: &Connection,
    config: &AmqpConfig,
    names: &Names,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            names.exchange().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring exchange {}", names.exchange()))?;
    for exchange in [names.retry_exchange(), names.parked_exchange()] {
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring exchange {exchange}"))?;
    }
    let queue_options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for spec in QUEUES {
        let work = names.queue(spec);
        let retry = names.retry_queue(spec);
        let parked = names.parked_queue(spec);

        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string("quorum"));
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(&names.retry_exchange()),
        );
        args.insert("x-dead-letter-routing-key".into(), long_string(&work));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(config.delivery_limit)),
        );
        // At-least-once dead-lettering: a message is not dropped between queue and retry queue.
        args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        args.insert("x-overflow".into(), long_string("reject-publish"));
        channel
            .queue_declare(work.as_str().into(), queue_options, args)
            .await
            .with_context(|| format!("declaring queue {work} (if it exists with other arguments, delete it or keep the old settings)"))?;
        for key in spec.routing_keys {
            channel
                .queue_bind(
                    work.as_str().into(),
                    names.exchange().into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("binding {work} to {key}"))?;
        }

        let mut retry_args = FieldTable::default();
        retry_args.insert("x-queue-type".into(), long_string("quorum"));
        retry_args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(config.retry_delay_ms).unwrap_or(i64::MAX)),
        );
        // "" is the default exchange: it routes by queue name, straight back to the work queue.
        retry_args.insert("x-dead-letter-exchange".into(), long_string(""));
        retry_args.insert("x-dead-letter-routing-key".into(), long_string(&work));
        retry_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(config.delivery_limit)),
        );
        retry_args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        retry_args.insert("x-overflow".into(), long_string("reject-publish"));
        channel
            .queue_declare(retry.as_str().into(), queue_options, retry_args)
            .await
            .with_context(|| format!("declaring queue {retry}"))?;
        channel
            .queue_bind(
                retry.as_str().into(),
                names.retry_exchange().into(),
                work.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding {retry}"))?;

        // Nobody consumes the parking queue but an operator; a message rejected there goes back
        // to it, never away.
        let mut parked_args = FieldTable::default();
        parked_args.insert("x-queue-type".into(), long_string("quorum"));
        parked_args.insert(
            "x-dead-letter-exchange".into(),
            long_string(&names.parked_exchange()),
        );
        parked_args.insert("x-dead-letter-routing-key".into(), long_string(&work));
        parked_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(config.delivery_limit)),
        );
        channel
            .queue_declare(parked.as_str().into(), queue_options, parked_args)
            .await
            .with_context(|| format!("declaring queue {parked}"))?;
        channel
            .queue_bind(
                parked.as_str().into(),
                names.parked_exchange().into(),
                work.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding {parked}"))?;
    }
    let _ = channel.close(200, "topology declared".into()).await;
    Ok(())
}
