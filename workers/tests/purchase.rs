//! The purchase path behind `POST /api/orders/{id}/pay` against the machine's real servers:
//! `payment.requested` → payment worker (simulated provider) → `payments` row →
//! `payment.completed` → confirm worker → MySQL `paid` + `sales.sold`, Redis PAID →
//! `order.confirmed` → mail worker → a real SMTP server on loopback ([`SmtpSink`]); and the
//! expiry worker (hold timers' keyspace events, the sweeper, the recorder to MySQL).
//!
//! Each test has its own MySQL database, Redis prefix and RabbitMQ names ([`TestEnv`]). It
//! makes a product, a sale and buyers in MySQL, arms the sale in Redis (`sale::arm`), admits
//! the buyers by writing the waiting room's `adm` zset, and reserves and starts the payment
//! with `Orders` as the api does; then it publishes `payment.requested` as the api does.
//!
//! "Changes nothing" is checked over a quiet period (several retry delays of 200 ms) after
//! the queues have drained.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use dropline_core::clients::amqp::{Broker, CONFIRMATIONS, MAIL, PAYMENTS};
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::ids::{OrderId, ProductId, SaleId, UserId};
use dropline_core::messages::{
    Envelope, PaymentCompleted, PaymentOutcome, PaymentRequested, kinds,
};
use dropline_core::orders::ledger::OrderRow;
use dropline_core::orders::{
    Order, OrderState, Orders, ReserveOutcome, ReserveRequest, Target, Transition,
};
use dropline_core::sale::{self, SaleConfig};
use dropline_testkit::smtp::{ReceivedMail, SmtpSink};
use dropline_testkit::{TestEnv, eventually};
use dropline_workers::confirm::{self, Hooks};
use dropline_workers::ledger;
use dropline_workers::provider::{ChargeRequest, Decision, PaymentProvider, Settlement, Simulated};
use dropline_workers::{Kind, expiry, forgotten, payment};
use fred::prelude::*;
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const PRICE: i64 = 12_500;
const PRODUCT: &str = "한정판 스니커즈";
const PAY_TIMEOUT: Duration = Duration::from_secs(60);

/// The simulated provider, counting what it is asked and the distinct charges it approved.
#[derive(Debug)]
struct Counting {
    inner: Arc<Simulated>,
    charges: AtomicUsize,
    approved: Mutex<HashSet<String>>,
    refunds: AtomicUsize,
}

impl Counting {
    fn approved(&self) -> HashSet<String> {
        self.approved.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

impl PaymentProvider for Counting {
    fn charge(&self, request: ChargeRequest) -> BoxFuture<'_, anyhow::Result<Decision>> {
        Box::pin(async move {
            self.charges.fetch_add(1, Ordering::SeqCst);
            let decision = self.inner.charge(request).await?;
            if let Decision::Approved { reference } = &decision
                && let Ok(mut approved) = self.approved.lock()
            {
                approved.insert(reference.clone());
            }
            Ok(decision)
        })
    }

    fn settle(&self, order: OrderId) -> BoxFuture<'_, anyhow::Result<Settlement>> {
        self.inner.settle(order)
    }

    fn refund(&self, order: OrderId) -> BoxFuture<'_, anyhow::Result<Decision>> {
        Box::pin(async move {
            self.refunds.fetch_add(1, Ordering::SeqCst);
            self.inner.refund(order).await
        })
    }
}

/// A running worker and the connections it owns.
struct Worker {
    deps: Deps,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Worker {
    /// Stops it as SIGTERM does (it must finish its deliveries within 10 s).
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .map_err(|_| anyhow::anyhow!("a worker did not stop within 10 s"))???;
        self.deps.close().await;
        Ok(())
    }

    /// Kills it: the task is dropped where it stands and its connections are closed, so
    /// the broker takes back every delivery it had not acked.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        self.deps.close().await;
    }
}

/// One test's world: servers, a sale, and the workers.
struct World {
    env: TestEnv,
    sink: SmtpSink,
    /// The test's own connections (never a worker's).
    deps: Deps,
    provider: Arc<Counting>,
    sale: SaleId,
    stock: i64,
    orders: Orders,
    workers: Vec<Worker>,
}

struct Setup {
    stock: i64,
    per_user_limit: i64,
    /// Start the payment, confirm and mail workers.
    payment: bool,
    confirm: bool,
    mail: bool,
    /// Start the expiry worker (with the recorder).
    expiry: bool,
    /// The sale's `hold_seconds`.
    hold_seconds: i64,
    /// `expiry.sweep_interval_seconds`.
    sweep_seconds: u64,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            stock: 10,
            per_user_limit: 4,
            payment: true,
            confirm: true,
            mail: true,
            expiry: false,
            hold_seconds: 600,
            sweep_seconds: 1,
        }
    }
}

impl World {
    async fn start(setup: Setup) -> anyhow::Result<Self> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let sink = SmtpSink::start().await?;
        let port = sink.port();
        let sweep = setup.sweep_seconds.to_string();
        let env = TestEnv::with_overrides(&[
            ("EXPIRY__SWEEP_INTERVAL_SECONDS", sweep.as_str()),
            ("SMTP__HOST", "127.0.0.1"),
            ("SMTP__PORT", port.as_str()),
            ("SMTP__TLS", "none"),
            ("AMQP__RETRY_DELAY_MS", "200"),
            ("AMQP__MAX_ATTEMPTS", "50"),
            ("PAYMENT__SIM_LATENCY_MS", "5"),
            ("MYSQL__MAX_CONNECTIONS", "8"),
            ("REDIS__POOL_SIZE", "4"),
        ])?;
        let deps = Deps::connect(&env.config, Needs::ALL).await?;
        let provider = Arc::new(Counting {
            inner: Simulated::new(deps.redis()?, &env.config.payment),
            charges: AtomicUsize::new(0),
            approved: Mutex::new(HashSet::new()),
            refunds: AtomicUsize::new(0),
        });
        let sale = SaleId::new_v7();
        let mut world = Self {
            orders: Orders::new(deps.redis()?, sale),
            env,
            sink,
            deps,
            provider,
            sale,
            stock: setup.stock,
            workers: Vec::new(),
        };
        world
            .make_sale(setup.per_user_limit, setup.hold_seconds)
            .await?;
        if setup.payment {
            world.spawn_payment().await?;
        }
        if setup.confirm {
            let worker = world.spawn_confirm(Hooks::default()).await?;
            world.workers.push(worker);
        }
        if setup.mail {
            world.spawn_mail().await?;
        }
        if setup.expiry {
            let worker = world.spawn_expiry().await?;
            world.workers.push(worker);
        }
        Ok(world)
    }

    fn mysql(&self) -> anyhow::Result<&sqlx::MySqlPool> {
        self.deps.mysql()
    }

    fn broker(&self) -> anyhow::Result<&Broker> {
        self.deps.broker()
    }

    /// Product and sale rows in MySQL (open since a minute ago), then the sale armed in Redis.
    async fn make_sale(&self, per_user_limit: i64, hold_seconds: i64) -> anyhow::Result<()> {
        let pool = self.mysql()?;
        let product = ProductId::new_v7();
        sqlx::query(
            "INSERT INTO products (id, name, description, price, currency, created_at) \
             VALUES (?, ?, NULL, ?, 'KRW', UTC_TIMESTAMP(3))",
        )
        .bind(product)
        .bind(PRODUCT)
        .bind(PRICE)
        .execute(pool)
        .await
        .context("inserting the product")?;
        sqlx::query(
            "INSERT INTO sales (id, product_id, stock_total, sold, opens_at, per_user_limit, \
                                hold_seconds, admit_per_second, created_at, updated_at) \
             VALUES (?, ?, ?, 0, UTC_TIMESTAMP(3) - INTERVAL 1 MINUTE, ?, ?, 100, \
                     UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
        )
        .bind(self.sale)
        .bind(product)
        .bind(self.stock)
        .bind(per_user_limit)
        .bind(hold_seconds)
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

    async fn worker_deps(&self) -> anyhow::Result<Deps> {
        Deps::connect(&self.env.config, Needs::ALL).await
    }

    async fn spawn_payment(&mut self) -> anyhow::Result<()> {
        let deps = self.worker_deps().await?;
        let shutdown = CancellationToken::new();
        let provider: Arc<dyn PaymentProvider> = self.provider.clone();
        let task = tokio::spawn({
            let (config, deps, shutdown) =
                (self.env.config.clone(), deps.clone(), shutdown.clone());
            async move { payment::run(&config, &deps, provider, shutdown).await }
        });
        self.workers.push(Worker {
            deps,
            shutdown,
            task,
        });
        Ok(())
    }

    /// A confirm worker with its own connections (not added to `workers`).
    async fn spawn_confirm(&self, hooks: Hooks) -> anyhow::Result<Worker> {
        let deps = self.worker_deps().await?;
        let shutdown = CancellationToken::new();
        let provider: Arc<dyn PaymentProvider> = self.provider.clone();
        let task = tokio::spawn({
            let (config, deps, shutdown) =
                (self.env.config.clone(), deps.clone(), shutdown.clone());
            async move { confirm::run_with_hooks(&config, &deps, provider, shutdown, hooks).await }
        });
        Ok(Worker {
            deps,
            shutdown,
            task,
        })
    }

    /// An expiry worker (events, sweeper, recorder) with its own connections (not added to
    /// `workers`).
    async fn spawn_expiry(&self) -> anyhow::Result<Worker> {
        let deps = self.worker_deps().await?;
        let shutdown = CancellationToken::new();
        let provider: Arc<dyn PaymentProvider> = self.provider.clone();
        let task = tokio::spawn({
            let (config, deps, shutdown) =
                (self.env.config.clone(), deps.clone(), shutdown.clone());
            async move { expiry::run(&config, &deps, provider, shutdown).await }
        });
        Ok(Worker {
            deps,
            shutdown,
            task,
        })
    }

    async fn spawn_mail(&mut self) -> anyhow::Result<()> {
        let deps = self.worker_deps().await?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (config, deps, shutdown) =
                (self.env.config.clone(), deps.clone(), shutdown.clone());
            async move { dropline_workers::run(Kind::Mail, &config, &deps, shutdown).await }
        });
        self.workers.push(Worker {
            deps,
            shutdown,
            task,
        });
        Ok(())
    }

    /// `n` verified buyers in MySQL, admitted to the sale for ten minutes.
    async fn buyers(&self, n: usize) -> anyhow::Result<Vec<UserId>> {
        let pool = self.mysql()?;
        let users: Vec<UserId> = (0..n).map(|_| UserId::new_v7()).collect();
        for chunk in users.chunks(200) {
            let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
                "INSERT INTO users (id, email, password_hash, name, role, email_verified_at, \
                 created_at, updated_at) ",
            );
            q.push_values(chunk, |mut b, user| {
                b.push_bind(*user)
                    .push_bind(email_of(*user))
                    .push_bind("x")
                    .push_bind("김민준")
                    .push_bind("buyer")
                    .push("UTC_TIMESTAMP(3)")
                    .push("UTC_TIMESTAMP(3)")
                    .push("UTC_TIMESTAMP(3)");
            });
            q.build().execute(pool).await.context("inserting buyers")?;
        }
        let deadline = chrono::Utc::now().timestamp_millis() + 600_000;
        let redis = self.deps.redis()?;
        for chunk in users.chunks(500) {
            let mut args = vec![Value::from(self.orders.keys().adm.as_str())];
            for user in chunk {
                args.push(Value::from(deadline));
                args.push(Value::from(&user.as_bytes()[..]));
            }
            let _: i64 = redis.pool().custom(fred::cmd!("ZADD"), args).await?;
        }
        Ok(users)
    }

    /// Reserves `quantity` for `user` (HELD), as the api does.
    async fn held_order(&self, user: UserId, quantity: u32) -> anyhow::Result<Order> {
        let request = ReserveRequest {
            order: OrderId::new_v7(),
            user,
            quantity,
            idempotency_key: format!("k-{}", Uuid::new_v4().simple()),
        };
        match self.orders.reserve(&request).await? {
            ReserveOutcome::Created(order) => Ok(order),
            other => anyhow::bail!("reserve: {other:?}"),
        }
    }

    /// Reserves `quantity` for `user` and starts its payment (HELD → PAYING), as the api does.
    async fn paying_order(&self, user: UserId, quantity: u32) -> anyhow::Result<Order> {
        self.paying_order_within(user, quantity, PAY_TIMEOUT).await
    }

    /// [`Self::paying_order`] with the payment deadline `timeout` away.
    async fn paying_order_within(
        &self,
        user: UserId,
        quantity: u32,
        timeout: Duration,
    ) -> anyhow::Result<Order> {
        let order = self.held_order(user, quantity).await?;
        let started = self.orders.begin_payment(order.id, timeout).await?;
        anyhow::ensure!(started.applied(), "begin_payment: {started:?}");
        self.orders
            .get(order.id)
            .await?
            .context("the order just reserved")
    }

    /// Publishes `payment.requested` for `order` as the api does; returns the envelope.
    async fn request_payment(
        &self,
        order: &Order,
        card_token: &str,
    ) -> anyhow::Result<Envelope<PaymentRequested>> {
        let envelope = Envelope::new(
            kinds::PAYMENT_REQUESTED,
            PaymentRequested {
                order: order.reference(),
                card_token: card_token.into(),
            },
        );
        self.publish(&envelope).await?;
        Ok(envelope)
    }

    async fn publish<T: serde::Serialize>(&self, envelope: &Envelope<T>) -> anyhow::Result<()> {
        self.broker()?
            .publish(
                &envelope.kind,
                &envelope.id.to_string(),
                &envelope.to_json()?,
            )
            .await
    }

    /// Publishes a `payment.completed` by hand (a stray, late or duplicate one).
    async fn complete(
        &self,
        order: &Order,
        outcome: PaymentOutcome,
        provider_ref: &str,
    ) -> anyhow::Result<()> {
        self.publish(&Envelope::new(
            kinds::PAYMENT_COMPLETED,
            PaymentCompleted {
                order: order.reference(),
                outcome,
                payment_id: Uuid::now_v7(),
                provider_ref: provider_ref.into(),
            },
        ))
        .await
    }

    async fn state(&self, order: OrderId) -> anyhow::Result<Option<OrderState>> {
        Ok(self.orders.get(order).await?.map(|o| o.state))
    }

    async fn mysql_state(&self, order: OrderId) -> anyhow::Result<Option<OrderState>> {
        Ok(dropline_core::orders::ledger::get(self.mysql()?, order)
            .await?
            .map(|o| o.state))
    }

    /// Waits until every order is in `state` in Redis.
    async fn wait_all(&self, orders: &[OrderId], state: OrderState, limit: Duration) -> bool {
        eventually(limit, || async {
            let mut all = true;
            for order in orders {
                if !matches!(self.state(*order).await, Ok(Some(s)) if s == state) {
                    all = false;
                    break;
                }
            }
            all
        })
        .await
    }

    /// (avail, held, sold) in Redis, read in one command.
    async fn counters(&self) -> anyhow::Result<(i64, i64, i64)> {
        let k = self.orders.keys();
        let v: Vec<Option<i64>> = self
            .deps
            .redis()?
            .pool()
            .mget(vec![k.avail.clone(), k.held.clone(), k.sold.clone()])
            .await?;
        match v.as_slice() {
            [a, h, s] => Ok((a.unwrap_or(0), h.unwrap_or(0), s.unwrap_or(0))),
            other => anyhow::bail!("MGET: {other:?}"),
        }
    }

    /// `sales.sold` in MySQL.
    async fn sold(&self) -> anyhow::Result<i64> {
        let (_, sold) = dropline_core::orders::ledger::sale_counts(self.mysql()?, self.sale)
            .await?
            .context("the sale row")?;
        Ok(sold)
    }

    /// DESIGN §6: avail + held + sold = stock_total in Redis, avail ≥ 0; MySQL `sold` = the
    /// sum of the paid rows' quantities ≤ stock_total, and Redis `sold` = MySQL `sold`.
    async fn check_invariants(&self) -> anyhow::Result<()> {
        let (avail, held, sold) = self.counters().await?;
        anyhow::ensure!(
            avail + held + sold == self.stock && avail >= 0 && held >= 0 && sold >= 0,
            "Redis: avail {avail} + held {held} + sold {sold} != {}",
            self.stock
        );
        let (paid_sum,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(quantity), 0) AS SIGNED) FROM orders \
             WHERE sale_id = ? AND status = 'paid'",
        )
        .bind(self.sale)
        .fetch_one(self.mysql()?)
        .await?;
        let mysql_sold = self.sold().await?;
        anyhow::ensure!(
            mysql_sold == paid_sum && mysql_sold <= self.stock,
            "MySQL: sold {mysql_sold}, paid rows {paid_sum}, stock {}",
            self.stock
        );
        anyhow::ensure!(
            mysql_sold == sold,
            "Redis sold {sold} != MySQL sold {mysql_sold}"
        );
        Ok(())
    }

    async fn payment_rows(&self, order: OrderId) -> anyhow::Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM payments WHERE order_id = ?")
            .bind(order)
            .fetch_one(self.mysql()?)
            .await?;
        Ok(n)
    }

    fn mails_to(&self, user: UserId) -> Vec<ReceivedMail> {
        let to = email_of(user);
        self.sink
            .messages()
            .into_iter()
            .filter(|m| m.recipients.contains(&to))
            .collect()
    }

    /// Messages ready or parked in every queue of the test (0 once everything is handled;
    /// unacked deliveries are not counted, so callers also wait a quiet period).
    async fn backlog(&self) -> anyhow::Result<(u32, u32)> {
        let broker = self.broker()?;
        let names = broker.names();
        let mut ready = 0;
        let mut parked = 0;
        for spec in [PAYMENTS, CONFIRMATIONS, MAIL] {
            ready += broker.queue_len(&names.queue(spec)).await?;
            ready += broker.queue_len(&names.retry_queue(spec)).await?;
            parked += broker.queue_len(&names.parked_queue(spec)).await?;
        }
        Ok((ready, parked))
    }

    /// Waits until no message is ready anywhere, then a quiet period.
    async fn settle(&self) -> anyhow::Result<()> {
        let drained = eventually(Duration::from_secs(20), || async {
            self.backlog().await.is_ok_and(|(ready, _)| ready == 0)
        })
        .await;
        anyhow::ensure!(drained, "queues did not drain: {:?}", self.backlog().await);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        for worker in self.workers {
            if let Err(error) = worker.stop().await {
                errors.push(format!("{error:#}"));
            }
        }
        self.deps.close().await;
        self.env.cleanup().await?;
        anyhow::ensure!(errors.is_empty(), "stopping workers: {}", errors.join("; "));
        Ok(())
    }
}

fn email_of(user: UserId) -> String {
    format!("buyer-{}@example.com", user.as_uuid().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_payment_ends_paid_everywhere_and_mails_the_buyer() -> anyhow::Result<()> {
    let world = World::start(Setup::default()).await?;
    let [user] = world.buyers(1).await?[..] else {
        anyhow::bail!("one buyer");
    };
    let order = world.paying_order(user, 2).await?;
    world.request_payment(&order, "tok_visa").await?;

    assert!(
        world
            .wait_all(&[order.id], OrderState::Paid, Duration::from_secs(20))
            .await,
        "order not paid in Redis: {:?}",
        world.state(order.id).await
    );
    assert_eq!(world.mysql_state(order.id).await?, Some(OrderState::Paid));
    assert_eq!(world.sold().await?, 2);
    assert_eq!(world.counters().await?, (8, 0, 2));
    world.check_invariants().await?;

    let payment = ledger::payment_of(world.mysql()?, order.id)
        .await?
        .context("payment row")?;
    assert_eq!(payment.status, "approved");
    assert_eq!(payment.amount, 2 * PRICE);
    assert_eq!(payment.sale, world.sale);
    assert_eq!(world.payment_rows(order.id).await?, 1);
    assert_eq!(
        world.provider.approved(),
        HashSet::from([payment.provider_ref.clone()]),
        "the recorded reference is the provider's one charge"
    );

    let mails = world.sink.wait_for(1, Duration::from_secs(20)).await?;
    let mail = &mails[0];
    assert_eq!(mail.recipients, [email_of(user)]);
    assert_eq!(
        mail.header("Message-ID").as_deref(),
        Some(format!("<confirmed-{}@localhost>", order.id).as_str())
    );
    let subject = mail.header("Subject").unwrap_or_default();
    assert!(subject.contains(PRODUCT), "Subject: {subject}");
    let body = mail.text_body()?;
    for needle in [
        order.id.to_string(),
        PRODUCT.to_owned(),
        "Quantity: 2".to_owned(),
        "25,000 KRW".to_owned(),
    ] {
        assert!(body.contains(&needle), "`{needle}` missing from:\n{body}");
    }
    world.settle().await?;
    assert_eq!(world.sink.messages().len(), 1, "one confirmation");
    assert_eq!(world.backlog().await?, (0, 0), "nothing parked");
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_fails_the_order_and_gives_the_stock_back_once() -> anyhow::Result<()> {
    let world = World::start(Setup::default()).await?;
    let [user] = world.buyers(1).await?[..] else {
        anyhow::bail!("one buyer");
    };
    let order = world.paying_order(user, 3).await?;
    assert_eq!(world.counters().await?, (7, 3, 0));
    world.request_payment(&order, "tok_fail").await?;
    assert!(
        world
            .wait_all(&[order.id], OrderState::Failed, Duration::from_secs(20))
            .await,
        "order not failed: {:?}",
        world.state(order.id).await
    );
    assert_eq!(world.counters().await?, (10, 0, 0), "stock back");
    assert_eq!(world.orders.units_of(user).await?, 0);
    let payment = ledger::payment_of(world.mysql()?, order.id)
        .await?
        .context("payment row")?;
    assert_eq!(payment.status, "declined");
    assert_eq!(payment.provider_ref, "card_declined");

    // The decline again (a duplicate completion and a duplicate request): nothing moves.
    world
        .complete(&order, PaymentOutcome::Declined, "card_declined")
        .await?;
    world.request_payment(&order, "tok_fail").await?;
    world.settle().await?;
    assert_eq!(
        world.counters().await?,
        (10, 0, 0),
        "stock back exactly once"
    );
    assert_eq!(world.state(order.id).await?, Some(OrderState::Failed));
    assert_eq!(world.sold().await?, 0);
    assert_eq!(world.payment_rows(order.id).await?, 1);
    assert!(world.sink.messages().is_empty(), "no confirmation mail");
    assert_eq!(world.backlog().await?, (0, 0));
    world.check_invariants().await?;
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_three_times_charges_and_books_once() -> anyhow::Result<()> {
    let world = World::start(Setup::default()).await?;
    let [user] = world.buyers(1).await?[..] else {
        anyhow::bail!("one buyer");
    };
    let order = world.paying_order(user, 1).await?;
    let envelope = Envelope::new(
        kinds::PAYMENT_REQUESTED,
        PaymentRequested {
            order: order.reference(),
            card_token: "tok_visa".into(),
        },
    );
    // The same envelope three times at once: the copies race through the workers.
    for _ in 0..3 {
        world.publish(&envelope).await?;
    }
    assert!(
        world
            .wait_all(&[order.id], OrderState::Paid, Duration::from_secs(20))
            .await
    );
    world.sink.wait_for(1, Duration::from_secs(20)).await?;
    world.settle().await?;
    // Copies that arrive while the first is in hand are acked without asking the provider.
    let asked = world.provider.charges.load(Ordering::SeqCst);
    assert!((1..=3).contains(&asked), "asked {asked} times");
    assert_eq!(world.provider.approved().len(), 1, "one charge");
    assert_eq!(world.payment_rows(order.id).await?, 1);
    assert_eq!(world.sold().await?, 1);
    assert_eq!(world.counters().await?, (9, 0, 1));
    assert_eq!(world.mails_to(user).len(), 1, "one confirmation mail");
    assert_eq!(world.backlog().await?, (0, 0));
    world.check_invariants().await?;
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_worker_killed_between_commit_and_ack_books_nothing_twice() -> anyhow::Result<()>
{
    let mut world = World::start(Setup {
        confirm: false,
        ..Setup::default()
    })
    .await?;
    let users = world.buyers(5).await?;
    let mut orders = Vec::new();
    for user in &users {
        orders.push(world.paying_order(*user, 2).await?);
    }
    let ids: Vec<OrderId> = orders.iter().map(|o| o.id).collect();

    // The first confirm worker commits its first batch, then "dies" before anything else:
    // no Redis arrow, no order.confirmed, no ack.
    let (committed_tx, mut committed_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<OrderId>>();
    let hooks = Hooks {
        after_commit: Some(Arc::new(move |orders: Vec<OrderId>| {
            let _ = committed_tx.send(orders);
            Box::pin(std::future::pending::<()>())
        })),
    };
    let doomed = world.spawn_confirm(hooks).await?;
    for order in &orders {
        world.request_payment(order, "tok_visa").await?;
    }
    let committed = tokio::time::timeout(Duration::from_secs(20), committed_rx.recv())
        .await
        .context("no batch committed within 20 s")?
        .context("hook dropped")?;
    assert!(!committed.is_empty());
    let booked: i64 = 2 * i64::try_from(committed.len())?;
    assert_eq!(world.sold().await?, booked, "the batch is committed");
    for order in &committed {
        assert_eq!(world.mysql_state(*order).await?, Some(OrderState::Paid));
        assert_eq!(
            world.state(*order).await?,
            Some(OrderState::Paying),
            "the worker died before the Redis arrow"
        );
    }
    doomed.kill().await;

    // A new worker gets the unacked deliveries again and finishes the job.
    let heir = world.spawn_confirm(Hooks::default()).await?;
    world.workers.push(heir);
    assert!(
        world
            .wait_all(&ids, OrderState::Paid, Duration::from_secs(30))
            .await,
        "not every order was paid after the redelivery"
    );
    world
        .sink
        .wait_for(ids.len(), Duration::from_secs(20))
        .await?;
    world.settle().await?;
    assert_eq!(world.sold().await?, 10, "each order's units counted once");
    assert_eq!(world.counters().await?, (0, 0, 10));
    for (order, user) in ids.iter().zip(&users) {
        assert_eq!(world.payment_rows(*order).await?, 1);
        assert_eq!(world.mysql_state(*order).await?, Some(OrderState::Paid));
        assert_eq!(world.mails_to(*user).len(), 1, "one mail per order");
    }
    assert_eq!(
        world.provider.approved().len(),
        ids.len(),
        "one charge per order"
    );
    assert_eq!(world.backlog().await?, (0, 0));
    world.check_invariants().await?;
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_late_and_out_of_order_completions_change_nothing() -> anyhow::Result<()> {
    let world = World::start(Setup::default()).await?;
    let users = world.buyers(2).await?;
    let paid = world.paying_order(users[0], 1).await?;
    let failed = world.paying_order(users[1], 1).await?;
    world.request_payment(&paid, "tok_visa").await?;
    world.request_payment(&failed, "tok_fail").await?;
    assert!(
        world
            .wait_all(&[paid.id], OrderState::Paid, Duration::from_secs(20))
            .await
    );
    assert!(
        world
            .wait_all(&[failed.id], OrderState::Failed, Duration::from_secs(20))
            .await
    );
    world.sink.wait_for(1, Duration::from_secs(20)).await?;
    world.settle().await?;
    let before = (
        world.counters().await?,
        world.sold().await?,
        ledger::payment_of(world.mysql()?, paid.id).await?,
        ledger::payment_of(world.mysql()?, failed.id).await?,
    );
    assert_eq!(
        before.0,
        (9, 0, 1),
        "one paid, one failed with its unit back"
    );

    // Approved twice, declined after approved, approved after declined, declined twice.
    world
        .complete(&paid, PaymentOutcome::Approved, "sim_dup")
        .await?;
    world
        .complete(&paid, PaymentOutcome::Declined, "late_decline")
        .await?;
    world
        .complete(&failed, PaymentOutcome::Approved, "stray_approval")
        .await?;
    world
        .complete(&failed, PaymentOutcome::Declined, "card_declined")
        .await?;
    world.settle().await?;

    let after = (
        world.counters().await?,
        world.sold().await?,
        ledger::payment_of(world.mysql()?, paid.id).await?,
        ledger::payment_of(world.mysql()?, failed.id).await?,
    );
    assert_eq!(after, before, "nothing moved");
    assert_eq!(world.state(paid.id).await?, Some(OrderState::Paid));
    assert_eq!(world.state(failed.id).await?, Some(OrderState::Failed));
    assert_eq!(world.mysql_state(paid.id).await?, Some(OrderState::Paid));
    assert_eq!(world.mysql_state(failed.id).await?, None, "never booked");
    assert_eq!(
        world.sink.messages().len(),
        1,
        "the duplicate approval mails nothing new"
    );
    assert_eq!(world.backlog().await?, (0, 0), "nothing parked");
    world.check_invariants().await?;
    world.stop().await
}

/// Issue #21 §2: a Redis failover lost an order's HELD → PAYING arrow (the promoted replica had
/// not received it) after its payment was asked for and approved. The confirm worker makes the
/// arrow again and books the order, instead of retrying it into the parking queue with the
/// charge booked nowhere (compose/chaos --failover redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_payment_for_an_order_redis_shows_held_is_booked_not_parked()
-> anyhow::Result<()> {
    let world = World::start(Setup {
        payment: false,
        ..Setup::default()
    })
    .await?;
    let users = world.buyers(1).await?;
    let order = world.held_order(users[0], 1).await?;
    // What the payment worker does for an approved charge (the order's PAYING arrow is lost).
    let decision = world
        .provider
        .charge(ChargeRequest {
            order: order.id,
            sale: order.sale,
            amount: order.amount,
            currency: order.currency.clone(),
            card_token: "tok_visa".into(),
        })
        .await?;
    let Decision::Approved { reference } = decision else {
        anyhow::bail!("expected an approval, got {decision:?}");
    };
    ledger::record_payment(
        world.mysql()?,
        &ledger::PaymentRow {
            id: Uuid::now_v7(),
            order: order.id,
            sale: order.sale,
            amount: order.amount,
            currency: order.currency.clone(),
            status: "approved".into(),
            provider_ref: reference.clone(),
        },
    )
    .await?;
    world
        .complete(&order, PaymentOutcome::Approved, &reference)
        .await?;
    assert!(
        world
            .wait_all(&[order.id], OrderState::Paid, Duration::from_secs(20))
            .await,
        "not paid in Redis: {:?}",
        world.state(order.id).await?
    );
    world.settle().await?;
    assert_eq!(world.mysql_state(order.id).await?, Some(OrderState::Paid));
    assert_eq!(
        ledger::payment_of(world.mysql()?, order.id)
            .await?
            .map(|p| p.status),
        Some("approved".to_owned()),
        "booked, not refunded"
    );
    assert_eq!(
        world.counters().await?,
        (9, 0, 1),
        "one unit sold, none held"
    );
    assert_eq!(world.backlog().await?, (0, 0), "nothing parked");
    world.check_invariants().await?;
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_payment_for_an_order_that_ended_is_refunded() -> anyhow::Result<()> {
    let world = World::start(Setup {
        payment: false,
        ..Setup::default()
    })
    .await?;
    let users = world.buyers(2).await?;

    // 1. MySQL has the row ended (expired) while Redis still says paying (as after a rearm).
    let ended_in_mysql = world.paying_order(users[0], 1).await?;
    let mut row = OrderRow::from(&ended_in_mysql);
    row.state = OrderState::Expired;
    ledger::record(world.mysql()?, &[row]).await?;
    // 2. The order failed in Redis (e.g. after its payment deadline) before the approval came.
    let ended_in_redis = world.paying_order(users[1], 1).await?;
    let failed = world
        .orders
        .release(ended_in_redis.id, dropline_core::orders::Target::Failed)
        .await?;
    assert!(matches!(failed, Transition::Applied(_)));

    for order in [&ended_in_mysql, &ended_in_redis] {
        // What the payment worker does for an approved charge.
        let decision = world
            .provider
            .charge(ChargeRequest {
                order: order.id,
                sale: order.sale,
                amount: order.amount,
                currency: order.currency.clone(),
                card_token: "tok_visa".into(),
            })
            .await?;
        let Decision::Approved { reference } = decision else {
            anyhow::bail!("expected an approval, got {decision:?}");
        };
        let recorded = ledger::record_payment(
            world.mysql()?,
            &ledger::PaymentRow {
                id: Uuid::now_v7(),
                order: order.id,
                sale: order.sale,
                amount: order.amount,
                currency: order.currency.clone(),
                status: "approved".into(),
                provider_ref: reference.clone(),
            },
        )
        .await?;
        world
            .complete(order, PaymentOutcome::Approved, &recorded.provider_ref)
            .await?;
    }
    let pool = world.mysql()?.clone();
    let refunded = eventually(Duration::from_secs(20), || async {
        let mut all = true;
        for order in [ended_in_mysql.id, ended_in_redis.id] {
            let status = ledger::payment_of(&pool, order).await;
            all &= matches!(status, Ok(Some(p)) if p.status == "refunded");
        }
        all
    })
    .await;
    assert!(refunded, "both payments refunded");
    world.settle().await?;
    assert_eq!(world.sold().await?, 0, "nothing booked");
    assert_eq!(
        world.mysql_state(ended_in_mysql.id).await?,
        Some(OrderState::Expired)
    );
    assert_eq!(world.mysql_state(ended_in_redis.id).await?, None);
    assert_eq!(
        world.state(ended_in_redis.id).await?,
        Some(OrderState::Failed)
    );
    assert!(world.provider.refunds.load(Ordering::SeqCst) >= 2);
    // The provider's ledger says refunded: asking again returns that, never a new charge.
    let again = world
        .provider
        .charge(ChargeRequest {
            order: ended_in_redis.id,
            sale: ended_in_redis.sale,
            amount: ended_in_redis.amount,
            currency: ended_in_redis.currency.clone(),
            card_token: "tok_visa".into(),
        })
        .await?;
    assert!(matches!(again, Decision::Refunded { .. }), "{again:?}");
    // No confirmation: each buyer gets one refund notice.
    for user in &users {
        let mails = world.mails_to(*user);
        assert_eq!(mails.len(), 1, "{mails:?}");
        assert!(
            mails[0]
                .header("Subject")
                .is_some_and(|s| s.contains("Order refunded")),
            "{:?}",
            mails[0].header("Subject")
        );
    }
    assert_eq!(world.backlog().await?, (0, 0));
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refunded_charge_asked_again_is_reported_declined() -> anyhow::Result<()> {
    let world = World::start(Setup::default()).await?;
    let [user] = world.buyers(1).await?[..] else {
        anyhow::bail!("one buyer");
    };
    let order = world.paying_order(user, 1).await?;
    // Charged and given back before the request is handled (the confirm worker refunded it).
    world
        .provider
        .charge(ChargeRequest {
            order: order.id,
            sale: order.sale,
            amount: order.amount,
            currency: order.currency.clone(),
            card_token: "tok_visa".into(),
        })
        .await?;
    world.provider.refund(order.id).await?;
    world.request_payment(&order, "tok_visa").await?;
    assert!(
        world
            .wait_all(&[order.id], OrderState::Failed, Duration::from_secs(20))
            .await,
        "a refunded payment fails the order: {:?}",
        world.state(order.id).await
    );
    let payment = ledger::payment_of(world.mysql()?, order.id)
        .await?
        .context("payment row")?;
    assert_eq!(payment.status, "refunded");
    world.settle().await?;
    assert_eq!(world.sold().await?, 0);
    assert_eq!(world.counters().await?, (10, 0, 0));
    assert!(world.sink.messages().is_empty());
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_would_oversell_is_refunded_and_the_order_failed() -> anyhow::Result<()> {
    let world = World::start(Setup::default()).await?;
    let users = world.buyers(2).await?;
    let first = world.paying_order(users[0], 1).await?;
    let second = world.paying_order(users[1], 1).await?;
    // Redis sells 10 but MySQL knows of 1 (Redis wrong, e.g. armed from a stale record):
    // MySQL's guard refuses the second.
    sqlx::query("UPDATE sales SET stock_total = 1 WHERE id = ?")
        .bind(world.sale)
        .execute(world.mysql()?)
        .await?;
    world.request_payment(&first, "tok_visa").await?;
    assert!(
        world
            .wait_all(&[first.id], OrderState::Paid, Duration::from_secs(20))
            .await
    );
    world.request_payment(&second, "tok_visa").await?;
    assert!(
        world
            .wait_all(&[second.id], OrderState::Failed, Duration::from_secs(20))
            .await,
        "the oversold order is failed in Redis: {:?}",
        world.state(second.id).await
    );
    let pool = world.mysql()?.clone();
    let refunded = eventually(Duration::from_secs(10), || async {
        matches!(ledger::payment_of(&pool, second.id).await, Ok(Some(p)) if p.status == "refunded")
    })
    .await;
    assert!(refunded, "the oversold payment is refunded");
    world.settle().await?;
    assert_eq!(world.sold().await?, 1, "MySQL never sells past its stock");
    assert_eq!(
        world.counters().await?,
        (9, 0, 1),
        "the unit is back in Redis"
    );
    assert_eq!(world.mysql_state(second.id).await?, None);
    assert_eq!(
        ledger::payment_of(world.mysql()?, first.id)
            .await?
            .map(|p| p.status),
        Some("approved".to_owned())
    );
    assert_eq!(world.mails_to(users[0]).len(), 1);
    // The refunded buyer hears of the refund, never of a confirmation.
    let notices = world.mails_to(users[1]);
    assert_eq!(notices.len(), 1, "one refund notice");
    assert!(
        notices[0]
            .header("Subject")
            .is_some_and(|s| s.contains("Order refunded")),
        "{:?}",
        notices[0].header("Subject")
    );
    assert_eq!(world.backlog().await?, (0, 0));
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_orders_are_all_paid_with_exact_stock() -> anyhow::Result<()> {
    const BUYERS: usize = 240;
    let world = World::start(Setup {
        stock: 400,
        ..Setup::default()
    })
    .await?;
    let users = world.buyers(BUYERS).await?;
    let mut orders = Vec::with_capacity(BUYERS);
    let mut units = 0;
    for (i, user) in users.iter().enumerate() {
        let quantity = if i % 3 == 0 { 2 } else { 1 };
        units += i64::from(quantity);
        orders.push(world.paying_order(*user, quantity).await?);
    }
    let ids: Vec<OrderId> = orders.iter().map(|o| o.id).collect();
    let started = Instant::now();
    // Published concurrently, as many api replicas would.
    let mut publishes = tokio::task::JoinSet::new();
    for chunk in orders.chunks(BUYERS / 8) {
        let broker = world.broker()?.clone();
        let envelopes: Vec<_> = chunk
            .iter()
            .map(|o| {
                Envelope::new(
                    kinds::PAYMENT_REQUESTED,
                    PaymentRequested {
                        order: o.reference(),
                        card_token: "tok_visa".into(),
                    },
                )
            })
            .collect();
        publishes.spawn(async move {
            for e in envelopes {
                broker
                    .publish(&e.kind, &e.id.to_string(), &e.to_json()?)
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = publishes.join_next().await {
        done??;
    }
    // Sample the Redis invariant while payments are in flight.
    let mut samples = 0;
    let all_paid = loop {
        world.check_invariants_redis().await?;
        samples += 1;
        if world
            .wait_all(&ids, OrderState::Paid, Duration::from_millis(0))
            .await
        {
            break true;
        }
        if started.elapsed() > Duration::from_secs(60) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = started.elapsed();
    assert!(all_paid, "not every order was paid within 60 s");
    tracing::info!(orders = BUYERS, ?elapsed, samples, "all paid");
    world.sink.wait_for(BUYERS, Duration::from_secs(60)).await?;
    world.settle().await?;
    let mails = world.sink.messages();
    assert_eq!(mails.len(), BUYERS, "one confirmation each");
    // The recipients are looked up a batch at a time: each mail still goes to its own order's
    // buyer and names that order.
    let mailed: HashMap<String, String> = mails
        .iter()
        .map(|m| Ok((m.recipients.join(","), m.text_body()?)))
        .collect::<anyhow::Result<_>>()?;
    for (user, order) in users.iter().zip(&orders) {
        let body = mailed
            .get(&email_of(*user))
            .with_context(|| format!("no mail for buyer {user}"))?;
        assert!(body.contains(&order.id.to_string()), "{user}: {body}");
        assert!(body.contains(PRODUCT), "{user}: {body}");
    }
    assert_eq!(world.sold().await?, units);
    assert_eq!(world.counters().await?, (400 - units, 0, units));
    let (rows,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM payments WHERE sale_id = ? AND status = 'approved'")
            .bind(world.sale)
            .fetch_one(world.mysql()?)
            .await?;
    assert_eq!(rows, i64::try_from(BUYERS)?);
    assert_eq!(world.provider.approved().len(), BUYERS);
    let (_, parked) = world.backlog().await?;
    assert_eq!(parked, 0);
    world.check_invariants().await?;
    world.stop().await
}

impl World {
    /// The Redis half of [`World::check_invariants`], safe to sample while orders move.
    async fn check_invariants_redis(&self) -> anyhow::Result<()> {
        let (avail, held, sold) = self.counters().await?;
        anyhow::ensure!(
            avail + held + sold == self.stock && avail >= 0,
            "Redis: avail {avail} + held {held} + sold {sold} != {}",
            self.stock
        );
        Ok(())
    }
}

/// Throughput of the confirm path alone (RabbitMQ + MySQL + Redis): approvals for many paying
/// orders published at once. Not a pass/fail check of speed on a shared machine; it prints the
/// rate. Run with `cargo nextest run -p dropline-workers --test purchase --run-ignored only`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly"]
async fn confirm_throughput() -> anyhow::Result<()> {
    const ORDERS: usize = 5_000;
    let world = World::start(Setup {
        stock: 10_000,
        payment: false,
        mail: false,
        ..Setup::default()
    })
    .await?;
    let users = world.buyers(ORDERS).await?;
    let mut orders = Vec::with_capacity(ORDERS);
    for user in &users {
        orders.push(world.paying_order(*user, 1).await?);
    }
    let ids: Vec<OrderId> = orders.iter().map(|o| o.id).collect();
    let payloads: Vec<(String, Vec<u8>)> = orders
        .iter()
        .map(|o| {
            let e = Envelope::new(
                kinds::PAYMENT_COMPLETED,
                PaymentCompleted {
                    order: o.reference(),
                    outcome: PaymentOutcome::Approved,
                    payment_id: Uuid::now_v7(),
                    provider_ref: "sim".into(),
                },
            );
            Ok((e.id.to_string(), e.to_json()?))
        })
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let mut publishes = tokio::task::JoinSet::new();
    for chunk in payloads.chunks(ORDERS / 16) {
        let broker = world.broker()?.clone();
        let chunk = chunk.to_vec();
        publishes.spawn(async move {
            for (id, payload) in chunk {
                broker
                    .publish(kinds::PAYMENT_COMPLETED, &id, &payload)
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = publishes.join_next().await {
        done??;
    }
    let published = started.elapsed();
    let sold = eventually(Duration::from_secs(120), || async {
        world
            .sold()
            .await
            .is_ok_and(|s| s == i64::try_from(ORDERS).unwrap_or(0))
    })
    .await;
    let booked = started.elapsed();
    assert!(sold, "not all booked: sold {:?}", world.sold().await);
    assert!(
        world
            .wait_all(&ids, OrderState::Paid, Duration::from_secs(60))
            .await
    );
    let paid = started.elapsed();
    let rate = ORDERS as f64 / paid.as_secs_f64();
    println!(
        "confirm throughput: {ORDERS} orders, published in {published:?}, booked in MySQL by {booked:?}, all PAID by {paid:?}: {rate:.0} orders/s"
    );
    world.check_invariants().await?;
    world.stop().await
}

/// A MySQL row's state once the recorder has copied it.
async fn recorded(world: &World, order: OrderId, state: OrderState) -> bool {
    eventually(Duration::from_secs(10), || async {
        matches!(world.mysql_state(order).await, Ok(Some(s)) if s == state)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_ends_by_its_timer_event_long_before_the_sweep() -> anyhow::Result<()> {
    // The sweeper runs once a minute here, so only the keyspace event can end the hold soon.
    let world = World::start(Setup {
        payment: false,
        confirm: false,
        mail: false,
        expiry: true,
        hold_seconds: 1,
        sweep_seconds: 60,
        ..Setup::default()
    })
    .await?;
    let [a, b] = world.buyers(2).await?[..] else {
        anyhow::bail!("two buyers");
    };
    let order = world.held_order(a, 3).await?;
    assert!(
        recorded(&world, order.id, OrderState::Held).await,
        "held row in MySQL"
    );
    assert_eq!(world.counters().await?, (7, 3, 0));
    // Redis deletes an expired key (and reports it) when its expiry cycle samples it or when
    // the key is touched. On a server holding many keys with a TTL (every test's idempotency
    // keys, here) the cycle can take long to find it, so the test touches the timer once its
    // deadline has passed: Redis then deletes it and reports it at once. (In production the
    // sweeper bounds that lateness; see the README.)
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let timer: i64 = world
        .deps
        .redis()?
        .pool()
        .exists(world.orders.hold_key(order.id))
        .await?;
    assert_eq!(timer, 0, "the hold timer has expired");
    let started = Instant::now();
    assert!(
        world
            .wait_all(&[order.id], OrderState::Expired, Duration::from_secs(10))
            .await,
        "hold not expired: {:?}",
        world.state(order.id).await
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "expired by the event, not the sweep"
    );
    assert_eq!(world.counters().await?, (10, 0, 0), "stock back");
    assert_eq!(world.orders.units_of(a).await?, 0, "the limit frees");
    assert!(
        recorded(&world, order.id, OrderState::Expired).await,
        "expired row in MySQL: {:?}",
        world.mysql_state(order.id).await
    );
    // The released stock sells again, and the old hold's end changes nothing more.
    let again = world.held_order(b, 4).await?;
    assert_eq!(world.counters().await?, (6, 4, 0));
    assert_eq!(world.state(again.id).await?, Some(OrderState::Held));
    world.check_invariants().await?;
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_that_expired_while_the_worker_was_down_are_released_once_after_restart()
-> anyhow::Result<()> {
    let world = World::start(Setup {
        payment: false,
        confirm: false,
        mail: false,
        expiry: false,
        hold_seconds: 1,
        sweep_seconds: 1,
        ..Setup::default()
    })
    .await?;
    let users = world.buyers(4).await?;
    let mut ids = Vec::new();
    for user in &users {
        ids.push(world.held_order(*user, 2).await?.id);
    }
    assert_eq!(world.counters().await?, (2, 8, 0));
    // The timers fire and their events go nowhere: no expiry worker runs.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(world.state(ids[0]).await? == Some(OrderState::Held));
    assert_eq!(world.counters().await?, (2, 8, 0), "nothing released yet");

    // Two workers start at once: the sweeper catches every hold, each exactly once.
    let first = world.spawn_expiry().await?;
    let second = world.spawn_expiry().await?;
    assert!(
        world
            .wait_all(&ids, OrderState::Expired, Duration::from_secs(10))
            .await,
        "not all expired"
    );
    assert_eq!(
        world.counters().await?,
        (10, 0, 0),
        "stock back exactly once"
    );
    for id in &ids {
        assert!(
            recorded(&world, *id, OrderState::Expired).await,
            "{id} in MySQL"
        );
    }
    for user in &users {
        assert_eq!(world.orders.units_of(*user).await?, 0);
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(world.counters().await?, (10, 0, 0), "still exactly once");
    first.stop().await?;
    second.stop().await?;
    world.check_invariants().await?;
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_without_outcome_is_voided_and_failed_at_its_deadline() -> anyhow::Result<()> {
    // No payment worker: the request is never handled, as when the broker lost it.
    let world = World::start(Setup {
        payment: false,
        expiry: true,
        ..Setup::default()
    })
    .await?;
    let [user] = world.buyers(1).await?[..] else {
        anyhow::bail!("one buyer");
    };
    let order = world
        .paying_order_within(user, 2, Duration::from_secs(1))
        .await?;
    assert_eq!(world.counters().await?, (8, 2, 0));
    assert!(
        world
            .wait_all(&[order.id], OrderState::Failed, Duration::from_secs(10))
            .await,
        "stuck payment not failed: {:?}",
        world.state(order.id).await
    );
    assert_eq!(world.counters().await?, (10, 0, 0), "stock back");
    assert!(recorded(&world, order.id, OrderState::Failed).await);
    // The charge arriving after the void is declined: nobody pays for a failed order.
    let late = world
        .provider
        .charge(ChargeRequest {
            order: order.id,
            sale: order.sale,
            amount: order.amount,
            currency: order.currency.clone(),
            card_token: "tok_visa".into(),
        })
        .await?;
    assert!(matches!(late, Decision::Declined { .. }), "{late:?}");
    assert!(world.provider.approved().is_empty());
    world.check_invariants().await?;
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_payment_nobody_reported_ends_paid_not_failed() -> anyhow::Result<()> {
    // The provider approved, but the payment worker died before recording or publishing it.
    let world = World::start(Setup {
        payment: false,
        expiry: true,
        ..Setup::default()
    })
    .await?;
    let [user] = world.buyers(1).await?[..] else {
        anyhow::bail!("one buyer");
    };
    let order = world
        .paying_order_within(user, 1, Duration::from_secs(1))
        .await?;
    let decision = world
        .provider
        .charge(ChargeRequest {
            order: order.id,
            sale: order.sale,
            amount: order.amount,
            currency: order.currency.clone(),
            card_token: "tok_visa".into(),
        })
        .await?;
    assert!(
        matches!(decision, Decision::Approved { .. }),
        "{decision:?}"
    );
    assert!(
        world
            .wait_all(&[order.id], OrderState::Paid, Duration::from_secs(15))
            .await,
        "approved payment not confirmed: {:?}",
        world.state(order.id).await
    );
    assert_eq!(world.mysql_state(order.id).await?, Some(OrderState::Paid));
    assert_eq!(world.counters().await?, (9, 0, 1));
    assert_eq!(world.payment_rows(order.id).await?, 1);
    assert_eq!(world.provider.refunds.load(Ordering::SeqCst), 0);
    world.settle().await?;
    world.check_invariants().await?;
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_brings_mysql_to_agree_with_redis_on_every_order() -> anyhow::Result<()> {
    let world = World::start(Setup {
        stock: 200,
        per_user_limit: 2,
        expiry: false,
        hold_seconds: 600,
        ..Setup::default()
    })
    .await?;
    let users = world.buyers(60).await?;
    let mut ids = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let order = match i % 4 {
            0 => world.held_order(*user, 1).await?,
            1 => {
                let o = world.held_order(*user, 2).await?;
                world.orders.release(o.id, Target::Cancelled).await?;
                o
            }
            2 => {
                let o = world.paying_order(*user, 1).await?;
                world.request_payment(&o, "tok_visa").await?;
                o
            }
            _ => {
                let o = world.paying_order(*user, 2).await?;
                world.request_payment(&o, "tok_fail").await?;
                o
            }
        };
        ids.push(order.id);
    }
    world.settle().await?;
    dropline_core::telemetry::metrics_handle();
    // Two recorders share the backlog.
    let first = world.spawn_expiry().await?;
    let second = world.spawn_expiry().await?;
    let agreed = eventually(Duration::from_secs(15), || async {
        let mut all = true;
        for id in &ids {
            let (r, m) = (world.state(*id).await, world.mysql_state(*id).await);
            if !matches!((r, m), (Ok(Some(a)), Ok(Some(b))) if a == b) {
                all = false;
                break;
            }
        }
        all
    })
    .await;
    assert!(agreed, "Redis and MySQL disagree");
    let rows = dropline_core::orders::ledger::of_sale(world.mysql()?, world.sale).await?;
    assert_eq!(rows.len(), ids.len(), "one row per order");
    let count = |state: OrderState| rows.iter().filter(|r| r.state == state).count();
    assert_eq!(count(OrderState::Held), 15);
    assert_eq!(count(OrderState::Cancelled), 15);
    assert_eq!(count(OrderState::Paid), 15);
    assert_eq!(count(OrderState::Failed), 15);
    // The expiry workers export the same figures as `dropline_orders{sale, state}`.
    let gauge = |state: OrderState| {
        let sale = format!("sale=\"{}\"", world.sale);
        let state = format!("state=\"{}\"", state.as_str());
        dropline_core::telemetry::render_metrics()
            .lines()
            .find(|l| l.starts_with("dropline_orders{") && l.contains(&sale) && l.contains(&state))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let expected = [
        (OrderState::Held, 15.0),
        (OrderState::Paying, 0.0),
        (OrderState::Paid, 15.0),
        (OrderState::Expired, 0.0),
        (OrderState::Cancelled, 15.0),
        (OrderState::Failed, 15.0),
    ];
    let exported = eventually(Duration::from_secs(10), || async {
        expected.iter().all(|(state, n)| gauge(*state) == Some(*n))
    })
    .await;
    assert!(
        exported,
        "orders by state: {:?}",
        expected.map(|(state, _)| (state, gauge(state)))
    );
    // Every entry was acknowledged and deleted.
    let len: i64 = world
        .deps
        .redis()?
        .pool()
        .xlen(world.orders.keys().events.as_str())
        .await?;
    assert_eq!(len, 0, "outbox drained");
    first.stop().await?;
    second.stop().await?;
    world.check_invariants().await?;
    world.stop().await
}

/// A sale leaves the admitter's index (closed, line empty) while a hold is still live, with an
/// expiry worker watching it since before (`worker_first`) or started only afterwards (#17
/// hole 10: the admitter retires it into the watch); either way the hold ends and is
/// recorded, and the drained sale is no longer watched.
async fn a_hold_outlives_the_index(worker_first: bool) -> anyhow::Result<()> {
    let world = World::start(Setup {
        payment: false,
        confirm: false,
        mail: false,
        expiry: false,
        hold_seconds: 1,
        sweep_seconds: 1,
        ..Setup::default()
    })
    .await?;
    let [user] = world.buyers(1).await?[..] else {
        anyhow::bail!("one buyer");
    };
    let redis = world.deps.redis()?;
    let (worker, order) = if worker_first {
        let worker = world.spawn_expiry().await?;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        sale::unindex(redis, world.sale).await?;
        (worker, world.held_order(user, 4).await?)
    } else {
        let order = world.held_order(user, 4).await?;
        sale::retire(redis, world.sale).await?;
        (world.spawn_expiry().await?, order)
    };
    assert!(
        world
            .wait_all(&[order.id], OrderState::Expired, Duration::from_secs(10))
            .await,
        "hold of an unindexed sale not expired"
    );
    assert!(recorded(&world, order.id, OrderState::Expired).await);
    assert_eq!(world.counters().await?, (10, 0, 0));
    // Nothing live or unrecorded is left: the sale is no longer watched.
    let watched_key = sale::watched_key(redis);
    let watched = eventually(Duration::from_secs(10), || async {
        let members: Result<Vec<String>, _> = redis.pool().smembers(watched_key.as_str()).await;
        members.is_ok_and(|m| m.is_empty())
    })
    .await;
    assert!(watched, "drained sale still watched");
    worker.stop().await?;
    world.check_invariants().await?;
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_retired_before_any_expiry_worker_ran_is_still_swept() -> anyhow::Result<()> {
    a_hold_outlives_the_index(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_the_admitter_dropped_is_still_swept_and_recorded() -> anyhow::Result<()> {
    a_hold_outlives_the_index(true).await
}

// Lost Redis writes (#21, README "Lost Redis writes"): after a failover that lost writes,
// Redis may have forgotten a paid order whole (reserve to PAID) while MySQL has it booked.
// Its units are then back in Redis's `avail`; the system must take them back from MySQL's
// `sales.sold` by itself, so the sale sells out and no further buyer pays for a unit MySQL sold.

impl World {
    /// Makes Redis forget `order` (paid) as a failover that lost its whole life would: no
    /// order hash, no idempotency key, the buyer's count without it, and its units back in
    /// `avail` out of `sold`. MySQL keeps the paid row and its `sales.sold`.
    async fn forget_paid_order(&self, order: &Order) -> anyhow::Result<()> {
        let redis = self.deps.redis()?.pool();
        let k = self.orders.keys();
        let qty = order.quantity;
        let _: i64 = redis.del(self.orders.order_key(order.id)).await?;
        let _: i64 = redis
            .del(
                self.orders
                    .idempotency_key(order.user, &order.idempotency_key),
            )
            .await?;
        let _: i64 = redis.decr_by(self.orders.user_key(order.user), qty).await?;
        let _: i64 = redis.decr_by(&k.sold, qty).await?;
        let _: i64 = redis.incr_by(&k.avail, qty).await?;
        // The PAID arrow's `ZREM adm` is lost too: the buyer is admitted again.
        let deadline = chrono::Utc::now().timestamp_millis() + 600_000;
        let _: i64 = redis
            .custom(
                fred::cmd!("ZADD"),
                vec![
                    Value::from(k.adm.as_str()),
                    Value::from(deadline),
                    Value::from(&order.user.as_bytes()[..]),
                ],
            )
            .await?;
        Ok(())
    }

    /// Whether `user` is admitted (in `adm`).
    async fn admitted(&self, user: UserId) -> anyhow::Result<bool> {
        let score: Option<f64> = self
            .deps
            .redis()?
            .pool()
            .zscore(&self.orders.keys().adm, &user.as_bytes()[..])
            .await?;
        Ok(score.is_some())
    }

    /// Reserves, starts and pays an order for `user`, and waits until it ends in `state`.
    async fn buy(&self, user: UserId, state: OrderState) -> anyhow::Result<Order> {
        let order = self.paying_order(user, 1).await?;
        self.request_payment(&order, "tok_visa").await?;
        anyhow::ensure!(
            self.wait_all(&[order.id], state, Duration::from_secs(20))
                .await,
            "order {} not {state} in Redis: {:?}",
            order.id,
            self.state(order.id).await?
        );
        Ok(order)
    }

    /// What a reserve of one unit by `user` answers now.
    async fn try_reserve(&self, user: UserId) -> anyhow::Result<ReserveOutcome> {
        self.orders
            .reserve(&ReserveRequest {
                order: OrderId::new_v7(),
                user,
                quantity: 1,
                idempotency_key: format!("k-{}", Uuid::new_v4().simple()),
            })
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_lost_writes_an_oversell_takes_the_units_mysql_sold_and_the_sale_sells_out()
-> anyhow::Result<()> {
    // No expiry worker (so no recorder stock check): the confirm worker alone must heal it.
    let world = World::start(Setup {
        stock: 2,
        per_user_limit: 1,
        ..Setup::default()
    })
    .await?;
    let users = world.buyers(5).await?;
    let lost = world.buy(users[0], OrderState::Paid).await?;
    world.forget_paid_order(&lost).await?;
    assert_eq!(world.counters().await?, (2, 0, 0), "Redis forgot the sale");
    assert_eq!(world.sold().await?, 1);

    // Redis offers two units, MySQL has one: the next buyer gets the real one.
    world.buy(users[1], OrderState::Paid).await?;
    // The third pays for a unit MySQL sold: refused, refunded, and the unit is not offered again.
    let oversold = world.buy(users[2], OrderState::Failed).await?;
    let pool = world.mysql()?.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            matches!(ledger::payment_of(&pool, oversold.id).await, Ok(Some(p)) if p.status == "refunded")
        })
        .await,
        "the oversold payment is refunded"
    );
    world.settle().await?;
    assert_eq!(world.sold().await?, 2, "MySQL never sells past its stock");
    assert_eq!(
        world.counters().await?,
        (0, 0, 2),
        "Redis takes the unit MySQL sold instead of offering it again"
    );
    let view = sale::view(world.deps.redis()?, world.sale).await?;
    assert_eq!(
        view.map(|v| v.state()),
        Some(sale::SaleState::SoldOut),
        "the sale sells out"
    );
    let next = world.try_reserve(users[3]).await?;
    assert!(
        matches!(next, ReserveOutcome::SoldOut { available: 0 }),
        "no further buyer can reserve: {next:?}"
    );
    assert!(
        !world.admitted(users[0]).await?,
        "the admission the loss brought back (a buyer MySQL has at the limit) is ended"
    );
    assert_eq!(
        world.provider.refunds.load(Ordering::SeqCst),
        1,
        "one refund"
    );
    world.check_invariants().await?;
    assert_eq!(world.backlog().await?, (0, 0));
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_lost_writes_the_recorder_takes_the_units_mysql_sold_before_anyone_pays()
-> anyhow::Result<()> {
    let world = World::start(Setup {
        stock: 3,
        per_user_limit: 1,
        expiry: true,
        ..Setup::default()
    })
    .await?;
    let users = world.buyers(5).await?;
    let lost = world.buy(users[0], OrderState::Paid).await?;
    world.buy(users[1], OrderState::Paid).await?;
    // A live hold MySQL has not sold: its unit stays held, not taken.
    let holding = world.held_order(users[2], 1).await?;
    world.forget_paid_order(&lost).await?;
    assert_eq!(world.sold().await?, 2);

    // Nobody pays for the unit Redis shows: the recorder's stock check finds MySQL ahead.
    assert!(
        eventually(Duration::from_secs(15), || async {
            world.counters().await.is_ok_and(|c| c == (0, 1, 2))
        })
        .await,
        "Redis's counters not repaired: {:?}",
        world.counters().await?
    );
    let next = world.try_reserve(users[3]).await?;
    assert!(
        matches!(next, ReserveOutcome::SoldOut { available: 0 }),
        "no further buyer can reserve: {next:?}"
    );
    // The repair moves the units first and ends the spent admissions right after (a MySQL
    // read, then a ZREM): the counters can be seen repaired a moment before that.
    assert!(
        eventually(Duration::from_secs(5), || async {
            world
                .admitted(users[0])
                .await
                .is_ok_and(|admitted| !admitted)
        })
        .await,
        "the admission the loss brought back (a buyer MySQL has at the limit) is ended"
    );
    // The hold still pays for its own unit, and the counters then agree with MySQL.
    let started = world.orders.begin_payment(holding.id, PAY_TIMEOUT).await?;
    anyhow::ensure!(started.applied(), "begin_payment: {started:?}");
    world.request_payment(&holding, "tok_visa").await?;
    assert!(
        world
            .wait_all(&[holding.id], OrderState::Paid, Duration::from_secs(20))
            .await,
        "the hold is paid"
    );
    world.settle().await?;
    assert_eq!(world.counters().await?, (0, 0, 3));
    assert_eq!(
        world.provider.refunds.load(Ordering::SeqCst),
        0,
        "no refund"
    );
    world.check_invariants().await?;
    world.stop().await
}

impl World {
    /// Makes Redis forget `order` (held) as a failover that lost its whole life would: no
    /// order hash, timer, deadline-index entry or idempotency key, the buyer's count without
    /// it, its units back in `avail`. The buyer's admission stays (the loss may bring it back).
    /// MySQL keeps the HELD row, whose deadline is then moved a minute into the past, as if the
    /// buyer had abandoned the hold long ago.
    async fn forget_held_order(&self, order: &Order) -> anyhow::Result<()> {
        let redis = self.deps.redis()?.pool();
        let k = self.orders.keys();
        let qty = order.quantity;
        let _: i64 = redis.del(self.orders.order_key(order.id)).await?;
        let _: i64 = redis.del(self.orders.hold_key(order.id)).await?;
        let _: i64 = redis.zrem(&k.holds, order.id.to_string()).await?;
        let _: i64 = redis
            .del(
                self.orders
                    .idempotency_key(order.user, &order.idempotency_key),
            )
            .await?;
        let left: i64 = redis.decr_by(self.orders.user_key(order.user), qty).await?;
        if left <= 0 {
            let _: i64 = redis.del(self.orders.user_key(order.user)).await?;
        }
        let _: i64 = redis.decr_by(&k.held, qty).await?;
        let _: i64 = redis.incr_by(&k.avail, qty).await?;
        self.backdate_in_mysql(order.id).await
    }

    /// Moves `order`'s MySQL deadline a minute into the past.
    async fn backdate_in_mysql(&self, order: OrderId) -> anyhow::Result<()> {
        let moved =
            sqlx::query("UPDATE orders SET deadline_at = NOW(3) - INTERVAL 1 MINUTE WHERE id = ?")
                .bind(order)
                .execute(self.mysql()?)
                .await?
                .rows_affected();
        anyhow::ensure!(moved == 1, "order {order} has no MySQL row");
        Ok(())
    }
}

/// Issue #21: a hold Redis lost after MySQL recorded it has nothing left in Redis to end it.
/// The recorder finds the HELD row past its deadline, sees Redis does not know the order, marks
/// it expired in MySQL and ends the buyer's admission; a HELD row whose order Redis still has
/// is left to its own arrows, and a buyer holding another order keeps the admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_redis_forgot_is_expired_in_mysql_and_its_admission_ended() -> anyhow::Result<()> {
    let world = World::start(Setup {
        stock: 5,
        per_user_limit: 2,
        expiry: true,
        payment: false,
        confirm: false,
        mail: false,
        ..Setup::default()
    })
    .await?;
    let users = world.buyers(3).await?;
    let forgotten = world.held_order(users[0], 1).await?;
    let known = world.held_order(users[1], 1).await?;
    // users[2] has two holds; Redis forgets one of them only.
    let lost_twin = world.held_order(users[2], 1).await?;
    let kept_twin = world.held_order(users[2], 1).await?;
    for order in [&forgotten, &known, &lost_twin, &kept_twin] {
        anyhow::ensure!(
            recorded(&world, order.id, OrderState::Held).await,
            "order {} never reached MySQL",
            order.id
        );
    }
    world.forget_held_order(&forgotten).await?;
    world.forget_held_order(&lost_twin).await?;
    // Redis still has this one (its deadline ahead there): MySQL's past deadline alone is no
    // reason to touch it.
    world.backdate_in_mysql(known.id).await?;
    world.check_invariants_redis().await?;

    // The check runs every 5 s.
    assert!(
        eventually(Duration::from_secs(15), || async {
            matches!(
                world.mysql_state(forgotten.id).await,
                Ok(Some(OrderState::Expired))
            ) && matches!(
                world.mysql_state(lost_twin.id).await,
                Ok(Some(OrderState::Expired))
            )
        })
        .await,
        "the forgotten holds are not expired in MySQL: {:?}, {:?}",
        world.mysql_state(forgotten.id).await?,
        world.mysql_state(lost_twin.id).await?
    );
    assert!(
        !world.admitted(users[0]).await?,
        "the forgotten hold's buyer keeps no admission"
    );
    assert_eq!(
        world.state(forgotten.id).await?,
        Some(OrderState::Expired),
        "the forgotten hold's hash is back in Redis, as expired"
    );
    let units: Option<i64> = world
        .deps
        .redis()?
        .pool()
        .get(world.orders.user_key(users[0]))
        .await?;
    assert_eq!(
        units, None,
        "an expired order counts no units for its buyer"
    );
    assert!(
        world.admitted(users[2]).await?,
        "a buyer who still holds another order keeps the admission"
    );
    // Another check passes (5 s) and leaves the known order as it is, in both stores.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        world.mysql_state(known.id).await?,
        Some(OrderState::Held),
        "an order Redis knows is left to its own arrows"
    );
    assert_eq!(world.state(known.id).await?, Some(OrderState::Held));
    assert!(world.admitted(users[1]).await?);
    assert_eq!(
        world.mysql_state(kept_twin.id).await?,
        Some(OrderState::Held)
    );
    assert_eq!(world.counters().await?, (3, 2, 0));
    world.stop().await
}

/// The admission window the restore is told (`waitroom.admission_window_seconds`' default).
const WINDOW: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_order_redis_forgot_gets_its_hash_units_and_idempotency_key_back()
-> anyhow::Result<()> {
    let world = World::start(Setup {
        stock: 3,
        per_user_limit: 1,
        ..Setup::default()
    })
    .await?;
    let users = world.buyers(2).await?;
    let lost = world.buy(users[0], OrderState::Paid).await?;
    let known = world.buy(users[1], OrderState::Paid).await?;
    world.forget_paid_order(&lost).await?;
    assert_eq!(world.mysql_state(lost.id).await?, Some(OrderState::Paid));
    assert_eq!(world.state(lost.id).await?, None, "Redis forgot the order");
    let redis = world.deps.redis()?;
    let units: Option<i64> = redis.pool().get(world.orders.user_key(users[0])).await?;
    assert_eq!(units.unwrap_or(0), 0, "and the buyer's units with it");

    // One step of the recorder's walk (here with no settling time: the orders are seconds old).
    let walk = forgotten::restore_ended(
        redis,
        world.mysql()?,
        world.sale,
        None,
        Duration::ZERO,
        WINDOW,
    )
    .await?;
    assert_eq!(walk.restored, 1, "only the forgotten order is written back");
    assert_eq!(
        walk.walked,
        Some(lost.id.max(known.id)),
        "the walk passed both"
    );
    assert!(walk.live_missing.is_empty());
    assert_eq!(world.state(lost.id).await?, Some(OrderState::Paid));
    let (qty, idem_field): (Option<String>, Option<String>) = redis
        .pool()
        .hmget(world.orders.order_key(lost.id), vec!["qty", "idem"])
        .await?;
    assert_eq!(qty.as_deref(), Some("1"));
    assert_eq!(idem_field.as_deref(), Some(lost.idempotency_key.as_str()));
    let units: Option<i64> = redis.pool().get(world.orders.user_key(users[0])).await?;
    assert_eq!(units, Some(1), "the paid unit counts for the buyer again");
    let idem: HashMap<String, String> = redis
        .pool()
        .hgetall(
            world
                .orders
                .idempotency_key(users[0], &lost.idempotency_key),
        )
        .await?;
    assert_eq!(
        idem.get("order").map(String::as_str),
        Some(lost.id.to_string().as_str())
    );
    // The buyer's limit of one holds again.
    assert!(
        matches!(
            world.try_reserve(users[0]).await?,
            ReserveOutcome::LimitExceeded { owned: 1, limit: 1 }
        ),
        "a buyer whose paid order Redis forgot must not buy past the limit"
    );
    // Again, from the start: Redis knows every order now; nothing changes.
    let units_before: Option<i64> = redis.pool().get(world.orders.user_key(users[1])).await?;
    let again = forgotten::restore_ended(
        redis,
        world.mysql()?,
        world.sale,
        None,
        Duration::ZERO,
        WINDOW,
    )
    .await?;
    assert_eq!(again.restored, 0);
    let units_after: Option<i64> = redis.pool().get(world.orders.user_key(users[1])).await?;
    assert_eq!(
        units_before, units_after,
        "a known order's units are not added twice"
    );
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_order_redis_forgot_is_watched_until_mysql_ends_it_then_restored()
-> anyhow::Result<()> {
    let world = World::start(Setup {
        stock: 3,
        per_user_limit: 1,
        expiry: true,
        payment: false,
        confirm: false,
        mail: false,
        ..Setup::default()
    })
    .await?;
    let users = world.buyers(1).await?;
    let order = world.held_order(users[0], 1).await?;
    anyhow::ensure!(
        recorded(&world, order.id, OrderState::Held).await,
        "order {} never reached MySQL",
        order.id
    );
    world.forget_held_order(&order).await?;
    let redis = world.deps.redis()?;
    let walk = forgotten::restore_ended(
        redis,
        world.mysql()?,
        world.sale,
        None,
        Duration::ZERO,
        WINDOW,
    )
    .await?;
    assert_eq!(walk.restored, 0, "a live order is not restored");
    assert_eq!(walk.live_missing, vec![order.id], "but watched");
    let mut pending: std::collections::BTreeSet<OrderId> = walk.live_missing.into_iter().collect();
    // Still HELD in MySQL: it stays on the list, and Redis still lacks it.
    assert_eq!(
        forgotten::recheck(redis, world.mysql()?, world.sale, &mut pending, WINDOW).await?,
        0
    );
    assert!(pending.contains(&order.id));
    assert_eq!(world.state(order.id).await?, None);
    // MySQL ends it (the forgotten-hold check does, 30 s past the deadline; here by hand):
    // the next look restores its hash, as expired, and drops it from the list.
    sqlx::query("UPDATE orders SET status = 'expired' WHERE id = ?")
        .bind(order.id)
        .execute(world.mysql()?)
        .await?;
    assert_eq!(
        forgotten::recheck(redis, world.mysql()?, world.sale, &mut pending, WINDOW).await?,
        1
    );
    assert!(pending.is_empty());
    assert_eq!(world.state(order.id).await?, Some(OrderState::Expired));
    assert!(
        !world.admitted(users[0]).await?,
        "the admission the order was made under ends with it, as the lost arrow ended it"
    );
    world.stop().await
}
