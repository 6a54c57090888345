//! Who is asking: people (a session cookie or an API token, see [`principal`]), slaves (their
//! token) and builds (a per-build upload token). Only sha256 hashes of tokens are stored.
//!
//! - [`principal`]: the signed-in person of a request, with CSRF and `Origin` checks;
//! - [`access`]: what that person may do with a project;
//! - [`password`]: argon2id hashes of local accounts' passwords;
//! - [`limiter`]: failed sign-ins per account and per address;
//! - [`cookie`]: the session cookie's name and attributes.

pub mod access;
pub mod cookie;
pub mod limiter;
pub mod live;
pub mod password;
pub mod principal;

pub use access::ProjectAccess;

/// What signing in needs at run time.
pub struct AuthState {
    /// Cookies are `__Host-` and Secure (false only for plain HTTP on loopback).
    pub secure_cookies: bool,
    pub limiter: limiter::Limiter,
    pub oidc: crate::login::oidc::OidcClients,
}

/// Whether the session cookie must be Secure: always, except when the master serves plain HTTP
/// on a loopback address and `master.public_url` (if set) is not https.
pub fn secure_cookies(
    cfg: &kiln_shared::config::Config,
    tls: bool,
    addr: std::net::SocketAddr,
) -> bool {
    let https_url = cfg
        .master
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    tls || !addr.ip().is_loopback() || https_url
}

/// The `admin.token` that `kiln-master init` wrote (its hash is `master.admin_token_sha256`)
/// is an admin-role API token of the first admin. The config is its source: at start, a token
/// adopted from an earlier hash is revoked when the config names another one (or none), and the
/// configured one is adopted unless a token with that hash exists (a token revoked through the
/// API stays revoked). Its owner is the user `admin`, created as a site admin when there is none
/// (another name when `admin` is taken by someone who is not an admin).
pub async fn adopt_admin_token(st: &AppState) -> anyhow::Result<()> {
    use crate::db::accounts;
    let hash = st
        .cfg
        .master
        .admin_token_sha256
        .as_deref()
        .map(str::to_ascii_lowercase);
    let replaced = sqlx::query(
        "UPDATE api_tokens SET revoked_at = now()
         WHERE from_config AND revoked_at IS NULL AND token_sha256 IS DISTINCT FROM $1",
    )
    .bind(hash.as_deref())
    .execute(&st.db)
    .await?;
    if replaced.rows_affected() > 0 {
        tracing::info!("revoked the admin token of an earlier master.admin_token_sha256");
    }
    let Some(hash) = hash else {
        return Ok(());
    };
    if accounts::token_by_hash(&st.db, &hash).await?.is_some() {
        return Ok(());
    }
    let mut owner = None;
    for name in ["admin", "kiln-admin", "first-admin"] {
        match accounts::user_by_name(&st.db, name).await? {
            Some(u) if u.admin => {
                owner = Some(u.id);
                break;
            }
            Some(_) => continue,
            None => {
                let id = accounts::insert_user(
                    &st.db,
                    accounts::NewUser {
                        username: name,
                        email: None,
                        admin: true,
                        password_hash: None,
                        must_change_password: false,
                    },
                )
                .await?;
                if id.is_some() {
                    owner = id;
                    break;
                }
            }
        }
    }
    let owner = owner.ok_or_else(|| anyhow::anyhow!("no user can own admin.token"))?;
    accounts::insert_token_from(
        &st.db,
        owner,
        "admin.token",
        kiln_shared::api::Role::Admin,
        &hash,
        None,
        true,
    )
    .await?;
    tracing::info!("admin.token is now an API token of the first admin");
    Ok(())
}
pub use principal::{AdminUser, Principal};

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

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
        let now = u64::try_from(st.clock.now().timestamp()).unwrap_or_default();
        st.upload_keys
            .verify(token, now)
            .map(UploadAuth)
            .map_err(ApiError::Unauthorized)
    }
}
