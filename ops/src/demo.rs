//! The demo sale of `dropline all --demo`: one product and one sale with fixed ids, created
//! once (re-running changes nothing) and armed in Redis, so a newcomer has something to open in
//! a browser.

use std::net::SocketAddr;

use anyhow::Context;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use dropline_core::auth::accounts::{CreateError, create_verified_user};
use dropline_core::auth::password::Hasher;
use dropline_core::auth::tokens::Role;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::{ProductId, SaleId};
use dropline_core::sale::{self, SaleConfig};
use sqlx::MySqlPool;
use uuid::Uuid;

/// The demo buyer, made verified at once so a newcomer can sign in on the waiting page without
/// an SMTP server. Public on purpose: it exists only in `--demo` deployments.
pub const BUYER_EMAIL: &str = "buyer@demo.dropline.dev";
pub const BUYER_PASSWORD: &str = "demo-buyer-password";

/// Fixed ids so that the URLs stay the same from one start to the next.
pub const PRODUCT_ID: ProductId =
    ProductId::from_uuid(Uuid::from_u128(0x019ab000_0000_7000_8000_00000000d001));
pub const SALE_ID: SaleId =
    SaleId::from_uuid(Uuid::from_u128(0x019ab000_0000_7000_8000_00000000d002));

#[derive(Debug)]
pub struct Demo {
    pub sale_id: SaleId,
    pub opens_at: DateTime<Utc>,
    pub stock: i32,
}

/// Creates the demo buyer, product and sale unless they exist, arms the sale in Redis unless it
/// is armed already, and returns the sale.
pub async fn ensure(pool: &MySqlPool, redis: &Redis, hasher: &Hasher) -> anyhow::Result<Demo> {
    match create_verified_user(
        pool,
        hasher,
        BUYER_EMAIL,
        BUYER_PASSWORD,
        Some("Demo buyer"),
        Role::Buyer,
    )
    .await
    {
        Ok(_) | Err(CreateError::EmailTaken) => {}
        Err(error) => return Err(anyhow::anyhow!("creating the demo buyer: {error}")),
    }
    let now = Utc::now().trunc_subsecs(3);
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT IGNORE INTO products (id, name, description, price, currency, created_at) \
         VALUES (?, ?, ?, ?, 'KRW', ?)",
    )
    .bind(PRODUCT_ID)
    .bind("Limited-edition chair")
    .bind("Demo product: 100 numbered chairs, one per buyer.")
    .bind(390_000_i64)
    .bind(now)
    .execute(&mut *tx)
    .await
    .context("creating the demo product")?;
    sqlx::query(
        "INSERT IGNORE INTO sales (id, product_id, stock_total, opens_at, per_user_limit, \
         hold_seconds, admit_per_second, created_at, updated_at) \
         VALUES (?, ?, 100, ?, 1, 600, 20, ?, ?)",
    )
    .bind(SALE_ID)
    .bind(PRODUCT_ID)
    .bind(now + Duration::minutes(2))
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await
    .context("creating the demo sale")?;
    let (opens_at, stock): (DateTime<Utc>, i32) =
        sqlx::query_as("SELECT opens_at, stock_total FROM sales WHERE id = ?")
            .bind(SALE_ID)
            .fetch_one(&mut *tx)
            .await
            .context("reading the demo sale")?;
    tx.commit().await?;
    let config = SaleConfig::load(pool, SALE_ID)
        .await?
        .context("the demo sale vanished after it was created")?;
    if sale::arm(redis, SALE_ID, &config)
        .await
        .context("arming the demo sale in Redis")?
    {
        tracing::info!(sale_id = %SALE_ID, "demo sale armed in Redis");
    } else {
        tracing::info!(sale_id = %SALE_ID, "demo sale was armed already");
    }
    Ok(Demo {
        sale_id: SALE_ID,
        opens_at,
        stock,
    })
}

pub fn print_urls(demo: &Demo, waitroom: SocketAddr, api: SocketAddr) {
    println!();
    println!(
        "demo sale {} — {} chairs, opens at {}",
        demo.sale_id,
        demo.stock,
        demo.opens_at.to_rfc3339()
    );
    println!("  waiting page:  http://{waitroom}/w/{}", demo.sale_id);
    println!("  sign in as:    {BUYER_EMAIL} / {BUYER_PASSWORD}");
    println!("  sale (api):    http://{api}/api/sales/{}", demo.sale_id);
    println!(
        "  console:       http://{waitroom}/w/admin  (an admin: `dropline user create --admin`)"
    );
    println!(
        "  control room:  http://{waitroom}/w/{}/control",
        demo.sale_id
    );
    println!("  health:        http://{waitroom}/readyz  http://{api}/readyz");
    println!("  metrics:       http://{waitroom}/metrics  http://{api}/metrics");
    println!();
}
