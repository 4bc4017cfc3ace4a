//! The waitroom's OpenAPI document (issue #20, `../shared/design/openapi.md`): what the route
//! annotations share (the `sale_id` path parameter, schema-only types for answers whose fields
//! are plain strings in the code) and [`finish`], which adds what every service's document
//! shares ([`dropline_core::http::openapi`]).
//!
//! Documented: the JSON routes (join, leave, challenge, status, stats, the JWKS, the control
//! room's data) and the shell's `/healthz`, `/readyz`, `/metrics`, `/openapi.json`. The HTML
//! pages (`GET /w/{sale_id}`, `GET /w/{sale_id}/control`) and their static assets are for
//! browsers, not integrators, and stay out of it. `waitroom/tests/openapi.rs` keeps the
//! committed `openapi/waitroom.json` equal to this, and schemathesis (`openapi/schemathesis`)
//! sends what it allows and what it forbids.

use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

pub use dropline_core::http::openapi::ErrorBody as Error;

/// Title and description of the waitroom's document.
pub fn finish(doc: &mut utoipa::openapi::OpenApi) {
    dropline_core::http::openapi::finish(
        doc,
        "Dropline waitroom",
        "The waiting room of Dropline (DESIGN.md §9, door.md): join a sale's line with the \
         access token, poll with the ticket the join gives until the answer carries the pass, \
         then order through the api with it. Every error is `{\"error\": {\"code\", \
         \"message\"}}` (schema `Error`); times are RFC 3339 UTC; ids are UUIDs.",
    );
    // What the annotation cannot say: the join's body may be left out (it is then `{}`).
    if let Some(join) = doc
        .paths
        .paths
        .get_mut("/w/{sale_id}/join")
        .and_then(|item| item.post.as_mut())
        && let Some(body) = join.request_body.as_mut()
    {
        body.required = Some(utoipa::openapi::Required::False);
    }
}

/// The path parameter `sale_id` (a UUID; anything else is 404).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SaleIdParam {
    /// The sale's id, a UUID.
    #[param(format = Uuid)]
    pub sale_id: String,
}

/// Where a buyer stands (DESIGN §9): before the opening, in line, let in, or the sale ended.
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlaceState {
    Scheduled,
    Waiting,
    Admitted,
    SoldOut,
    Closed,
}

/// Where an entrant of a draw sale stands (design/draw.md): `entered` (not ranked yet),
/// `waitlisted` (ranked, not promoted), `won` (promoted: the pass is in the answer),
/// `claimed` (ordered and paid), `forfeited` (no order by the deadline, or it ended unpaid),
/// `not_won` (the sale ended without promoting the entrant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    Entered,
    Waitlisted,
    Won,
    Claimed,
    Forfeited,
    NotWon,
}

/// A sale's state (DESIGN §9), derived from the clock, the stock and the operator's switches.
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaleState {
    Scheduled,
    Open,
    Paused,
    SoldOut,
    Closed,
}

/// `{"keys": [...]}`: the public keys that verify passes (RFC 7517).
#[derive(Debug, ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One Ed25519 public key (RFC 8037).
#[derive(Debug, ToSchema)]
pub struct Jwk {
    /// Always `OKP`.
    pub kty: String,
    /// Always `Ed25519`.
    pub crv: String,
    /// Always `EdDSA`.
    pub alg: String,
    /// Always `sig`.
    #[schema(rename = "use")]
    pub use_: String,
    /// The key id a pass's header names.
    pub kid: String,
    /// The public key, base64url without padding.
    pub x: String,
}
