//! The api's OpenAPI document (issue #20, `../shared/design/openapi.md`): what the route
//! annotations share: schema-only types for answers built ad hoc, the patterns the handlers
//! enforce, the `Idempotency-Key` header, and [`finish`], which adds what every service's
//! document shares ([`dropline_core::http::openapi`]).
//!
//! A pattern here is the handler's check written as a regular expression (ECMA-262, as JSON
//! Schema reads it); `api/tests/openapi.rs` keeps the committed document, and schemathesis in
//! CI (`openapi/schemathesis`) sends what the document allows and what it forbids, so a bound
//! written here that the handler does not enforce, or the other way round, fails there.

use serde::Deserialize;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, ToSchema};

pub use dropline_core::http::openapi::ErrorBody as Error;

/// Title and description of the api's document.
pub fn finish(doc: &mut utoipa::openapi::OpenApi) {
    dropline_core::http::openapi::finish(
        doc,
        "Dropline api",
        "The purchase API of Dropline (DESIGN.md §9): accounts, catalog, sales administration \
         and orders. Every error is `{\"error\": {\"code\", \"message\"}}` (schema `Error`); \
         times are RFC 3339 UTC; ids are UUIDs.",
    );
    // What the derive cannot say: a sale's groups and a batch's codes are distinct, and a
    // PATCH names at least one field.
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for (schema, property) in [
        ("NewSale", "groups"),
        ("SalePatch", "groups"),
        ("NewCodes", "codes"),
    ] {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema)
            && let Some(RefOr::T(Schema::Array(array))) = object.properties.get_mut(property)
        {
            array.unique_items = true;
        }
    }
    for patch in ["SalePatch", "ProductPatch"] {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(patch) {
            object.min_properties = Some(1);
        }
    }
}

/// `{"verified": true}`.
#[derive(Debug, ToSchema)]
pub struct Verified {
    /// Always `true`.
    pub verified: bool,
}

/// `{"status": "accepted"}`.
#[derive(Debug, ToSchema)]
pub struct Accepted {
    /// Always `accepted`.
    pub status: String,
}

/// The `Idempotency-Key` header of `POST /api/orders`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// 1 to 64 visible ASCII characters, chosen by the client, scoped to the user and kept at
    /// least 24 h: the same key with the same body answers the same order (200), with another
    /// body 409 `idempotency_key_reused`.
    #[param(rename = "Idempotency-Key", pattern = r"^[\x21-\x7E]{1,64}$")]
    #[serde(rename = "Idempotency-Key")]
    pub key: String,
}

/// A cursor as the lists hand it out (`next_cursor`): version 1 and a UUID, base64url without
/// padding, 23 characters whose last one carries no stray bits. (`#[param]` takes only a
/// literal: `api/tests/openapi.rs` checks every list's `cursor` says this.)
pub const CURSOR_PATTERN: &str = r"^A[Q-Za-f][A-Za-z0-9_-]{20}[AEIMQUYcgkosw048]$";

/// A sale's state (DESIGN §9), derived from the clock, the stock and the operator's switches;
/// `entering`, `drawing` and `claiming` only for a draw sale (design/draw.md).
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = SaleState)]
pub enum SaleStateDoc {
    Scheduled,
    Open,
    Paused,
    SoldOut,
    Closed,
    Entering,
    Drawing,
    Claiming,
}

/// `limit` and `cursor` of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; absent: the first page (newest first).
    #[param(pattern = r"^A[Q-Za-f][A-Za-z0-9_-]{20}[AEIMQUYcgkosw048]$")]
    pub cursor: Option<String>,
}

/// `limit`, `cursor` and `state` of the sales list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SaleListParams {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; absent: the first page (newest first).
    #[param(pattern = r"^A[Q-Za-f][A-Za-z0-9_-]{20}[AEIMQUYcgkosw048]$")]
    pub cursor: Option<String>,
    /// Only sales in this state. A page may then hold fewer than `limit` items (at most 500
    /// sales are looked at per request) and still have a `next_cursor`.
    #[param(value_type = Option<SaleStateDoc>)]
    pub state: Option<String>,
}

/// The path parameter `id` (a UUID; anything else is 404).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdParam {
    /// The resource's id, a UUID.
    #[param(format = Uuid)]
    pub id: String,
}
