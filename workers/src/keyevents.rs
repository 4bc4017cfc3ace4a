//! Redis keyspace notifications for expired keys, on every primary.
//!
//! Redis reports a key's expiry on the channel `__keyevent@<db>__:expired` of the node that
//! holds the key, once `notify-keyspace-events` contains `E` (key-event channel) and `x`
//! (expired events). On a Cluster each node reports only its own keys, so [`ExpiredKeys`]
//! subscribes to every primary the client knows at start, each on its own connection, and
//! merges the names into one channel. A connection that drops reconnects by itself and
//! subscribes again.
//!
//! Notifications are fire-and-forget: whatever expires while a subscriber is disconnected is
//! never reported. Callers need another source of truth (the expiry worker's sweeper); the
//! subscription says [`Expired::Missed`] when it knows it lost some (a reconnect, a reader that
//! fell behind), so the caller can look at once instead of at its next interval.

use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;
use fred::types::config::ReconnectPolicy;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use dropline_core::config::RedisConfig;
use dropline_core::config::RedisTarget;

/// What the subscription reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expired {
    /// This key expired.
    Key(String),
    /// Some events may have been lost (the reader fell behind, or a connection dropped and
    /// subscribed again): whoever relies on them should look for itself now.
    Missed,
}

/// The names of expired keys, as Redis reports them.
pub struct ExpiredKeys {
    keys: mpsc::Receiver<Expired>,
    clients: Vec<Client>,
    tasks: Vec<JoinHandle<()>>,
}

/// Whether the server was made to report expired keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notifications {
    /// `notify-keyspace-events` already had what is needed (`E` and `x`).
    AlreadyOn,
    /// It did not; it is now set to the value inside.
    TurnedOn(String),
    /// The server refused `CONFIG GET/SET` (managed Redis): the reason.
    Refused(String),
    /// Left alone (`expiry.keyspace_events = false`).
    Untouched,
}

/// The value of `notify-keyspace-events` that adds expired key events to `current`, keeping
/// every flag already set; `None` when `current` has them.
pub fn with_expired_events(current: &str) -> Option<String> {
    let keyevent = current.contains('E');
    // `A` is the alias of every key class, `x` included.
    let expired = current.contains('x') || current.contains('A');
    if keyevent && expired {
        return None;
    }
    let mut value = current.to_owned();
    if !keyevent {
        value.push('E');
    }
    if !expired {
        value.push('x');
    }
    Some(value)
}

impl ExpiredKeys {
    /// Connects one subscriber per primary (one in all on a standalone server), turns the
    /// notifications on when `turn_on` (each node has its own setting) and subscribes. Returns
    /// the subscription and what was found on each node.
    pub async fn subscribe(
        config: &RedisConfig,
        turn_on: bool,
    ) -> anyhow::Result<(Self, Vec<Notifications>)> {
        let target = RedisTarget::parse(&config.url).context("redis.url")?;
        let fred_config = target.fred_config(config.ca_file.as_deref())?;
        let db = fred_config.database.unwrap_or(0);
        let channel = format!("__keyevent@{db}__:expired");
        let seed = connect(fred_config.clone()).await?;
        let clients = if fred_config.server.is_clustered() {
            let nodes = seed
                .split_cluster()
                .context("listing the cluster's primaries")?;
            let _ = seed.quit().await;
            let mut clients = Vec::with_capacity(nodes.len());
            for node in nodes {
                node.init()
                    .await
                    .context("connecting to a cluster primary for keyspace events")?;
                clients.push(node);
            }
            clients
        } else {
            vec![seed]
        };
        let (tx, keys) = mpsc::channel(4096);
        let mut tasks = Vec::new();
        let mut found = Vec::new();
        for client in &clients {
            found.push(if turn_on {
                turn_notifications_on(client).await
            } else {
                Notifications::Untouched
            });
            tasks.push(forward(client.clone(), tx.clone(), db));
            tasks.push(resubscribe_on_reconnect(
                client.clone(),
                channel.clone(),
                tx.clone(),
                turn_on,
            ));
            client
                .subscribe(channel.as_str())
                .await
                .with_context(|| format!("subscribing to {channel}"))?;
            tracing::debug!(channel = %channel, server = ?client.active_connections(), "subscribed to expired keys");
        }
        Ok((
            Self {
                keys,
                clients,
                tasks,
            },
            found,
        ))
    }

    /// The next report; `None` once `shutdown` fires.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<Expired> {
        tokio::select! {
            _ = shutdown.cancelled() => None,
            key = self.keys.recv() => key,
        }
    }

    /// Unsubscribes and closes the connections.
    pub async fn close(self) {
        for task in &self.tasks {
            task.abort();
        }
        for client in &self.clients {
            let _ = client.quit().await;
        }
    }
}

async fn connect(config: fred::types::config::Config) -> anyhow::Result<Client> {
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(3);
            c.internal_command_timeout = Duration::from_secs(3);
        })
        .with_performance_config(|p| {
            // fred hands events out on a broadcast channel that drops the oldest when a reader
            // falls behind; a burst of expiries must fit.
            p.broadcast_channel_capacity = 16_384;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build()
        .context("building the keyspace event client")?;
    client
        .init()
        .await
        .context("connecting the keyspace event client")?;
    Ok(client)
}

async fn turn_notifications_on(client: &Client) -> Notifications {
    let current: Result<Vec<String>, _> = client.config_get("notify-keyspace-events").await;
    let current = match current {
        // CONFIG GET answers [name, value].
        Ok(pair) => pair.get(1).cloned().unwrap_or_default(),
        Err(e) => return Notifications::Refused(e.to_string()),
    };
    match with_expired_events(&current) {
        None => Notifications::AlreadyOn,
        Some(value) => match client
            .config_set("notify-keyspace-events", value.as_str())
            .await
        {
            Ok(()) => Notifications::TurnedOn(value),
            Err(e) => Notifications::Refused(e.to_string()),
        },
    }
}

/// fred parses keyspace notifications itself and hands them out on its keyspace channel
/// (not the pub/sub one).
fn forward(client: Client, tx: mpsc::Sender<Expired>, db: u8) -> JoinHandle<()> {
    let mut events = client.keyspace_event_rx();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if event.operation != "expired" || event.db != db {
                        continue;
                    }
                    let Some(key) = event.key.as_str() else {
                        continue; // Not UTF-8: not one of ours.
                    };
                    tracing::trace!(key = %key, "expired key reported");
                    if tx.send(Expired::Key(key.to_owned())).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "keyspace events dropped: the reader fell behind");
                    if tx.send(Expired::Missed).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

fn resubscribe_on_reconnect(
    client: Client,
    channel: String,
    tx: mpsc::Sender<Expired>,
    turn_on: bool,
) -> JoinHandle<()> {
    let mut reconnects = client.reconnect_rx();
    tokio::spawn(async move {
        while reconnects.recv().await.is_ok() {
            // Whatever expired while the connection was down was never reported.
            if tx.send(Expired::Missed).await.is_err() {
                return;
            }
            // The server may be another one now (a Sentinel failover promotes a replica, whose
            // setting is its own): turn the notifications on there too.
            if turn_on {
                match turn_notifications_on(&client).await {
                    Notifications::TurnedOn(value) => {
                        tracing::info!(value = %value, "keyspace notifications turned on after a reconnect")
                    }
                    Notifications::Refused(e) => {
                        tracing::warn!(error = %e, "could not turn keyspace notifications on after a reconnect; the sweeper covers expiries")
                    }
                    Notifications::AlreadyOn | Notifications::Untouched => {}
                }
            }
            match client.subscribe(channel.as_str()).await {
                Ok(()) => tracing::info!(channel = %channel, "subscribed again after a reconnect"),
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "could not subscribe again after a reconnect; the sweeper covers the gap")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_events_are_added_to_what_is_set() {
        assert_eq!(with_expired_events(""), Some("Ex".into()));
        assert_eq!(with_expired_events("xE"), None);
        assert_eq!(with_expired_events("AKE"), None);
        assert_eq!(with_expired_events("Kg"), Some("KgEx".into()));
        assert_eq!(with_expired_events("Ex$"), None);
        assert_eq!(with_expired_events("Kx"), Some("KxE".into()));
    }
}
