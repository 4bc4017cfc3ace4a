//! Mints admitted buyers for the order benchmark:
//! `mint-buyers ACCESS.pem PASS.pem SALE COUNT > buyers.txt`.
//!
//! For each of COUNT fresh user ids: an access token (signed with ACCESS.pem, the server's
//! `auth.signing_key_file`), a pass for SALE (signed with PASS.pem, its
//! `passes.signing_key_file`), and the admission the waiting room would have written (the
//! user in the sale's `adm` zset for an hour, in the Redis that `DROPLINE_REDIS__URL` and
//! `DROPLINE_REDIS__KEY_PREFIX` name). One `token<TAB>pass` line per buyer. Lets
//! `scripts/bench` measure `POST /api/orders` without paying sign-ups and waiting in line,
//! which are not what that row measures.

mod mint;

use std::io::{BufWriter, Write};

use anyhow::Context;
use dropline_core::auth::tokens::{PassClaims, sign};
use dropline_core::clients::redis::Redis;
use dropline_core::config::{Config, Sources};
use dropline_core::ids::SaleId;
use fred::interfaces::SortedSetsInterface;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [access, pass, sale, count] = args.as_slice() else {
        anyhow::bail!("usage: mint-buyers ACCESS.pem PASS.pem SALE COUNT");
    };
    let sale = SaleId::parse_str(sale).context("SALE must be a sale id")?;
    let count: usize = count.parse().context("COUNT must be a number")?;
    let (access, passes) = (mint::ring(access)?, mint::ring(pass)?);
    let config = Config::load(&Sources {
        file: None,
        env: true,
        overrides: Vec::new(),
    })?;
    let redis = Redis::connect(&config.redis).await?;
    let now = chrono::Utc::now();
    let deadline_ms = (now + chrono::Duration::hours(1)).timestamp_millis();
    let out = std::io::stdout();
    let mut out = BufWriter::new(out.lock());
    let mut admitted: Vec<(f64, Vec<u8>)> = Vec::with_capacity(count);
    for _ in 0..count {
        let (user, token) = mint::buyer(&access)?;
        let claims = PassClaims::new(user, sale, now.timestamp(), now.timestamp() + 3600);
        let pass = sign(&passes, &claims)?;
        writeln!(out, "{token}\t{pass}")?;
        admitted.push((deadline_ms as f64, user.as_bytes().to_vec()));
    }
    for chunk in admitted.chunks(1000) {
        let _: i64 = redis
            .pool()
            .zadd(
                redis.sale_key(sale, "adm"),
                None,
                None,
                false,
                false,
                chunk.to_vec(),
            )
            .await
            .context("admitting the buyers")?;
    }
    out.flush()?;
    redis.quit().await;
    Ok(())
}
