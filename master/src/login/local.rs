//! Local accounts: `POST /auth/local/login` (`{"username","password"}`) and `POST /auth/logout`.
//! Failed attempts are limited per account and per client address (`[auth]
//! login_attempts_per_account`, `login_attempts_per_address`, `login_window_secs`).

use super::Client;
use crate::auth::principal::{origin_allowed, Via};
use crate::auth::{cookie, password, Principal};
use crate::db::accounts;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_shared::api::LocalLogin;
use std::sync::Arc;
use std::time::Duration;

pub async fn login(
    State(st): State<Arc<AppState>>,
    client: Client,
    Json(req): Json<LocalLogin>,
) -> ApiResult<Response> {
    let a = &st.cfg.auth;
    if !a.local_accounts {
        return Err(ApiError::NotFound(
            "local accounts are off on this master ([auth] local_accounts = false); sign in with a provider".into(),
        ));
    }
    // A sign-in form posted from another site would sign the browser in as someone else.
    if client.headers.contains_key(header::ORIGIN) && !origin_allowed(&st, &client.headers) {
        return Err(ApiError::Forbidden(
            "the request's Origin may not sign in here (see master.public_url and auth.allowed_origins)".into(),
        ));
    }
    let window = Duration::from_secs(a.login_window_secs);
    let address_key = format!(
        "a:{}",
        client.address.map(|a| a.to_string()).unwrap_or_default()
    );
    // No account can have a name that is not valid: refused before it costs anything (and
    // before it can become a limiter key or an audit row of any size).
    if kiln_shared::api::validate_name("user name", &req.username).is_err() {
        let _ = st
            .auth
            .limiter
            .attempt(&address_key, a.login_attempts_per_address, window);
        return Err(ApiError::Unauthorized("wrong user name or password".into()));
    }
    let account_key = format!("u:{}", req.username);
    // Counted before the password is checked, taken back if it is right.
    let limiter = &st.auth.limiter;
    let limited = limiter
        .attempt(&account_key, a.login_attempts_per_account, window)
        .map_err(|wait| format!("account '{}': try again in {wait} s", req.username))
        .and_then(|_| {
            limiter
                .attempt(&address_key, a.login_attempts_per_address, window)
                .map_err(|wait| {
                    limiter.succeeded(&account_key);
                    format!("this address: try again in {wait} s")
                })
        });
    if let Err(which) = limited {
        refused(&st, &client, &req.username, "rate limited").await;
        return Err(ApiError::TooManyRequests(format!(
            "too many failed sign-ins for {which}"
        )));
    }
    let user = accounts::user_by_name(&st.db, &req.username).await?;
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let pw = req.password.clone();
    let ok = tokio::task::spawn_blocking(move || password::verify(&pw, stored.as_deref()))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        refused(&st, &client, &req.username, "wrong user name or password").await;
        return Err(ApiError::Unauthorized("wrong user name or password".into()));
    };
    limiter.clear(&account_key);
    limiter.succeeded(&address_key);
    let (set_cookie, csrf) = super::start_session(&st, &client, &user, "local").await?;
    let me = crate::api::accounts::me_of(&st, &user, Some(csrf), None).await?;
    let mut resp = Json(me).into_response();
    resp.headers_mut().append(header::SET_COOKIE, set_cookie);
    Ok(resp)
}

async fn refused(st: &AppState, client: &Client, who: &str, why: &str) {
    crate::audit::record(
        st,
        Some(who),
        "login_refused",
        Some(format!("user {who}")),
        client.address,
        serde_json::json!({ "provider": "local", "reason": why }),
    )
    .await;
}

/// Ends the session on the server and clears the cookie. With an API token: nothing to end.
pub async fn logout(State(st): State<Arc<AppState>>, p: Principal) -> ApiResult<Response> {
    if let Via::Session { id_sha256, .. } = &p.via {
        accounts::delete_session(&st.db, id_sha256).await?;
        p.audit(
            &st,
            "logout",
            Some(format!("user {}", p.name())),
            serde_json::json!({}),
        )
        .await;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let clear: HeaderValue = cookie::clear(cookie::SESSION, st.auth.secure_cookies);
    resp.headers_mut().append(header::SET_COOKIE, clear);
    Ok(resp)
}
