//! Accounts: input rules for e-mail, password, name, phone and address, and storing a user.
//!
//! Shared by the api's sign-up flow and by `dropline user create` (`dropline-ops`).

use crate::auth::password::Hasher;
use crate::auth::tokens::Role;
use crate::ids::UserId;
use chrono::{SubsecRound, Utc};
use sqlx::MySqlPool;

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

/// Normalises and checks an e-mail address: trimmed, lower-cased, one `@`, a dotted domain,
/// at most 254 characters, no spaces.
pub fn normalize_email(raw: &str) -> Result<String, CreateError> {
    let email = raw.trim().to_lowercase();
    let bad = || CreateError::Invalid(format!("`{}` is not an e-mail address", raw.trim()));
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || local.len() > 64
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
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
            "", "alice", "a@b", "a@@b.c", "a b@c.d", "@b.c", "a@.b.c", "a@b.c.", "a@b..c",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
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
