//! The janitor against the real MariaDB: expired sign-in state goes, live state stays.

mod common;

use chrono::{Duration, Utc};
use dropline_api::janitor;
use dropline_core::auth::tokens::Role;
use uuid::Uuid;

#[tokio::test]
async fn purge_deletes_only_what_can_no_longer_be_used() -> anyhow::Result<()> {
    let api = common::TestApi::start(&[]).await?;
    let (user, _) = api.user("janitor@example.com", Role::Buyer).await?;
    let now = Utc::now();
    // (expires_at, should survive)
    let tokens = [
        (now - Duration::days(3), false),
        (now - Duration::hours(25), false),
        (now - Duration::hours(1), true), // expired, but kept for a day
        (now + Duration::days(10), true),
    ];
    let mut survivors = Vec::new();
    for (expires, survives) in tokens {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(Uuid::now_v7())
        .bind(user)
        .bind(rand::random::<[u8; 32]>().to_vec())
        .bind(now - Duration::days(20))
        .bind(expires)
        .execute(api.mysql())
        .await?;
        if survives {
            survivors.push(id);
        }
    }
    let (live, _) = api.user("janitor-live@example.com", Role::Buyer).await?;
    for (who, expires) in [
        (user, now - Duration::minutes(1)),
        (live, now + Duration::minutes(9)),
    ] {
        sqlx::query(
            "INSERT INTO email_codes (user_id, code_hash, attempts, expires_at, sent_at) \
             VALUES (?, ?, 0, ?, ?)",
        )
        .bind(who)
        .bind([0u8; 32].to_vec())
        .bind(expires)
        .bind(now - Duration::minutes(10))
        .execute(api.mysql())
        .await?;
    }

    let purged = janitor::purge(api.mysql()).await?;
    assert_eq!(purged.refresh_tokens, 2);
    assert_eq!(purged.email_codes, 1);
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM refresh_tokens ORDER BY id")
        .fetch_all(api.mysql())
        .await?;
    survivors.sort();
    assert_eq!(left, survivors);
    let codes: Vec<dropline_core::ids::UserId> =
        sqlx::query_scalar("SELECT user_id FROM email_codes")
            .fetch_all(api.mysql())
            .await?;
    assert_eq!(codes, vec![live]);
    // Nothing left to do: a second run deletes nothing.
    assert_eq!(
        janitor::purge(api.mysql()).await?,
        janitor::Purged::default()
    );
    api.stop().await
}
