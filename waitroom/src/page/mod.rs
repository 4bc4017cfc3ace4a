//! The waiting page: `GET /w/{sale_id}` and its two assets.
//!
//! The page is plain HTML, CSS and JavaScript compiled into the binary (`assets/`), with no
//! framework, no build step and nothing from a CDN (but Stripe.js, from Stripe, while the
//! payment provider is Stripe: see [`stripe`]). The HTML is a template rendered per request
//! in the buyer's language (`?lang=ko`, else `Accept-Language` by q-value, else English; see
//! [`i18n`] for the languages, one Fluent file each in `locales/`);
//! the script reads the sale id, the api's address and the strings of that language from a JSON
//! block the server puts into the page, then signs in, joins, polls and buys (see
//! `assets/waiting.js`).
//!
//! Routes: `GET /w/{sale_id}` (HTML; a sale id that is not a UUID is 404 `not_found` in the
//! contract's JSON shape), `GET /w/assets/waiting.js`, `GET /w/assets/waiting.css` and
//! `GET /w/assets/pow.js` (the proof-of-work Web Worker, door.md §1; the page gets its URL in
//! `config_json` as `pow_worker_src`). The page
//! links the assets as `…?v=<fingerprint>`: such a request is cached for a year (`immutable`),
//! a bare one for five minutes, and both answer `If-None-Match` with 304.
//!
//! Config: `waitroom.api_base_url` (empty: the api is on the page's own origin; otherwise an
//! `http(s)://` URL, which the Content-Security-Policy also allows to be called) and
//! `waitroom.page_template_file` (an HTML file replacing the built-in template). The template is
//! read and checked once, in [`routes`]: an unreadable file, an unknown placeholder or a missing
//! required one stops the start with an error naming the key. `waitroom.locales_dir` names a
//! directory of more languages (one Fluent file each, see [`i18n`]), read and checked there too.
//!
//! # Template placeholders
//!
//! `{{name}}` anywhere in the file (spaces inside the braces are allowed). Every value is
//! escaped for HTML text and double- or single-quoted attribute values, except `config_json`,
//! which is escaped for a `<script type="application/json">` element.
//!
//! | placeholder | value |
//! | --- | --- |
//! | `{{config_json}}` | **required**: the page's settings for `waiting.js` (`sale_id`, `api_base_url`, `lang`, `pow_worker_src`, `strings`, and with `payment.provider = stripe` `payment`: `{provider, publishable_key, js_url}`, see [`stripe`]); put it in `<script id="dl-config" type="application/json">` |
//! | `{{script_src}}` | **required**: URL of `waiting.js`, for `<script src defer>` |
//! | `{{stylesheet_href}}` | URL of `waiting.css` |
//! | `{{lang}}` / `{{other_lang}}` | the page's language tag (`en`, `ko`, …) and that of its language link: Korean from English, English from any other |
//! | `{{other_lang_href}}` | a link to this page in the other language (`?lang=…`) |
//! | `{{sale_id}}` | the sale id (canonical UUID) |
//! | `{{api_base_url}}` | `waitroom.api_base_url` as configured (may be empty) |
//! | `{{nonce}}` | a per-response CSP nonce: `<script nonce="{{nonce}}">` / `<style nonce="{{nonce}}">` let a custom template inline code |
//! | `{{t:KEY}}` | the string KEY of the page's words ([`i18n`]) in the page's language |
//!
//! The script finds elements by id (`view-signin`, `signin-form`, `position`, `progress`, …, as
//! in `assets/waiting.html`) and skips those a custom template leaves out; the simplest custom
//! template is a copy of the built-in one with other words, colours or markup around the ids.
//!
//! Responses carry a strict Content-Security-Policy (scripts and styles from the waitroom or with
//! the nonce, Web Workers from the waitroom, fetches to the waitroom and the api origin only, no
//! framing, forms never submitted natively; with `payment.provider = stripe` also Stripe.js's
//! origins for scripts, fetches and frames, see [`stripe`]), `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, and the HTML
//! `Cache-Control: no-store` (it carries the nonce) with `Vary: Accept-Language`.

//!
//! # Where things are
//!
//! This module holds the routes and their handlers; [`i18n`] the page's words and the choice of
//! the buyer's language, [`template`] the template and its rendering, [`assets`] the script and
//! the stylesheet, [`headers`] the headers of every HTML page (shared with the control room), and
//! [`stripe`] the Stripe step's settings and policy sources.

pub mod admin;
pub mod assets;
pub mod headers;
pub mod i18n;
pub mod stripe;
pub mod template;

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dropline_core::config::{PaymentConfig, WaitroomConfig};
use dropline_core::http::error::{ApiError, ErrorCode};
use uuid::Uuid;

pub(crate) use assets::Asset;
use assets::{POW_WORKER, SCRIPT, STYLESHEET};
pub use assets::{POW_WORKER_PATH, SCRIPT_PATH, STYLESHEET_PATH};
pub(crate) use headers::{admin_page, api_base_url, html_headers, page_config_json};
pub use i18n::{Language, Languages};
pub use stripe::StripePage;
pub use template::{BUILTIN_TEMPLATE, Template, Values, escape_html_into, escape_script_json_into};

/// The config key of a custom template, named in every template error.
const TEMPLATE_KEY: &str = "waitroom.page_template_file";

/// The routes of the waiting page, with the template loaded and checked, and the Stripe step's
/// keys when `payment` is Stripe ([`stripe`]).
pub fn routes(config: &WaitroomConfig, payment: &PaymentConfig) -> anyhow::Result<Router> {
    let state = Arc::new(PageState::new(config, payment)?);
    Ok(Router::new()
        .route("/w/{sale_id}", get(waiting_page))
        .route(SCRIPT_PATH, get(asset))
        .route(STYLESHEET_PATH, get(asset))
        .route(POW_WORKER_PATH, get(asset))
        .with_state(state))
}

#[derive(Debug)]
struct PageState {
    languages: Languages,
    template: Template,
    api_base_url: String,
    /// The api's origin for `connect-src`, when it is not the page's own.
    api_origin: Option<String>,
    script: Asset,
    stylesheet: Asset,
    pow_worker: Asset,
    /// The Stripe step, when the provider is Stripe.
    stripe: Option<StripePage>,
}

impl PageState {
    fn new(config: &WaitroomConfig, payment: &PaymentConfig) -> anyhow::Result<Self> {
        let (api_base_url, api_origin) = api_base_url(&config.api_base_url)?;
        let stripe = StripePage::from_config(payment)?;
        let languages = Languages::load(config.locales_dir.as_deref())?;
        let template = match &config.page_template_file {
            None => Template::parse(BUILTIN_TEMPLATE, &languages)
                .map_err(|e| anyhow::anyhow!("the built-in waiting page template: {e}"))?,
            Some(path) => {
                let source = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "config key `{TEMPLATE_KEY}`: cannot read `{}`",
                        path.display()
                    )
                })?;
                Template::parse(&source, &languages).map_err(|e| {
                    anyhow::anyhow!("config key `{TEMPLATE_KEY}`: `{}`: {e}", path.display())
                })?
            }
        };
        Ok(Self {
            languages,
            template,
            api_base_url,
            api_origin,
            script: Asset::new(SCRIPT_PATH, SCRIPT, "text/javascript; charset=utf-8")?,
            stylesheet: Asset::new(STYLESHEET_PATH, STYLESHEET, "text/css; charset=utf-8")?,
            pow_worker: Asset::new(
                POW_WORKER_PATH,
                POW_WORKER,
                "text/javascript; charset=utf-8",
            )?,
            stripe,
        })
    }

    fn content_security_policy(&self, nonce: &str) -> String {
        let api = self
            .api_origin
            .as_deref()
            .map(|origin| format!(" {origin}"))
            .unwrap_or_default();
        // Stripe.js's origins only while Stripe is the provider; otherwise nothing is added
        // (and frames stay forbidden by `default-src 'none'`).
        let stripe = self.stripe.as_ref().map(StripePage::csp);
        let (script, connect, frame) = match stripe {
            Some(s) => (
                s.script.as_str(),
                s.connect.as_str(),
                format!(" frame-src{};", s.frame),
            ),
            None => ("", "", String::new()),
        };
        format!(
            "default-src 'none'; script-src 'self' 'nonce-{nonce}'{script}; style-src 'self' 'nonce-{nonce}'; \
             img-src 'self' data:; connect-src 'self'{api}{connect};{frame} worker-src 'self'; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'"
        )
    }
}

async fn waiting_page(
    State(page): State<Arc<PageState>>,
    sale: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(sale_id) = sale.ok().and_then(|Path(raw)| Uuid::parse_str(&raw).ok()) else {
        return ApiError::new(
            ErrorCode::NotFound,
            "no such sale: a sale id is a UUID such as 0190c2a4-7e5b-7cc3-9f1e-2b8d4f6a9c10",
        )
        .into_response();
    };
    let accept_language = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    let lang = page.languages.choose(query.as_deref(), accept_language);
    let nonce = format!("{:032x}", rand::random::<u128>());
    let sale_id = sale_id.hyphenated().to_string();
    let html = page.template.render(&Values {
        lang,
        other_lang: page.languages.other(lang),
        sale_id: &sale_id,
        api_base_url: &page.api_base_url,
        nonce: &nonce,
        stylesheet_href: &page.stylesheet.versioned_url,
        script_src: &page.script.versioned_url,
        pow_worker_src: &page.pow_worker.versioned_url,
        payment: page.stripe.as_ref(),
    });
    let csp = page.content_security_policy(&nonce);
    let mut response = html.into_response();
    let h = response.headers_mut();
    html_headers(h, &csp);
    h.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
    if let Ok(code) = HeaderValue::from_str(lang.code()) {
        h.insert(header::CONTENT_LANGUAGE, code);
    }
    response
}

/// `waiting.js`, `waiting.css` or `pow.js`, by the path asked for.
async fn asset(State(page): State<Arc<PageState>>, uri: Uri, headers: HeaderMap) -> Response {
    let asset = match uri.path() {
        STYLESHEET_PATH => &page.stylesheet,
        POW_WORKER_PATH => &page.pow_worker,
        _ => &page.script,
    };
    asset.respond(uri.query(), &headers)
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::assets::{IMMUTABLE, SHORT};
    use super::headers::API_BASE_URL_KEY;
    use super::*;

    fn config(api_base_url: &str, template: Option<&std::path::Path>) -> WaitroomConfig {
        WaitroomConfig {
            listen: "127.0.0.1:0".into(),
            abandon_after_seconds: 120,
            return_grace_seconds: 1_800,
            outage_retry_after_seconds: 2,
            code_failures_per_user_per_hour: 10,
            admission_window_seconds: 600,
            max_queue_length: 0,
            join_per_ip_per_minute: 1,
            join_per_user_per_minute: 1,
            status_per_ip_per_minute: 1,
            status_per_user_per_minute: 1,
            admit_tick_ms: 100,
            eta_rate_window_seconds: 10,
            pow_challenge_ttl_seconds: 120,
            lease_seconds: 3,
            reap_interval_ms: 1000,
            run_admitter: false,
            api_base_url: api_base_url.into(),
            page_template_file: template.map(std::path::Path::to_path_buf),
            locales_dir: None,
        }
    }

    /// The payment settings: the defaults (simulated) with `overrides` in env form.
    fn payment(overrides: &[(&str, &str)]) -> anyhow::Result<PaymentConfig> {
        let config = dropline_core::Config::load(&dropline_core::config::Sources {
            file: None,
            env: false,
            overrides: overrides
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })?;
        Ok(config.payment)
    }

    async fn get(
        router: &Router,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, HeaderMap, String)> {
        use tower::ServiceExt;
        let mut request = axum::http::Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router
            .clone()
            .oneshot(request.body(axum::body::Body::empty())?)
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
        Ok((status, headers, String::from_utf8(body.to_vec())?))
    }

    fn header(headers: &HeaderMap, name: header::HeaderName) -> &str {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn the_page_is_served_in_the_chosen_language_with_a_strict_policy() -> anyhow::Result<()>
    {
        let router = routes(&config("http://127.0.0.1:8081", None), &payment(&[])?)?;
        let sale = "0190C2A4-7E5B-7CC3-9F1E-2B8D4F6A9C10";
        let (status, headers, body) = get(
            &router,
            &format!("/w/{sale}"),
            &[("accept-language", "ko-KR,ko;q=0.9,en;q=0.8")],
        )
        .await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header(&headers, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(header(&headers, header::CONTENT_LANGUAGE), "ko");
        assert_eq!(header(&headers, header::CACHE_CONTROL), "no-store");
        assert!(body.contains(r#"<html lang="ko">"#));
        assert!(
            body.contains(r#""sale_id":"0190c2a4-7e5b-7cc3-9f1e-2b8d4f6a9c10""#),
            "the canonical id goes to the script"
        );
        assert!(body.contains(r#""api_base_url":"http://127.0.0.1:8081""#));
        let csp = header(&headers, header::CONTENT_SECURITY_POLICY);
        assert!(
            csp.contains("connect-src 'self' http://127.0.0.1:8081;"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self' 'nonce-"), "{csp}");
        assert!(csp.contains("worker-src 'self';"), "{csp}");

        let (_, headers, body) = get(
            &router,
            &format!("/w/{sale}?lang=en"),
            &[("accept-language", "ko")],
        )
        .await?;
        assert_eq!(header(&headers, header::CONTENT_LANGUAGE), "en");
        assert!(body.contains("<title>Waiting room</title>"));
        Ok(())
    }

    /// The `config_json` block of a rendered page, parsed.
    fn config_json(body: &str) -> anyhow::Result<serde_json::Value> {
        let start = body
            .find(r#"<script id="dl-config" type="application/json">"#)
            .ok_or_else(|| anyhow::anyhow!("no dl-config block"))?
            + r#"<script id="dl-config" type="application/json">"#.len();
        let end = start
            + body[start..]
                .find("</script>")
                .ok_or_else(|| anyhow::anyhow!("dl-config is not closed"))?;
        Ok(serde_json::from_str(&body[start..end])?)
    }

    #[tokio::test]
    async fn stripe_is_in_the_page_and_its_policy_only_when_it_is_the_provider()
    -> anyhow::Result<()> {
        let sale = "/w/0190c2a4-7e5b-7cc3-9f1e-2b8d4f6a9c10";
        // Simulated (the default): no `payment`, no Stripe origin, no frames.
        let router = routes(&config("", None), &payment(&[])?)?;
        let (_, headers, body) = get(&router, sale, &[]).await?;
        let csp = header(&headers, header::CONTENT_SECURITY_POLICY);
        assert!(!csp.contains("stripe"), "{csp}");
        assert!(!csp.contains("frame-src"), "{csp}");
        assert!(csp.contains("connect-src 'self'; worker-src"), "{csp}");
        let json = config_json(&body)?;
        assert!(json.get("payment").is_none(), "{json}");
        assert!(!body.contains("pk_"), "no key in a simulated page");

        // Stripe with Stripe.js: Stripe's own origins.
        let stripe = [
            ("PAYMENT__PROVIDER", "stripe"),
            ("PAYMENT__STRIPE__PUBLISHABLE_KEY", "pk_live_abc123"),
        ];
        let router = routes(&config("", None), &payment(&stripe)?)?;
        let (_, headers, body) = get(&router, sale, &[]).await?;
        let csp = header(&headers, header::CONTENT_SECURITY_POLICY);
        assert!(
            csp.contains("script-src 'self' 'nonce-")
                && csp.contains("' https://js.stripe.com https://*.js.stripe.com;"),
            "{csp}"
        );
        assert!(
            csp.contains("connect-src 'self' https://api.stripe.com;"),
            "{csp}"
        );
        assert!(
            csp.contains(
                "frame-src https://js.stripe.com https://*.js.stripe.com https://hooks.stripe.com;"
            ),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        let json = config_json(&body)?;
        assert_eq!(
            json["payment"],
            serde_json::json!({
                "provider": "stripe",
                "publishable_key": "pk_live_abc123",
                "js_url": "https://js.stripe.com/v3/"
            })
        );

        // A mock (localstripe): its origin alone, beside the api's.
        let mock = [
            ("PAYMENT__PROVIDER", "stripe"),
            ("PAYMENT__STRIPE__PUBLISHABLE_KEY", "pk_test_1"),
            (
                "PAYMENT__STRIPE__JS_URL",
                "http://127.0.0.1:8420/js.stripe.com/v3/",
            ),
        ];
        let router = routes(&config("http://127.0.0.1:8081", None), &payment(&mock)?)?;
        let (_, headers, body) = get(&router, sale, &[]).await?;
        let csp = header(&headers, header::CONTENT_SECURITY_POLICY);
        assert!(
            csp.contains("connect-src 'self' http://127.0.0.1:8081 http://127.0.0.1:8420;"),
            "{csp}"
        );
        assert!(csp.contains(" frame-src http://127.0.0.1:8420;"), "{csp}");
        assert!(!csp.contains("stripe.com"), "{csp}");
        assert_eq!(
            config_json(&body)?["payment"]["js_url"],
            "http://127.0.0.1:8420/js.stripe.com/v3/"
        );

        // Stripe without a publishable key: no start, naming the key.
        let error = routes(
            &config("", None),
            &payment(&[("PAYMENT__PROVIDER", "stripe")])?,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(error.contains(stripe::PUBLISHABLE_KEY_KEY), "{error}");
        // Simulated with Stripe keys set: still nothing of Stripe on the page.
        let router = routes(
            &config("", None),
            &payment(&[("PAYMENT__STRIPE__PUBLISHABLE_KEY", "pk_live_abc123")])?,
        )?;
        let (_, headers, body) = get(&router, sale, &[]).await?;
        assert!(!header(&headers, header::CONTENT_SECURITY_POLICY).contains("stripe"));
        assert!(!body.contains("pk_live"));
        Ok(())
    }

    #[tokio::test]
    async fn a_bad_sale_id_is_a_contract_404() -> anyhow::Result<()> {
        let router = routes(&config("", None), &payment(&[])?)?;
        for uri in ["/w/not-a-sale", "/w/%3Cscript%3E", "/w/%FF%FE", "/w/assets"] {
            let (status, headers, body) = get(&router, uri, &[]).await?;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(header(&headers, header::CONTENT_TYPE), "application/json");
            let error: serde_json::Value = serde_json::from_str(&body)?;
            assert_eq!(error["error"]["code"], "not_found", "{uri}: {body}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn assets_have_types_fingerprints_and_revalidate() -> anyhow::Result<()> {
        let router = routes(&config("", None), &payment(&[])?)?;
        let (_, _, page) = get(&router, "/w/0190c2a4-7e5b-7cc3-9f1e-2b8d4f6a9c10", &[]).await?;
        for (path, content_type) in [
            (SCRIPT_PATH, "text/javascript; charset=utf-8"),
            (STYLESHEET_PATH, "text/css; charset=utf-8"),
            (POW_WORKER_PATH, "text/javascript; charset=utf-8"),
        ] {
            let start = page
                .find(&format!("{path}?v="))
                .ok_or_else(|| anyhow::anyhow!("the page does not link {path}"))?;
            let end = start + page[start..].find('"').unwrap_or_default();
            let versioned = &page[start..end];
            let (status, headers, body) = get(&router, versioned, &[]).await?;
            assert_eq!(status, StatusCode::OK);
            assert!(!body.is_empty());
            assert_eq!(header(&headers, header::CONTENT_TYPE), content_type);
            assert_eq!(header(&headers, header::CACHE_CONTROL), IMMUTABLE);
            assert_eq!(header(&headers, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            let etag = header(&headers, header::ETAG).to_owned();

            let (_, headers, _) = get(&router, path, &[]).await?;
            assert_eq!(
                header(&headers, header::CACHE_CONTROL),
                SHORT,
                "no fingerprint"
            );
            let (status, _, body) = get(&router, path, &[("if-none-match", &etag)]).await?;
            assert_eq!(status, StatusCode::NOT_MODIFIED);
            assert!(body.is_empty());
        }
        Ok(())
    }

    #[test]
    fn a_custom_template_is_used_and_a_broken_one_stops_the_start() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("dl-page-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let good = dir.join("good.html");
        std::fs::write(
            &good,
            "<main>{{t:waiting_title}} {{sale_id}}</main>\
             <script type=\"application/json\" id=\"dl-config\">{{config_json}}</script>\
             <script nonce=\"{{nonce}}\">/* inline */</script><script src=\"{{script_src}}\"></script>",
        )?;
        assert!(routes(&config("", Some(&good)), &payment(&[])?).is_ok());

        let broken = dir.join("broken.html");
        std::fs::write(&broken, "{{config_json}}{{script_src}}{{waiting_title}}")?;
        let missing = dir.join("missing.html");
        for (path, want) in [
            (&broken, "unknown placeholder `{{waiting_title}}`"),
            (&missing, "cannot read"),
        ] {
            let error = routes(&config("", Some(path)), &payment(&[])?)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(error.contains(TEMPLATE_KEY), "{error}");
            assert!(error.contains(want), "{error}");
        }
        let error = routes(&config("mailto:x", None), &payment(&[])?)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains(API_BASE_URL_KEY), "{error}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[tokio::test]
    async fn a_custom_template_gets_the_nonce_of_its_policy() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("dl-page-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("t.html");
        std::fs::write(
            &file,
            "<script nonce=\"{{nonce}}\"></script>{{config_json}}{{script_src}}",
        )?;
        let router = routes(&config("", Some(&file)), &payment(&[])?)?;
        let (_, headers, body) =
            get(&router, "/w/0190c2a4-7e5b-7cc3-9f1e-2b8d4f6a9c10", &[]).await?;
        let nonce = body
            .strip_prefix("<script nonce=\"")
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        assert_eq!(nonce.len(), 32, "{body}");
        let csp = header(&headers, header::CONTENT_SECURITY_POLICY);
        assert!(csp.contains(&format!("'nonce-{nonce}'")), "{csp}");
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
