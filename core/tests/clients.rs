//! The clients against the machine's real MariaDB, Redis and RabbitMQ, each test isolated by
//! its own database, key prefix and queue prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dropline_core::clients::amqp::{Broker, Names, QUEUES};
use dropline_core::clients::redis::Redis;
use dropline_core::lease::Lease;
use dropline_core::lua::{PipelinedSet, Script, scripts};
use dropline_core::sale::{SaleState, StateInputs, derive_state};
use dropline_testkit::TestEnv;
use fred::prelude::*;
use lapin::options::{BasicAckOptions, BasicGetOptions};

/// #18: a typed id is its UUID on the MySQL wire. Bound, it is the same 16 bytes as the bare
/// `Uuid` (a `BINARY(16)` value); a `BINARY(16)` value decodes into it.
#[tokio::test]
async fn typed_ids_are_their_uuid_in_mysql() -> anyhow::Result<()> {
    use dropline_core::ids::{OrderId, SaleId, UserId};
    let env = TestEnv::new()?;
    let pool = dropline_core::clients::mysql::connect(&env.config.mysql).await?;
    let uuid = uuid::Uuid::now_v7();
    let hex = uuid.simple().to_string().to_uppercase();
    let (bare, sale, user, order): (String, String, String, String) =
        sqlx::query_as("SELECT HEX(?), HEX(?), HEX(?), HEX(?)")
            .bind(uuid)
            .bind(SaleId::from(uuid))
            .bind(UserId::from(uuid))
            .bind(OrderId::from(uuid))
            .fetch_one(&pool)
            .await?;
    assert_eq!(bare, hex);
    assert_eq!((sale, user, order), (hex.clone(), hex.clone(), hex.clone()));
    let (sale, user): (SaleId, UserId) =
        sqlx::query_as("SELECT CAST(UNHEX(?) AS BINARY(16)), CAST(UNHEX(?) AS BINARY(16))")
            .bind(&hex)
            .bind(&hex)
            .fetch_one(&pool)
            .await?;
    assert_eq!((sale.into_uuid(), user.into_uuid()), (uuid, uuid));
    pool.close().await;
    env.cleanup().await
}

#[tokio::test]
async fn migrations_create_the_database_and_are_idempotent() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    // The database does not exist yet: connect creates it.
    let pool = dropline_core::clients::mysql::connect(&env.config.mysql).await?;
    dropline_core::clients::mysql::migrate(&pool).await?;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
    };
    let first = count().await?;
    assert_eq!(
        first as usize,
        dropline_core::clients::mysql::MIGRATOR.iter().count()
    );
    // Again, and concurrently from two pools (two replicas starting at once).
    let other = dropline_core::clients::mysql::connect(&env.config.mysql).await?;
    let (a, b) = tokio::join!(
        dropline_core::clients::mysql::migrate(&pool),
        dropline_core::clients::mysql::migrate(&other)
    );
    a?;
    b?;
    assert_eq!(count().await?, first);
    for table in ["users", "products", "sales"] {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?",
        )
        .bind(table)
        .fetch_one(&pool)
        .await?;
        assert_eq!(n, 1, "table {table} missing");
    }
    // The CHECK constraint refuses a sale that sells more than its stock.
    let now = chrono::Utc::now();
    let product = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO products (id, name, price, created_at) VALUES (?, 'p', 100, ?)")
        .bind(product)
        .bind(now)
        .execute(&pool)
        .await?;
    let oversold = sqlx::query(
        "INSERT INTO sales (id, product_id, stock_total, sold, opens_at, created_at, updated_at) VALUES (?, ?, 10, 11, ?, ?, ?)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(product)
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(&pool)
    .await;
    assert!(oversold.is_err(), "sold > stock_total must be refused");
    pool.close().await;
    other.close().await;
    env.cleanup().await
}

/// A test-only script with a side effect, so a lost or doubled call would show in the count.
static INCR: Script = Script::new("test_incr", "return redis.call('INCRBY', KEYS[1], ARGV[1])");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_survive_script_flush_under_load() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    dropline_core::telemetry::metrics_handle();
    let redis = Redis::connect(&env.config.redis).await?;
    let key = redis.sale_key("noscript", "counter");
    let calls = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();

    // Half the workers send the script alone, half pipelined behind a SET (`run_after_set`),
    // whose NOSCRIPT fallback must also run the script exactly once.
    let mut workers = Vec::new();
    let mut markers = Vec::new();
    for i in 0..8 {
        let (redis, key, calls, stop) = (redis.clone(), key.clone(), calls.clone(), stop.clone());
        let marker = redis.sale_key("noscript", &format!("marker:{i}"));
        let pipelined = i % 2 == 1;
        if pipelined {
            markers.push(marker.clone());
        }
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                if pipelined {
                    n += 1;
                    let value = n.to_string();
                    let set = PipelinedSet {
                        key: &marker,
                        value: &value,
                        ttl: Duration::from_secs(60),
                    };
                    let _: i64 = INCR
                        .run_after_set(&redis, &set, vec![key.clone()], vec!["1".into()])
                        .await?;
                    let seen: Option<u64> = redis.pool().get(&marker).await?;
                    assert_eq!(seen, Some(n), "the SET went out with the script");
                } else {
                    let _: i64 = INCR.run(&redis, vec![key.clone()], vec!["1"]).await?;
                }
                calls.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    // Flush the script cache repeatedly while the workers call the script.
    let flusher = redis.pool().next().clone();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let _: () = flusher.script_flush(false).await?;
    }
    stop.cancel();
    for w in workers {
        w.await??;
    }
    let total: u64 = redis.pool().get(&key).await?;
    let made = calls.load(Ordering::Relaxed);
    assert!(
        made > 100,
        "the load was too light to mean anything: {made} calls"
    );
    assert_eq!(total, made, "every call ran exactly once");
    for marker in &markers {
        let ttl: i64 = redis.pool().pttl(marker).await?;
        assert!(
            (1..=60_000).contains(&ttl),
            "{marker} carries the TTL it was sent with: {ttl}"
        );
    }
    let reloads = dropline_core::telemetry::render_metrics()
        .lines()
        .find(|l| l.starts_with("dropline_lua_noscript_reloads_total{script=\"test_incr\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        reloads >= 1.0,
        "the flushes never forced a reload, so nothing was tested"
    );
    redis.quit().await;
    env.cleanup().await
}

#[test]
fn every_script_documents_keys_argv_and_returns() {
    for script in scripts::all() {
        // What Redis runs is the shared prelude's items it uses, then the script's own file
        // (check_contract checks that none it names was left out).
        assert!(
            script.body().ends_with(script.source()),
            "{}",
            script.name()
        );
        assert_eq!(script.check_contract(), Ok(()));
        assert_eq!(script.sha().len(), 40);
    }
}

/// `sale_state` in `lua/lib/prelude.lua` (the scripts' rule) and [`derive_state`] (the Rust one,
/// for `sale_view.lua`'s snapshot) answer alike on every combination of their inputs.
#[tokio::test]
async fn lua_and_rust_derive_the_same_sale_state() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = Redis::connect(&env.config.redis).await?;
    let body = format!(
        "{}\nreturn sale_state(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), \
         ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]))",
        dropline_core::lua::PRELUDE
    );
    let (opens_at_ms, close) = (1_000, 2_000);
    let mut seen = std::collections::HashSet::new();
    for now_ms in [999, 1_000, 1_999, 2_000] {
        for closes_at_ms in [None, Some(close)] {
            for (available, held) in [(0, 0), (1, 0), (0, 1), (-1, 0)] {
                for (paused, closed) in [(false, false), (true, false), (false, true), (true, true)]
                {
                    let inputs = StateInputs {
                        now_ms,
                        opens_at_ms,
                        closes_at_ms,
                        paused,
                        closed,
                        available,
                        held,
                    };
                    let args: Vec<String> = vec![
                        now_ms.to_string(),
                        opens_at_ms.to_string(),
                        closes_at_ms.unwrap_or(0).to_string(),
                        u8::from(paused).to_string(),
                        u8::from(closed).to_string(),
                        available.to_string(),
                        held.to_string(),
                    ];
                    let lua: String = redis
                        .pool()
                        .eval(body.as_str(), Vec::<String>::new(), args)
                        .await?;
                    let rust = derive_state(inputs);
                    assert_eq!(lua, rust.as_str(), "{inputs:?}");
                    seen.insert(rust);
                }
            }
        }
    }
    assert_eq!(seen.len(), SaleState::FCFS.len(), "every state was reached");
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test]
async fn lease_has_one_holder_and_passes_on_after_expiry() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = Redis::connect(&env.config.redis).await?;
    let key = redis.key("lease:admitter");
    let length = Duration::from_millis(300);
    let a = Lease::new(redis.clone(), key.clone(), "a".into(), length);
    let b = Lease::new(redis.clone(), key.clone(), "b".into(), length);

    assert!(a.try_acquire().await?, "free lease is taken");
    assert!(!b.try_acquire().await?, "held lease is refused");
    assert!(a.try_acquire().await?, "holder renews");
    assert!(!b.release().await?, "non-holder cannot release");
    // `a` dies (stops renewing): `b` takes over once the lease runs out.
    tokio::time::sleep(length + Duration::from_millis(100)).await;
    assert!(b.try_acquire().await?, "expired lease passes on");
    assert!(!a.try_acquire().await?, "old holder is refused");
    assert!(b.release().await?, "holder releases");
    assert!(a.try_acquire().await?, "released lease is free at once");
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test]
async fn topology_is_idempotent_and_publish_is_confirmed() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let broker = Broker::connect(&env.config.amqp).await?;
    // Declaring again (another replica starting) changes nothing and does not fail.
    let again = Broker::connect(&env.config.amqp).await?;
    again.close().await;

    let names = Names::new(&env.config.amqp.prefix);
    for spec in QUEUES {
        for key in spec.routing_keys {
            let body = format!("{{\"key\":\"{key}\"}}");
            broker.publish(key, "m-1", body.as_bytes()).await?;
            let channel = broker.channel().await?;
            let queue = names.queue(spec);
            let mut got = None;
            for _ in 0..50 {
                got = channel
                    .basic_get(queue.as_str().into(), BasicGetOptions::default())
                    .await?;
                if got.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let delivery = got.ok_or_else(|| anyhow::anyhow!("{key} did not reach {queue}"))?;
            assert_eq!(delivery.delivery.data, body.as_bytes());
            delivery.delivery.ack(BasicAckOptions::default()).await?;
        }
    }
    // No queue takes this routing key: the publish fails instead of vanishing.
    let unroutable = broker.publish("nobody.listens", "m-2", b"{}").await;
    assert!(unroutable.is_err(), "unroutable message must be an error");
    broker.close().await;
    env.cleanup().await
}

#[tokio::test]
async fn unreachable_dependency_fails_within_its_bound_and_is_named() -> anyhow::Result<()> {
    // Nothing listens on port 1.
    let env = TestEnv::with_overrides(&[
        ("REDIS__URL", "redis://127.0.0.1:1"),
        ("REDIS__CONNECT_TIMEOUT_SECONDS", "1"),
        ("AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
        ("AMQP__CONNECT_TIMEOUT_SECONDS", "1"),
        ("MYSQL__URL", "mysql://root@127.0.0.1:1/dl_test_unreachable"),
        ("MYSQL__CONNECT_TIMEOUT_SECONDS", "1"),
    ])?;
    let started = std::time::Instant::now();
    let error = dropline_core::clients::deps::Deps::connect(
        &env.config,
        dropline_core::clients::deps::Needs::ALL,
    )
    .await
    .err()
    .ok_or_else(|| anyhow::anyhow!("connect should fail"))?;
    let message = format!("{error:#}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    for name in ["MySQL", "Redis", "RabbitMQ"] {
        assert!(message.contains(name), "`{message}` does not name {name}");
    }
    Ok(())
}
