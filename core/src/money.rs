//! Money (DESIGN §8): an integer amount in minor units with its ISO 4217 currency code.
//!
//! The wire formats keep the two as separate fields (`amount`/`price` and `currency` in JSON,
//! MySQL columns and Redis hashes), so [`Money`] is what the code hands around, built from and
//! split into those two fields; it has no serialized form of its own.

use std::fmt;
use std::str::FromStr;

/// An ISO 4217 alphabetic currency code: three ASCII capital letters (`KRW`, `EUR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

/// A currency code that is not three ASCII capital letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("currency code {0:?} is not three capital letters (ISO 4217)")]
pub struct BadCurrency(pub String);

impl Currency {
    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII capitals, so always valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl FromStr for Currency {
    type Err = BadCurrency;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(BadCurrency(s.to_owned())),
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount of money: `minor` units (cents, or won for `KRW`, which has none smaller) of
/// `currency`. Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// From the two wire fields (`amount`, `currency`); an error when the code is not one.
    pub fn parse(minor: i64, currency: &str) -> Result<Self, BadCurrency> {
        Ok(Self::new(minor, currency.parse()?))
    }

    /// `self` × `quantity` (a unit price times the units of an order); `None` on overflow.
    pub fn times(self, quantity: i64) -> Option<Self> {
        Some(Self::new(self.minor.checked_mul(quantity)?, self.currency))
    }
}

/// `<minor> <code>`, e.g. `15000 KRW` (minor units: no decimal point is guessed).
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_are_three_capitals() {
        assert_eq!(
            "KRW".parse::<Currency>().map(|c| c.to_string()),
            Ok("KRW".into())
        );
        for bad in ["", "KR", "krw", "KRWX", "K1W", "ÄBC"] {
            assert_eq!(
                bad.parse::<Currency>(),
                Err(BadCurrency(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn money_multiplies_and_prints_in_minor_units() -> anyhow::Result<()> {
        let price = Money::parse(15_000, "KRW")?;
        assert_eq!(price.times(3), Some(Money::parse(45_000, "KRW")?));
        assert_eq!(price.times(i64::MAX), None);
        assert_eq!(price.to_string(), "15000 KRW");
        Ok(())
    }
}
