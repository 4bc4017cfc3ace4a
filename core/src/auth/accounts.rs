//! Accounts: input rules for e-mail, password, name, phone and address, and storing a user.
//!
//! Shared by the api's sign-up flow and by `dropline user create` (`dropline-ops`).

use crate::auth::password::Hasher;
use crate::auth::tokens::Role;
use crate::ids::UserId;
use std::collections::BTreeMap;

use anyhow::Context;
use chrono::{SubsecRound, Utc};
use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use sqlx::MySqlPool;
use unicode_normalization::UnicodeNormalization;

/// Why an account could not be created; each maps to a contract error code.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    Invalid(String),
    #[error("this e-mail address is already registered")]
    EmailTaken,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The one canonical form of an e-mail address, the form stored in `users.email` (a binary
/// collation: two addresses are one account exactly when their canonical forms are equal) and
/// the key of every per-address limit:
///
/// - trimmed, Unicode NFC, lower case (the local part: mailbox names are case-insensitive in
///   practice, and NFC makes `u` + U+0308 and `ü` one address);
/// - the domain by UTS #46 (IDNA) to Unicode: `xn--` labels decoded, full-width and other
///   compatibility forms mapped, STD3 rules and DNS lengths checked, so `BÜCHER.example`,
///   `bücher.example` and `xn--bcher-kva.example` are one domain, stored as `bücher.example`;
/// - one `@`, a dotted domain, a local part of 1 to 64 bytes, at most 254 characters, no
///   spaces or control characters.
///
/// Look-alikes stay different addresses (`büyer@…` is not `buyer@…`): only what is *the same
/// address* by the rules above folds together.
pub fn normalize_email(raw: &str) -> Result<String, CreateError> {
    let trimmed = raw.trim();
    let bad = || CreateError::Invalid(format!("`{trimmed}` is not an e-mail address"));
    // Bounded before any Unicode work (an attacker's megabyte costs nothing here).
    if trimmed.len() > 4 * 254 {
        return Err(bad());
    }
    let folded: String = trimmed.nfc().collect::<String>().to_lowercase();
    let folded: String = folded.nfc().collect();
    if folded.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = folded.split_once('@').ok_or_else(bad)?;
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return Err(bad());
    }
    let uts46 = Uts46::new();
    // The ASCII form checks what DNS accepts (label and name lengths, STD3 characters)...
    uts46
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::Check,
            DnsLength::Verify,
        )
        .map_err(|_| bad())?;
    // ...the Unicode form is the one stored.
    let (unicode, checked) =
        uts46.to_unicode(domain.as_bytes(), AsciiDenyList::STD3, Hyphens::Check);
    checked.map_err(|_| bad())?;
    if !unicode.contains('.') || unicode.starts_with('.') || unicode.ends_with('.') {
        return Err(bad());
    }
    let email = format!("{local}@{unicode}");
    if email.chars().count() > 254 {
        return Err(bad());
    }
    Ok(email)
}

/// Passwords are 8 to 128 characters (DESIGN §9).
pub fn check_password(password: &str) -> Result<(), CreateError> {
    let n = password.chars().count();
    if (8..=128).contains(&n) {
        Ok(())
    } else {
        Err(CreateError::Invalid(
            "the password must be 8 to 128 characters".into(),
        ))
    }
}

/// Names are 1 to 100 characters after trimming.
pub fn check_name(name: &str) -> Result<String, CreateError> {
    let name = name.trim();
    let n = name.chars().count();
    if (1..=100).contains(&n) && !name.chars().any(char::is_control) {
        Ok(name.to_owned())
    } else {
        Err(CreateError::Invalid(
            "the name must be 1 to 100 characters".into(),
        ))
    }
}

/// Phones are 4 to 32 characters of digits, spaces and `+ - ( ) .`, with at least 4 digits.
pub fn check_phone(phone: &str) -> Result<String, CreateError> {
    let phone = phone.trim();
    let ok = (4..=32).contains(&phone.chars().count())
        && phone
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '+' | '-' | '(' | ')' | '.'))
        && phone.chars().filter(char::is_ascii_digit).count() >= 4;
    if ok {
        Ok(phone.to_owned())
    } else {
        Err(CreateError::Invalid(
            "phone: expected 4 to 32 characters of digits, spaces and + - ( ) .".into(),
        ))
    }
}

/// Addresses are 1 to 500 characters after trimming (line breaks allowed).
pub fn check_address(address: &str) -> Result<String, CreateError> {
    let address = address.trim();
    let n = address.chars().count();
    if (1..=500).contains(&n)
        && !address
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\r')
    {
        Ok(address.to_owned())
    } else {
        Err(CreateError::Invalid(
            "address: expected 1 to 500 characters".into(),
        ))
    }
}

/// Creates an account that is verified at once (no e-mail), e.g. the first admin.
pub async fn create_verified_user(
    pool: &MySqlPool,
    hasher: &Hasher,
    email: &str,
    password: &str,
    name: Option<&str>,
    role: Role,
) -> Result<UserId, CreateError> {
    let email = normalize_email(email)?;
    check_password(password)?;
    let name = check_name(name.unwrap_or_else(|| email.split('@').next().unwrap_or("user")))?;
    let hash = hasher.hash_async(password.to_owned()).await?;
    let id = UserId::new_v7();
    let now = Utc::now().trunc_subsecs(3);
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, password_hash, name, role, email_verified_at, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(&email)
    .bind(&hash)
    .bind(&name)
    .bind(role.as_str())
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(pool)
    .await;
    match inserted {
        Ok(_) => Ok(id),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(CreateError::EmailTaken),
        Err(e) => Err(CreateError::Other(
            anyhow::Error::new(e).context("inserting a user"),
        )),
    }
}

/// One account in an [`EmailScan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEmail {
    pub id: UserId,
    pub stored: String,
    pub verified: bool,
}

/// Accounts whose stored addresses are one address in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    pub canonical: String,
    pub accounts: Vec<StoredEmail>,
}

/// What [`scan_emails`] found: addresses stored before the canonical form existed.
#[derive(Debug, Clone, Default)]
pub struct EmailScan {
    /// Rewritable at once: (account, canonical form).
    pub rewrites: Vec<(StoredEmail, String)>,
    /// Stored addresses that have no canonical form (e.g. a domain UTS #46 refuses); their
    /// owners cannot sign in until an operator changes them.
    pub invalid: Vec<StoredEmail>,
    /// Two or more accounts that would become one: left as they are, for an operator.
    pub collisions: Vec<Collision>,
}

/// Finds the stored addresses that differ from their canonical form, and the accounts that
/// would collide once canonical. Only addresses with a non-ASCII character or an `xn--` label
/// can differ (before the canonical form, addresses were trimmed and lower-cased), so this
/// reads those rows, then looks up their canonical forms: cheap on a million accounts.
pub async fn scan_emails(pool: &MySqlPool) -> anyhow::Result<EmailScan> {
    let rows: Vec<(UserId, String, bool)> = sqlx::query_as(
        "SELECT id, email, email_verified_at IS NOT NULL FROM users \
         WHERE email REGEXP '[^ -~]' OR email LIKE '%xn--%' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .context("reading addresses that may not be canonical")?;
    let mut scan = EmailScan::default();
    let mut by_canonical: BTreeMap<String, Vec<StoredEmail>> = BTreeMap::new();
    for (id, stored, verified) in rows {
        let account = StoredEmail {
            id,
            stored,
            verified,
        };
        match normalize_email(&account.stored) {
            Err(_) => scan.invalid.push(account),
            Ok(canonical) => by_canonical.entry(canonical).or_default().push(account),
        }
    }
    // Accounts already stored under a canonical form that a rewrite would take.
    for (canonical, accounts) in &mut by_canonical {
        if accounts.iter().all(|a| &a.stored == canonical) {
            continue;
        }
        let holder: Option<(UserId, bool)> =
            sqlx::query_as("SELECT id, email_verified_at IS NOT NULL FROM users WHERE email = ?")
                .bind(canonical.as_str())
                .fetch_optional(pool)
                .await
                .context("looking up a canonical address")?;
        if let Some((id, verified)) = holder
            && !accounts.iter().any(|a| a.id == id)
        {
            accounts.push(StoredEmail {
                id,
                stored: canonical.clone(),
                verified,
            });
        }
    }
    for (canonical, accounts) in by_canonical {
        if accounts.len() > 1 {
            scan.collisions.push(Collision {
                canonical,
                accounts,
            });
        } else if let Some(account) = accounts.into_iter().next()
            && account.stored != canonical
        {
            scan.rewrites.push((account, canonical));
        }
    }
    Ok(scan)
}

/// The data step's name in `data_steps`.
const CANONICAL_STEP: &str = "email_canonical_v1";

/// Rewrites addresses stored before the canonical form existed (run after the migrations, by
/// every service at start and by `dropline migrate`). Two accounts that would become one are
/// left as they are and named in an error log line each time, and the step stays pending until
/// an operator resolves them (`dropline user collisions` lists them): a collision never stops
/// a service. Returns the scan it acted on (`None` when the step had already completed).
pub async fn canonicalize_stored(pool: &MySqlPool) -> anyhow::Result<Option<EmailScan>> {
    let done: Option<i32> = sqlx::query_scalar("SELECT 1 FROM data_steps WHERE name = ?")
        .bind(CANONICAL_STEP)
        .fetch_optional(pool)
        .await
        .context("reading data_steps")?;
    if done.is_some() {
        return Ok(None);
    }
    let scan = scan_emails(pool).await?;
    let mut blocked = scan.collisions.len();
    for (account, canonical) in &scan.rewrites {
        let rewritten = sqlx::query(
            "UPDATE users SET email = ?, updated_at = UTC_TIMESTAMP(3) WHERE id = ? AND email = ?",
        )
        .bind(canonical.as_str())
        .bind(account.id)
        .bind(account.stored.as_str())
        .execute(pool)
        .await;
        match rewritten {
            Ok(_) => {
                tracing::info!(user = %account.id, "stored e-mail address rewritten to its canonical form");
            }
            // Taken since the scan (a sign-up in between): a collision like the others.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                blocked += 1;
                tracing::error!(user = %account.id, canonical = %canonical, "e-mail address not rewritten: another account took its canonical form; see `dropline user collisions`");
            }
            Err(e) => return Err(anyhow::Error::new(e).context("rewriting a stored address")),
        }
    }
    for collision in &scan.collisions {
        let ids: Vec<String> = collision
            .accounts
            .iter()
            .map(|a| a.id.to_string())
            .collect();
        tracing::error!(
            canonical = %collision.canonical,
            accounts = %ids.join(","),
            "e-mail addresses that are one address in canonical form: left unchanged for an operator; see `dropline user collisions`"
        );
    }
    for account in &scan.invalid {
        tracing::warn!(user = %account.id, "stored e-mail address has no canonical form (its owner cannot sign in); see `dropline user collisions`");
    }
    if blocked == 0 {
        sqlx::query("INSERT IGNORE INTO data_steps (name, done_at) VALUES (?, UTC_TIMESTAMP(3))")
            .bind(CANONICAL_STEP)
            .execute(pool)
            .await
            .context("recording the canonical e-mail step")?;
    }
    Ok(Some(scan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").ok().as_deref(),
            Some("alice@example.com")
        );
        for bad in [
            "",
            "alice",
            "a@b",
            "a@@b.c",
            "a b@c.d",
            "@b.c",
            "a@.b.c",
            "a@b.c.",
            "a@b..c",
            "a@xn--zz.example",
            "a@b_c.example",
            "a@-b.example",
            "a\u{0}b@c.d",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// #17 hole 2: one canonical form for the same address, look-alikes kept apart.
    #[test]
    fn the_same_address_has_one_canonical_form() {
        let canonical = |raw: &str| normalize_email(raw).ok();
        // NFC: a decomposed ü is the composed one.
        assert_eq!(
            canonical("Bu\u{0308}yer@Example.com"),
            Some("büyer@example.com".to_owned())
        );
        // The domain per UTS #46, stored in Unicode: Punycode decoded, case and width folded.
        for same in [
            "anna@xn--bcher-kva.example",
            "ANNA@BÜCHER.EXAMPLE",
            "anna@bu\u{0308}cher.example",
            "anna@ｂüｃｈｅｒ.example",
        ] {
            assert_eq!(
                canonical(same),
                Some("anna@bücher.example".to_owned()),
                "{same:?}"
            );
        }
        // Look-alikes are different addresses.
        assert_ne!(
            canonical("büyer@example.com"),
            canonical("buyer@example.com")
        );
        assert_ne!(
            canonical("victim@exämple.com"),
            canonical("victim@example.com")
        );
        // Idempotent: the canonical form is its own canonical form.
        for raw in ["anna@xn--bcher-kva.example", "Bu\u{0308}yer@Example.com"] {
            let once = canonical(raw).unwrap_or_default();
            assert_eq!(canonical(&once), Some(once.clone()));
        }
    }

    #[test]
    fn phones_and_addresses_are_checked() {
        assert_eq!(
            check_phone(" +82 10-1234-5678 ").ok().as_deref(),
            Some("+82 10-1234-5678")
        );
        for bad in ["", "12", "call me", "010-1234-5678; DROP", &"1".repeat(33)] {
            assert!(check_phone(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_address("서울특별시 중구 세종대로 110").is_ok());
        assert!(check_address("line one\nline two").is_ok());
        assert!(check_address("   ").is_err());
        assert!(check_address(&"a".repeat(501)).is_err());
        assert!(check_address("nul\0byte").is_err());
    }

    #[test]
    fn password_length_is_counted_in_characters() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"가".repeat(128)).is_ok());
        assert!(check_password(&"가".repeat(129)).is_err());
    }
}
