//! Draw sales for tests (design/draw.md): a sale and its draw written to MySQL as the api
//! writes them and armed in Redis, and accounts to enter with.

use chrono::Utc;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::{ProductId, SaleId, UserId};
use dropline_core::sale::draw::{self, DrawSettings};
use dropline_core::sale::{self, Door, SaleConfig};
use sqlx::MySqlPool;

/// A draw sale of `stock` units, one per account: entries open `opens_in` from now (negative:
/// already open) and close `close_in` from now; claims of 1,800 s. `seed` fixes the draw's
/// seed (random when `None`).
pub async fn sale(
    pool: &MySqlPool,
    redis: &Redis,
    stock: i32,
    opens_in: chrono::Duration,
    close_in: chrono::Duration,
    door: &Door,
    seed: Option<draw::Seed>,
) -> anyhow::Result<SaleId> {
    sale_with(
        pool,
        redis,
        &Options {
            stock,
            opens_in,
            close_in,
            seed,
            ..Options::default()
        },
        door,
    )
    .await
}

/// What [`sale_with`] makes.
#[derive(Debug, Clone)]
pub struct Options {
    pub stock: i32,
    pub opens_in: chrono::Duration,
    pub close_in: chrono::Duration,
    pub seed: Option<draw::Seed>,
    /// `per_user_limit`: the most one win may buy.
    pub per_user_limit: i32,
    pub claim_seconds: i64,
    /// Holds of unpaid orders.
    pub hold_seconds: i32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            stock: 10,
            opens_in: chrono::Duration::seconds(-1),
            close_in: chrono::Duration::seconds(2),
            seed: None,
            per_user_limit: 1,
            claim_seconds: 1800,
            hold_seconds: 600,
        }
    }
}

/// A draw sale as `options` says, written to MySQL as the api writes it and armed in Redis.
pub async fn sale_with(
    pool: &MySqlPool,
    redis: &Redis,
    options: &Options,
    door: &Door,
) -> anyhow::Result<SaleId> {
    let Options {
        stock,
        opens_in,
        close_in,
        seed,
        per_user_limit,
        claim_seconds,
        hold_seconds,
    } = options.clone();
    let product = ProductId::new_v7();
    let id = SaleId::new_v7();
    let now = Utc::now();
    let opens_at = now + opens_in;
    let close_at = now + close_in;
    sqlx::query(
        "INSERT INTO products (id, name, price, currency, created_at) \
         VALUES (?, 'Sneakers', 15000, 'KRW', UTC_TIMESTAMP(3))",
    )
    .bind(product)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO sales (id, product_id, stock_total, opens_at, per_user_limit, hold_seconds, \
           admit_per_second, pow_difficulty, mode, entries_close_at, claim_seconds, created_at, \
           updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, 100, ?, 'draw', ?, ?, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
    )
    .bind(id)
    .bind(product)
    .bind(stock)
    .bind(opens_at.naive_utc())
    .bind(per_user_limit)
    .bind(hold_seconds)
    .bind(door.pow_difficulty)
    .bind(close_at.naive_utc())
    .bind(claim_seconds)
    .execute(pool)
    .await?;
    let seed = seed.unwrap_or_else(|| {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
        seed
    });
    sqlx::query("INSERT INTO draws (sale_id, seed, seed_commitment) VALUES (?, ?, ?)")
        .bind(id)
        .bind(&seed[..])
        .bind(&draw::seed_commitment(&seed)[..])
        .execute(pool)
        .await?;
    let config = SaleConfig {
        product_id: product,
        price: 15000,
        currency: "KRW".into(),
        stock_total: i64::from(stock),
        opens_at,
        closes_at: None,
        per_user_limit: i64::from(per_user_limit),
        hold_seconds: i64::from(hold_seconds),
        admit_per_second: 100,
        max_active: None,
        paused: false,
        closed: false,
        line_shards: 1,
    };
    let settings = DrawSettings {
        entries_close_at: close_at,
        claim_seconds,
    };
    anyhow::ensure!(
        sale::arm_full(redis, id, &config, door, Some(&settings), 0, 0).await?,
        "sale {id} was armed already"
    );
    Ok(id)
}

/// `n` accounts, with verified addresses or not.
pub async fn accounts(pool: &MySqlPool, n: usize, verified: bool) -> anyhow::Result<Vec<UserId>> {
    let users: Vec<UserId> = (0..n).map(|_| UserId::new_v7()).collect();
    let now = Utc::now().naive_utc();
    for chunk in users.chunks(500) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO users (id, email, password_hash, name, email_verified_at, created_at, \
             updated_at) ",
        );
        q.push_values(chunk, |mut row, user| {
            row.push_bind(*user)
                .push_bind(format!("{user}@example.test"))
                .push_bind("x")
                .push_bind("Entrant")
                .push_bind(verified.then_some(now))
                .push_bind(now)
                .push_bind(now);
        });
        q.build().execute(pool).await?;
    }
    Ok(users)
}
