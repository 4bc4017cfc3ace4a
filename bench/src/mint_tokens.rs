//! Mints access tokens for load generators: `mint-tokens KEY.pem COUNT > tokens.txt`.
//!
//! One token per line, each for a fresh user id with the buyer role, valid one hour, signed with
//! the Ed25519 PKCS#8 key in KEY.pem (the same file the server under test is given as
//! `auth.signing_key_file`). Lets `scripts/bench` measure joins by distinct buyers without
//! paying argon2 sign-ups, which are not what the join benchmark measures.

mod mint;

use std::io::{BufWriter, Write};

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(key), Some(count)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: mint-tokens KEY.pem COUNT");
    };
    let count: usize = count.parse().context("COUNT must be a number")?;
    let ring = mint::ring(&key)?;
    let out = std::io::stdout();
    let mut out = BufWriter::new(out.lock());
    for _ in 0..count {
        let (_, token) = mint::buyer(&ring)?;
        writeln!(out, "{token}")?;
    }
    out.flush()?;
    Ok(())
}
