//! `/api/slaves`: registering build machines and seeing them.

use crate::auth::{self, Admin};
use crate::db::slaves;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kiln_shared::api::{validate_name, NewSlave, Slave, SlaveCreated};
use kiln_shared::frames::MasterFrame;
use kiln_shared::SlaveId;
use std::sync::Arc;

pub async fn list(State(st): State<Arc<AppState>>, _: Admin) -> ApiResult<Json<Vec<Slave>>> {
    let rows = slaves::list(&st.db).await?;
    Ok(Json(rows.into_iter().map(|r| st.slave_api(r)).collect()))
}

/// `POST /api/slaves/{name}/drain`: the slave takes no new builds, finishes the ones it holds,
/// then its daemon exits.
pub async fn drain(
    State(st): State<Arc<AppState>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Slave>)> {
    let row = find(&st, &name).await?;
    let id = SlaveId(row.id);
    if !st.hub.send(id, MasterFrame::Drain) {
        return Err(ApiError::Conflict(format!(
            "slave '{name}' is not connected; stop its daemon on the machine instead"
        )));
    }
    st.hub.set_draining(id);
    st.slave_changed(id).await;
    Ok((StatusCode::ACCEPTED, Json(st.slave_api(row))))
}

/// Registers a slave and returns its token, once; only the hash is kept.
pub async fn create(
    State(st): State<Arc<AppState>>,
    _: Admin,
    Json(req): Json<NewSlave>,
) -> ApiResult<(StatusCode, Json<SlaveCreated>)> {
    validate_name("slave name", &req.name).map_err(|m| ApiError::invalid("name", m))?;
    let token = auth::new_token("kiln_s_");
    let id = slaves::insert(&st.db, &req.name, &auth::sha256_hex(&token))
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!("a slave named '{}' already exists", req.name))
        })?;
    st.slave_changed(SlaveId(id)).await;
    Ok((
        StatusCode::CREATED,
        Json(SlaveCreated {
            id: SlaveId(id),
            name: req.name,
            token,
        }),
    ))
}

async fn find(st: &AppState, name: &str) -> ApiResult<slaves::SlaveRow> {
    slaves::by_name(&st.db, name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no slave named '{name}'")))
}

/// `POST /api/slaves/{name}/disable`: refused when it connects; disconnected now. Its running
/// builds are lost after the timeout (and requeued) unless it is enabled again in time.
pub async fn disable(
    State(st): State<Arc<AppState>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Slave>> {
    let row = find(&st, &name).await?;
    let id = SlaveId(row.id);
    slaves::set_enabled(&st.db, id, false).await?;
    st.hub.disconnect(id);
    st.slave_changed(id).await;
    Ok(Json(st.slave_api(find(&st, &name).await?)))
}

/// `POST /api/slaves/{name}/enable`.
pub async fn enable(
    State(st): State<Arc<AppState>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Slave>> {
    let row = find(&st, &name).await?;
    slaves::set_enabled(&st.db, SlaveId(row.id), true).await?;
    st.slave_changed(SlaveId(row.id)).await;
    Ok(Json(st.slave_api(find(&st, &name).await?)))
}

/// `DELETE /api/slaves/{name}`: revokes its token and forgets it; it is disconnected now. Its
/// builds keep their history; one it was running is lost (and requeued).
pub async fn revoke(
    State(st): State<Arc<AppState>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let row = find(&st, &name).await?;
    let id = SlaveId(row.id);
    st.hub.disconnect(id);
    for (b, _) in crate::db::builds::active_for_slave(&st.db, id).await? {
        st.lose_build(b, &format!("slave '{name}' was revoked"))
            .await?;
    }
    slaves::delete(&st.db, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
