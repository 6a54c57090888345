//! `/api/builds` and `/api/projects/{name}/builds`: asking for builds, watching and cancelling them.

use crate::auth::{access, Principal};
use crate::db::builds::{self, NewBuild, Transition};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::EndedBy;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_shared::api::Role;
use kiln_shared::api::{validate_name, Build, RequestBuild};
use kiln_shared::branch_url::validate_commit;
use kiln_shared::{BuildId, BuildState};
use serde_json::json;
use std::sync::Arc;

pub async fn find(st: &AppState, id: i64) -> ApiResult<builds::BuildRow> {
    builds::get(&st.db, BuildId(id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no build {id}")))
}

/// `POST /api/projects/{name}/builds`: builders of the project.
pub async fn request(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
    body: Option<Json<RequestBuild>>,
) -> ApiResult<(StatusCode, Json<Build>)> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let doing = if req.release.is_some() {
        "starting a release build"
    } else {
        "starting a build"
    };
    let p = access::project(&st, &who, &name, Role::Builder, doing)
        .await?
        .project;
    kiln_shared::branch_url::check_branch_host(&p.branch_url, &st.cfg.master.branch_hosts)
        .map_err(|m| ApiError::invalid("branch_url", m))?;
    // The same range a maintainer may give the project: a builder cannot jump every queue.
    if let Some(n) = req.priority {
        if !(-1000..=1000).contains(&n) {
            return Err(ApiError::invalid(
                "priority",
                "priority must be between -1000 and 1000",
            ));
        }
    }
    let notes = release_notes(&req)?;
    if let Some(r) = &req.release {
        validate_name("release name", r).map_err(|m| ApiError::invalid("release", m))?;
        if let Some(b) = builds::with_release(&st.db, p.id, r).await? {
            return Err(release_taken(&name, r, b));
        }
    }
    if let Some(c) = &req.commit {
        validate_commit(c).map_err(|m| ApiError::invalid("commit", m))?;
    }
    // A release is pinned to the commit of the moment it was asked for.
    let commit = match (&req.release, &req.commit) {
        (Some(_), None) => Some(
            crate::git::branch_head(&p.branch_url, &p.branch, st.cfg.master.allow_file_urls)
                .await
                .map_err(ApiError::Unprocessable)?,
        ),
        _ => req.commit.clone(),
    };
    let trigger = if req.release.is_some() {
        "release"
    } else {
        "manual"
    };
    let queued = st
        .queue_build(
            st.db.begin().await?,
            NewBuild {
                project_id: p.id,
                trigger,
                release: req.release.as_deref(),
                requested_commit: commit.as_deref(),
                branch_url: &p.branch_url,
                branch: &p.branch,
                path: p.path.as_deref(),
                retry_of: None,
                attempt: 0,
                priority: req.priority.unwrap_or(p.priority),
                rebuild_of: None,
                release_notes: notes,
                requested_by: Some(who.name()),
            },
        )
        .await;
    let created = match (queued, &req.release) {
        // Another request took the name between the check above and this insert.
        (Err(sqlx::Error::Database(e)), Some(r))
            if e.constraint() == Some(builds::RELEASE_UNIQUE) =>
        {
            let b = builds::with_release(&st.db, p.id, r).await?;
            return Err(b.map_or_else(
                || ApiError::Taken {
                    field: "release",
                    message: format!("project '{name}' already has a release named '{r}'"),
                },
                |b| release_taken(&name, r, b),
            ));
        }
        (other, _) => other?,
    };
    let action = if req.release.is_some() {
        "release_requested"
    } else {
        "build_requested"
    };
    who.audit(
        &st,
        action,
        Some(format!("build {}", created.id)),
        json!({ "project": name, "release": req.release, "commit": commit, "notes": notes }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(created.into_api())))
}

/// The request's release notes, trimmed (`None` when blank): only with a release name, at most
/// 10,000 characters, no control characters but line breaks and tabs.
fn release_notes(req: &RequestBuild) -> ApiResult<Option<&str>> {
    let Some(notes) = req
        .notes
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    else {
        return Ok(None);
    };
    if req.release.is_none() {
        return Err(ApiError::invalid(
            "notes",
            "notes are for release builds: give a release name too",
        ));
    }
    if notes.chars().count() > 10_000 {
        return Err(ApiError::invalid(
            "notes",
            "release notes may be at most 10,000 characters",
        ));
    }
    if notes
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ApiError::invalid(
            "notes",
            "release notes may not contain control characters",
        ));
    }
    Ok(Some(notes))
}

/// The 409 for a release name the project used before (release names are unique per project).
fn release_taken(project: &str, release: &str, build: BuildId) -> ApiError {
    ApiError::Taken {
        field: "release",
        message: format!(
            "project '{project}' already has a release named '{release}' (build {}); choose another name",
            build.0
        ),
    }
}

#[derive(serde::Deserialize)]
pub struct ListQuery {
    project: Option<String>,
    state: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/builds`: anyone signed in; only builds of projects they may see.
pub async fn list(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<Build>>> {
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<BuildState>()
                .map_err(|e| ApiError::invalid("state", e.to_string()))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let project = q.project.as_deref().filter(|s| !s.is_empty());
    let visible = access::visible_projects(&st, &who).await?;
    let rows = builds::list_visible(&st.db, project, state, limit, visible.as_deref()).await?;
    Ok(Json(rows.into_iter().map(|b| b.into_api()).collect()))
}

/// `GET /api/builds/{id}`: viewers of its project.
pub async fn show(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Json<Build>> {
    access::build(&st, &who, id, Role::Viewer, "viewing a build").await?;
    let mut b = find(&st, id).await?.into_api();
    if b.state.is_active() {
        // The index row is updated at most twice a second; the open log file is exact.
        if let Ok((lines, _)) = st.storage.log_size(b.id).await {
            b.log_lines = lines as i64;
        }
    }
    Ok(Json(b))
}

/// `POST /api/builds/{id}/cancel`: builders of its project.
pub async fn cancel(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Json<Build>> {
    access::build(&st, &who, id, Role::Builder, "cancelling a build").await?;
    let b = find(&st, id).await?;
    let build = BuildId(id);
    let reason = if b.state() == BuildState::Queued {
        "cancelled before it started"
    } else {
        "cancelled"
    };
    let t = st
        .end_build(
            build,
            BuildState::Cancelled,
            Some(reason),
            EndedBy::Master {
                stop_on_slave: true,
            },
        )
        .await?;
    match t {
        Transition::Done { .. } => {
            who.audit(
                &st,
                "build_cancelled",
                Some(format!("build {id}")),
                json!({}),
            )
            .await;
            Ok(Json(find(&st, id).await?.into_api()))
        }
        Transition::Refused { current } => Err(ApiError::Conflict(format!(
            "build {id} already ended ({current})"
        ))),
        Transition::NotFound => Err(ApiError::NotFound(format!("no build {id}"))),
    }
}

/// The stored log as plain text; works while the build runs. Streamed from the file in blocks
/// (never held in memory, whatever its size); for a running build it ends at the last whole line
/// stored when the request came.
pub async fn log(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    access::build(&st, &who, id, Role::Viewer, "reading a log").await?;
    let b = find(&st, id).await?;
    let file = match tokio::fs::File::open(st.storage.log_path(BuildId(id))).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                Body::empty(),
            )
                .into_response())
        }
        Err(e) => return Err(e.into()),
    };
    // A log being written: its whole lines only (a write may be under way).
    let len = match st.storage.open_log_size(BuildId(id)).await {
        Some((_, bytes)) if b.state().is_active() => bytes,
        _ => file.metadata().await?.len(),
    };
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        tokio::io::AsyncReadExt::take(file, len),
        64 * 1024,
    ));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}

/// `POST /api/builds/{id}/rebuild`: a new build of exactly the commit that build built;
/// builders of its project.
pub async fn rebuild(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<(StatusCode, Json<Build>)> {
    access::build(&st, &who, id, Role::Builder, "rebuilding").await?;
    let old = find(&st, id).await?;
    // The host allow-list applies to rebuilds too (it may have narrowed since).
    kiln_shared::branch_url::check_branch_host(&old.branch_url, &st.cfg.master.branch_hosts)
        .map_err(|m| ApiError::invalid("branch_url", m))?;
    let commit = old.commit_sha.clone().or(old.requested_commit.clone()).ok_or_else(|| {
        ApiError::Conflict(format!(
            "build {id} never fetched its branch, so there is no commit to rebuild; request a new build instead"
        ))
    })?;
    let created = st
        .queue_build(
            st.db.begin().await?,
            NewBuild {
                project_id: old.project_id,
                trigger: "rebuild",
                release: None,
                requested_commit: Some(&commit),
                branch_url: &old.branch_url,
                branch: &old.branch,
                path: old.path.as_deref(),
                retry_of: None,
                attempt: 0,
                priority: old.priority,
                rebuild_of: Some(BuildId(id)),
                release_notes: None,
                requested_by: Some(who.name()),
            },
        )
        .await?;
    who.audit(
        &st,
        "build_requested",
        Some(format!("build {}", created.id)),
        json!({ "rebuild_of": id, "commit": commit }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(created.into_api())))
}
