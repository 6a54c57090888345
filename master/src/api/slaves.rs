//! `/api/slaves`: registering build machines and seeing them.

use crate::auth::{self, Admin};
use crate::db::slaves::{self, SlaveRow};
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kiln_shared::api::{validate_name, NewSlave, Slave, SlaveCreated};
use kiln_shared::SlaveId;
use std::sync::Arc;

pub async fn list(State(st): State<Arc<AppState>>, _: Admin) -> ApiResult<Json<Vec<Slave>>> {
    let rows = slaves::list(&st.db).await?;
    Ok(Json(rows.into_iter().map(SlaveRow::into_api).collect()))
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
