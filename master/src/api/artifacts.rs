//! Artifacts: uploaded by slaves (streamed, sha256 checked), listed and downloaded (with Range).

use crate::api::builds::find;
use crate::auth::{Admin, UploadAuth};
use crate::db::artifacts::{self, ArtifactRow};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::EndedBy;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use kiln_shared::api::{validate_artifact_name, Artifact};
use kiln_shared::{BuildId, BuildState};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;

pub const SHA256_HEADER: &str = "x-kiln-sha256";

pub async fn list(
    State(st): State<Arc<AppState>>,
    _: Admin,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<Artifact>>> {
    find(&st, id).await?;
    let rows = artifacts::list(&st.db, BuildId(id)).await?;
    Ok(Json(rows.into_iter().map(ArtifactRow::into_api).collect()))
}

pub async fn download(
    State(st): State<Arc<AppState>>,
    _: Admin,
    Path((id, name)): Path<(i64, String)>,
    req: Request,
) -> ApiResult<Response> {
    let a = artifacts::get(&st.db, BuildId(id), &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("build {id} has no artifact '{name}'")))?;
    let path = st.storage.artifact_path(BuildId(id), &a.name);
    let mut resp = tower_http::services::ServeFile::new(path)
        .oneshot(req)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("serving artifact: {e}")))?
        .map(Body::new);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    // RFC 6266: an ASCII fallback, and the exact name percent-encoded as UTF-8.
    let ascii: String = a
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        kiln_shared::api::percent_encode(&a.name)
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&a.sha256) {
        h.insert(SHA256_HEADER, v);
    }
    Ok(resp.into_response())
}

/// A rejected upload fails the build, saying why.
async fn fail_build(st: &AppState, build: BuildId, reason: &str) {
    let ended = st
        .end_build(
            build,
            BuildState::Failed,
            Some(reason),
            EndedBy::Master {
                stop_on_slave: false,
            },
        )
        .await;
    if let Err(e) = ended {
        tracing::warn!(%build, "recording failure: {e}");
    }
}

/// `PUT /api/slave/builds/{id}/artifacts/{name}` with `x-kiln-sha256` and the build's upload
/// token: streams the body to disk, hashing as it goes. A hash mismatch fails the build with that
/// reason. The token must name this build and the slave it runs on, which must still be
/// registered and enabled, and the build must still be running.
pub async fn upload(
    State(st): State<Arc<AppState>>,
    UploadAuth(claims): UploadAuth,
    Path((id, name)): Path<(i64, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    validate_artifact_name(&name).map_err(|m| ApiError::invalid("name", m))?;
    let claimed = headers
        .get(SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| {
            ApiError::invalid(
                "sha256",
                format!("send the file's sha256 (64 hex digits) in {SHA256_HEADER}"),
            )
        })?;
    if claims.build != id {
        return Err(ApiError::Unauthorized(format!(
            "this upload token is for build {}, not build {id}",
            claims.build
        )));
    }
    let slave = crate::db::slaves::get(&st.db, kiln_shared::SlaveId(claims.slave))
        .await?
        .filter(|s| s.enabled)
        .ok_or_else(|| {
            ApiError::Unauthorized(format!(
                "the slave this token was given to is revoked or disabled; build {id} takes no uploads from it"
            ))
        })?;
    let b = find(&st, id).await?;
    let build = BuildId(id);
    if !(b.state().is_active() && b.slave_id == Some(slave.id)) {
        return Err(ApiError::Conflict(format!(
            "build {id} is not running on slave '{}' (it is {}); it takes no more uploads",
            slave.name,
            b.state()
        )));
    }
    let dir = st.storage.artifact_dir(build);
    crate::storage::private_dir(&dir).await?;
    let partial = dir.join(format!(".{name}.partial"));
    let result = async {
        let mut file = crate::storage::private_file(&partial).await?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::invalid("body", format!("upload interrupted: {e}")))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        Ok::<_, ApiError>((hex::encode(hasher.finalize()), size))
    }
    .await;
    let (actual, size) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            if let ApiError::InsufficientStorage(m) = &e {
                fail_build(
                    &st,
                    build,
                    &format!("artifact '{name}' could not be stored: {m}"),
                )
                .await;
            }
            return Err(e);
        }
    };
    if actual != claimed {
        let _ = tokio::fs::remove_file(&partial).await;
        let reason = format!(
            "artifact '{name}' rejected: the slave said sha256 {claimed}, the master received data with sha256 {actual} ({size} bytes)"
        );
        fail_build(&st, build, &reason).await;
        return Err(ApiError::Unprocessable(reason));
    }
    tokio::fs::rename(&partial, st.storage.artifact_path(build, &name)).await?;
    artifacts::upsert(&st.db, build, &name, size as i64, &actual).await?;
    Ok(StatusCode::CREATED)
}
