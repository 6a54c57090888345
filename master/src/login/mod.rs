//! Signing in and out. The master is the OAuth/OpenID client ("backend for frontend"): the
//! browser only ever holds Kiln's own session cookie.
//!
//! - `GET /auth/providers`: what the login page offers;
//! - `POST /auth/local/login`, `POST /auth/logout`: local accounts ([`local`]);
//! - OpenID Connect ([`oidc`]) and Launchpad's OpenID 2.0 ([`launchpad`]) end in [`complete`],
//!   which finds or creates the user, sets their team memberships from the provider's groups
//!   through the group mappings, and starts a session.

pub mod launchpad;
pub mod local;
pub mod oidc;

use crate::auth::{cookie, new_token, sha256_hex};
use crate::db::accounts::{self, NewSession, NewUser};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kiln_shared::api::{ProviderInfo, Providers};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/providers", get(providers))
        .route("/auth/local/login", post(local::login))
        .route("/auth/logout", post(local::logout))
        .route("/auth/oidc/{provider}/login", get(oidc::login))
        .route("/auth/oidc/{provider}/callback", get(oidc::callback))
        .route("/auth/launchpad/login", get(launchpad::login))
        .route(
            "/auth/launchpad/callback",
            get(launchpad::callback).post(launchpad::callback_post),
        )
}

/// Who a provider says someone is.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `oidc:NAME` or `launchpad`, as in group mappings.
    pub provider: String,
    /// The provider's stable identifier (OIDC `sub`; OpenID 2.0 claimed id).
    pub subject: String,
    /// The name the person goes by there (`preferred_username`, Launchpad nickname); the Kiln
    /// user name is made from it for a new user.
    pub username: String,
    pub email: Option<String>,
    /// Groups the person is in at the provider (OIDC groups claim; Launchpad teams).
    pub groups: Vec<String>,
}

/// The client of a request: its address (for the audit log and rate limits) and headers.
pub struct Client {
    pub address: Option<IpAddr>,
    pub headers: HeaderMap,
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Client {
            address: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
            headers: parts.headers.clone(),
        })
    }
}

async fn providers(State(st): State<Arc<AppState>>) -> Json<Providers> {
    let a = &st.cfg.auth;
    let mut list: Vec<ProviderInfo> = a
        .oidc
        .iter()
        .map(|p| ProviderInfo {
            id: format!("oidc:{}", p.name),
            display_name: p.display_name.clone().unwrap_or_else(|| p.name.clone()),
            login_url: format!("/auth/oidc/{}/login", p.name),
        })
        .collect();
    if let Some(lp) = &a.launchpad {
        list.push(ProviderInfo {
            id: "launchpad".into(),
            display_name: lp.display_name.clone(),
            login_url: "/auth/launchpad/login".into(),
        });
    }
    Json(Providers {
        local: a.local_accounts,
        providers: list,
    })
}

/// `master.public_url` without a trailing slash (the config check makes it present whenever a
/// provider is configured).
pub fn public_url(st: &AppState) -> String {
    st.cfg
        .master
        .public_url
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/')
        .to_string()
}

/// A path on this site to go to after sign-in: only a local absolute path (`/builds/3`), never
/// another site (`//evil`, `https://…`, `/\evil`); anything else is `/`.
pub fn safe_return_to(to: Option<&str>) -> String {
    match to {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && !p.chars().any(|c| c.is_control())
                && p.len() <= 2048 =>
        {
            p.to_string()
        }
        _ => "/".into(),
    }
}

/// A fresh random value for a sign-in in progress (OIDC state, OpenID return key).
pub fn flow_key() -> String {
    new_token("")
}

/// Keeps `data` for the sign-in flow `key` (its hash is the database key).
pub async fn flow_put(
    st: &AppState,
    key: &str,
    provider: &str,
    data: &serde_json::Value,
) -> ApiResult<()> {
    Ok(accounts::flow_put(&st.db, &sha256_hex(key), provider, data).await?)
}

/// How long a sign-in at a provider may take.
pub const FLOW_MAX_AGE_SECS: i64 = 600;

/// Takes the data of flow `key` of `provider` (once; `None` when unknown, used or too old).
pub async fn flow_take(
    st: &AppState,
    key: &str,
    provider: &str,
) -> ApiResult<Option<serde_json::Value>> {
    Ok(accounts::flow_take(&st.db, &sha256_hex(key), provider, FLOW_MAX_AGE_SECS).await?)
}

/// `Set-Cookie` binding a sign-in flow to this browser (read back with [`flow_cookie_value`]).
pub fn flow_cookie(st: &AppState, key: &str) -> HeaderValue {
    cookie::set(
        cookie::LOGIN_FLOW,
        key,
        Some(FLOW_MAX_AGE_SECS as u64),
        st.auth.secure_cookies,
    )
}

pub fn flow_cookie_value(st: &AppState, headers: &HeaderMap) -> Option<String> {
    cookie::read(headers, cookie::LOGIN_FLOW, st.auth.secure_cookies).map(str::to_string)
}

/// A refused sign-in at a provider: recorded in the audit log, and the browser is sent to the
/// login page with the reason (303 to `/login?error=…`).
pub async fn refuse(
    st: &AppState,
    client: &Client,
    provider: &str,
    who: Option<&str>,
    why: &str,
) -> Response {
    tracing::info!(provider, who, "sign-in refused: {why}");
    crate::audit::record(
        st,
        who,
        "login_refused",
        Some(format!("provider {provider}")),
        client.address,
        serde_json::json!({ "provider": provider, "reason": why }),
    )
    .await;
    let mut resp = (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            format!("/login?error={}", percent_encode(why)),
        )],
    )
        .into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie::clear(cookie::LOGIN_FLOW, st.auth.secure_cookies),
    );
    resp
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A Kiln user name made from a provider's name for someone: the characters a name may hold,
/// else `user`.
fn username_from(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    s = s
        .trim_start_matches(['.', '_', '-'])
        .chars()
        .take(50)
        .collect();
    if s.is_empty() {
        "user".into()
    } else {
        s
    }
}

/// Finds the user of `id`, or creates one (never by matching a name: a new identity is a new
/// user, named after it, with `-2`, `-3`, … when the name is taken).
async fn user_for(st: &AppState, id: &Identity) -> ApiResult<accounts::UserRow> {
    // Two sign-ins of one new identity at once (two tabs) make one user: the second waits.
    let mut tx = st.db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("identity {} {}", id.provider, id.subject))
        .execute(&mut *tx)
        .await?;
    let user = user_for_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(user)
}

async fn user_for_in(tx: &mut sqlx::PgConnection, id: &Identity) -> ApiResult<accounts::UserRow> {
    if let Some(link) = accounts::identity(&mut *tx, &id.provider, &id.subject).await? {
        if let Some(u) = accounts::user_by_id(&mut *tx, link.user_id).await? {
            return Ok(u);
        }
    }
    let base = username_from(&id.username);
    for n in 1..1000 {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let made = accounts::insert_user(
            &mut *tx,
            NewUser {
                username: &name,
                email: id.email.as_deref(),
                admin: false,
                password_hash: None,
                must_change_password: false,
            },
        )
        .await?;
        if let Some(uid) = made {
            accounts::link_identity(&mut *tx, &id.provider, &id.subject, uid, Some(&id.username))
                .await?;
            return accounts::user_by_id(&mut *tx, uid)
                .await?
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("user {uid} vanished")));
        }
    }
    Err(ApiError::Conflict(format!(
        "no free user name for '{}'",
        id.username
    )))
}

/// Ends the session the request carries, if any (a sign-in always starts a fresh one).
async fn end_current_session(st: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    if let Some(old) = cookie::read(headers, cookie::SESSION, st.auth.secure_cookies) {
        accounts::delete_session(&st.db, &sha256_hex(old)).await?;
    }
    Ok(())
}

/// Starts a session for `user` (signed in `via` a method) and returns its `Set-Cookie` and CSRF
/// token.
pub async fn start_session(
    st: &AppState,
    client: &Client,
    user: &accounts::UserRow,
    via: &str,
) -> ApiResult<(HeaderValue, String)> {
    end_current_session(st, &client.headers).await?;
    let id = new_token("");
    let csrf = new_token("");
    let now = st.clock.now();
    accounts::insert_session(
        &st.db,
        NewSession {
            id_sha256: &sha256_hex(&id),
            user: user.id,
            csrf_token: &csrf,
            via,
            now,
            address: client.address.map(|a| a.to_string()).as_deref(),
        },
    )
    .await?;
    accounts::signed_in(&st.db, user.id, now, None).await?;
    crate::audit::record(
        st,
        Some(&user.username),
        "login",
        Some(format!("user {}", user.username)),
        client.address,
        serde_json::json!({ "via": via }),
    )
    .await;
    let set = cookie::set(
        cookie::SESSION,
        &id,
        Some(st.cfg.auth.session_max_secs),
        st.auth.secure_cookies,
    );
    Ok((set, csrf))
}

/// Signs in someone a provider vouched for: finds or creates the user, replaces the team
/// memberships this provider gave them by what its group mappings say for `groups`, and starts a
/// session; the browser goes on to `return_to` (a local path). Someone who ends up in no team
/// (and is not an admin) is refused: Kiln lets in only the groups an admin mapped.
pub async fn complete(
    st: &AppState,
    client: &Client,
    identity: Identity,
    return_to: &str,
) -> Response {
    match complete_inner(st, client, &identity, return_to).await {
        Ok(r) => r,
        Err(ApiError::Forbidden(why)) => {
            refuse(
                st,
                client,
                &identity.provider,
                Some(&identity.username),
                &why,
            )
            .await
        }
        Err(e) => e.into_response(),
    }
}

async fn complete_inner(
    st: &AppState,
    client: &Client,
    id: &Identity,
    return_to: &str,
) -> ApiResult<Response> {
    let mapped = mapped_teams(st, &id.provider, &id.groups).await?;
    let known = accounts::identity(&st.db, &id.provider, &id.subject).await?;
    if mapped == 0 && known.is_none() {
        return Err(ApiError::Forbidden(format!(
            "'{}' is in no group that Kiln admits from {}; ask an admin to map one of your groups to a team",
            id.username, id.provider
        )));
    }
    let user = user_for(st, id).await?;
    accounts::link_identity(
        &st.db,
        &id.provider,
        &id.subject,
        user.id,
        Some(&id.username),
    )
    .await?;
    accounts::set_provider_memberships(&st.db, user.id, &id.provider, &id.groups).await?;
    if !user.admin && accounts::memberships(&st.db, user.id).await?.is_empty() {
        return Err(ApiError::Forbidden(format!(
            "'{}' is in no team; ask an admin to map one of your groups at {} to a team",
            user.username, id.provider
        )));
    }
    if let Some(email) = &id.email {
        accounts::signed_in(&st.db, user.id, st.clock.now(), Some(email)).await?;
    }
    let (set_cookie, _) = start_session(st, client, &user, &id.provider).await?;
    let mut resp = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, safe_return_to(Some(return_to)))],
    )
        .into_response();
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, set_cookie);
    h.append(
        header::SET_COOKIE,
        cookie::clear(cookie::LOGIN_FLOW, st.auth.secure_cookies),
    );
    Ok(resp)
}

/// How many teams map one of `groups` of `provider`.
async fn mapped_teams(st: &AppState, provider: &str, groups: &[String]) -> ApiResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(DISTINCT team_id) FROM group_mappings WHERE provider = $1 AND grp = ANY($2)",
    )
    .bind(provider)
    .bind(groups)
    .fetch_one(&st.db)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_stays_on_this_site() {
        assert_eq!(safe_return_to(Some("/builds/3?x=1")), "/builds/3?x=1");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "builds",
            "",
        ] {
            assert_eq!(safe_return_to(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_return_to(None), "/");
    }

    #[test]
    fn user_names_from_providers() {
        assert_eq!(username_from("alice"), "alice");
        assert_eq!(username_from("Alice Smith"), "Alice-Smith");
        assert_eq!(username_from("__x"), "x");
        assert_eq!(username_from("@@"), "user");
    }
}
