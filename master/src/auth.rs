//! Bearer tokens: the admin token (until the login issue) and per-slave tokens. Only sha256
//! hashes are stored; comparison is constant-time.

use crate::db::slaves::{self, SlaveRow};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A fresh random token with a prefix saying what it is for.
pub fn new_token(prefix: &str) -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

pub fn is_admin_token(st: &AppState, token: &str) -> bool {
    st.cfg
        .master
        .admin_token_sha256
        .as_deref()
        .is_some_and(|h| {
            constant_time_eq(
                sha256_hex(token).as_bytes(),
                h.to_ascii_lowercase().as_bytes(),
            )
        })
}

/// Extractor: the request carries the admin token.
pub struct Admin;

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        st: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        // Browsers cannot set headers on a download link: a GET may carry `?token=` instead.
        let query_token = (parts.method == axum::http::Method::GET)
            .then(|| parts.uri.query())
            .flatten()
            .and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
                    .map(str::to_string)
            });
        match bearer(&parts.headers).map(str::to_string).or(query_token) {
            Some(t) if is_admin_token(st, &t) => Ok(Admin),
            Some(_) => Err(ApiError::Unauthorized(
                "the bearer token is not the admin token (see admin.token in the data dir)".into(),
            )),
            None => Err(ApiError::Unauthorized(
                "send the admin token as 'Authorization: Bearer <token>' (see admin.token in the data dir)".into(),
            )),
        }
    }
}

pub async fn slave_from_headers(st: &AppState, headers: &HeaderMap) -> Result<SlaveRow, ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::Unauthorized("send the slave token as 'Authorization: Bearer <token>'".into())
    })?;
    slaves::by_token(&st.db, &sha256_hex(token))
        .await?
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "unknown slave token; register the slave with POST /api/slaves and use the token it returns".into(),
            )
        })
}

/// Extractor: the request carries a valid per-build upload token (see `upload_token`).
pub struct UploadAuth(pub crate::upload_token::Claims);

impl FromRequestParts<Arc<AppState>> for UploadAuth {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        st: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::Unauthorized(
                "send the build's upload token (from its job) as 'Authorization: Bearer <token>'"
                    .into(),
            )
        })?;
        st.upload_keys
            .verify(token)
            .map(UploadAuth)
            .map_err(ApiError::Unauthorized)
    }
}
