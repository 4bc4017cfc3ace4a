//! What several of the waiting room's test files share.

use dropline_core::clients::redis::Redis;
use dropline_core::ids::UserId;
use dropline_waitroom::queue::{ORDER_SPAN, QueueKeys, member};
use fred::prelude::*;

/// Makes `users` look silent for `secs` seconds without waiting that long: rewrites the
/// last-poll stamp of their place (the low 16 bits of the score, Redis seconds mod 65536; see
/// `waitroom/src/queue.rs`), in the line or among the skipped places, as if their last join or
/// poll had been `secs` ago. The order key is untouched, so the place stays where it is, and
/// the scripts under test judge the silence exactly as they would after real time.
pub async fn silence(
    redis: &Redis,
    keys: &QueueKeys,
    users: &[UserId],
    secs: u64,
) -> anyhow::Result<()> {
    let t: Vec<u64> = redis
        .pool()
        .custom(fred::cmd!("TIME"), Vec::<String>::new())
        .await?;
    let now_s = *t.first().ok_or_else(|| anyhow::anyhow!("TIME: {t:?}"))?;
    let stamp = (now_s + ORDER_SPAN - secs % ORDER_SPAN) % ORDER_SPAN;
    for user in users {
        let id = Value::from(&member(*user)[..]);
        for key in [&keys.q, &keys.skip] {
            let score: Option<f64> = redis.pool().zscore(key, id.clone()).await?;
            if let Some(score) = score {
                let score = score as u64;
                let _: i64 = redis
                    .pool()
                    .custom(
                        fred::cmd!("ZADD"),
                        vec![
                            Value::from(key.as_str()),
                            Value::from("XX"),
                            Value::from((score - score % ORDER_SPAN + stamp).to_string()),
                            id.clone(),
                        ],
                    )
                    .await?;
            }
        }
    }
    Ok(())
}
