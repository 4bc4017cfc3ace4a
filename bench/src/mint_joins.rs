//! Mints joins with solved proof of work for the join benchmark with a difficulty on
//! (door.md §1): `mint-joins ACCESS.pem PASS.pem SALE DIFFICULTY TTL_SECONDS COUNT > joins.txt`.
//!
//! For each of COUNT fresh user ids: an access token (signed with ACCESS.pem, the server's
//! `auth.signing_key_file`), a challenge for SALE at DIFFICULTY good for TTL_SECONDS from now
//! (keyed, as the waitroom keys it, by a secret derived from PASS.pem, its
//! `passes.signing_key_file`), and the nonce that solves it. One `token<TAB>body` line per
//! buyer, body the JSON the join takes: `{"challenge":"…","nonce":N}`. The challenge is what
//! `GET /w/{sale}/challenge` would have answered, so the load generator pays neither that call
//! (limited per IP) nor the solving during the measured run; the server's side of the join
//! (body, MAC, zero bits, the spent marker in `wr_join.lua`) costs the same at any difficulty.
//! The expiry is by this machine's clock: run it on the server's machine (or one in step with
//! its Redis) and make TTL_SECONDS cover the minting and the run.

mod mint;

use std::io::{BufWriter, Write};

use anyhow::Context;
use dropline_core::ids::SaleId;
use dropline_waitroom::pow::{self, PowKey};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [access, pass, sale, difficulty, ttl, count] = args.as_slice() else {
        anyhow::bail!("usage: mint-joins ACCESS.pem PASS.pem SALE DIFFICULTY TTL_SECONDS COUNT");
    };
    let sale = SaleId::parse_str(sale).context("SALE must be a sale id")?;
    let difficulty: u8 = difficulty
        .parse()
        .ok()
        .filter(|d| (1..=pow::MAX_DIFFICULTY).contains(d))
        .with_context(|| format!("DIFFICULTY must be 1..={}", pow::MAX_DIFFICULTY))?;
    let ttl: u64 = ttl.parse().context("TTL_SECONDS must be a number")?;
    let count: usize = count.parse().context("COUNT must be a number")?;
    let access = mint::ring(access)?;
    let key = PowKey::new(mint::read_key(pass)?.derive_secret(PowKey::LABEL))?;
    let expires_at_ms = u64::try_from(chrono::Utc::now().timestamp_millis())
        .context("the clock is before 1970")?
        .saturating_add(ttl.saturating_mul(1000));
    let out = std::io::stdout();
    let mut out = BufWriter::new(out.lock());
    for _ in 0..count {
        let (user, token) = mint::buyer(&access)?;
        let challenge = key.issue(sale, user, expires_at_ms, difficulty);
        let nonce = pow::solve(&challenge, difficulty).context("no nonce up to 2^53 - 1")?;
        writeln!(
            out,
            "{token}\t{{\"challenge\":\"{challenge}\",\"nonce\":{nonce}}}"
        )?;
    }
    out.flush()?;
    Ok(())
}
