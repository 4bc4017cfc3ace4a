//! The waiting page as a buyer gets it, byte for byte: `GET /w/{sale}` in English and Korean
//! must render exactly `tests/snapshots/waiting.{en,ko}.html` (the words of the page, the markup
//! of the built-in template and the JSON block handed to `waiting.js`). The assets'
//! fingerprints (`?v=…`) are masked, so a change to `waiting.js` or `waiting.css` alone does not
//! touch the snapshots.
//!
//! A deliberate change to the page's words or template: run with `DROPLINE_BLESS=1` to rewrite
//! the snapshots, and review their diff.

use std::path::PathBuf;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use dropline_core::Config;
use dropline_core::config::WaitroomConfig;
use tower::ServiceExt;

const SALE: &str = "0190c2a4-7e5b-7cc3-9f1e-2b8d4f6a9c10";

fn config() -> anyhow::Result<WaitroomConfig> {
    Ok(Config::defaults()?.waitroom)
}

async fn get(
    router: &Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(StatusCode, HeaderMap, String)> {
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

fn content_language(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// `?v=` followed by 16 hex digits (an asset fingerprint) becomes `?v=FINGERPRINT`.
fn mask_fingerprints(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find("?v=") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_hexdigit).count();
        if digits == 16 {
            out.push_str("FINGERPRINT");
            rest = &tail[16..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

fn snapshot(lang: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("waiting.{lang}.html"))
}

#[tokio::test]
async fn the_page_in_english_and_korean_is_byte_for_byte_the_snapshot() -> anyhow::Result<()> {
    let router = dropline_waitroom::page::routes(&config()?)?;
    let bless = std::env::var_os("DROPLINE_BLESS").is_some();
    for (lang, uri, accept) in [
        ("en", format!("/w/{SALE}?lang=en"), "ko"),
        ("en", format!("/w/{SALE}"), "fr-CH, de;q=0.9"),
        ("ko", format!("/w/{SALE}?lang=ko"), "en"),
        ("ko", format!("/w/{SALE}"), "ko-KR,ko;q=0.9,en;q=0.8"),
    ] {
        let (status, headers, body) = get(&router, &uri, &[("accept-language", accept)]).await?;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(content_language(&headers), lang, "{uri}");
        let body = mask_fingerprints(&body);
        let path = snapshot(lang);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
            std::fs::write(&path, &body)?;
            continue;
        }
        let want = std::fs::read_to_string(&path)?;
        if body != want {
            let line = body
                .lines()
                .zip(want.lines())
                .position(|(got, want)| got != want)
                .map_or(body.lines().count().min(want.lines().count()), |i| i)
                + 1;
            panic!(
                "{uri} (Accept-Language {accept}) differs from {} from line {line}:\n got: {:?}\nwant: {:?}\n\
                 (a deliberate change: DROPLINE_BLESS=1 rewrites the snapshot)",
                path.display(),
                body.lines().nth(line - 1),
                want.lines().nth(line - 1),
            );
        }
    }
    Ok(())
}
