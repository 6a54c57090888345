//! REST calls (gloo-net), same-origin with Kiln's session cookie (HttpOnly: the console never
//! sees it and holds no token). Every call that changes something carries the session's CSRF
//! token (`X-CSRF-Token`, from `GET /api/me`); a 401 from `/api/` means the session is gone and
//! is handed to the session layer, which sends the user to the login page. Errors carry the
//! server's message and field.

use gloo_net::http::{Request, RequestBuilder};
use kiln_shared::api::{ErrorBody, LocalLogin, Me};
use serde::{de::DeserializeOwned, Serialize};
use std::cell::RefCell;

/// The header the master wants with every state-changing request made with the cookie.
pub const CSRF_HEADER: &str = "X-CSRF-Token";

thread_local! {
    /// The session's CSRF token (from `Me`); kept by the session layer.
    static CSRF: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Told when the master answers 401 to an `/api/` call (the session ended or expired).
    static ON_UNAUTHORIZED: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
}

pub fn set_csrf(token: Option<String>) {
    CSRF.with(|c| *c.borrow_mut() = token);
}

/// Registers what happens when the session is refused (one handler: the session provider's).
pub fn on_unauthorized(f: impl Fn() + 'static) {
    ON_UNAUTHORIZED.with(|h| *h.borrow_mut() = Some(Box::new(f)));
}

/// An error to show the user: the server's message, and the field it concerns.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiErr {
    pub status: u16,
    pub message: String,
    pub field: Option<String>,
}

impl ApiErr {
    fn network(e: impl std::fmt::Display) -> Self {
        ApiErr {
            status: 0,
            message: format!("cannot reach the master: {e}"),
            field: None,
        }
    }
}

/// Whether a 401 to `path` means "the session is gone" (every `/api/` route); the sign-in
/// routes (`/auth/…`) answer 401 for a wrong password, which the login page shows itself.
pub fn ends_session(path: &str, status: u16) -> bool {
    status == 401 && path.starts_with("/api/")
}

/// The error a failed response stands for: the server's JSON `error`, else its status and text.
pub fn error_of(status: u16, text: &str) -> ApiErr {
    let body: Option<ErrorBody> = from_json(text).ok();
    ApiErr {
        status,
        message: body.as_ref().map(|b| b.error.clone()).unwrap_or_else(|| {
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {text}")
            }
        }),
        field: body.and_then(|b| b.field),
    }
}

/// Adds the CSRF header to a request that changes something.
fn csrf(r: RequestBuilder) -> RequestBuilder {
    match CSRF.with(|c| c.borrow().clone()) {
        Some(t) => r.header(CSRF_HEADER, &t),
        None => r,
    }
}

/// Reads a JSON text into `T`. In the browser the browser parses it (`JSON.parse`) and
/// serde-wasm-bindgen reads the value (far less wasm than a JSON parser of ours); natively (unit
/// tests) serde_json does.
pub fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, ApiErr> {
    #[cfg(target_arch = "wasm32")]
    {
        let v = js_sys::JSON::parse(text).map_err(|e| {
            ApiErr::network(
                e.as_string()
                    .unwrap_or_else(|| "the answer is not JSON".into()),
            )
        })?;
        serde_wasm_bindgen::from_value(v).map_err(ApiErr::network)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        serde_json::from_str(text).map_err(ApiErr::network)
    }
}

async fn send<T: DeserializeOwned>(path: &str, req: Request) -> Result<T, ApiErr> {
    let resp = req.send().await.map_err(ApiErr::network)?;
    let status = resp.status();
    if (200..300).contains(&status) {
        if status == 204 {
            return from_json("null");
        }
        let text = resp.text().await.map_err(ApiErr::network)?;
        return from_json(&text);
    }
    let text = resp.text().await.unwrap_or_default();
    if ends_session(path, status) {
        set_csrf(None);
        ON_UNAUTHORIZED.with(|h| {
            if let Some(h) = h.borrow().as_ref() {
                h()
            }
        });
    }
    Err(error_of(status, &text))
}

pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiErr> {
    let req = Request::get(path).build().map_err(ApiErr::network)?;
    send(path, req).await
}

pub async fn post<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiErr> {
    let req = csrf(Request::post(path))
        .json(body)
        .map_err(ApiErr::network)?;
    send(path, req).await
}

pub async fn put<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiErr> {
    let req = csrf(Request::put(path))
        .json(body)
        .map_err(ApiErr::network)?;
    send(path, req).await
}

pub async fn patch<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiErr> {
    let req = csrf(Request::patch(path))
        .json(body)
        .map_err(ApiErr::network)?;
    send(path, req).await
}

pub async fn delete(path: &str) -> Result<(), ApiErr> {
    let req = csrf(Request::delete(path))
        .build()
        .map_err(ApiErr::network)?;
    send::<serde_json::Value>(path, req).await.map(|_| ())
}

/// `POST /auth/local/login`: the master sets the session cookie and answers who signed in.
pub async fn login(username: &str, password: &str) -> Result<Me, ApiErr> {
    let body = LocalLogin {
        username: username.to_string(),
        password: password.to_string(),
    };
    post("/auth/local/login", &body).await
}

/// `POST /auth/logout`: ends the session on the master and clears the cookie.
pub async fn logout() -> Result<(), ApiErr> {
    let req = csrf(Request::post("/auth/logout"))
        .build()
        .map_err(ApiErr::network)?;
    send::<serde_json::Value>("/auth/logout", req)
        .await
        .map(|_| ())
}

/// One path segment of a URL (a team, user or project name in a route).
pub fn seg(s: &str) -> String {
    kiln_shared::api::percent_encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_401_from_the_api_ends_the_session() {
        assert!(ends_session("/api/projects", 401));
        assert!(ends_session("/api/me", 401));
        // A wrong password at sign-in is the login page's to show.
        assert!(!ends_session("/auth/local/login", 401));
        assert!(!ends_session("/api/projects", 403));
        assert!(!ends_session("/api/projects", 404));
    }

    #[test]
    fn the_servers_message_is_what_the_user_sees() {
        let e = error_of(
            429,
            r#"{"error":"too many failed sign-ins for this address: try again in 30 s","code":"rate_limited"}"#,
        );
        assert_eq!(e.status, 429);
        assert_eq!(
            e.message,
            "too many failed sign-ins for this address: try again in 30 s"
        );
        assert_eq!(e.field, None);
        let e = error_of(
            400,
            r#"{"error":"'x y' is not valid","code":"invalid","field":"name"}"#,
        );
        assert_eq!(e.field.as_deref(), Some("name"));
        // Not JSON (a proxy's page): the status and the text.
        assert_eq!(
            error_of(502, "Bad Gateway").message,
            "HTTP 502: Bad Gateway"
        );
        assert_eq!(error_of(500, "").message, "HTTP 500");
    }

    #[test]
    fn names_in_routes_are_one_path_segment() {
        assert_eq!(seg("board-a"), "board-a");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }
}
