//! The operator's console (#24): one page from which an administrator runs a drop in a
//! browser instead of with JSON calls.
//!
//! - `GET /w/admin`: the page (HTML; plain HTML, CSS and JavaScript compiled into the binary
//!   from `assets/console.*`, no framework, no build step, nothing from a CDN). Anyone may load
//!   it; it shows nothing until an administrator signs in through the api's
//!   `POST /api/auth/login` (tokens in the tab's `sessionStorage`, refreshed once on a 401), as
//!   the control room does ([`crate::control`]).
//! - `GET /w/assets/console.js`, `GET /w/assets/console.css`: the assets, fingerprinted and
//!   cached like the waiting page's.
//!
//! The page holds no data of its own and this module has no data endpoint: it calls the api at
//! `waitroom.api_base_url` (products, sales, `PATCH`es, the trail and the audit) and this
//! waiting room's `GET /w/{id}/control/data` for the live figures of each sale (queue length,
//! admitted, units sold). It links each sale to its control room (`/w/{id}/control`) and its
//! report (`/w/{id}/report`).
//!
//! `/w/admin` shares its first segment with the sales' `/w/{sale_id}` routes: the router
//! prefers the static segment, and `admin` is not a UUID, so no sale can be shadowed (a test
//! checks both).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use dropline_core::config::WaitroomConfig;
use dropline_core::http::error::ApiError;
use serde::Serialize;

use crate::page::{Asset, api_base_url};

const TEMPLATE: &str = include_str!("../assets/console.html");
const SCRIPT: &str = include_str!("../assets/console.js");
const STYLESHEET: &str = include_str!("../assets/console.css");

/// The console's own address.
pub const PAGE_PATH: &str = "/w/admin";
pub const SCRIPT_PATH: &str = "/w/assets/console.js";
pub const STYLESHEET_PATH: &str = "/w/assets/console.css";

/// What the console's handlers share.
#[derive(Debug)]
struct Console {
    api_base_url: String,
    api_origin: Option<String>,
    script: Asset,
    stylesheet: Asset,
}

/// The page's settings for `console.js`.
#[derive(Debug, Serialize)]
struct PageConfig<'a> {
    api_base_url: &'a str,
}

/// The console's routes: the page and its two assets (for browsers, not in the OpenAPI
/// document).
pub fn routes(config: &WaitroomConfig) -> anyhow::Result<axum::Router> {
    let (api_base_url, api_origin) = api_base_url(&config.api_base_url)?;
    let console = Arc::new(Console {
        api_base_url,
        api_origin,
        script: Asset::new(SCRIPT_PATH, SCRIPT, "text/javascript; charset=utf-8")?,
        stylesheet: Asset::new(STYLESHEET_PATH, STYLESHEET, "text/css; charset=utf-8")?,
    });
    Ok(axum::Router::new()
        .route(PAGE_PATH, get(page))
        .route(SCRIPT_PATH, get(script))
        .route(STYLESHEET_PATH, get(stylesheet))
        .with_state(console))
}

#[tracing::instrument(skip_all)]
async fn page(State(console): State<Arc<Console>>) -> Result<Response, ApiError> {
    let config = PageConfig {
        api_base_url: &console.api_base_url,
    };
    let config_json = crate::page::page_config_json(&config)?;
    let html = TEMPLATE
        .replace("{{config_json}}", &config_json)
        .replace("{{stylesheet_href}}", &console.stylesheet.versioned_url)
        .replace("{{script_src}}", &console.script.versioned_url);
    Ok(crate::page::admin_page(html, console.api_origin.as_deref()))
}

async fn script(
    State(console): State<Arc<Console>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    console.script.respond(query.as_deref(), &headers)
}

async fn stylesheet(
    State(console): State<Arc<Console>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    console.stylesheet.respond(query.as_deref(), &headers)
}
