//! The page's static assets (`waiting.js`, `waiting.css`, and `pow.js`, the proof-of-work Web
//! Worker; compiled in) and how they are
//! served: a content fingerprint in the URL (`?v=`), a year's cache for a fingerprinted request
//! and five minutes for a bare one, and `ETag` / `If-None-Match` revalidation. The control room
//! serves its own assets with the same [`Asset`].

use std::sync::Arc;

use axum::extract::RawQuery;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};

pub(crate) const SCRIPT: &str = include_str!("../../assets/waiting.js");
pub(crate) const STYLESHEET: &str = include_str!("../../assets/waiting.css");
pub(crate) const POW_WORKER: &str = include_str!("../../assets/pow.js");

pub const SCRIPT_PATH: &str = "/w/assets/waiting.js";
pub const STYLESHEET_PATH: &str = "/w/assets/waiting.css";
pub const POW_WORKER_PATH: &str = "/w/assets/pow.js";

/// Cache lifetime of an asset requested with the current fingerprint (`?v=`): it never changes.
pub(crate) const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cache lifetime of an asset requested without it (an old page, a custom template).
pub(crate) const SHORT: &str = "public, max-age=300";

/// A static asset with its content fingerprint.
#[derive(Debug)]
pub(crate) struct Asset {
    body: &'static str,
    content_type: &'static str,
    version: String,
    etag: HeaderValue,
    pub(crate) versioned_url: String,
}

impl Asset {
    pub(crate) fn new(
        path: &str,
        body: &'static str,
        content_type: &'static str,
    ) -> anyhow::Result<Self> {
        let version = format!("{:016x}", fnv1a(body.as_bytes()));
        let etag = HeaderValue::from_str(&format!("\"{version}\""))?;
        Ok(Self {
            body,
            content_type,
            versioned_url: format!("{path}?v={version}"),
            version,
            etag,
        })
    }

    /// A `GET` route serving this asset (for the pages whose handlers need no other state).
    pub(crate) fn route<S: Clone + Send + Sync + 'static>(self: Arc<Self>) -> MethodRouter<S> {
        get(
            move |RawQuery(query): RawQuery, headers: HeaderMap| async move {
                self.respond(query.as_deref(), &headers)
            },
        )
    }

    pub(crate) fn respond(&self, query: Option<&str>, headers: &HeaderMap) -> Response {
        let current = query.is_some_and(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .any(|(key, value)| key == "v" && value == self.version)
        });
        let cache = HeaderValue::from_static(if current { IMMUTABLE } else { SHORT });
        let fresh = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/").as_bytes() == self.etag.as_bytes()
            });
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut r = self.body.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            r
        };
        let h = response.headers_mut();
        h.insert(header::CACHE_CONTROL, cache);
        h.insert(header::ETAG, self.etag.clone());
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

/// FNV-1a, 64 bits: a content fingerprint for cache busting, not a security measure.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
