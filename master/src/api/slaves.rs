//! `/api/slaves`: registering build machines and seeing them.

use crate::auth::{self, Admin};
use crate::db::slaves;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
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
    let row = slaves::by_name(&st.db, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no slave named '{name}'")))?;
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
