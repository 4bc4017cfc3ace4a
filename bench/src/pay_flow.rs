//! Drives paid orders through the running workers for the confirm benchmark:
//! `pay-flow SALE BURST RATE SECONDS`.
//!
//! Connects as the workers do (`DROPLINE_*` config), makes `BURST + RATE × SECONDS` buyers
//! (MySQL rows and waiting-room admissions for SALE), reserves one unit for each and starts
//! its payment as the api does (`reserve.lua`, `begin_payment.lua`); then, with the payment,
//! confirm and expiry workers running against the same deployment:
//!
//! 1. **burst**: publishes `payment.requested` for BURST orders at once and times them until
//!    Redis counts them all sold: confirmed orders per second through RabbitMQ, the
//!    (simulated) provider and MySQL;
//! 2. **paced**: publishes RATE orders per second for SECONDS and reads each order's PAID
//!    instant (the `updated` field `confirm.lua` writes, Redis time) against its publish
//!    instant: pay → PAID latency at a load the pipeline sustains.
//!
//! Prints `key value` lines for `scripts/bench`.

use std::time::{Duration, Instant};

use anyhow::Context;
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::config::{Config, Sources};
use dropline_core::ids::{OrderId, SaleId, UserId};
use dropline_core::messages::{Envelope, PaymentRequested, kinds};
use dropline_core::orders::{Order, OrderState, Orders, ReserveOutcome, ReserveRequest};
use fred::interfaces::{ClientLike, HashesInterface, KeysInterface, StreamsInterface};
use futures_util::StreamExt;
use uuid::Uuid;

/// Requests in flight while preparing orders and publishing the burst.
const IN_FLIGHT: usize = 256;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [sale, burst, rate, seconds] = args.as_slice() else {
        anyhow::bail!("usage: pay-flow SALE BURST RATE SECONDS");
    };
    let sale = SaleId::parse_str(sale).context("SALE must be a sale id")?;
    let burst: usize = burst.parse().context("BURST must be a number")?;
    let rate: usize = rate.parse().context("RATE must be a number")?;
    let seconds: usize = seconds.parse().context("SECONDS must be a number")?;
    let config = Config::load(&Sources {
        file: None,
        env: true,
        overrides: Vec::new(),
    })?;
    let deps = Deps::connect(&config, Needs::ALL).await?;
    let orders = Orders::new(deps.redis()?, sale);
    let timeout = Duration::from_secs(config.payment.timeout_seconds.max(120));

    let total = burst + rate * seconds;
    eprintln!("pay-flow: preparing {total} paying orders");
    let buyers = make_buyers(&deps, &orders, total).await?;
    let prepared: Vec<anyhow::Result<Order>> = futures_util::stream::iter(buyers)
        .map(|user| paying_order(&orders, user, timeout))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let prepared: Vec<Order> = prepared.into_iter().collect::<anyhow::Result<_>>()?;
    let (burst_orders, paced_orders) = prepared.split_at(burst);
    // The recorder copies the preparation's arrows to MySQL; the burst starts once it is done,
    // so that it measures the payment path alone.
    wait_recorded(&deps, &orders, Duration::from_secs(180)).await?;
    let sold_before = sold(&deps, &orders).await?;

    // 1. Burst.
    eprintln!("pay-flow: burst of {burst}");
    let started = Instant::now();
    let published: Vec<anyhow::Result<()>> = futures_util::stream::iter(burst_orders)
        .map(|o| request(&deps, o))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    published.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let publish_time = started.elapsed();
    let target = sold_before + burst as i64;
    wait_sold(&deps, &orders, target, Duration::from_secs(300)).await?;
    let burst_time = started.elapsed();
    println!("burst_orders {burst}");
    println!("burst_seconds {:.3}", burst_time.as_secs_f64());
    println!("burst_publish_seconds {:.3}", publish_time.as_secs_f64());
    println!(
        "confirmed_per_second {:.1}",
        burst as f64 / burst_time.as_secs_f64()
    );

    // 2. Paced.
    eprintln!("pay-flow: {rate}/s for {seconds}s");
    let mut sent_ms = Vec::with_capacity(paced_orders.len());
    let step = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let start = tokio::time::Instant::now();
    for (i, order) in paced_orders.iter().enumerate() {
        tokio::time::sleep_until(start + step * i as u32).await;
        sent_ms.push(chrono::Utc::now().timestamp_millis());
        request(&deps, order).await?;
    }
    wait_sold(
        &deps,
        &orders,
        target + paced_orders.len() as i64,
        Duration::from_secs(120),
    )
    .await?;
    let mut latencies = Vec::with_capacity(paced_orders.len());
    for (order, sent) in paced_orders.iter().zip(&sent_ms) {
        let key = orders.order_key(order.id);
        let (state, updated): (Option<String>, Option<i64>) = deps
            .redis()?
            .pool()
            .hmget(key.as_str(), vec!["state", "updated"])
            .await?;
        anyhow::ensure!(
            state.as_deref() == Some(OrderState::Paid.as_str()),
            "order {} ended {state:?}, not paid",
            order.id
        );
        latencies.push(updated.context("no updated field")? - sent);
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!("paced_rate {rate}");
    println!("paced_orders {}", latencies.len());
    println!("latency_p50_ms {}", pct(0.50));
    println!("latency_p99_ms {}", pct(0.99));
    println!("latency_max_ms {}", pct(1.0));
    deps.close().await;
    Ok(())
}

/// `n` verified buyers in MySQL, admitted to the sale for an hour.
async fn make_buyers(deps: &Deps, orders: &Orders, n: usize) -> anyhow::Result<Vec<UserId>> {
    let users: Vec<UserId> = (0..n).map(|_| UserId::new_v7()).collect();
    for chunk in users.chunks(1000) {
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "INSERT INTO users (id, email, password_hash, name, role, email_verified_at, \
             created_at, updated_at) ",
        );
        q.push_values(chunk, |mut b, user| {
            b.push_bind(*user)
                .push_bind(format!("bench-{}@example.com", user.as_uuid().simple()))
                .push_bind("x")
                .push_bind("Bench Buyer")
                .push_bind("buyer")
                .push("UTC_TIMESTAMP(3)")
                .push("UTC_TIMESTAMP(3)")
                .push("UTC_TIMESTAMP(3)");
        });
        q.build()
            .execute(deps.mysql()?)
            .await
            .context("inserting buyers")?;
    }
    let deadline = chrono::Utc::now().timestamp_millis() + 3_600_000;
    for chunk in users.chunks(1000) {
        let mut args = vec![fred::types::Value::from(orders.keys().adm.as_str())];
        for user in chunk {
            args.push(fred::types::Value::from(deadline));
            args.push(fred::types::Value::from(&user.as_bytes()[..]));
        }
        let _: i64 = deps
            .redis()?
            .pool()
            .custom(fred::cmd!("ZADD"), args)
            .await
            .context("admitting buyers")?;
    }
    Ok(users)
}

async fn paying_order(orders: &Orders, user: UserId, timeout: Duration) -> anyhow::Result<Order> {
    let request = ReserveRequest {
        order: OrderId::new_v7(),
        user,
        quantity: 1,
        idempotency_key: format!("b-{}", Uuid::new_v4().simple()),
    };
    let order = match orders.reserve(&request).await? {
        ReserveOutcome::Created(order) => order,
        other => anyhow::bail!("reserve: {other:?} (is the sale open with enough stock?)"),
    };
    let started = orders.begin_payment(order.id, timeout).await?;
    anyhow::ensure!(started.applied(), "begin_payment: {started:?}");
    Ok(order)
}

async fn request(deps: &Deps, order: &Order) -> anyhow::Result<()> {
    let envelope = Envelope::new(
        kinds::PAYMENT_REQUESTED,
        PaymentRequested {
            order: order.reference(),
            card_token: "tok_visa".into(),
        },
    );
    deps.broker()?
        .publish(
            kinds::PAYMENT_REQUESTED,
            &envelope.id.to_string(),
            &envelope.to_json()?,
        )
        .await
}

async fn sold(deps: &Deps, orders: &Orders) -> anyhow::Result<i64> {
    let sold: Option<i64> = deps
        .redis()?
        .pool()
        .get(orders.keys().sold.as_str())
        .await?;
    Ok(sold.unwrap_or(0))
}

async fn wait_recorded(deps: &Deps, orders: &Orders, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let left: i64 = deps
            .redis()?
            .pool()
            .xlen(orders.keys().events.as_str())
            .await?;
        if left == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "{left} outbox entries still unrecorded after {limit:?}: is the expiry worker running?"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_sold(
    deps: &Deps,
    orders: &Orders,
    target: i64,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let now = sold(deps, orders).await?;
        if now >= target {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "only {now} of {target} sold after {limit:?}: are the payment and confirm workers running?"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
