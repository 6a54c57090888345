//! The person behind a request, read from the database on every request (so a removed member,
//! a revoked token or an ended session stops working at once):
//!
//! - `Authorization: Bearer <API token>`: a token from `POST /api/tokens` (or the `admin.token`
//!   that `kiln-master init` wrote); the token's role caps what the request may do;
//! - else the session cookie. A state-changing request (anything but GET/HEAD/OPTIONS) made with
//!   the cookie needs the session's CSRF token in `X-CSRF-Token` and an allowed `Origin`.

use super::{bearer, constant_time_eq, cookie, sha256_hex};
use crate::db::accounts::{self, UserRow};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use kiln_shared::api::Role;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub enum Via {
    /// The session cookie: its id's hash, CSRF token and how the person signed in.
    Session {
        id_sha256: String,
        csrf_token: String,
        login: String,
    },
    /// An API token.
    Token { id: i64 },
}

#[derive(Clone, Debug)]
pub struct Principal {
    pub user: UserRow,
    pub via: Via,
    /// The highest role this request may use: a token's role; `Admin` for a session (the
    /// account's own roles still apply).
    pub cap: Role,
    pub address: Option<IpAddr>,
}

impl Principal {
    /// A site admin, through a session or an admin-role token.
    pub fn is_admin(&self) -> bool {
        self.user.admin && self.cap >= Role::Admin
    }

    pub fn name(&self) -> &str {
        &self.user.username
    }

    pub fn address_text(&self) -> Option<String> {
        self.address.map(|a| a.to_string())
    }

    /// 403 unless a site admin.
    pub fn require_admin(&self, doing: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("{doing} needs a site admin")))
        }
    }

    /// Writes an audit entry by this person (an audit failure is logged, never fatal).
    pub async fn audit(
        &self,
        st: &AppState,
        action: &str,
        target: Option<String>,
        detail: serde_json::Value,
    ) {
        crate::audit::record(st, Some(self.name()), action, target, self.address, detail).await;
    }
}

pub fn client_address(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn safe_method(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether `Origin` may send state-changing requests with the cookie: `master.public_url`'s
/// origin, one of `auth.allowed_origins`, or (without `public_url`) the request's own host.
pub fn origin_allowed(st: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    let cfg = &st.cfg;
    if cfg
        .auth
        .allowed_origins
        .iter()
        .any(|o| o.trim_end_matches('/') == origin)
    {
        return true;
    }
    match &cfg.master.public_url {
        Some(u) => origin_of(u) == origin,
        None => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
            let authority = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            host.is_some() && authority == host
        }
    }
}

/// `scheme://host[:port]` of a URL.
pub fn origin_of(url: &str) -> &str {
    let rest_at = url.find("://").map_or(0, |i| i + 3);
    match url[rest_at..].find('/') {
        Some(i) => &url[..rest_at + i],
        None => url.trim_end_matches('/'),
    }
}

const SIGN_IN: &str =
    "sign in first (the console's login page, POST /auth/local/login or a provider), \
                       or send an API token as 'Authorization: Bearer <token>'";

/// Reads the person of a request, or says why there is none.
pub async fn resolve(st: &AppState, parts: &Parts) -> Result<Principal, ApiError> {
    let address = client_address(parts);
    let now = st.clock.now();
    if let Some(token) = bearer(&parts.headers) {
        let row = accounts::token_by_hash(&st.db, &sha256_hex(token)).await?;
        let row = row
            .filter(|t| t.revoked_at.is_none() && !matches!(t.expires_at, Some(e) if e <= now))
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "the API token is unknown, revoked or expired (make one in the console or with POST /api/tokens)".into(),
                )
            })?;
        let user = accounts::user_by_id(&st.db, row.user_id)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("the API token's owner is gone".into()))?;
        accounts::token_used(&st.db, row.id, now).await?;
        return Ok(Principal {
            user,
            via: Via::Token { id: row.id },
            cap: accounts::parse_role(&row.role),
            address,
        });
    }
    let secure = st.auth.secure_cookies;
    let Some(id) = cookie::read(&parts.headers, cookie::SESSION, secure) else {
        return Err(ApiError::Unauthorized(SIGN_IN.into()));
    };
    let a = &st.cfg.auth;
    let id_sha256 = sha256_hex(id);
    let session = accounts::live_session(
        &st.db,
        &id_sha256,
        now,
        a.session_idle_secs,
        a.session_max_secs,
        true,
    )
    .await?
    .ok_or_else(|| ApiError::Unauthorized(format!("your session has ended; {SIGN_IN}")))?;
    if !safe_method(&parts.method) {
        let sent = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !constant_time_eq(sent.as_bytes(), session.csrf_token.as_bytes()) {
            return Err(ApiError::Forbidden(
                "a request made with the session cookie that changes something needs the session's CSRF token in X-CSRF-Token (from GET /api/me)".into(),
            ));
        }
        if !origin_allowed(st, &parts.headers) {
            return Err(ApiError::Forbidden(
                "the request's Origin is not allowed to change anything here (see master.public_url and auth.allowed_origins)".into(),
            ));
        }
    }
    let user = accounts::user_by_id(&st.db, session.user_id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized(SIGN_IN.into()))?;
    Ok(Principal {
        user,
        via: Via::Session {
            id_sha256,
            csrf_token: session.csrf_token,
            login: session.via,
        },
        cap: Role::Admin,
        address,
    })
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        st: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        resolve(st, parts).await
    }
}

/// Extractor: a site admin (403 for anyone else signed in, 401 for nobody).
pub struct AdminUser(pub Principal);

impl FromRequestParts<Arc<AppState>> for AdminUser {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        st: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let p = resolve(st, parts).await?;
        p.require_admin("this")?;
        Ok(AdminUser(p))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins_of_urls() {
        assert_eq!(
            super::origin_of("https://kiln.example.org/"),
            "https://kiln.example.org"
        );
        assert_eq!(
            super::origin_of("https://kiln.example.org:8443/x/y"),
            "https://kiln.example.org:8443"
        );
        assert_eq!(
            super::origin_of("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
    }
}
