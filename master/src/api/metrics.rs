//! `GET /metrics`: the Prometheus text format ([`crate::metrics`]), for site admins (a session
//! or an admin API token) and for the scrape token of `[metrics] token_file`.

use crate::auth::{bearer, principal};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`: 200 for a site admin or `Authorization: Bearer <scrape token>`; 401 for
/// nobody (or a token that is neither), 403 for anyone else signed in.
pub async fn scrape(State(st): State<Arc<AppState>>, req: Request) -> ApiResult<Response> {
    let (parts, _) = req.into_parts();
    let token = bearer(&parts.headers);
    if !token.is_some_and(|t| st.metrics.is_scrape_token(t)) {
        let who = principal::resolve(&st, &parts).await.map_err(|e| match e {
            ApiError::Unauthorized(_) if token.is_some() => ApiError::Unauthorized(
                "the bearer token is neither the scrape token of [metrics] token_file nor a valid API token".into(),
            ),
            e => e,
        })?;
        who.require_admin("reading the metrics")?;
    }
    let body = crate::metrics::render(&st).await;
    Ok((
        [
            (header::CONTENT_TYPE, CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}
