//! `dropline user create`: a verified account made at once, without e-mail (the first admin,
//! say), by the account rules the api's sign-up follows (`dropline_core::auth::accounts`).
//! `dropline user collisions`: the accounts whose stored addresses become one address in the
//! canonical form, listed before an upgrade (read-only).

use std::process::ExitCode;

use dropline_core::Config;
use dropline_core::auth::accounts::{
    CreateError, EmailScan, StoredEmail, create_verified_user, scan_emails,
};
use dropline_core::auth::tokens::Role;
use dropline_core::clients::mysql;

/// What `dropline user create` was asked for.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub password: String,
    /// Display name (default: the part of the e-mail before `@`).
    pub name: Option<String>,
    pub admin: bool,
}

/// Creates the account and prints its id: exit 0, or 2 when the input is refused (a bad
/// e-mail, password or name, or an address already taken; nothing is written then).
pub async fn create(config: &Config, user: NewUser) -> anyhow::Result<ExitCode> {
    let pool = mysql::connect(&config.mysql).await?;
    if config.mysql.run_migrations {
        mysql::migrate(&pool).await?;
    }
    let hasher = dropline_core::auth::password::Hasher::from_config(&config.auth)?;
    let role = if user.admin { Role::Admin } else { Role::Buyer };
    let created = create_verified_user(
        &pool,
        &hasher,
        &user.email,
        &user.password,
        user.name.as_deref(),
        role,
    )
    .await;
    pool.close().await;
    match created {
        Ok(id) => {
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Err(CreateError::Other(e)) => Err(e),
        Err(e) => {
            eprintln!("dropline: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// Lists the accounts that become one address in canonical form (exit 1 when there is any,
/// 0 otherwise), the addresses the next migration rewrites, and those with no canonical form.
/// Reads only, and runs against a database not yet migrated: that is when it helps most.
pub async fn collisions(config: &Config) -> anyhow::Result<ExitCode> {
    let pool = mysql::connect_existing(&config.mysql).await?;
    let scan = scan_emails(&pool).await;
    pool.close().await;
    let scan = scan?;
    print!("{}", collisions_report(&scan));
    Ok(if scan.collisions.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The terminal report of [`collisions`].
pub fn collisions_report(scan: &EmailScan) -> String {
    use std::fmt::Write as _;
    let line = |account: &StoredEmail| {
        format!(
            "    {}  {}  {}\n",
            account.id,
            account.stored,
            if account.verified {
                "verified"
            } else {
                "unverified"
            }
        )
    };
    let mut out = String::new();
    if scan.collisions.is_empty() {
        out.push_str("no two accounts share an address in canonical form\n");
    } else {
        let _ = writeln!(
            out,
            "{} address(es) held by more than one account once canonical (left unchanged until an operator merges, renames or deletes them):",
            scan.collisions.len()
        );
        for collision in &scan.collisions {
            let _ = writeln!(out, "  {}", collision.canonical);
            for account in &collision.accounts {
                out.push_str(&line(account));
            }
        }
    }
    let _ = writeln!(
        out,
        "{} stored address(es) to be rewritten to their canonical form at the next migration",
        scan.rewrites.len()
    );
    if !scan.invalid.is_empty() {
        let _ = writeln!(
            out,
            "{} stored address(es) with no canonical form (their owners cannot sign in):",
            scan.invalid.len()
        );
        for account in &scan.invalid {
            out.push_str(&line(account));
        }
    }
    out
}
