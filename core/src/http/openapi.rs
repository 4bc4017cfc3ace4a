//! What every service's OpenAPI document shares (`../shared/design/openapi.md`, issue #20):
//! the one `Error` schema with its `code` enum ([`ErrorCode`]), the security schemes
//! (`accessToken`, `ticket`, `pass`), the responses every operation can give (413/415 with a
//! body, 401 with a token, 503 with `Retry-After`), and the checks the services' tests run on
//! their document: every operation described, the committed copy equal to the generated one.
//!
//! A service builds its document with `utoipa-axum` (`routes!`: the annotation documenting a
//! route is the one registering it), then calls [`finish`]. Behind the `openapi` feature, so
//! that only the services pay for utoipa.

use std::path::Path;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, Info, ObjectBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Type,
};
use utoipa::{OpenApi as _, ToSchema};

use crate::http::error::ErrorCode;

/// The access token scheme (http bearer): `Authorization: Bearer <access token>`.
pub const ACCESS_TOKEN: &str = "accessToken";
/// The waiting room's ticket scheme (http bearer), for the waitroom's own routes.
pub const TICKET: &str = "ticket";
/// The pass scheme: header `Dropline-Pass` (apiKey), always together with [`ACCESS_TOKEN`].
pub const PASS: &str = "pass";
/// The header carrying the pass.
pub const PASS_HEADER: &str = "Dropline-Pass";
/// What an `Idempotency-Key` header must match: 1 to 64 visible ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = r"^[\x21-\x7E]{1,64}$";
/// The environment variable that makes [`check_committed`] rewrite the committed copy (not
/// `DROPLINE_*`: those are configuration keys, and an unknown one is refused).
pub const WRITE_ENV: &str = "UPDATE_OPENAPI";

/// Every error answer: `{"error": {"code", "message"}}` (DESIGN §9).
#[derive(Debug, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The error's machine-readable code and a message meant for a person.
#[derive(Debug, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// Human text; may change between versions, never parse it.
    pub message: String,
}

#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(ErrorBody, ErrorDetail, ErrorCode)))]
struct Shared;

/// Completes a service's document: `info`, the shared schemas and security schemes, and the
/// responses every operation can give that its annotation need not repeat:
/// - with a JSON request body: 400 (malformed or unknown field), 413 (over the body limit),
///   415 (not `application/json`);
/// - with the access token among its requirements: 401;
/// - always: 503 (a dependency down, the request timeout), with `Retry-After`;
/// - `Retry-After` on every 429 and 503.
pub fn finish(doc: &mut OpenApi, title: &str, description: &str) {
    let mut info = Info::new(title, env!("CARGO_PKG_VERSION"));
    info.description = Some(description.to_owned());
    doc.info = info;
    doc.merge(Shared::openapi());
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        ACCESS_TOKEN,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "The access token from `POST /api/auth/login` or `/api/auth/refresh`.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        TICKET,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The waiting room's ticket from `POST /w/{sale_id}/join`.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        PASS,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            PASS_HEADER,
            "The pass the waiting room gave on admission (a JWT for one sale and one user); \
             always with the access token.",
        ))),
    );
    shell_paths(doc);
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            complete(op);
        }
    }
}

/// The routes the service shell adds to every service (`http::shell`), and the document itself.
fn shell_paths(doc: &mut OpenApi) {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder};
    let json = |description: &str, schema: ObjectBuilder| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(schema)).build(),
            )
            .build()
    };
    let text = |name: &str| {
        ObjectBuilder::new()
            .property(name, ObjectBuilder::new().schema_type(Type::String))
            .required(name)
    };
    let operations = [
        (
            "/healthz",
            "Liveness",
            "The process is alive (it answers without looking at its dependencies).",
            json("`{\"status\": \"ok\"}`", text("status")),
        ),
        (
            "/readyz",
            "Readiness",
            "Every dependency answered (503 `unavailable` names the one that did not).",
            json(
                "`{\"status\": \"ready\", \"dependencies\": [...]}`",
                text("status").property(
                    "dependencies",
                    utoipa::openapi::schema::ArrayBuilder::new()
                        .items(ObjectBuilder::new().schema_type(Type::String)),
                ),
            ),
        ),
        (
            "/metrics",
            "Metrics",
            "Prometheus text exposition of the process's metrics.",
            ResponseBuilder::new()
                .description("Prometheus text format")
                .content(
                    "text/plain",
                    ContentBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .build(),
                )
                .build(),
        ),
        (
            "/openapi.json",
            "This document",
            "The service's OpenAPI 3.1 document, generated from its code.",
            json(
                "The document",
                ObjectBuilder::new().schema_type(Type::Object),
            ),
        ),
    ];
    for (path, summary, description, ok) in operations {
        let operation = OperationBuilder::new()
            .tag("service")
            .summary(Some(summary))
            .description(Some(description))
            .response("200", ok)
            .build();
        doc.paths
            .add_path_operation(path, vec![HttpMethod::Get], operation);
    }
}

fn error_response(description: &str, retry_after: bool) -> RefOr<utoipa::openapi::Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Error")))
            .build(),
    );
    if retry_after {
        response = response.header("Retry-After", retry_after_header());
    }
    RefOr::T(response.build())
}

fn retry_after_header() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .description(Some("Seconds to wait before trying again."))
        .build()
}

fn complete(op: &mut Operation) {
    let responses = &mut op.responses.responses;
    let mut add = |status: &str, description: &str, retry: bool| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description, retry));
    };
    if op.request_body.is_some() {
        add(
            "400",
            "`bad_request`: the body is not valid JSON, has an unknown field or breaks a bound",
            false,
        );
        add("413", "`payload_too_large`: the body is over 64 KiB", false);
        add(
            "415",
            "`unsupported_media_type`: the body is not `application/json`",
            false,
        );
    }
    let needs_token = op.security.as_ref().is_some_and(|reqs| {
        reqs.iter().any(|req| {
            serde_json::to_value(req)
                .ok()
                .is_some_and(|v| v.get(ACCESS_TOKEN).is_some())
        })
    });
    if needs_token {
        add(
            "401",
            "`unauthorized`: no valid access token (whatever else is wrong)",
            false,
        );
    }
    add(
        "503",
        "`unavailable`: a dependency is down or the request timed out; try again",
        true,
    );
    for (status, response) in responses.iter_mut() {
        if (status == "429" || status == "503")
            && let RefOr::T(response) = response
            && !response.headers.contains_key("Retry-After")
        {
            response
                .headers
                .insert("Retry-After".to_owned(), retry_after_header());
        }
    }
}

/// Every operation without a description (`METHOD path`): a route's doc comment is its
/// description, and a test of each service asserts this list is empty.
pub fn undescribed(doc: &OpenApi) -> Vec<String> {
    let mut missing = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
        ] {
            let Some(op) = op else { continue };
            let described = [&op.summary, &op.description]
                .into_iter()
                .flatten()
                .any(|text| !text.trim().is_empty());
            if !described {
                missing.push(format!("{method} {path}"));
            }
        }
    }
    missing
}

/// The document as committed: pretty JSON with a final newline.
pub fn render(doc: &OpenApi) -> Result<String, serde_json::Error> {
    doc.to_pretty_json().map(|mut json| {
        json.push('\n');
        json
    })
}

/// Compares `doc` with the committed copy at `path`. With `UPDATE_OPENAPI=1` it writes
/// the copy instead. The error says what differs first and how to regenerate (`regenerate`,
/// e.g. the command of the service's test).
pub fn check_committed(doc: &OpenApi, path: &Path, regenerate: &str) -> Result<(), String> {
    let generated = render(doc).map_err(|e| format!("rendering the document: {e}"))?;
    if std::env::var(WRITE_ENV).is_ok_and(|v| v == "1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        return std::fs::write(path, generated).map_err(|e| format!("{}: {e}", path.display()));
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed == generated {
        return Ok(());
    }
    let first = committed
        .lines()
        .zip(generated.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
    Err(format!(
        "{} differs from the document the code generates (first at line {}: committed `{}`, \
         generated `{}`).\nIf the change is meant, regenerate it and commit the diff:\n    \
         {WRITE_ENV}=1 {regenerate}",
        path.display(),
        first + 1,
        committed.lines().nth(first).unwrap_or("<end>").trim(),
        generated.lines().nth(first).unwrap_or("<end>").trim(),
    ))
}
