//! `dropline loadtest seed`: verified buyer accounts in bulk, each with an access token, for
//! load tests (the k6 scenarios).
//!
//! Making 100,000 buyers through sign-up would measure argon2 and e-mail codes, not the sale.
//! Here the accounts share one password, hashed once with the configured argon2 settings (so
//! a load test can still log in as any of them), go into MySQL 1,000 rows per statement, and
//! their access tokens are signed locally with the api's key, exactly as `POST
//! /api/auth/login` would sign them. It runs only when `loadtest.allow` is true.
//!
//! Output, one line per buyer: `user_id<TAB>email<TAB>access_token`. E-mails are
//! `load-<run>-<n>@loadtest.invalid` (`.invalid` never resolves, RFC 2606), with a random run
//! id so that seeding again adds buyers instead of colliding with the last run's.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{SubsecRound, Utc};
use dropline_core::Config;
use dropline_core::auth::accounts::check_password;
use dropline_core::auth::keys::{self, KeyRing};
use dropline_core::auth::password::Hasher;
use dropline_core::auth::tokens::{Role, issue_access};
use dropline_core::clients::mysql;
use dropline_core::ids::UserId;
use sqlx::{MySql, MySqlPool, QueryBuilder};
use uuid::Uuid;

/// Most buyers one seed makes.
pub const MAX_USERS: u32 = 1_000_000;

/// Rows per INSERT statement.
const ROWS_PER_STATEMENT: usize = 1_000;

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub users: u32,
    /// The password every seeded buyer shares.
    pub password: String,
    /// How long each access token is valid.
    pub token_ttl: Duration,
}

/// Why a seed was refused before anything was written.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(
        "loadtest seeding is off: set loadtest.allow = true (DROPLINE_LOADTEST__ALLOW=true) on a deployment meant for load tests"
    )]
    NotAllowed,
    #[error("--users must be between 1 and {MAX_USERS}")]
    BadCount,
    #[error("{0}")]
    BadPassword(String),
}

/// Checks the options before anything connects or writes.
pub fn check(allowed: bool, options: &SeedOptions) -> Result<(), SeedError> {
    if !allowed {
        return Err(SeedError::NotAllowed);
    }
    if options.users == 0 || options.users > MAX_USERS {
        return Err(SeedError::BadCount);
    }
    check_password(&options.password).map_err(|e| SeedError::BadPassword(e.to_string()))?;
    Ok(())
}

/// Makes `options.users` verified buyers and writes one line per buyer to `out` (see the
/// module docs). Each statement's rows are written out once it commits, so an interrupted seed
/// leaves complete lines for the accounts that exist. Returns how many were made.
pub async fn seed(
    pool: &MySqlPool,
    hasher: &Hasher,
    ring: &KeyRing,
    options: &SeedOptions,
    out: &mut impl Write,
) -> anyhow::Result<u32> {
    let hash = hasher
        .hash_async(options.password.clone())
        .await
        .context("hashing the shared password")?;
    let run = Uuid::new_v4().simple().to_string();
    let run = &run[..8];
    let total = options.users as usize;
    let mut made = 0usize;
    while made < total {
        let count = ROWS_PER_STATEMENT.min(total - made);
        let now = Utc::now().trunc_subsecs(3);
        let rows: Vec<(UserId, String)> = (made..made + count)
            .map(|n| (UserId::new_v7(), format!("load-{run}-{n}@loadtest.invalid")))
            .collect();
        let mut insert = QueryBuilder::<MySql>::new(
            "INSERT INTO users (id, email, password_hash, name, role, email_verified_at, \
             created_at, updated_at) ",
        );
        insert.push_values(&rows, |mut b, (id, email)| {
            b.push_bind(*id)
                .push_bind(email.as_str())
                .push_bind(hash.as_str())
                .push_bind("Load test buyer")
                .push_bind(Role::Buyer.as_str())
                .push_bind(now)
                .push_bind(now)
                .push_bind(now);
        });
        insert
            .build()
            .execute(pool)
            .await
            .with_context(|| format!("inserting buyers {made}..{}", made + count))?;
        for (id, email) in &rows {
            let (token, _) = issue_access(ring, *id, Role::Buyer, options.token_ttl)
                .with_context(|| format!("signing an access token for {id}"))?;
            writeln!(out, "{id}\t{email}\t{token}").context("writing the seed output")?;
        }
        made += count;
    }
    out.flush().context("writing the seed output")?;
    Ok(u32::try_from(made).unwrap_or(u32::MAX))
}

/// `dropline loadtest seed`: checked (allowed, sane, a signing key) before connecting; exit 2
/// with nothing changed when refused. Writes to `out`, or to stdout.
pub async fn seed_command(
    config: &Config,
    options: SeedOptions,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if let Err(refused) = check(config.loadtest.allow, &options) {
        eprintln!("dropline: {refused}; nothing was changed");
        return Ok(ExitCode::from(2));
    }
    let ring = match keys::access_ring(&config.auth) {
        Ok(ring) => ring.filter(|ring| ring.signer().is_some()),
        Err(error) => {
            eprintln!("dropline: {error:#}; nothing was changed");
            return Ok(ExitCode::from(2));
        }
    };
    let Some(ring) = ring else {
        eprintln!(
            "dropline: loadtest seed signs access tokens with the api's key: set \
             auth.signing_key_file (or DROPLINE_AUTH__SIGNING_KEY) to the key the api runs with; \
             nothing was changed"
        );
        return Ok(ExitCode::from(2));
    };
    let hasher = dropline_core::auth::password::Hasher::from_config(&config.auth)?;
    let mut writer: Box<dyn std::io::Write> = match &out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let pool = mysql::connect(&config.mysql).await?;
    if config.mysql.run_migrations {
        mysql::migrate(&pool).await?;
    }
    let started = std::time::Instant::now();
    let made = seed(&pool, &hasher, &ring, &options, &mut writer).await;
    pool.close().await;
    let made = made?;
    eprintln!(
        "dropline: seeded {made} verified buyer(s) in {:.1} s; tokens valid for {} s",
        started.elapsed().as_secs_f64(),
        options.token_ttl.as_secs()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(users: u32) -> SeedOptions {
        SeedOptions {
            users,
            password: "load-test-password".into(),
            token_ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn refused_unless_allowed_and_sane() {
        assert!(matches!(
            check(false, &options(10)),
            Err(SeedError::NotAllowed)
        ));
        assert!(matches!(check(true, &options(0)), Err(SeedError::BadCount)));
        assert!(matches!(
            check(true, &options(MAX_USERS + 1)),
            Err(SeedError::BadCount)
        ));
        assert!(matches!(
            check(
                true,
                &SeedOptions {
                    password: "short".into(),
                    ..options(1)
                }
            ),
            Err(SeedError::BadPassword(_))
        ));
        assert!(check(true, &options(10)).is_ok());
    }
}
