//! Artifacts: uploaded by slaves (streamed, sha256 checked), listed and downloaded (with Range,
//! or redirected to the object store). The bytes are kept by [`crate::objects`].

use crate::auth::{access, Principal, UploadAuth};
use crate::db::artifacts::{self, ArtifactRow};
use crate::db::builds::BuildRow;
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::EndedBy;
use crate::objects::Download;
use crate::state::AppState;
use crate::storage::Over;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use kiln_shared::api::Role;
use kiln_shared::api::{validate_artifact_name, Artifact};
use kiln_shared::config::human_bytes;
use kiln_shared::{BuildId, BuildState};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tower::ServiceExt;

pub const SHA256_HEADER: &str = "x-kiln-sha256";

/// `GET /api/builds/{id}/artifacts`: viewers of the build's project.
pub async fn list(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<Artifact>>> {
    access::build(&st, &who, id, Role::Viewer, "listing artifacts").await?;
    let rows = artifacts::list(&st.db, BuildId(id)).await?;
    Ok(Json(rows.into_iter().map(ArtifactRow::into_api).collect()))
}

/// `GET /api/builds/{id}/artifacts/{name}`: viewers of the build's project (the session cookie
/// works for a download link; scripts send their bearer token).
pub async fn download(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path((id, name)): Path<(i64, String)>,
    req: Request,
) -> ApiResult<Response> {
    access::build(&st, &who, id, Role::Viewer, "downloading an artifact").await?;
    let a = artifacts::get(&st.db, BuildId(id), &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("build {id} has no artifact '{name}'")))?;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let head = req.method() == axum::http::Method::HEAD;
    let how = st
        .artifacts
        .download(BuildId(id), &a.name, range.as_deref(), head)
        .await?;
    let mut resp = match how {
        Download::File(path) => tower_http::services::ServeFile::new(path)
            .oneshot(req)
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("serving artifact: {e}")))?
            .map(Body::new),
        Download::Redirect(url) => {
            let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
            let loc = HeaderValue::from_str(&url)
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("presigned URL: {e}")))?;
            r.headers_mut().insert(header::LOCATION, loc);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok(r);
        }
        Download::Unsatisfiable { size } => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
        Download::Stream { body, size, range } => {
            let mut r = Response::new(Body::from_stream(body));
            let h = r.headers_mut();
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            let len = match &range {
                Some(rg) => {
                    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                    let cr = format!("bytes {}-{}/{size}", rg.start, rg.end.saturating_sub(1));
                    if let Ok(v) = HeaderValue::from_str(&cr) {
                        r.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                    rg.end - rg.start
                }
                None => size,
            };
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            r
        }
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&crate::objects::content_disposition(&a.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&a.sha256) {
        h.insert(SHA256_HEADER, v);
    }
    Ok(resp.into_response())
}

/// The build an upload (an artifact, the record) with these token claims goes to: the token
/// must name build `id` and the slave it runs on, which must still be registered (a disabled
/// slave still finishes its builds), and the build must still be running.
pub async fn uploading_build(
    st: &AppState,
    claims: &crate::upload_token::Claims,
    id: i64,
) -> ApiResult<BuildRow> {
    if claims.build != id {
        return Err(ApiError::Unauthorized(format!(
            "this upload token is for build {}, not build {id}",
            claims.build
        )));
    }
    let b = crate::api::builds::find(st, id).await?;
    // The build still held by the token's slave: that slave exists (a revoked slave's builds
    // are held by nobody), so it is read only to say why an upload is refused. A disabled
    // slave finishes (and uploads) the builds it holds.
    if b.state().is_active() && b.slave_id == Some(claims.slave) {
        return Ok(b);
    }
    let slave = crate::db::slaves::get(&st.db, kiln_shared::SlaveId(claims.slave))
        .await?
        .ok_or_else(|| {
            ApiError::Unauthorized(format!(
                "the slave this token was given to is revoked; build {id} takes no uploads from it"
            ))
        })?;
    Err(ApiError::Conflict(format!(
        "build {id} is not running on slave '{}' (it is {}); it takes no more uploads",
        slave.name,
        b.state()
    )))
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

/// `PUT /api/slave/builds/{id}/artifacts/{name}` with the build's upload token: streams the body
/// into the artifact store (`objects.rs`), hashing as it goes, and answers 201 with the name, size and sha256 of what it stored:
/// the slave, which hashed what it sent in the same pass, compares (and sends again when they
/// differ), so it reads a multi-GB image once. A client that knows the sum beforehand may send it
/// in `x-kiln-sha256`: a mismatch then fails the build with that reason. The token must name this
/// build and the slave it runs on, which must still be
/// registered (a disabled slave still finishes its builds), and the build must still be running. An upload that would take the
/// build past `master.limits.artifact_bytes` or its project past
/// `master.limits.project_storage_bytes` is refused with 413 naming the limit (as soon as the
/// declared length or the bytes received show it), nothing of it is kept, and the build fails.
pub async fn upload(
    st: State<Arc<AppState>>,
    auth: UploadAuth,
    path: Path<(i64, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match store(st, auth, path, headers, body).await {
        Ok(stored) => stored.into_response(),
        Err(e) => {
            // A refusal may come before the body was read (a limit seen in `Content-Length`):
            // the connection cannot carry another request, and the client must not try.
            let mut r = e.into_response();
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

async fn store(
    State(st): State<Arc<AppState>>,
    UploadAuth(claims): UploadAuth,
    Path((id, name)): Path<(i64, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Artifact>)> {
    validate_artifact_name(&name).map_err(|m| ApiError::invalid("name", m))?;
    let claimed = match headers.get(SHA256_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|v| v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()))
                .map(str::to_ascii_lowercase)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "sha256",
                        format!("{SHA256_HEADER}, when sent, is the file's sha256 (64 hex digits)"),
                    )
                })?,
        ),
    };
    let b = uploading_build(&st, &claims, id).await?;
    let build = BuildId(id);
    // Quotas (`master.limits`): this build's artifacts and the project's kept ones. Checked as
    // the bytes come (with the other uploads of the build and the project in flight) and once
    // more, against the database, before the file is kept.
    let limits = &st.cfg.master.limits;
    let (build_used, project_used) = artifacts::usage(&st.db, build, b.project_id, &name).await?;
    let build_room = limits.artifact_bytes.saturating_sub(build_used);
    let project_room = limits.project_storage_bytes.saturating_sub(project_used);
    let mut reservation = st.storage.reserve_upload(build, b.project_id);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared {
        // Too big as declared: refused before a byte is stored.
        if let Err(over) = reservation.hold(len, build_room, project_room) {
            drop(reservation);
            return Err(over_limit(&st, &b, over, project_used).await);
        }
    }
    let mut upload = st.artifacts.begin(build, &name).await?;
    let result = async {
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::invalid("body", format!("upload interrupted: {e}")))?;
            size += chunk.len() as u64;
            if let Err(over) = reservation.hold(size, build_room, project_room) {
                return Ok(Err(over));
            }
            hasher.update(&chunk);
            upload.write(chunk).await?;
        }
        upload.written().await?;
        Ok::<_, ApiError>(Ok((hex::encode(hasher.finalize()), size)))
    }
    .await;
    let (actual, size) = match result {
        Ok(Ok(r)) => r,
        Ok(Err(over)) => {
            upload.discard().await;
            drop(reservation);
            return Err(over_limit(&st, &b, over, project_used).await);
        }
        Err(e) => {
            upload.discard().await;
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
    if let Some(claimed) = claimed.filter(|c| *c != actual) {
        upload.discard().await;
        let reason = format!(
            "artifact '{name}' rejected: the slave said sha256 {claimed}, the master received data with sha256 {actual} ({size} bytes)"
        );
        fail_build(&st, build, &reason).await;
        return Err(ApiError::Unprocessable(reason));
    }
    // The last word, under the project's lock: what is stored now (uploads that finished
    // meanwhile included), and the build still running.
    let mut tx = st.db.begin().await?;
    artifacts::lock_project_usage(&mut tx, b.project_id).await?;
    let (build_used, project_used) = artifacts::usage(&mut *tx, build, b.project_id, &name).await?;
    let over = if build_used + size > limits.artifact_bytes {
        Some(Over::Build)
    } else if project_used + size > limits.project_storage_bytes {
        Some(Over::Project)
    } else {
        None
    };
    let running = crate::db::builds::held_by_locked(&mut *tx, build, b.slave_id).await?;
    if over.is_some() || !running {
        drop(tx);
        upload.discard().await;
        drop(reservation);
        return Err(match over {
            Some(over) => over_limit(&st, &b, over, project_used).await,
            None => ApiError::Conflict(format!(
                "build {id} ended during the upload of '{name}'; it takes no more uploads"
            )),
        });
    }
    upload.keep().await?;
    artifacts::upsert(&mut *tx, build, &name, size as i64, &actual).await?;
    tx.commit().await?;
    drop(reservation);
    if name == crate::signing::SUMS {
        if let Some(signer) = &st.signer {
            if let Err(e) = sign_sums(&st, signer, &b).await {
                tracing::warn!(%build, "SHA256SUMS is not signed: {e:#}");
            }
        }
    }
    Ok((
        StatusCode::CREATED,
        Json(Artifact {
            name,
            size: size as i64,
            sha256: actual,
        }),
    ))
}

/// Signs a build's `SHA256SUMS` (just stored) once every line matches what the master stored,
/// and keeps the signature as the artifact `SHA256SUMS.minisig`.
async fn sign_sums(
    st: &AppState,
    signer: &crate::signing::Signer,
    b: &BuildRow,
) -> anyhow::Result<()> {
    use anyhow::Context;
    const MAX_SUMS: u64 = 4 << 20;
    let build = BuildId(b.id);
    let Some(bytes) = st
        .artifacts
        .read_small(build, crate::signing::SUMS, MAX_SUMS)
        .await?
    else {
        anyhow::bail!("it is larger than {MAX_SUMS} bytes");
    };
    let text = String::from_utf8(bytes.to_vec()).context("it is not UTF-8 text")?;
    let stored = artifacts::list(&st.db, build)
        .await?
        .into_iter()
        .map(|a| (a.name, a.sha256))
        .collect();
    crate::signing::check_sums(&text, &stored).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sig = signer.sign(
        text.as_bytes(),
        &format!(
            "kiln build {} of project {}, commit {}",
            b.id,
            b.project,
            b.commit_sha.as_deref().unwrap_or("unknown")
        ),
    )?;
    let sha = hex::encode(Sha256::digest(sig.as_bytes()));
    // Kept as the upload's own last step is: under the project's lock, while the build runs and
    // its row is held (a build that ended meanwhile, or failed over a limit, holds nothing more;
    // none ends before this commits).
    let mut tx = st.db.begin().await?;
    artifacts::lock_project_usage(&mut tx, b.project_id).await?;
    if !crate::db::builds::held_by_locked(&mut *tx, build, b.slave_id).await? {
        anyhow::bail!("the build ended before its signature was stored");
    }
    st.artifacts
        .put_small(
            build,
            crate::signing::SIGNATURE,
            bytes::Bytes::from(sig.clone().into_bytes()),
        )
        .await?;
    artifacts::upsert(
        &mut *tx,
        build,
        crate::signing::SIGNATURE,
        sig.len() as i64,
        &sha,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// An upload would take a build or a project over its limit: nothing of the build's artifacts
/// is kept (what it uploaded before goes too, so a failed build holds no storage), the build
/// fails naming the limit, and the slave gets the same words with a 413.
async fn over_limit(st: &AppState, b: &BuildRow, over: Over, holding: u64) -> ApiError {
    let limits = &st.cfg.master.limits;
    let reason = match over {
        Over::Build => format!(
            "artifact limit of {} exceeded for build {}",
            human_bytes(limits.artifact_bytes),
            b.id
        ),
        Over::Project => format!(
            "storage limit of {} for project '{}' exceeded (holding {})",
            human_bytes(limits.project_storage_bytes),
            b.project,
            human_bytes(holding)
        ),
    };
    let build = BuildId(b.id);
    tracing::warn!(%build, "{reason}; refusing the upload and failing the build");
    if let Err(e) = fail_dropping_artifacts(st, build, b.project_id, &reason).await {
        tracing::warn!(%build, "failing a build over its limit and removing its artifacts: {e:#}");
        // The build must not go on uploading whatever went wrong above, and its rows must not
        // outlive objects already removed: one step after the other, as best it can.
        fail_build(st, build, &reason).await;
        if let Err(e) = drop_artifacts(st, build, b.project_id).await {
            tracing::warn!(%build, "removing the artifacts of a build over its limit: {e:#}");
        }
    }
    ApiError::TooLarge(reason)
}

/// Removes an ended build's stored artifacts (rows and files), under its project's upload
/// lock; a build that did not end after all keeps them.
async fn drop_artifacts(st: &AppState, build: BuildId, project: i64) -> anyhow::Result<()> {
    let mut tx = st.db.begin().await?;
    artifacts::lock_project_usage(&mut tx, project).await?;
    let state = crate::db::builds::holder_locked(&mut *tx, build).await?;
    if state.is_some_and(|(_, s)| s.is_active()) {
        anyhow::bail!("build {build} did not end; its artifacts stay");
    }
    delete_stored(st, &mut tx, build).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes the build's artifact rows in `tx`, and their files or objects.
async fn delete_stored(
    st: &AppState,
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    build: BuildId,
) -> anyhow::Result<()> {
    for name in artifacts::delete_for_build(&mut **tx, build).await? {
        st.artifacts.delete(build, &name).await?;
    }
    Ok(())
}

/// Fails a build and removes its stored artifacts (rows and files) in one transaction, under
/// its project's upload lock: the failed build is never seen holding artifacts, and an upload
/// finishing at the same time is either removed too or refused (the build has ended).
async fn fail_dropping_artifacts(
    st: &AppState,
    build: BuildId,
    project: i64,
    reason: &str,
) -> anyhow::Result<()> {
    let mut tx = st.db.begin().await?;
    artifacts::lock_project_usage(&mut tx, project).await?;
    delete_stored(st, &mut tx, build).await?;
    let by = EndedBy::Master {
        stop_on_slave: false,
    };
    st.end_build_in(tx, build, BuildState::Failed, Some(reason), by)
        .await?;
    Ok(())
}
