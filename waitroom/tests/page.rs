//! The waiting page as a buyer gets it, byte for byte: `GET /w/{sale}` in English and Korean
//! must be exactly the page of [`SNAPSHOTS`] (the words of the page, the markup of the built-in
//! template and the JSON block handed to `waiting.js`), kept as SHA-256 digests. The assets'
//! fingerprints (`?v=…`) are masked, so a change to `waiting.js` or `waiting.css` alone does not
//! touch them.
//!
//! A failure writes the page it got to `$CARGO_TARGET_TMPDIR/waiting.<lang>.html`: compare it
//! with the same file from a commit where the test passes. A deliberate change to the page's
//! words or template: put the digest that the failure prints into [`SNAPSHOTS`].
//!
//! Also: an operator's language file (`waitroom.locales_dir`) is served by `?lang=` and by
//! `Accept-Language`, and a file that lacks a message stops the start.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::http::{StatusCode, header};
use dropline_core::Config;
use dropline_core::config::{Sources, WaitroomConfig};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

const SALE: &str = "0190c2a4-7e5b-7cc3-9f1e-2b8d4f6a9c10";

/// SHA-256 of the page (fingerprints masked) in each language, as served before the page's
/// words moved from a Rust table to Fluent files, with the door's additions since (the notice,
/// the proof-of-work box and `pow_worker_src` in the JSON block) and the Stripe step's (the
/// hidden card-field box and payment line, and their words).
const SNAPSHOTS: [(&str, &str); 2] = [
    (
        "en",
        "3da9b128632c793f43259fe0dbb6326346a5ba5a25cfd05895d4b5cf89fe7113",
    ),
    (
        "ko",
        "a5224bfaaf236624d9d0338ed6321b91112cf08c40a3d6144e13ec5776d51b53",
    ),
];

fn config() -> anyhow::Result<WaitroomConfig> {
    Ok(Config::defaults()?.waitroom)
}

/// `GET uri` with `Accept-Language: accept`: the status, `Content-Language` and the body.
async fn page(
    router: &Router,
    uri: &str,
    accept: &str,
) -> anyhow::Result<(StatusCode, String, String)> {
    let request = axum::http::Request::get(uri)
        .header(header::ACCEPT_LANGUAGE, accept)
        .body(axum::body::Body::empty())?;
    let response = router.clone().oneshot(request).await?;
    let language = response
        .headers()
        .get(header::CONTENT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    Ok((status, language, String::from_utf8(body.to_vec())?))
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

/// Fails unless `body` (masked) is the snapshot of `lang`.
fn assert_snapshot(lang: &str, body: &str, what: &str) -> anyhow::Result<()> {
    let body = mask_fingerprints(body);
    let got = format!("{:x}", Sha256::digest(body.as_bytes()));
    let want = SNAPSHOTS
        .iter()
        .find(|(l, _)| *l == lang)
        .map(|(_, digest)| *digest)
        .unwrap_or_default();
    if got != want {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("waiting.{lang}.html"));
        std::fs::write(&path, &body)?;
        panic!(
            "{what}: the {lang} page is not the snapshot (SHA-256 {got}, want {want}); it is in {}",
            path.display()
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_page_in_english_and_korean_is_byte_for_byte_the_snapshot() -> anyhow::Result<()> {
    let router = dropline_waitroom::page::routes(&config()?, &Config::defaults()?.payment)?;
    for (lang, uri, accept) in [
        ("en", format!("/w/{SALE}?lang=en"), "ko"),
        ("en", format!("/w/{SALE}"), "fr-CH, de;q=0.9"),
        ("ko", format!("/w/{SALE}?lang=ko"), "en"),
        ("ko", format!("/w/{SALE}"), "ko-KR,ko;q=0.9,en;q=0.8"),
    ] {
        let (status, language, body) = page(&router, &uri, accept).await?;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(language, lang, "{uri}");
        assert_snapshot(lang, &body, &format!("{uri} (Accept-Language {accept})"))?;
    }
    Ok(())
}

/// The waitroom's config with `waitroom.locales_dir` set the way an operator would, through the
/// environment (`DROPLINE_WAITROOM__LOCALES_DIR`).
fn config_with_locales(dir: &Path) -> anyhow::Result<WaitroomConfig> {
    let config = Config::load(&Sources {
        file: None,
        env: false,
        overrides: vec![(
            "WAITROOM__LOCALES_DIR".to_owned(),
            dir.display().to_string(),
        )],
    })?;
    assert_eq!(config.waitroom.locales_dir.as_deref(), Some(dir));
    Ok(config.waitroom)
}

/// The built-in English file with some lines in French (a real one translates them all).
fn french() -> anyhow::Result<String> {
    let english =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("locales/en.ftl"))?;
    Ok(english
        .lines()
        .map(|line| match line.split_once(" = ") {
            Some(("page_title", _)) => "page_title = Salle d'attente".to_owned(),
            Some(("other_lang_name", _)) => "other_lang_name = English".to_owned(),
            Some(("people_ahead", _)) => "people_ahead = { $n } devant vous".to_owned(),
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

#[tokio::test]
async fn an_operators_language_file_is_served_and_one_lacking_a_message_stops_the_start()
-> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("dl-locales-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let french = french()?;
    std::fs::write(dir.join("fr.ftl"), &french)?;
    let router =
        dropline_waitroom::page::routes(&config_with_locales(&dir)?, &Config::defaults()?.payment)?;
    for (uri, accept) in [
        (format!("/w/{SALE}?lang=fr"), "ko"),
        (format!("/w/{SALE}"), "fr-CH, fr;q=0.9, en;q=0.8, ko;q=0.7"),
    ] {
        let (status, language, body) = page(&router, &uri, accept).await?;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(language, "fr", "{uri}");
        for want in [
            r#"<html lang="fr">"#,
            "<title>Salle d&#39;attente</title>",
            r#"<a href="?lang=en" hreflang="en" lang="en">English</a>"#,
            r#""lang":"fr""#,
            r#""people_ahead":"{n} devant vous""#,
        ] {
            assert!(body.contains(want), "{uri}: the page lacks {want}");
        }
    }
    // English and Korean are as before.
    for lang in ["en", "ko"] {
        let (_, _, body) = page(&router, &format!("/w/{SALE}?lang={lang}"), "").await?;
        assert_snapshot(lang, &body, "with an operator's language")?;
    }

    // A file without `footer`: the start is refused, naming the key, the file and the message.
    let without_footer: Vec<&str> = french
        .lines()
        .filter(|line| !line.starts_with("footer ="))
        .collect();
    std::fs::write(dir.join("fr.ftl"), without_footer.join("\n"))?;
    let error =
        dropline_waitroom::page::routes(&config_with_locales(&dir)?, &Config::defaults()?.payment)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
    for want in [
        "waitroom.locales_dir",
        "fr.ftl",
        "lacks the message `footer`",
    ] {
        assert!(error.contains(want), "`{error}` lacks `{want}`");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
