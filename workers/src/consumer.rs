//! The RabbitMQ consumer loop every worker runs.
//!
//! Discipline (DESIGN §7): manual acks, sent only after the handler's work is committed;
//! bounded prefetch (`amqp.prefetch`), which is also how many deliveries are handled at once;
//! a failed message goes through the delayed retry queue and, after `amqp.max_attempts`, to the
//! parking queue. On shutdown the consumer is cancelled first (no new deliveries) and the
//! deliveries in hand are finished and acked before [`consume`] returns. When the connection
//! drops, deliveries in hand cannot be acked any more; the broker redelivers them, which is
//! safe because every handler is idempotent.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use dropline_core::clients::amqp::{Broker, QueueSpec};
use dropline_core::clients::retry::Backoff;

/// One delivery, as a handler sees it.
#[derive(Debug, Clone)]
pub struct Message {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub data: Vec<u8>,
    /// 1 on the first delivery, +1 after each retry.
    pub attempt: u32,
    /// The broker delivered this before (a consumer died holding it).
    pub redelivered: bool,
}

/// What a handler decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or already done before: duplicates are acked).
    Ack,
    /// Failed for a reason that may pass (dependency down): try again after the retry delay,
    /// and park after `max_attempts`.
    Retry(String),
    /// Can never succeed (malformed, refers to nothing): park at once for an operator.
    Park(String),
}

impl Outcome {
    /// Whether this outcome of delivery number `attempt` sends the message to the parking
    /// queue (a [`Outcome::Park`], or a [`Outcome::Retry`] on the last attempt).
    pub fn parks(&self, attempt: u32, max_attempts: u32) -> bool {
        match self {
            Self::Ack => false,
            Self::Retry(_) => attempt >= max_attempts,
            Self::Park(_) => true,
        }
    }
}

/// Consumes `spec`'s queue with `handler` until `shutdown` fires, reconnecting as needed.
/// The prefetch is `amqp.prefetch`.
pub async fn consume<H, Fut>(
    broker: Broker,
    spec: QueueSpec,
    handler: H,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    H: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let prefetch = broker.config().prefetch;
    consume_with_prefetch(broker, spec, prefetch, handler, shutdown).await
}

/// [`consume`] with its own prefetch (at least 1), for a handler that wants more deliveries
/// in hand than `amqp.prefetch` (the confirm worker batches them).
pub async fn consume_with_prefetch<H, Fut>(
    broker: Broker,
    spec: QueueSpec,
    prefetch: u16,
    handler: H,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    H: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let prefetch = prefetch.max(1);
    let handler = Arc::new(handler);
    let queue = broker.names().queue(spec);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !shutdown.is_cancelled() {
        match consume_once(
            &broker,
            spec,
            &queue,
            prefetch,
            Arc::clone(&handler),
            &shutdown,
        )
        .await
        {
            Ok(()) => backoff.reset(),
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(queue = %queue, error = format!("{error:#}"), retry_in_ms = delay.as_millis() as u64, "consumer interrupted");
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    tracing::info!(queue = %queue, "consumer stopped");
    Ok(())
}

/// One channel's life: returns Ok on shutdown (after draining), Err when the channel broke.
async fn consume_once<H, Fut>(
    broker: &Broker,
    spec: QueueSpec,
    queue: &str,
    prefetch: u16,
    handler: Arc<H>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()>
where
    H: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let channel = broker.channel().await?;
    // Prefetch bounds both memory and concurrency: the broker sends at most this many
    // unacked deliveries, and each is handled in its own task.
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let tag = format!("{}-{}", queue, uuid::Uuid::new_v4().simple());
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue, "consuming");
    let mut in_hand: JoinSet<()> = JoinSet::new();
    let result = loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                // Stop new deliveries; the ones in hand finish below.
                let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                break Ok(());
            }
            Some(_) = in_hand.join_next(), if !in_hand.is_empty() => {}
            next = deliveries.next() => match next {
                Some(Ok(delivery)) => {
                    let handler = Arc::clone(&handler);
                    let broker = broker.clone();
                    let queue = queue.to_owned();
                    in_hand.spawn(async move {
                        handle(&broker, spec, &queue, delivery, handler.as_ref()).await;
                    });
                }
                Some(Err(error)) => break Err(anyhow::Error::new(error).context("delivery stream")),
                None => break Err(anyhow::anyhow!("consumer cancelled by the broker")),
            },
        }
    };
    while in_hand.join_next().await.is_some() {}
    let _ = channel.close(200, "consumer done".into()).await;
    result
}

async fn handle<H, Fut>(
    broker: &Broker,
    spec: QueueSpec,
    queue: &str,
    delivery: Delivery,
    handler: &H,
) where
    H: Fn(Message) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let attempt = attempts_before(&delivery, queue) + 1;
    let message = Message {
        routing_key: original_routing_key(&delivery, queue),
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string()),
        data: delivery.data.clone(),
        attempt,
        redelivered: delivery.redelivered,
    };
    let started = std::time::Instant::now();
    let outcome = handler(message).await;
    let max_attempts = broker.config().max_attempts;
    let label = if outcome.parks(attempt, max_attempts) {
        "parked"
    } else if outcome == Outcome::Ack {
        "ack"
    } else {
        "retry"
    };
    metrics::histogram!("dropline_amqp_handle_duration_seconds", "queue" => spec.suffix)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("dropline_amqp_messages_total", "queue" => spec.suffix, "outcome" => label)
        .increment(1);
    let settled = match outcome {
        Outcome::Ack => delivery.ack(BasicAckOptions::default()).await.map(|_| ()),
        Outcome::Retry(reason) if attempt < max_attempts => {
            tracing::warn!(queue, attempt, %reason, "message failed; will retry");
            // Dead-letters to <prefix>.retry, which returns it after the retry delay.
            delivery
                .nack(BasicNackOptions {
                    requeue: false,
                    ..Default::default()
                })
                .await
                .map(|_| ())
        }
        Outcome::Retry(reason) | Outcome::Park(reason) => {
            park(broker, spec, queue, &delivery, attempt, &reason).await;
            return;
        }
    };
    if let Err(error) = settled {
        // The channel is gone; the broker will redeliver (handlers are idempotent).
        tracing::warn!(queue, %error, "could not settle a delivery");
    }
}

/// Copies the message to the parking queue (with a confirm), then acks the original. If the
/// copy fails the original is left unacked, so it comes back rather than being lost.
async fn park(
    broker: &Broker,
    spec: QueueSpec,
    queue: &str,
    delivery: &Delivery,
    attempt: u32,
    reason: &str,
) {
    tracing::error!(queue, attempt, %reason, "message parked");
    let mut headers = FieldTable::default();
    headers.insert(
        "x-dropline-park-reason".into(),
        AMQPValue::LongString(reason.into()),
    );
    headers.insert(
        "x-dropline-attempts".into(),
        AMQPValue::LongLongInt(i64::from(attempt)),
    );
    headers.insert(
        "x-dropline-routing-key".into(),
        AMQPValue::LongString(original_routing_key(delivery, queue).as_str().into()),
    );
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let exchange = broker.names().parked_exchange();
    match broker
        .publish_to(&exchange, queue, &message_id, &delivery.data, Some(headers))
        .await
    {
        Ok(()) => {
            metrics::counter!("dropline_amqp_parked_total", "queue" => spec.suffix).increment(1);
            dropline_core::alerts::raise(
                dropline_core::alerts::AlertKind::Parked,
                queue,
                format!(
                    "a message was parked on {queue} after {attempt} attempt(s) (message id `{message_id}`); see the parking queue"
                ),
            );
            if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
                tracing::warn!(queue, %error, "parked, but the ack failed; a duplicate may be parked");
            }
        }
        Err(error) => {
            tracing::error!(
                queue,
                error = format!("{error:#}"),
                "parking failed; the message stays unacked"
            );
        }
    }
}

/// The routing key the message was first published with. A message back from the retry
/// queue arrives with the queue's name as its routing key (the default exchange routes by
/// name); the original key is kept in its `x-death` entry for `queue`.
fn original_routing_key(delivery: &Delivery, queue: &str) -> String {
    deaths_for(delivery, queue)
        .find_map(|t| match t.inner().get("routing-keys") {
            Some(AMQPValue::FieldArray(keys)) => keys.as_slice().iter().find_map(|k| match k {
                AMQPValue::LongString(s) => Some(s.to_string()),
                AMQPValue::ShortString(s) => Some(s.to_string()),
                _ => None,
            }),
            _ => None,
        })
        .unwrap_or_else(|| delivery.routing_key.to_string())
}

/// The `x-death` entries that record rejections from `queue`.
fn deaths_for<'a>(
    delivery: &'a Delivery,
    queue: &'a str,
) -> impl Iterator<Item = &'a FieldTable> + 'a {
    let deaths = match delivery
        .properties
        .headers()
        .as_ref()
        .map(|h| h.inner().get("x-death"))
    {
        Some(Some(AMQPValue::FieldArray(deaths))) => deaths.as_slice(),
        _ => &[],
    };
    deaths.iter().filter_map(move |death| match death {
        AMQPValue::FieldTable(t)
            if matches!(t.inner().get("queue"), Some(AMQPValue::LongString(q)) if q.to_string() == queue) =>
        {
            Some(t)
        }
        _ => None,
    })
}

/// How many times this message was rejected from `queue` before, from its `x-death` header.
fn attempts_before(delivery: &Delivery, queue: &str) -> u32 {
    deaths_for(delivery, queue)
        .filter_map(|t| match t.inner().get("count") {
            Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).ok(),
            Some(AMQPValue::LongInt(n)) => u32::try_from(*n).ok(),
            Some(AMQPValue::LongUInt(n)) => Some(*n),
            _ => None,
        })
        .sum()
}
