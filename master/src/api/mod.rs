//! The REST API (JSON), split by resource. `docs/api.md` documents every route.

pub mod accounts;
pub mod artifacts;
pub mod builds;
pub mod guard;
pub mod metrics;
pub mod notify;
pub mod projects;
pub mod record;
pub mod slaves;

use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use kiln_shared::api::Health;
use std::sync::Arc;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/projects", get(projects::list).post(projects::create))
        .route(
            "/api/projects/{name}",
            get(projects::show)
                .patch(projects::update)
                .delete(projects::delete),
        )
        .route("/api/projects/{name}/builds", post(builds::request))
        .route(
            "/api/projects/{name}/subscriptions",
            get(notify::list_project).post(notify::create_project),
        )
        .route(
            "/api/projects/{name}/subscriptions/{id}",
            axum::routing::delete(notify::delete_project),
        )
        .route(
            "/api/projects/{name}/subscriptions/{id}/deliveries",
            get(notify::deliveries_project),
        )
        .route(
            "/api/teams/{name}/subscriptions",
            get(notify::list_team).post(notify::create_team),
        )
        .route(
            "/api/teams/{name}/subscriptions/{id}",
            axum::routing::delete(notify::delete_team),
        )
        .route(
            "/api/teams/{name}/subscriptions/{id}/deliveries",
            get(notify::deliveries_team),
        )
        .route("/api/deliveries/{id}/redeliver", post(notify::redeliver))
        .route("/api/templates", get(notify::site_templates))
        .route("/api/templates/preview", post(notify::preview_site))
        .route(
            "/api/templates/{event}",
            put(notify::put_site_template).delete(notify::delete_site_template),
        )
        .route(
            "/api/projects/{name}/templates",
            get(notify::project_templates),
        )
        .route(
            "/api/projects/{name}/templates/preview",
            post(notify::preview_project),
        )
        .route(
            "/api/projects/{name}/templates/{event}",
            put(notify::put_project_template).delete(notify::delete_project_template),
        )
        .route("/api/unsubscribe", post(notify::unsubscribe))
        .route("/api/builds", get(builds::list))
        .route("/api/builds/{id}", get(builds::show))
        .route("/api/builds/{id}/cancel", post(builds::cancel))
        .route("/api/builds/{id}/rebuild", post(builds::rebuild))
        .route("/api/catalog", get(catalog))
        .route("/api/signing-key", get(signing_key))
        .route("/api/builds/{id}/log", get(builds::log))
        .route("/api/builds/{id}/artifacts", get(artifacts::list))
        .route(
            "/api/builds/{id}/artifacts/{name}",
            get(artifacts::download),
        )
        .route(
            "/api/builds/{id}/artifacts/{name}/layout",
            get(record::layout),
        )
        .route("/api/builds/{id}/sources", get(record::build_sources))
        .route("/api/builds/{id}/packages", get(record::packages))
        .route("/api/builds/{id}/images", get(record::images))
        .route("/api/builds/{a}/diff/{b}", get(record::diff))
        .route("/api/projects/{name}/sources", get(record::project_sources))
        .route("/api/me", get(accounts::me))
        .route("/api/me/password", post(accounts::change_password))
        .route(
            "/api/users",
            get(accounts::list_users).post(accounts::add_user),
        )
        .route(
            "/api/teams",
            get(accounts::list_teams).post(accounts::add_team),
        )
        .route(
            "/api/teams/{name}/members/{user}",
            put(accounts::set_member).delete(accounts::remove_member),
        )
        .route(
            "/api/teams/{name}/mappings",
            get(accounts::list_mappings).post(accounts::add_mapping),
        )
        .route(
            "/api/teams/{name}/mappings/{id}",
            axum::routing::delete(accounts::delete_mapping),
        )
        .route(
            "/api/tokens",
            get(accounts::list_tokens).post(accounts::add_token),
        )
        .route(
            "/api/tokens/{id}",
            axum::routing::delete(accounts::revoke_token),
        )
        .route("/api/audit", get(accounts::audit))
        .route("/metrics", get(metrics::scrape))
        .route("/api/slaves", get(slaves::list).post(slaves::create))
        .route(
            "/api/slaves/registration-tokens",
            get(slaves::list_registrations).post(slaves::create_registration),
        )
        .route(
            "/api/slaves/registration-tokens/{id}",
            axum::routing::delete(slaves::revoke_registration),
        )
        .route("/api/slaves/register", post(slaves::register))
        .route("/api/slaves/{name}", axum::routing::delete(slaves::revoke))
        .route("/api/slaves/{name}/revoke", post(slaves::revoke))
        .route(
            "/api/slaves/{name}/rotate-token",
            post(slaves::rotate_token),
        )
        .route("/api/slaves/{name}/drain", post(slaves::drain))
        .route("/api/slaves/{name}/disable", post(slaves::disable))
        .route("/api/slaves/{name}/enable", post(slaves::enable))
        .route(
            "/api/slave/builds/{id}/artifacts/{name}",
            put(artifacts::upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/slave/builds/{id}/record",
            put(record::put).layer(DefaultBodyLimit::max(
                kiln_shared::record::MAX_RECORD_BYTES + 1,
            )),
        )
}

/// `GET /api/signing-key` (anyone, signed in or not: a public key is public, and whoever
/// checks a download at a factory may have no account): the minisign public key `SHA256SUMS`
/// files are signed with, as a `minisign.pub` file holds it; 404 when the site signs nothing.
async fn signing_key(
    axum::extract::State(st): axum::extract::State<Arc<AppState>>,
) -> crate::error::ApiResult<impl axum::response::IntoResponse> {
    let signer = st.signer.as_ref().ok_or_else(|| {
        crate::error::ApiError::NotFound(
            "this Kiln signs no checksums (no [signing] minisign_key_file in its config)".into(),
        )
    })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        format!("{}\n", signer.public_key.trim_end()),
    ))
}

/// What users may pick from: the configured lists, else what the slaves offer.
async fn catalog(
    axum::extract::State(st): axum::extract::State<Arc<AppState>>,
    _: crate::auth::Principal,
) -> crate::error::ApiResult<Json<kiln_shared::api::Catalog>> {
    let m = &st.cfg.master;
    let architectures = if m.architectures.is_empty() {
        crate::db::slaves::architectures(&st.db).await?
    } else {
        m.architectures.clone()
    };
    Ok(Json(kiln_shared::api::Catalog {
        architectures,
        series: m.series.clone(),
    }))
}

/// `GET /api/health`: 200 `ok` while the database answers and its schema is current (every
/// migration this master embeds applied, as it is here, and none it does not know), else 503
/// naming what is wrong. Answered from what the database watchdog last saw: a poll never
/// reaches PostgreSQL.
async fn health(
    axum::extract::State(st): axum::extract::State<Arc<AppState>>,
) -> (axum::http::StatusCode, Json<Health>) {
    let down = st.database.trouble();
    let schema = st.database.schema();
    let error = match (&down, &schema) {
        (Some(why), _) => Some(format!("the database does not answer: {why}")),
        (None, Some(s)) => s.problem.clone(),
        (None, None) => None,
    };
    let body = Health {
        status: if error.is_some() { "unavailable" } else { "ok" }.into(),
        database: down.map_or_else(|| "up".into(), |t| format!("down: {t}")),
        schema: schema.map_or_else(|| "not read yet".into(), |s| s.summary),
        error,
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: kiln_shared::codec::PROTOCOL_VERSION,
    };
    let status = if body.error.is_some() {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    } else {
        axum::http::StatusCode::OK
    };
    (status, Json(body))
}
