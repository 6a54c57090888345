//! REST calls (gloo-net) with the admin token; errors come back as the server's message and field.

use gloo_net::http::{Request, RequestBuilder};
use gloo_storage::{LocalStorage, Storage};
use kiln_shared::api::ErrorBody;
use serde::{de::DeserializeOwned, Serialize};

const TOKEN_KEY: &str = "kiln.token";

pub fn token() -> Option<String> {
    LocalStorage::get::<String>(TOKEN_KEY)
        .ok()
        .filter(|t| !t.is_empty())
}

pub fn set_token(t: &str) {
    let _ = LocalStorage::set(TOKEN_KEY, t);
}

pub fn clear_token() {
    LocalStorage::delete(TOKEN_KEY);
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

fn auth(r: RequestBuilder) -> RequestBuilder {
    match token() {
        Some(t) => r.header("Authorization", &format!("Bearer {t}")),
        None => r,
    }
}

async fn send<T: DeserializeOwned>(req: gloo_net::http::Request) -> Result<T, ApiErr> {
    let resp = req.send().await.map_err(ApiErr::network)?;
    let status = resp.status();
    if (200..300).contains(&status) {
        if status == 204 {
            return serde_json::from_str("null").map_err(ApiErr::network);
        }
        return resp.json::<T>().await.map_err(ApiErr::network);
    }
    let text = resp.text().await.unwrap_or_default();
    let body: Option<ErrorBody> = serde_json::from_str(&text).ok();
    if status == 401 {
        clear_token();
    }
    Err(ApiErr {
        status,
        message: body
            .as_ref()
            .map(|b| b.error.clone())
            .unwrap_or_else(|| format!("HTTP {status}: {text}")),
        field: body.and_then(|b| b.field),
    })
}

pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiErr> {
    let req = auth(Request::get(path)).build().map_err(ApiErr::network)?;
    send(req).await
}

pub async fn post<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiErr> {
    let req = auth(Request::post(path))
        .json(body)
        .map_err(ApiErr::network)?;
    send(req).await
}

pub async fn patch<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiErr> {
    let req = auth(Request::patch(path))
        .json(body)
        .map_err(ApiErr::network)?;
    send(req).await
}

pub async fn delete(path: &str) -> Result<(), ApiErr> {
    let req = auth(Request::delete(path))
        .build()
        .map_err(ApiErr::network)?;
    send::<serde_json::Value>(req).await.map(|_| ())
}

/// A link that works without headers (downloads, raw log): the token rides in the query.
pub fn href(path: &str) -> String {
    format!("{path}?token={}", token().unwrap_or_default())
}
