//! Typed ids (issue #18): a sale id, a user id, an order id and a product id are all UUIDv7s
//! underneath, but each has its own type, so the compiler refuses one passed where another
//! is expected (`mint_pass(edge, user, sale, …)` with the two swapped no longer builds).
//!
//! The types change no wire format: each is exactly its [`Uuid`].
//!
//! - JSON (HTTP bodies, RabbitMQ messages, JWT claims): `#[serde(transparent)]`, the UUID's
//!   hyphenated text.
//! - MySQL: `#[sqlx(transparent)]`, so a bind or a column decodes as the `Uuid` does
//!   (`BINARY(16)`, the 16 bytes).
//! - Redis: no implicit conversion at all; call sites pass `.as_uuid()` (for the 16 raw bytes,
//!   `.as_bytes()`) or the text of [`fmt::Display`], which is the UUID's hyphenated text.
//!
//! The tests at the bottom pin each of these against the bare `Uuid`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id (UUIDv7), as every new one is made.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }

            /// The nil id (all zeros): only as a placeholder that names nothing.
            pub const fn nil() -> Self {
                Self(Uuid::nil())
            }

            /// The id from its UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID underneath, by value.
            pub const fn into_uuid(self) -> Uuid {
                self.0
            }

            /// The UUID underneath.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// The UUID's 16 bytes (how Redis stores a user in `adm` and order hashes).
            pub const fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// The id from 16 bytes; an error when `bytes` is not 16 long.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, uuid::Error> {
                Uuid::from_slice(bytes).map(Self)
            }

            /// The id from its text (any form [`Uuid::parse_str`] takes).
            pub fn parse_str(text: &str) -> Result<Self, uuid::Error> {
                Uuid::parse_str(text).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        /// The UUID's hyphenated lowercase text, as in Redis keys and log lines.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse_str(s)
            }
        }
    };
}

id_type! {
    /// A sale's id (`sales.id`; the `{s:<sale>}` of its Redis keys; the `sale` claim of a pass).
    SaleId
}

id_type! {
    /// A user's id (`users.id`; the `sub` of an access token and a pass; 16 raw bytes in the
    /// waiting line, `adm` and order hashes).
    UserId
}

id_type! {
    /// An order's id (`orders.id`; the `o:<order>` and `hold:<order>` of its Redis keys).
    OrderId
}

id_type! {
    /// A product's id (`products.id`).
    ProductId
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON: each id is exactly its UUID's text, both ways.
    #[test]
    fn json_is_the_uuid() -> anyhow::Result<()> {
        let uuid = Uuid::now_v7();
        let bare = serde_json::to_string(&uuid)?;
        assert_eq!(serde_json::to_string(&SaleId::from(uuid))?, bare);
        assert_eq!(serde_json::to_string(&UserId::from(uuid))?, bare);
        assert_eq!(serde_json::to_string(&OrderId::from(uuid))?, bare);
        assert_eq!(serde_json::to_string(&ProductId::from(uuid))?, bare);
        assert_eq!(serde_json::from_str::<SaleId>(&bare)?, SaleId::from(uuid));
        assert_eq!(serde_json::from_str::<UserId>(&bare)?.into_uuid(), uuid);
        assert!(serde_json::from_str::<OrderId>("\"not-a-uuid\"").is_err());
        Ok(())
    }

    /// Display and FromStr: the UUID's hyphenated text (Redis keys), both ways.
    #[test]
    fn text_is_the_uuid() -> anyhow::Result<()> {
        let uuid = Uuid::now_v7();
        let id = OrderId::from(uuid);
        assert_eq!(id.to_string(), uuid.to_string());
        assert_eq!(id.to_string(), uuid.hyphenated().to_string());
        assert_eq!(id.to_string().parse::<OrderId>()?, id);
        assert!("nope".parse::<UserId>().is_err());
        assert_eq!(UserId::from(uuid).as_bytes(), uuid.as_bytes());
        assert_eq!(UserId::from_slice(uuid.as_bytes())?, UserId::from(uuid));
        assert!(UserId::from_slice(&[0; 15]).is_err());
        Ok(())
    }

    /// MySQL: the same type info as `Uuid` (so `BINARY(16)`, the same bytes on bind).
    #[test]
    fn mysql_type_is_the_uuid() {
        use sqlx::{MySql, Type, TypeInfo};
        assert_eq!(
            <SaleId as Type<MySql>>::type_info().name(),
            <Uuid as Type<MySql>>::type_info().name()
        );
        assert_eq!(
            <UserId as Type<MySql>>::type_info(),
            <Uuid as Type<MySql>>::type_info()
        );
    }

    #[test]
    fn new_ids_are_v7_and_ordered() {
        let a = OrderId::new_v7();
        let b = OrderId::new_v7();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a <= b);
    }
}
