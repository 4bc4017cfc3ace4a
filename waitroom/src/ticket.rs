//! Tickets: what a waiting buyer's page presents on every status poll and to leave the line.
//!
//! A join (with an access token) hands out a ticket naming the sale and the user. Status is the
//! hottest request of a sale (every waiting buyer polls it), so a ticket is checked with one
//! HMAC-SHA256, not an Ed25519 signature verification (about fifty times dearer), and it
//! outlives the short access token, so a buyer who waits for an hour is not logged out of the
//! line. It proves identity only: the place itself lives in Redis, and a ticket whose place is
//! gone gets 404 and the page joins again.
//!
//! Layout, base64url without padding (76 characters):
//! `version (1) ‖ sale (16) ‖ user (16) ‖ expires_at epoch s (8, big endian) ‖ tag (16)`,
//! tag = HMAC-SHA256(key, everything before it) truncated to 128 bits. The key is derived from
//! the pass signing key ([`dropline_core::auth::keys::SigningKeyPair::derive_secret`]), so every
//! replica shares it and rotating the pass key also rotates tickets (old tickets get 401; the
//! page re-joins and keeps its place, since places are per user).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dropline_core::ids::{SaleId, UserId};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

const VERSION: u8 = 1;
const BODY: usize = 1 + 16 + 16 + 8;
const TAG: usize = 16;

/// Why a ticket does not identify a buyer of this sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("the ticket is malformed")]
    Malformed,
    #[error("the ticket's signature does not match")]
    BadTag,
    #[error("the ticket has expired")]
    Expired,
    #[error("the ticket is for another sale")]
    OtherSale,
}

/// The MAC key of tickets (keyed once; each use clones the keyed state).
#[derive(Clone)]
pub struct TicketKey {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKey").finish_non_exhaustive()
    }
}

impl TicketKey {
    /// The label under which the key is derived from the pass signing key.
    pub const LABEL: &'static str = "dropline waitroom ticket v1";

    pub fn new(key: [u8; 32]) -> anyhow::Result<Self> {
        let mac = Hmac::<Sha256>::new_from_slice(&key)
            .map_err(|e| anyhow::anyhow!("keying the ticket MAC: {e}"))?;
        Ok(Self { mac })
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.mac.clone()
    }

    /// A ticket for `user` in `sale`, valid until `expires_at` (epoch seconds).
    pub fn issue(&self, sale: SaleId, user: UserId, expires_at: u64) -> String {
        let mut raw = [0u8; BODY + TAG];
        raw[0] = VERSION;
        raw[1..17].copy_from_slice(sale.as_bytes());
        raw[17..33].copy_from_slice(user.as_bytes());
        raw[33..BODY].copy_from_slice(&expires_at.to_be_bytes());
        let mut mac = self.mac();
        mac.update(&raw[..BODY]);
        let tag = mac.finalize().into_bytes();
        raw[BODY..].copy_from_slice(&tag[..TAG]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The user a ticket names, when it is genuine, unexpired at `now` (epoch seconds) and for
    /// `sale`.
    pub fn verify(&self, ticket: &str, sale: SaleId, now: u64) -> Result<UserId, TicketError> {
        if ticket.len() != ((BODY + TAG) * 4).div_ceil(3) {
            return Err(TicketError::Malformed);
        }
        let mut raw = [0u8; BODY + TAG];
        match URL_SAFE_NO_PAD.decode_slice(ticket, &mut raw) {
            Ok(n) if n == raw.len() => {}
            _ => return Err(TicketError::Malformed),
        }
        if raw[0] != VERSION {
            return Err(TicketError::Malformed);
        }
        let mut mac = self.mac();
        mac.update(&raw[..BODY]);
        // Constant time: the tag is compared without revealing where it differs.
        mac.verify_truncated_left(&raw[BODY..])
            .map_err(|_| TicketError::BadTag)?;
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&raw[33..BODY]);
        if u64::from_be_bytes(exp) <= now {
            return Err(TicketError::Expired);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&raw[1..17]);
        if Uuid::from_bytes(id) != sale.into_uuid() {
            return Err(TicketError::OtherSale);
        }
        id.copy_from_slice(&raw[17..33]);
        Ok(UserId::from(Uuid::from_bytes(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> TicketKey {
        match TicketKey::new([byte; 32]) {
            Ok(key) => key,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn a_ticket_names_its_user_until_it_expires() {
        let (sale, user) = (SaleId::new_v7(), UserId::new_v7());
        let ticket = key(1).issue(sale, user, 1_000);
        assert_eq!(ticket.len(), 76);
        assert_eq!(key(1).verify(&ticket, sale, 999), Ok(user));
        assert_eq!(
            key(1).verify(&ticket, sale, 1_000),
            Err(TicketError::Expired)
        );
    }

    #[test]
    fn forged_foreign_and_garbled_tickets_are_refused() {
        let (sale, user) = (SaleId::new_v7(), UserId::new_v7());
        let ticket = key(1).issue(sale, user, 1_000);
        assert_eq!(key(2).verify(&ticket, sale, 0), Err(TicketError::BadTag));
        assert_eq!(
            key(1).verify(&ticket, SaleId::new_v7(), 0),
            Err(TicketError::OtherSale)
        );
        // Flip one bit of every byte position in turn: each is caught.
        let raw = URL_SAFE_NO_PAD.decode(&ticket).unwrap_or_default();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let bad = URL_SAFE_NO_PAD.encode(bad);
            assert!(key(1).verify(&bad, sale, 0).is_err(), "byte {i}");
        }
        for garbage in ["", "x", &ticket[1..], &format!("{ticket}A"), "!!!!"] {
            assert_eq!(key(1).verify(garbage, sale, 0), Err(TicketError::Malformed));
        }
    }
}
