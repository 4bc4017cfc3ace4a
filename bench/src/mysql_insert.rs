//! The ceiling for confirmed orders: a bare MySQL insert loop on this machine's server,
//! `mysql-insert CONNECTIONS SECONDS`.
//!
//! CONNECTIONS tasks each insert one order-shaped row per autocommit statement (each a durable
//! commit, as the server is configured) into a scratch table of the database in
//! `DROPLINE_MYSQL__URL`, for SECONDS. Prints `inserts_per_second N` for `scripts/bench`, which
//! puts confirmed orders per second next to it: the pipeline does far more per order (a
//! provider call, three messages, Redis and MySQL writes), so the ratio says how much of the
//! database's plain write rate batching recovers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use dropline_core::config::{Config, Sources};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [connections, seconds] = args.as_slice() else {
        anyhow::bail!("usage: mysql-insert CONNECTIONS SECONDS");
    };
    let connections: u32 = connections
        .parse()
        .context("CONNECTIONS must be a number")?;
    let seconds: u64 = seconds.parse().context("SECONDS must be a number")?;
    let mut config = Config::load(&Sources {
        file: None,
        env: true,
        overrides: Vec::new(),
    })?;
    config.mysql.max_connections = connections.max(1);
    let pool = dropline_core::clients::mysql::connect(&config.mysql).await?;
    sqlx::query("DROP TABLE IF EXISTS bench_inserts")
        .execute(&pool)
        .await?;
    sqlx::query(
        "CREATE TABLE bench_inserts (\
           id BINARY(16) NOT NULL PRIMARY KEY, sale_id BINARY(16) NOT NULL, \
           user_id BINARY(16) NOT NULL, quantity INT NOT NULL, amount BIGINT NOT NULL, \
           status VARCHAR(16) NOT NULL, created_at DATETIME(3) NOT NULL) ENGINE = InnoDB",
    )
    .execute(&pool)
    .await?;
    let sale = uuid::Uuid::now_v7();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (pool, stop, count) = (pool.clone(), Arc::clone(&stop), Arc::clone(&count));
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                sqlx::query(
                    "INSERT INTO bench_inserts VALUES (?, ?, ?, 1, 390000, 'paid', UTC_TIMESTAMP(3))",
                )
                .bind(uuid::Uuid::now_v7())
                .bind(sale)
                .bind(uuid::Uuid::now_v7())
                .execute(&pool)
                .await?;
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let inserted = count.load(Ordering::Relaxed);
    sqlx::query("DROP TABLE bench_inserts")
        .execute(&pool)
        .await?;
    pool.close().await;
    println!("connections {connections}");
    println!("inserts {inserted}");
    println!(
        "inserts_per_second {:.1}",
        inserted as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
