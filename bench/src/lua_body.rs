//! Prints what Redis runs for one of Dropline's Lua scripts, by file name: the prelude's items
//! the script uses, then its file (`dropline_core::lua::runnable`). For a tool that loads a
//! script itself, as `scripts/bench`'s `redis-benchmark` ceiling does with `reserve`, so that
//! it runs what the servers run.
//!
//!     lua-body reserve

use std::io::Write;

fn main() -> anyhow::Result<()> {
    let name = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: lua-body NAME (a file of lua/, e.g. reserve)"))?;
    let script = dropline_core::lua::scripts::all()
        .into_iter()
        .chain(dropline_waitroom::scripts::all())
        .find(|s| s.name() == name)
        .ok_or_else(|| anyhow::anyhow!("no script named {name} (a file of lua/ without .lua)"))?;
    std::io::stdout().write_all(script.body().as_bytes())?;
    Ok(())
}
