//! Keyset paging of the lists: newest first by a UUIDv7 id (id order is creation order), each
//! page starting strictly after the last id of the previous one, so items added while a client
//! pages never make it see an item twice or miss one.
//!
//! - [`PageRequest`]: the `limit` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]) and `cursor`
//!   query parameters, with the contract's 400 for a bad one.
//! - [`Keyset`]: a list's query, read one page at a time with one row more than asked for: that
//!   row, when there, tells that a next page exists.
//! - [`page`] and [`Page`]: the answer, `next_cursor` naming the last item when more follow.
//!
//! A list may also run oldest first, within one parent ([`Keyset::fetch_oldest_first`], the
//! audit trail of a sale) and with its own bounds ([`PageRequest::parse_bounded`]).
//!
//! The cursor is opaque to clients: base64url (no padding) of a version byte and that last id.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dropline_core::http::error::ApiError;
use serde::Serialize;
use sqlx::MySqlPool;
use sqlx::mysql::MySqlRow;
use uuid::Uuid;

/// Page size when `limit` is not given, and the largest allowed.
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;
/// The first byte of every cursor, so that the format can change without misreading old ones.
const CURSOR_VERSION: u8 = 1;

/// A page of a list.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// `items`, and a cursor to go on after `last` (`None`: nothing follows). A cursor holds
    /// the UUID of any id (a product's, a sale's, an order's), so this takes the bare UUID.
    pub fn new(items: Vec<T>, last: Option<Uuid>) -> Self {
        Self {
            items,
            next_cursor: last.map(encode_cursor),
        }
    }
}

/// The page of `rows` read for `limit` items (by [`Keyset::fetch`]): at most `limit` of them,
/// with a cursor after the last one when a row past them was read.
pub fn page<T, I: Into<Uuid>>(mut rows: Vec<T>, limit: usize, id: impl Fn(&T) -> I) -> Page<T> {
    let last = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|row| id(row).into())
    } else {
        None
    };
    Page::new(rows, last)
}

/// What a client asks for: how many items, after which id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    /// `None`: from the newest.
    pub after: Option<Uuid>,
}

impl PageRequest {
    /// From the raw `limit` and `cursor` parameters; a bad `limit` is reported first.
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<Self, ApiError> {
        Self::parse_bounded(limit, cursor, DEFAULT_LIMIT, MAX_LIMIT)
    }

    /// As [`PageRequest::parse`] for a list with its own default and largest `limit`.
    pub fn parse_bounded(
        limit: Option<&str>,
        cursor: Option<&str>,
        default: u32,
        max: u32,
    ) -> Result<Self, ApiError> {
        let limit = parse_limit_bounded(limit, default, max)? as usize;
        let after = decode_cursor(cursor)?;
        Ok(Self { limit, after })
    }
}

/// `limit`: 1 to 100, default 20.
pub fn parse_limit(raw: Option<&str>) -> Result<u32, ApiError> {
    parse_limit_bounded(raw, DEFAULT_LIMIT, MAX_LIMIT)
}

/// `limit`: 1 to `max`, `default` when absent.
pub fn parse_limit_bounded(raw: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    raw.parse::<u32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "limit must be an integer from 1 to {max}, got `{raw}`"
            ))
        })
}

/// The cursor after `last`, any id (the cursor holds its UUID).
pub fn encode_cursor(last: impl Into<Uuid>) -> String {
    let last: Uuid = last.into();
    let mut bytes = Vec::with_capacity(17);
    bytes.push(CURSOR_VERSION);
    bytes.extend_from_slice(last.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode_cursor(raw: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let bad =
        || ApiError::bad_request("cursor is not valid: pass next_cursor from a previous page");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    match bytes.split_first() {
        Some((&CURSOR_VERSION, id)) => Uuid::from_slice(id).map(Some).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// A list's query, newest first by its id column. Constant SQL text only.
#[derive(Debug, Clone, Copy)]
pub struct Keyset<'a> {
    /// `SELECT … FROM …`, without `WHERE`.
    pub select: &'a str,
    /// A condition every row meets, if any.
    pub filter: Option<&'a str>,
    /// The UUIDv7 column the list is ordered by (`id`, `s.id`).
    pub id: &'a str,
}

impl Keyset<'_> {
    /// Up to `wanted` + 1 rows after `after` (from the newest when `None`): the one past
    /// `wanted`, when there, tells that more follow.
    pub async fn fetch<R>(
        &self,
        pool: &MySqlPool,
        after: Option<Uuid>,
        wanted: usize,
    ) -> sqlx::Result<Vec<R>>
    where
        R: for<'r> sqlx::FromRow<'r, MySqlRow> + Send + Unpin,
    {
        let rows = i64::try_from(wanted).map_or(i64::MAX, |n| n.saturating_add(1));
        let query = sqlx::query_as::<_, R>(sqlx::AssertSqlSafe(self.sql(after.is_some())));
        match after {
            None => query.bind(rows),
            Some(after) => query.bind(after).bind(rows),
        }
        .fetch_all(pool)
        .await
    }

    /// As [`Keyset::fetch`], oldest first (ids ascending, each page starting strictly after
    /// `after`), with `arg` bound to the one `?` of [`Keyset::filter`] (the parent's id: a
    /// sale's audit trail).
    pub async fn fetch_oldest_first<R, A>(
        &self,
        pool: &MySqlPool,
        arg: A,
        after: Option<Uuid>,
        wanted: usize,
    ) -> sqlx::Result<Vec<R>>
    where
        R: for<'r> sqlx::FromRow<'r, MySqlRow> + Send + Unpin,
        A: for<'q> sqlx::Encode<'q, sqlx::MySql> + sqlx::Type<sqlx::MySql> + Send,
    {
        let rows = i64::try_from(wanted).map_or(i64::MAX, |n| n.saturating_add(1));
        let sql = self.sql_ordered(after.is_some(), Direction::Ascending);
        let query = sqlx::query_as::<_, R>(sqlx::AssertSqlSafe(sql)).bind(arg);
        match after {
            None => query.bind(rows),
            Some(after) => query.bind(after).bind(rows),
        }
        .fetch_all(pool)
        .await
    }

    /// The statement, with a `?` for the id to start after (when `after`) and one for the
    /// row count.
    fn sql(&self, after: bool) -> String {
        self.sql_ordered(after, Direction::Descending)
    }

    fn sql_ordered(&self, after: bool, direction: Direction) -> String {
        let id = self.id;
        let (past, order) = match direction {
            Direction::Descending => ("<", "DESC"),
            Direction::Ascending => (">", "ASC"),
        };
        let after = after.then(|| format!("{id} {past} ?"));
        let conditions: Vec<&str> = self.filter.into_iter().chain(after.as_deref()).collect();
        let select = self.select;
        if conditions.is_empty() {
            format!("{select} ORDER BY {id} {order} LIMIT ?")
        } else {
            let conditions = conditions.join(" AND ");
            format!("{select} WHERE {conditions} ORDER BY {id} {order} LIMIT ?")
        }
    }
}

/// Which way a list runs by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Newest first (the catalog, the orders).
    Descending,
    /// Oldest first (the audit trail).
    Ascending,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() -> anyhow::Result<()> {
        let id = Uuid::now_v7();
        let cursor = encode_cursor(id);
        assert_eq!(
            decode_cursor(Some(&cursor)).map_err(|e| anyhow::anyhow!("{e}"))?,
            Some(id)
        );
        assert_eq!(
            decode_cursor(None).map_err(|e| anyhow::anyhow!("{e}"))?,
            None
        );
        for bad in [
            "",
            "!!",
            "AQ",
            &URL_SAFE_NO_PAD.encode([2u8; 17]),
            &URL_SAFE_NO_PAD.encode([1u8; 16]),
        ] {
            assert!(decode_cursor(Some(bad)).is_err(), "{bad:?} accepted");
        }
        Ok(())
    }

    #[test]
    fn a_cursor_is_base64url_of_version_1_and_the_id() -> anyhow::Result<()> {
        // The wire format: cursors handed out before keep decoding.
        let id = Uuid::parse_str("0192f5a4-6c3e-7b21-9d4f-1a2b3c4d5e6f")?;
        assert_eq!(encode_cursor(id), "AQGS9aRsPnshnU8aKzxNXm8");
        assert_eq!(
            decode_cursor(Some("AQGS9aRsPnshnU8aKzxNXm8")).map_err(|e| anyhow::anyhow!("{e}"))?,
            Some(id)
        );
        Ok(())
    }

    #[test]
    fn limit_bounds() {
        assert_eq!(parse_limit(None).ok(), Some(DEFAULT_LIMIT));
        assert_eq!(parse_limit(Some("1")).ok(), Some(1));
        assert_eq!(parse_limit(Some("100")).ok(), Some(100));
        for bad in ["0", "101", "-1", "x", "", "1.5"] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_request_reports_a_bad_limit_before_a_bad_cursor() {
        let id = Uuid::now_v7();
        assert_eq!(
            PageRequest::parse(None, Some(&encode_cursor(id))).ok(),
            Some(PageRequest {
                limit: 20,
                after: Some(id)
            })
        );
        let both_bad = PageRequest::parse(Some("0"), Some("!!")).map_err(|e| e.to_string());
        assert!(
            both_bad.as_ref().is_err_and(|e| e.contains("limit")),
            "{both_bad:?}"
        );
    }

    #[test]
    fn the_row_past_the_limit_makes_the_next_cursor() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let full = page(ids.clone(), 2, |id| *id);
        assert_eq!(full.items, ids[..2]);
        assert_eq!(full.next_cursor, Some(encode_cursor(ids[1])));
        let last = page(ids.clone(), 3, |id| *id);
        assert_eq!(last.items, ids);
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn keyset_sql_adds_the_start_after_the_filter() {
        let products = Keyset {
            select: "SELECT id FROM products",
            filter: None,
            id: "id",
        };
        assert_eq!(
            products.sql(false),
            "SELECT id FROM products ORDER BY id DESC LIMIT ?"
        );
        assert_eq!(
            products.sql(true),
            "SELECT id FROM products WHERE id < ? ORDER BY id DESC LIMIT ?"
        );
        let sales = Keyset {
            select: "SELECT s.id FROM sales s",
            filter: Some("NOT s.paused"),
            id: "s.id",
        };
        assert_eq!(
            sales.sql(false),
            "SELECT s.id FROM sales s WHERE NOT s.paused ORDER BY s.id DESC LIMIT ?"
        );
        assert_eq!(
            sales.sql(true),
            "SELECT s.id FROM sales s WHERE NOT s.paused AND s.id < ? ORDER BY s.id DESC LIMIT ?"
        );
    }

    #[test]
    fn oldest_first_runs_ascending_after_the_cursor() {
        let events = Keyset {
            select: "SELECT id FROM admin_events",
            filter: Some("sale_id = ?"),
            id: "id",
        };
        assert_eq!(
            events.sql_ordered(false, Direction::Ascending),
            "SELECT id FROM admin_events WHERE sale_id = ? ORDER BY id ASC LIMIT ?"
        );
        assert_eq!(
            events.sql_ordered(true, Direction::Ascending),
            "SELECT id FROM admin_events WHERE sale_id = ? AND id > ? ORDER BY id ASC LIMIT ?"
        );
    }

    #[test]
    fn bounded_limits() {
        assert_eq!(parse_limit_bounded(None, 100, 500).ok(), Some(100));
        assert_eq!(parse_limit_bounded(Some("500"), 100, 500).ok(), Some(500));
        for bad in ["0", "501", "-1", "x", "", "1e2", "99999999999"] {
            assert!(
                parse_limit_bounded(Some(bad), 100, 500).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
