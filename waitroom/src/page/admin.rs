//! What the administrators' pages share (the console [`crate::console`], the control room and
//! the sale report [`crate::control`]): `assets/admin.js` (the sign-in, the tokens, the
//! authenticated calls; one copy for the three pages, so one session) served at
//! [`SCRIPT_PATH`] ([`routes`], mounted once), and [`AdminShell::render`], which fills a page's template and serves it
//! with [`super::admin_page`]'s headers.
//!
//! Every template carries `{{config_json}}` (the page's settings), `{{admin_src}}` (this
//! script, loaded before the page's own with `defer`, so it runs first) and whatever else the
//! page fills.

use std::sync::Arc;

use axum::response::Response;
use dropline_core::config::WaitroomConfig;
use dropline_core::http::error::ApiError;
use serde::Serialize;

use super::{Asset, api_base_url};

const SCRIPT: &str = include_str!("../../assets/admin.js");

pub const SCRIPT_PATH: &str = "/w/assets/admin.js";

/// The api's address for the administrators' pages, and the shared script's fingerprint.
#[derive(Debug)]
pub(crate) struct AdminShell {
    api_base_url: String,
    api_origin: Option<String>,
    /// `admin.js`'s fingerprinted URL.
    script_src: String,
}

impl AdminShell {
    pub(crate) fn new(config: &WaitroomConfig) -> anyhow::Result<Self> {
        Self::with_api(&config.api_base_url)
    }

    /// As [`AdminShell::new`], from `waitroom.api_base_url` alone.
    fn with_api(raw: &str) -> anyhow::Result<Self> {
        let (api_base_url, api_origin) = api_base_url(raw)?;
        Ok(Self {
            api_base_url,
            api_origin,
            script_src: Asset::new(SCRIPT_PATH, SCRIPT, "text/javascript; charset=utf-8")?
                .versioned_url,
        })
    }

    /// `waitroom.api_base_url` without a trailing `/` (empty: the api shares this origin).
    pub(crate) fn api_base_url(&self) -> &str {
        &self.api_base_url
    }

    /// A page: `template` with `{{config_json}}` (`config` as JSON made safe for the
    /// page's `<script type="application/json">`), `{{admin_src}}` and each of `fills`
    /// replaced, under the administrators' CSP (this origin and the api's).
    pub(crate) fn render<T: Serialize>(
        &self,
        template: &str,
        config: &T,
        fills: &[(&str, &str)],
    ) -> Result<Response, ApiError> {
        let config_json = super::page_config_json(config)?;
        let mut html = template
            .replace("{{config_json}}", &config_json)
            .replace("{{admin_src}}", &self.script_src);
        for (key, value) in fills {
            html = html.replace(key, value);
        }
        Ok(super::admin_page(html, self.api_origin.as_deref()))
    }
}

/// The route of `admin.js`, mounted once for the three pages (`crate::build_on`).
pub(crate) fn routes() -> anyhow::Result<axum::Router> {
    let script = Asset::new(SCRIPT_PATH, SCRIPT, "text/javascript; charset=utf-8")?;
    Ok(axum::Router::new().route(SCRIPT_PATH, Arc::new(script).route()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_page_gets_its_config_the_shared_script_and_its_fills() -> anyhow::Result<()> {
        let shell = AdminShell::with_api("https://api.example.com/")?;
        assert_eq!(shell.api_base_url(), "https://api.example.com");
        let page = shell.render(
            "<script>{{config_json}}</script><script src=\"{{admin_src}}\"></script>{{sale_id}}",
            &serde_json::json!({ "x": "</script>" }),
            &[("{{sale_id}}", "s-1")],
        )?;
        let csp = page
            .headers()
            .get(axum::http::header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            csp.contains("connect-src 'self' https://api.example.com"),
            "{csp}"
        );
        let body = axum::body::to_bytes(page.into_body(), 1 << 16).await?;
        let body = String::from_utf8(body.to_vec())?;
        assert!(
            !body.contains("</script></script>"),
            "config escaped: {body}"
        );
        assert!(
            body.contains(&format!("src=\"{SCRIPT_PATH}?v=")),
            "the shared script, fingerprinted: {body}"
        );
        assert!(body.ends_with("s-1"), "{body}");
        Ok(())
    }
}
