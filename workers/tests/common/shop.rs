//! A sale with paying orders and the workers around it, on the real services: the harness of
//! the expiry worker's re-report tests (`workers/tests/sweeper.rs`) and of the parked
//! completion's end-to-end test (`tests/parked_completion.rs`, which includes this file).

#![allow(dead_code)] // each including test uses a part

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use dropline_core::Config;
use dropline_core::clients::amqp::CONFIRMATIONS;
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::ids::{OrderId, ProductId, SaleId, UserId};
use dropline_core::messages::{Envelope, PaymentRequested, kinds};
use dropline_core::orders::{Order, Orders, ReserveOutcome, ReserveRequest};
use dropline_core::sale::{self, SaleConfig};
use dropline_testkit::TestEnv;
use dropline_workers::Kind;
use fred::interfaces::ClientLike;
use fred::types::Value;
use lapin::options::BasicGetOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One test's sale, its connections and its isolated servers' names.
pub struct Shop {
    pub env: TestEnv,
    /// The test's own connections (never a worker's).
    pub deps: Deps,
    pub sale: SaleId,
    pub orders: Orders,
}

/// A worker running in this process with connections of its own.
pub struct Running {
    deps: Deps,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops it as SIGTERM does (it must finish its deliveries within 10 s).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .map_err(|_| anyhow::anyhow!("a worker did not stop within 10 s"))???;
        self.deps.close().await;
        Ok(())
    }
}

impl Shop {
    /// A product and an open sale of `stock` (one unit per buyer) in MySQL, armed in Redis,
    /// with `overrides` on the test configuration (env form).
    pub async fn open(stock: i64, overrides: &[(&str, &str)]) -> anyhow::Result<Self> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut all = vec![
            ("AMQP__RETRY_DELAY_MS", "200"),
            ("PAYMENT__SIM_LATENCY_MS", "5"),
            ("MYSQL__MAX_CONNECTIONS", "8"),
            ("REDIS__POOL_SIZE", "4"),
        ];
        all.extend_from_slice(overrides);
        let env = TestEnv::with_overrides(&all)?;
        let deps = Deps::connect(&env.config, Needs::ALL).await?;
        let sale = SaleId::new_v7();
        let shop = Self {
            orders: Orders::new(deps.redis()?, sale),
            env,
            deps,
            sale,
        };
        shop.make_sale(stock).await?;
        Ok(shop)
    }

    pub fn config(&self) -> &Config {
        &self.env.config
    }

    async fn make_sale(&self, stock: i64) -> anyhow::Result<()> {
        let pool = self.deps.mysql()?;
        let product = ProductId::new_v7();
        sqlx::query(
            "INSERT INTO products (id, name, description, price, currency, created_at) \
             VALUES (?, 'Chair', NULL, 12500, 'KRW', UTC_TIMESTAMP(3))",
        )
        .bind(product)
        .execute(pool)
        .await
        .context("inserting the product")?;
        sqlx::query(
            "INSERT INTO sales (id, product_id, stock_total, sold, opens_at, per_user_limit, \
                                hold_seconds, admit_per_second, created_at, updated_at) \
             VALUES (?, ?, ?, 0, UTC_TIMESTAMP(3) - INTERVAL 1 MINUTE, 1, 600, 100, \
                     UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
        )
        .bind(self.sale)
        .bind(product)
        .bind(stock)
        .execute(pool)
        .await
        .context("inserting the sale")?;
        let config = SaleConfig::load(pool, self.sale)
            .await?
            .context("the sale just inserted")?;
        anyhow::ensure!(
            sale::arm(self.deps.redis()?, self.sale, &config).await?,
            "sale armed twice"
        );
        Ok(())
    }

    /// `n` orders of one unit, each by a buyer of its own (admitted for ten minutes), each
    /// PAYING with its payment deadline `timeout` away, as the api leaves them.
    pub async fn paying_orders(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<Order>> {
        let users: Vec<UserId> = (0..n).map(|_| UserId::new_v7()).collect();
        let deadline = chrono::Utc::now().timestamp_millis() + 600_000;
        let mut args = vec![Value::from(self.orders.keys().adm.as_str())];
        for user in &users {
            args.push(Value::from(deadline));
            args.push(Value::from(&user.as_bytes()[..]));
        }
        let _: i64 = self
            .deps
            .redis()?
            .pool()
            .custom(fred::cmd!("ZADD"), args)
            .await?;
        let mut orders = Vec::with_capacity(n);
        for user in users {
            let request = ReserveRequest {
                order: OrderId::new_v7(),
                user,
                quantity: 1,
                idempotency_key: format!("k-{}", Uuid::new_v4().simple()),
            };
            let order = match self.orders.reserve(&request).await? {
                ReserveOutcome::Created(order) => order,
                other => anyhow::bail!("reserve: {other:?}"),
            };
            let started = self.orders.begin_payment(order.id, timeout).await?;
            anyhow::ensure!(started.applied(), "begin_payment: {started:?}");
            orders.push(
                self.orders
                    .get(order.id)
                    .await?
                    .context("the order just paid for")?,
            );
        }
        Ok(orders)
    }

    /// Publishes `payment.requested` for `order` as the api does.
    pub async fn request_payment(&self, order: &Order) -> anyhow::Result<()> {
        let envelope = Envelope::new(
            kinds::PAYMENT_REQUESTED,
            PaymentRequested {
                order: order.reference(),
                card_token: "tok_visa".into(),
            },
        );
        self.deps
            .broker()?
            .publish(
                &envelope.kind,
                &envelope.id.to_string(),
                &envelope.to_json()?,
            )
            .await
    }

    /// Runs a worker of `kind` on `config` (the test's, or a variant of it) with its own
    /// connections.
    pub async fn spawn_with(&self, kind: Kind, config: &Config) -> anyhow::Result<Running> {
        let deps = Deps::connect(config, Needs::ALL).await?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (config, deps, shutdown) = (config.clone(), deps.clone(), shutdown.clone());
            async move { dropline_workers::run(kind, &config, &deps, shutdown).await }
        });
        Ok(Running {
            deps,
            shutdown,
            task,
        })
    }

    /// [`Shop::spawn_with`] the test's configuration.
    pub async fn spawn(&self, kind: Kind) -> anyhow::Result<Running> {
        self.spawn_with(kind, &self.env.config.clone()).await
    }

    /// Messages ready in the confirmations queue.
    pub async fn completions_waiting(&self) -> anyhow::Result<u32> {
        let broker = self.deps.broker()?;
        broker.queue_len(&broker.names().queue(CONFIRMATIONS)).await
    }

    /// Messages in the confirmations parking queue.
    pub async fn completions_parked(&self) -> anyhow::Result<u32> {
        let broker = self.deps.broker()?;
        broker
            .queue_len(&broker.names().parked_queue(CONFIRMATIONS))
            .await
    }

    /// Takes every message ready in the confirmations queue (nobody else consumes it) and
    /// counts them per order.
    pub async fn take_completions(&self) -> anyhow::Result<HashMap<OrderId, usize>> {
        let broker = self.deps.broker()?;
        let queue = broker.names().queue(CONFIRMATIONS);
        let channel = broker.channel().await?;
        let mut counts = HashMap::new();
        while let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .context("basic.get on the confirmations queue")?
        {
            let body: serde_json::Value = serde_json::from_slice(&message.delivery.data)
                .context("a completion that is not JSON")?;
            anyhow::ensure!(
                body["type"] == kinds::PAYMENT_COMPLETED,
                "not a completion: {body}"
            );
            let order: OrderId = body["data"]["order"]["order_id"]
                .as_str()
                .and_then(|s| OrderId::parse_str(s).ok())
                .with_context(|| format!("a completion without an order id: {body}"))?;
            *counts.entry(order).or_insert(0) += 1;
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(counts)
    }

    pub async fn cleanup(self) -> anyhow::Result<()> {
        self.deps.close().await;
        self.env.cleanup().await
    }
}
