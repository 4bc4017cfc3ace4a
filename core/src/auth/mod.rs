//! Who a request comes from: signing keys ([`keys`]), access tokens and waiting-room passes
//! ([`tokens`]), password hashing ([`password`]) and the rules an account's fields follow
//! ([`accounts`]).

pub mod accounts;
pub mod batch;
pub mod claims;
pub mod jwt_crypto;
pub mod keys;
pub mod password;
pub mod tokens;
