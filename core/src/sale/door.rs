//! The door's per-sale settings (design/door.md): the proof-of-work difficulty, the priority
//! groups, the presale window and the operator's notice to the line, with their rules.
//!
//! The api validates them here and stores them in MySQL (`sales.pow_difficulty`,
//! `access_groups`, `presale_only_until`, `notice`) and in the sale's `cfg` hash; the waiting
//! room reads them from the hash. In `cfg` (see [`FIELDS`]):
//!
//! | field | content |
//! | --- | --- |
//! | `pow_difficulty` | 0..=24, 0 = off |
//! | `groups` | the group names, highest first, joined by `,` (`""`: none) |
//! | `presale_only_until` | epoch ms, 0 = no presale |
//! | `notice` | the notice's text, `""` = none |

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::ids::SaleId;

/// The largest `pow_difficulty` (door.md §1): 2^24 hashes is minutes on a phone already.
pub const MAX_POW_DIFFICULTY: i64 = 24;
/// At most this many groups besides the implicit `public` (door.md §2).
pub const MAX_GROUPS: usize = 8;
/// A group name's longest length.
pub const MAX_GROUP_NAME: usize = 32;
/// The group of every buyer who joins without a code: implicit, always last.
pub const PUBLIC_GROUP: &str = "public";
/// A notice's longest length, in Unicode scalar values (door.md §4).
pub const MAX_NOTICE_CHARS: usize = 280;

/// The `cfg` hash fields of the door's settings, in [`Door::cfg_values`]' order.
pub const FIELDS: [&str; 4] = ["pow_difficulty", "groups", "presale_only_until", "notice"];

/// A sale's door settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Door {
    pub pow_difficulty: u8,
    /// Highest priority first; `public` is implicit and never listed.
    pub groups: Vec<String>,
    /// Before this instant a join needs an access code.
    pub presale_only_until: Option<DateTime<Utc>>,
    pub notice: Option<String>,
}

/// The MySQL row of [`Door::load`].
type DoorRow = (u8, String, Option<DateTime<Utc>>, Option<String>);

impl Door {
    /// Reads a sale's door settings from MySQL (the record); `None` when there is no such sale.
    pub async fn load<'e, E>(db: E, sale: SaleId) -> anyhow::Result<Option<Self>>
    where
        E: sqlx::Executor<'e, Database = sqlx::MySql>,
    {
        let row: Option<DoorRow> = sqlx::query_as(
            "SELECT pow_difficulty, access_groups, presale_only_until, notice FROM sales \
             WHERE id = ?",
        )
        .bind(sale)
        .fetch_optional(db)
        .await
        .with_context(|| format!("reading the door settings of sale {sale}"))?;
        Ok(row.map(
            |(pow_difficulty, groups, presale_only_until, notice)| Self {
                pow_difficulty,
                groups: parse_groups_field(&groups),
                presale_only_until,
                notice,
            },
        ))
    }

    /// The values of [`FIELDS`], as the `cfg` hash stores them.
    pub fn cfg_values(&self) -> [String; 4] {
        [
            self.pow_difficulty.to_string(),
            groups_field(&self.groups),
            self.presale_only_until
                .map_or(0, |t| t.timestamp_millis())
                .to_string(),
            self.notice.clone().unwrap_or_default(),
        ]
    }
}

/// `pow_difficulty`: an integer in 0..=24.
pub fn check_pow_difficulty(value: i64) -> Result<u8, String> {
    u8::try_from(value)
        .ok()
        .filter(|d| i64::from(*d) <= MAX_POW_DIFFICULTY)
        .ok_or_else(|| {
            format!("pow_difficulty must be an integer from 0 to {MAX_POW_DIFFICULTY}, got {value}")
        })
}

/// `groups`: at most [`MAX_GROUPS`] distinct names of `[a-z0-9_-]{1,32}`, none of them
/// `public` (it is implicit and last). The names are taken exactly as given: a group name is an
/// identifier an operator types into code batches, so `VIP` is refused rather than folded.
pub fn check_groups(names: &[String]) -> Result<Vec<String>, String> {
    if names.len() > MAX_GROUPS {
        return Err(format!(
            "groups may name at most {MAX_GROUPS} groups (public is implicit), got {}",
            names.len()
        ));
    }
    for (i, name) in names.iter().enumerate() {
        let well_formed = (1..=MAX_GROUP_NAME).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !well_formed {
            return Err(format!(
                "groups: `{name}` is not a group name ([a-z0-9_-], 1 to {MAX_GROUP_NAME} characters)"
            ));
        }
        if name == PUBLIC_GROUP {
            return Err(
                "groups: `public` is the implicit last group of buyers without a code; do not \
                 list it"
                    .into(),
            );
        }
        if names[..i].contains(name) {
            return Err(format!("groups: `{name}` is named twice"));
        }
    }
    Ok(names.to_vec())
}

/// `notice`: at most [`MAX_NOTICE_CHARS`] Unicode scalar values, no control characters (a
/// notice is one plain-text line; line breaks included). `None` or `""` clears it.
pub fn check_notice(text: Option<&str>) -> Result<Option<String>, String> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let chars = text.chars().count();
    if chars > MAX_NOTICE_CHARS {
        return Err(format!(
            "notice must be at most {MAX_NOTICE_CHARS} characters, got {chars}"
        ));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(format!(
            "notice must be plain text on one line: it contains the control character U+{:04X}",
            u32::from(c)
        ));
    }
    Ok(Some(text.to_owned()))
}

/// The symbols of a generated access code: `0-9A-Z` without `I`, `L`, `O` and `U` (read as
/// 1, 1, 0 and V), 32 of them, so each is 5 bits (door.md §2).
pub const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Symbols in a generated code: 60 bits.
pub const GENERATED_CODE_LEN: usize = 12;
/// The length range of a code an operator supplies (after normalising).
pub const GIVEN_CODE_LEN: std::ops::RangeInclusive<usize> = 6..=32;

/// An access code as it is compared and hashed: upper case, spaces and `-` dropped; `None`
/// unless it is then 6 to 32 of `[0-9A-Z]`. A buyer may type `abcd-efgh-jkmn` or paste it with
/// spaces; an operator's own codes follow the same rule.
pub fn normalize_code(raw: &str) -> Option<String> {
    let code: String = raw
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (GIVEN_CODE_LEN.contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
    .then_some(code)
}

/// A new random code (CSPRNG), normalised (no dashes).
pub fn generate_code() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..GENERATED_CODE_LEN)
        .map(|_| char::from(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())]))
        .collect()
}

/// How a generated code is shown: `XXXX-XXXX-XXXX`.
pub fn display_code(code: &str) -> String {
    if code.len() != GENERATED_CODE_LEN {
        return code.to_owned();
    }
    format!("{}-{}-{}", &code[..4], &code[4..8], &code[8..])
}

/// What MySQL and Redis keep of a code: SHA-256 of the sale id's 16 bytes and the normalised
/// code, so the same code in two sales is two unrelated hashes and a leaked table cannot be
/// looked up against another sale's. Codes are never stored in plain text.
pub fn code_hash(sale: SaleId, code: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(sale.as_bytes());
    hasher.update(code.as_bytes());
    hasher.finalize().into()
}

/// The `cfg` (and MySQL `access_groups`) form of a group list.
pub fn groups_field(groups: &[String]) -> String {
    groups.join(",")
}

/// Reads [`groups_field`]'s form back.
pub fn parse_groups_field(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn difficulty_is_0_to_24() {
        assert_eq!(check_pow_difficulty(0), Ok(0));
        assert_eq!(check_pow_difficulty(24), Ok(24));
        for bad in [-1, 25, 256, i64::MAX] {
            assert!(check_pow_difficulty(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_names_follow_the_contract() {
        assert_eq!(
            check_groups(&names(&["vip", "fan_club", "a-1"])),
            Ok(names(&["vip", "fan_club", "a-1"]))
        );
        assert_eq!(check_groups(&[]), Ok(vec![]));
        assert!(check_groups(&names(&["VIP"])).is_err());
        assert!(check_groups(&names(&[""])).is_err());
        assert!(check_groups(&names(&["a b"])).is_err());
        assert!(
            check_groups(&names(&["vip,x"])).is_err(),
            "the cfg separator"
        );
        assert!(check_groups(&names(&[&"x".repeat(33)])).is_err());
        assert!(check_groups(&names(&[&"x".repeat(32)])).is_ok());
        assert!(check_groups(&names(&["public"])).is_err());
        assert!(check_groups(&names(&["vip", "vip"])).is_err());
        let nine: Vec<String> = (0..9).map(|i| format!("g{i}")).collect();
        assert!(check_groups(&nine).is_err());
        assert!(check_groups(&nine[..8]).is_ok());
    }

    #[test]
    fn codes_are_normalised_generated_and_hashed_per_sale() {
        assert_eq!(
            normalize_code("abcd-efgh-jkmn"),
            Some("ABCDEFGHJKMN".into())
        );
        assert_eq!(normalize_code(" AB CD 12 "), Some("ABCD12".into()));
        assert_eq!(normalize_code("ABC12"), None, "too short");
        assert_eq!(normalize_code(&"A".repeat(33)), None, "too long");
        assert_eq!(normalize_code("ABCD_123"), None);
        assert_eq!(normalize_code("ÄBCDEFG"), None, "ASCII only");
        for _ in 0..100 {
            let code = generate_code();
            assert_eq!(code.len(), GENERATED_CODE_LEN);
            assert!(code.bytes().all(|b| CODE_ALPHABET.contains(&b)), "{code}");
            assert!(!code.contains(['I', 'L', 'O', 'U']));
            assert_eq!(normalize_code(&display_code(&code)), Some(code));
        }
        assert_eq!(display_code("ABCDEFGHJKMN"), "ABCD-EFGH-JKMN");
        let (a, b) = (SaleId::new_v7(), SaleId::new_v7());
        assert_eq!(code_hash(a, "ABCDEF"), code_hash(a, "ABCDEF"));
        assert_ne!(code_hash(a, "ABCDEF"), code_hash(b, "ABCDEF"));
        assert_ne!(code_hash(a, "ABCDEF"), code_hash(a, "ABCDEG"));
    }

    #[test]
    fn groups_round_trip_through_the_cfg_field() {
        let groups = names(&["vip", "fans"]);
        assert_eq!(parse_groups_field(&groups_field(&groups)), groups);
        assert_eq!(parse_groups_field(""), Vec::<String>::new());
    }

    #[test]
    fn a_notice_is_280_scalars_of_plain_text() {
        assert_eq!(check_notice(None), Ok(None));
        assert_eq!(check_notice(Some("")), Ok(None));
        assert_eq!(
            check_notice(Some("<b>x</b>")),
            Ok(Some("<b>x</b>".into())),
            "markup is text, shown literally"
        );
        // 280 scalars of 4 bytes each: the limit counts characters, not bytes.
        let emoji = "🪑".repeat(280);
        assert_eq!(check_notice(Some(&emoji)), Ok(Some(emoji.clone())));
        assert!(check_notice(Some(&format!("{emoji}x"))).is_err());
        assert!(check_notice(Some("line\nbreak")).is_err());
        assert!(check_notice(Some("bell\u{7}")).is_err());
        assert!(check_notice(Some("c1\u{85}")).is_err());
    }
}
