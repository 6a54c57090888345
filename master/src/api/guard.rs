//! What every request under `/api/` and `/ws/` passes on its way in and out, so that each answer
//! is a JSON error a person can act on, never a 500 or the console's HTML:
//!
//! - [`refuse_bad_input`]: a NUL byte or another control character in the path or query is a 400
//!   before any handler (PostgreSQL cannot even store a NUL);
//! - [`database_gate`]: while the database is away, a 503 at once (not after the pool's wait);
//! - [`json_errors`]: an error that some layer answered in plain text (axum's own rejections of a
//!   malformed JSON body, an unknown field, a wrong type, a bad path parameter, a wrong method) is
//!   re-written as `{"error": "<that text>"}` with the same status;
//! - [`unknown_route`]: an unknown `/api/…` or `/ws/…` path is a JSON 404.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kiln_shared::api::ErrorBody;
use std::sync::Arc;

fn is_api(path: &str) -> bool {
    path.starts_with("/api/") || path == "/api" || path.starts_with("/ws/") || path == "/ws"
}

/// Percent-decodes `s` (bytes that do not decode stay as they are).
fn percent_decoded(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Why a request's path or query cannot be served, if it cannot.
pub fn bad_uri(uri: &Uri) -> Option<String> {
    for (part, text) in [("path", uri.path()), ("query", uri.query().unwrap_or(""))] {
        let bytes = percent_decoded(text);
        if let Some(b) = bytes.iter().find(|b| b.is_ascii_control()) {
            return Some(format!(
                "the request's {part} holds a control character (byte 0x{b:02x}); names and values may not"
            ));
        }
        if std::str::from_utf8(&bytes).is_err() {
            return Some(format!("the request's {part} is not valid UTF-8"));
        }
    }
    None
}

pub async fn refuse_bad_input(req: Request, next: Next) -> Response {
    if is_api(req.uri().path()) {
        if let Some(why) = bad_uri(req.uri()) {
            return ApiError::Invalid {
                field: None,
                message: why,
            }
            .into_response();
        }
    }
    next.run(req).await
}

pub async fn database_gate(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if is_api(path) && path != "/api/health" {
        if let Some(why) = st.database.trouble() {
            return ApiError::Unavailable(format!(
                "the database is unavailable ({why}); the master is reconnecting, try again shortly"
            ))
            .into_response();
        }
    }
    next.run(req).await
}

/// Error bodies larger than this are not re-written (they are not axum's short rejections).
const MAX_REWRITE: usize = 16 * 1024;

pub async fn json_errors(req: Request, next: Next) -> Response {
    let api = is_api(req.uri().path());
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !api || !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match to_bytes(body, MAX_REWRITE).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if !text.is_empty() {
        text
    } else if status == axum::http::StatusCode::METHOD_NOT_ALLOWED {
        format!("{path} does not take {method}")
    } else {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string()
    };
    let body = ErrorBody {
        error: message,
        code: crate::error::code_for(status).to_string(),
        field: None,
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

pub async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no API route {method} {} (see docs/api.md)",
        uri.path()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_anywhere_are_named() {
        let bad = |u: &str| bad_uri(&u.parse::<Uri>().unwrap());
        assert!(bad("/api/projects/a%00b").unwrap().contains("0x00"));
        assert!(bad("/api/builds?project=x%0Ay").unwrap().contains("query"));
        assert!(bad("/api/projects/%FF").unwrap().contains("UTF-8"));
        assert_eq!(bad("/api/projects/board-1?state=queued"), None);
        assert_eq!(bad("/api/projects/100%25"), None);
    }
}
