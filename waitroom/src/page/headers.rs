//! What every HTML page of the waitroom (the waiting page, the control room) sends besides its
//! body: the security and caching headers ([`html_headers`]), and the api origin that the
//! Content-Security-Policy lets the page call ([`api_base_url`], from `waitroom.api_base_url`).

use axum::http::{HeaderMap, HeaderValue, header};

pub(crate) const API_BASE_URL_KEY: &str = "waitroom.api_base_url";

/// `waitroom.api_base_url` without a trailing `/`, and its origin when it has one.
pub(crate) fn api_base_url(raw: &str) -> anyhow::Result<(String, Option<String>)> {
    let trimmed = raw.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok((String::new(), None));
    }
    let invalid = |why: &str| {
        anyhow::anyhow!(
            "config key `{API_BASE_URL_KEY}`: expected empty or an http(s):// URL without query or fragment, got `{raw}` ({why})"
        )
    };
    let url = url::Url::parse(trimmed).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("scheme"));
    }
    if url.host_str().is_none() {
        return Err(invalid("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the URL"));
    }
    Ok((trimmed.to_owned(), Some(url.origin().ascii_serialization())))
}

/// The headers every HTML page of the waitroom carries: HTML, never cached, no sniffing, no
/// referrer, no framing, and its Content-Security-Policy `csp`.
pub(crate) fn html_headers(h: &mut HeaderMap, csp: &str) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(value) = HeaderValue::from_str(csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, value);
    }
}

/// An administrator's page (the control room, the console, the report): `html` with
/// [`html_headers`], kept out of search engines, under a CSP that allows only this origin's
/// assets and calls to this origin and the api's (`api_origin`, when it has one of its own).
pub(crate) fn admin_page(html: String, api_origin: Option<&str>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let api = api_origin
        .map(|origin| format!(" {origin}"))
        .unwrap_or_default();
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{api}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let mut response = html.into_response();
    let h = response.headers_mut();
    html_headers(h, &csp);
    h.insert(
        header::HeaderName::from_static("x-robots-tag"),
        HeaderValue::from_static("noindex"),
    );
    response
}

/// `config` as JSON made safe to stand inside the page's `<script type="application/json">`.
pub(crate) fn page_config_json<T: serde::Serialize>(
    config: &T,
) -> Result<String, dropline_core::http::error::ApiError> {
    let json =
        serde_json::to_string(config).map_err(dropline_core::http::error::ApiError::internal)?;
    let mut out = String::with_capacity(json.len() + 16);
    super::escape_script_json_into(&mut out, &json);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_url_is_checked_and_gives_the_csp_origin() -> anyhow::Result<()> {
        assert_eq!(api_base_url("")?, (String::new(), None));
        assert_eq!(
            api_base_url("http://127.0.0.1:8081/")?,
            (
                "http://127.0.0.1:8081".to_owned(),
                Some("http://127.0.0.1:8081".to_owned())
            )
        );
        assert_eq!(
            api_base_url("https://shop.example/dropline")?.1.as_deref(),
            Some("https://shop.example")
        );
        for bad in [
            "ftp://x",
            "not a url",
            "https://x/?a=1",
            "https://u:p@x",
            "javascript:alert(1)",
        ] {
            let e = api_base_url(bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains(API_BASE_URL_KEY)),
                "{bad}: {e:?}"
            );
        }
        Ok(())
    }
}
