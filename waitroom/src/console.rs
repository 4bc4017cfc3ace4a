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

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use dropline_core::config::WaitroomConfig;
use dropline_core::http::error::ApiError;
use serde::Serialize;

use crate::page::Asset;
use crate::page::admin::AdminShell;

const TEMPLATE: &str = include_str!("../assets/console.html");
const SCRIPT: &str = include_str!("../assets/console.js");
const STYLESHEET: &str = include_str!("../assets/console.css");

/// The console's own address.
pub const PAGE_PATH: &str = "/w/admin";
pub const SCRIPT_PATH: &str = "/w/assets/console.js";
pub const STYLESHEET_PATH: &str = "/w/assets/console.css";

/// What the console's page handler needs.
#[derive(Debug)]
struct Console {
    shell: AdminShell,
    script_src: String,
    stylesheet_href: String,
}

/// The page's settings for `console.js`.
#[derive(Debug, Serialize)]
struct PageConfig<'a> {
    api_base_url: &'a str,
}

/// The console's routes: the page and its two assets (for browsers, not in the OpenAPI
/// document; the shared `admin.js` is served by [`crate::page::admin::routes`]).
pub fn routes(config: &WaitroomConfig) -> anyhow::Result<axum::Router> {
    let script = Arc::new(Asset::new(
        SCRIPT_PATH,
        SCRIPT,
        "text/javascript; charset=utf-8",
    )?);
    let stylesheet = Arc::new(Asset::new(
        STYLESHEET_PATH,
        STYLESHEET,
        "text/css; charset=utf-8",
    )?);
    let console = Arc::new(Console {
        shell: AdminShell::new(config)?,
        script_src: script.versioned_url.clone(),
        stylesheet_href: stylesheet.versioned_url.clone(),
    });
    Ok(axum::Router::new()
        .route(PAGE_PATH, get(page))
        .route(SCRIPT_PATH, script.route())
        .route(STYLESHEET_PATH, stylesheet.route())
        .with_state(console))
}

#[tracing::instrument(skip_all)]
async fn page(State(console): State<Arc<Console>>) -> Result<Response, ApiError> {
    let config = PageConfig {
        api_base_url: console.shell.api_base_url(),
    };
    console.shell.render(
        TEMPLATE,
        &config,
        &[
            ("{{stylesheet_href}}", &console.stylesheet_href),
            ("{{script_src}}", &console.script_src),
        ],
    )
}
