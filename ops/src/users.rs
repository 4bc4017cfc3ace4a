//! `dropline user create`: a verified account made at once, without e-mail (the first admin,
//! say), by the account rules the api's sign-up follows (`dropline_core::auth::accounts`).

use std::process::ExitCode;

use dropline_core::Config;
use dropline_core::auth::accounts::{CreateError, create_verified_user};
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
