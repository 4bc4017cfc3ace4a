//! Checks both services' OpenAPI documents share (design/openapi.md "Content").

use serde_json::Value;

/// Every operation of `doc`: no `default` response; each 4xx/5xx answers the one `Error`
/// schema; 429 and 503 carry `Retry-After`; an operation with a body documents 400, 413, 415.
/// Panics (a test assertion) naming the operation that breaks one.
pub fn assert_operations_follow_the_contract(doc: &Value) {
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            assert!(op.get("default").is_none(), "{method} {path} has a default");
            for (status, response) in op["responses"].as_object().into_iter().flatten() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{method} {path} {status}"
                    );
                }
                if status == "429" || status == "503" {
                    assert!(
                        response["headers"].get("Retry-After").is_some(),
                        "{method} {path} {status} without Retry-After"
                    );
                }
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415"] {
                    assert!(
                        op["responses"].get(status).is_some(),
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}
