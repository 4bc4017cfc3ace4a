//! Redis through Sentinel (issue #21 §2): `redis.url = redis+sentinel://…/<master>` makes the
//! command pool and the expired-key listener ask the Sentinels where the primary is, and follow
//! it when the primary dies and a replica is promoted. The servers are this test's own (a
//! primary, a replica and three Sentinels on free ports, `testkit::redis_server`), never the
//! machine's shared Redis; the primary is killed with SIGKILL.

use std::time::Duration;

use dropline_core::Config;
use dropline_core::clients::redis::Redis;
use dropline_core::config::Sources;
use dropline_testkit::eventually;
use dropline_testkit::redis_server::{SentinelGroup, ask};
use dropline_workers::keyevents::{Expired, ExpiredKeys};
use fred::prelude::*;
use tokio_util::sync::CancellationToken;

/// The Sentinels call the primary down after this long without answers.
const DOWN_AFTER: Duration = Duration::from_millis(1_000);
/// Down-after, the Sentinels' election and the promotion, with room for a loaded machine.
const FAILOVER: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_pool_and_the_expiry_listener_follow_a_sentinel_failover() -> anyhow::Result<()> {
    let mut group = SentinelGroup::start("dropline", DOWN_AFTER).await?;
    let mut config = Config::load(&Sources::default())?.redis;
    config.url = group.url();
    config.command_timeout_ms = 1_000;
    let redis = Redis::connect(&config).await?;
    let (mut expired, _) = ExpiredKeys::subscribe(&config, true).await?;

    // Before: written on the primary and acknowledged by the replica.
    let _: () = redis.pool().set("before", "1", None, None, false).await?;
    let acked: i64 = redis
        .pool()
        .custom(fred::cmd!("WAIT"), vec!["1", "5000"])
        .await?;
    assert_eq!(acked, 1, "the replica did not acknowledge the write");
    assert_eq!(group.primary_port().await?, group.primary.port());

    group.primary.kill();
    let promoted = group.replica.port();
    let sentinels_agree = eventually(FAILOVER, || async {
        group.primary_port().await.ok() == Some(promoted)
    })
    .await;
    anyhow::ensure!(sentinels_agree, "no failover within {FAILOVER:?}");

    // The pool finds the new primary by itself: writes go through again, and land there.
    let writes_again = eventually(FAILOVER, || async {
        redis
            .pool()
            .set::<(), _, _>("after", "2", None, None, false)
            .await
            .is_ok()
    })
    .await;
    anyhow::ensure!(writes_again, "the pool did not follow the new primary");
    let before: Option<String> = redis.pool().get("before").await?;
    assert_eq!(
        before.as_deref(),
        Some("1"),
        "an acknowledged write was lost"
    );
    let on_new_primary: Option<String> = ask(promoted, &["GET", "after"]).await?.convert()?;
    assert_eq!(on_new_primary.as_deref(), Some("2"));

    // The listener subscribed again on the new primary and turned its notifications on (a
    // promoted replica has its own setting, off here).
    let notifying = eventually(FAILOVER, || async {
        ask(promoted, &["CONFIG", "GET", "notify-keyspace-events"])
            .await
            .and_then(|v| Ok(v.convert::<Vec<String>>()?))
            .is_ok_and(|pair| {
                pair.get(1)
                    .is_some_and(|v| v.contains('E') && (v.contains('x') || v.contains('A')))
            })
    })
    .await;
    anyhow::ensure!(
        notifying,
        "keyspace notifications are off on the new primary"
    );
    let shutdown = CancellationToken::new();
    let _: () = redis
        .pool()
        .set(
            "soon",
            "3",
            Some(fred::types::Expiration::PX(200)),
            None,
            false,
        )
        .await?;
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match expired.next(&shutdown).await {
                Some(Expired::Key(key)) if key == "soon" => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await;
    anyhow::ensure!(
        seen == Ok(true),
        "the expiry of a key on the new primary was not reported"
    );
    redis.quit().await;
    Ok(())
}
