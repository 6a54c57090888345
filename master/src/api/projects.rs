//! `/api/projects`: configuration branches that can be built.

use crate::auth::{access, Principal};
use crate::db::accounts;
use crate::db::projects::{self, NewProject, ProjectRow};
use crate::error::{ApiError, ApiResult};
use crate::schedule::{parse_timezone, Schedule};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kiln_shared::api::Role;
use kiln_shared::api::{validate_name, CreateProject, PatchProject, Project};
use kiln_shared::branch_url::{
    check_branch_host, validate_branch_name, validate_branch_url, UrlPolicy,
};
use serde_json::json;
use std::sync::Arc;

pub const DEFAULT_BRANCH: &str = "main";

/// A short lower-case word (`-` allowed inside), as architecture and backend names are.
fn check_word(field: &'static str, v: &str, what: &str) -> ApiResult<()> {
    if kiln_shared::api::is_word(v) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("{field} '{v}' is not {what}"),
        ))
    }
}

fn check_arch(arch: &str) -> ApiResult<()> {
    check_word(
        "architecture",
        arch,
        "a Debian architecture name (like amd64, arm64, armhf)",
    )
}

fn check_tags(tags: &[String]) -> ApiResult<()> {
    for t in tags {
        validate_name("tag", t).map_err(|m| ApiError::invalid("tags", m))?;
    }
    Ok(())
}

fn check_retries(n: i32) -> ApiResult<()> {
    if (0..=10).contains(&n) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "lost_retries",
            "lost_retries must be between 0 and 10",
        ))
    }
}

fn check_range(field: &'static str, v: Option<i32>, lo: i32, hi: i32) -> ApiResult<()> {
    match v {
        Some(n) if !(lo..=hi).contains(&n) => Err(ApiError::invalid(
            field,
            format!("{field} must be between {lo} and {hi} (or null to clear it)"),
        )),
        _ => Ok(()),
    }
}

/// Checks the settings of a create or PATCH; returns the new `next_run` when the schedule or its
/// time zone changes (`Some(None)`: no schedule any more).
fn check_settings(
    st: &AppState,
    current: Option<&ProjectRow>,
    patch: &PatchProject,
) -> ApiResult<Option<Option<chrono::DateTime<chrono::Utc>>>> {
    if let Some(Some(text)) = &patch.schedule {
        let s = Schedule::parse(text).map_err(|m| ApiError::invalid("schedule", m))?;
        if s.next_after(chrono_tz::UTC, st.clock.now()).is_none() {
            return Err(ApiError::invalid(
                "schedule",
                format!("schedule '{text}' never fires (no such date in any year)"),
            ));
        }
    }
    if let Some(Some(tz)) = &patch.timezone {
        parse_timezone(tz).map_err(|m| ApiError::invalid("timezone", m))?;
    }
    check_range("priority", patch.priority, -1000, 1000)?;
    check_range(
        "timeout_minutes",
        patch.timeout_minutes.flatten(),
        1,
        7 * 24 * 60,
    )?;
    check_range("keep_builds", patch.keep_builds.flatten(), 1, 1_000_000)?;
    check_range("keep_days", patch.keep_days.flatten(), 1, 36_500)?;
    check_range("max_running", patch.max_running.flatten(), 1, 10_000)?;
    if let Some(Some(b)) = &patch.backend {
        check_word(
            "backend",
            b,
            "a backend name (like script, mmdebstrap, live-build, exec)",
        )?;
    }
    if let Some(Some(p)) = &patch.path {
        kiln_shared::api::check_branch_dir(p).map_err(|m| ApiError::invalid("path", m))?;
    }
    if let Some(map) = &patch.source_rewrites {
        kiln_shared::record::check_rewrite_map(map)
            .map_err(|m| ApiError::invalid("source_rewrites", m))?;
    }
    if patch.schedule.is_none() && patch.timezone.is_none() {
        return Ok(None);
    }
    let schedule = match &patch.schedule {
        Some(v) => v.clone(),
        None => current.and_then(|p| p.schedule.clone()),
    };
    let tz = match &patch.timezone {
        Some(Some(t)) => parse_timezone(t).map_err(|m| ApiError::invalid("timezone", m))?,
        Some(None) => st.default_tz,
        None => current
            .and_then(|p| p.timezone.as_deref())
            .and_then(|t| parse_timezone(t).ok())
            .unwrap_or(st.default_tz),
    };
    Ok(Some(crate::scheduler::next_run(
        schedule.as_deref(),
        tz,
        st.clock.now(),
    )))
}

pub fn url_policy(st: &AppState) -> UrlPolicy {
    UrlPolicy {
        allow_file: st.cfg.master.allow_file_urls,
    }
}

pub async fn find(st: &AppState, name: &str) -> ApiResult<ProjectRow> {
    projects::get(&st.db, name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no project named '{name}'")))
}

/// The id of team `name` for a project of `who`: an admin may name any team (or none); anyone
/// else must be a maintainer of it.
async fn team_for(st: &AppState, who: &Principal, name: Option<&str>) -> ApiResult<Option<i64>> {
    let Some(name) = name else {
        if who.is_admin() {
            return Ok(None);
        }
        return Err(ApiError::invalid(
            "team",
            "name the team that owns the project (only admins may keep a project outside a team)",
        ));
    };
    let missing = || ApiError::invalid("team", format!("no team named '{name}'"));
    let team = accounts::team_by_name(&st.db, name)
        .await?
        .ok_or_else(missing)?;
    if who.is_admin() {
        return Ok(Some(team.id));
    }
    match accounts::role_in_team(&st.db, who.user.id, team.id).await? {
        None => Err(missing()),
        Some(r) if r.min(who.cap) >= Role::Maintainer => Ok(Some(team.id)),
        Some(r) => Err(ApiError::Forbidden(format!(
            "putting a project in team '{name}' needs the maintainer role there; you have {}",
            r.min(who.cap).as_str()
        ))),
    }
}

fn with_role(row: ProjectRow, role: Role) -> Project {
    let mut p = row.into_api();
    p.role = Some(role);
    p
}

/// `POST /api/projects`: admins, and maintainers of the team named in `team`.
pub async fn create(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Json(req): Json<CreateProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    validate_name("project name", &req.name).map_err(|m| ApiError::invalid("name", m))?;
    let team_id = team_for(&st, &who, req.team.as_deref()).await?;
    validate_branch_url(&req.branch_url, url_policy(&st))
        .and_then(|_| check_branch_host(&req.branch_url, &st.cfg.master.branch_hosts))
        .map_err(|m| ApiError::invalid("branch_url", m))?;
    let branch = req.branch.as_deref().unwrap_or(DEFAULT_BRANCH);
    validate_branch_name(branch).map_err(|m| ApiError::invalid("branch", m))?;
    if let Some(a) = &req.architecture {
        check_arch(a)?;
    }
    let tags = req.tags.clone().unwrap_or_default();
    check_tags(&tags)?;
    let lost_retries = req.lost_retries.unwrap_or(st.cfg.master.lost_retries);
    check_retries(lost_retries)?;
    let settings = req.settings();
    let next_run = check_settings(&st, None, &settings)?;
    let inserted = projects::insert(
        &st.db,
        NewProject {
            name: &req.name,
            branch_url: &req.branch_url,
            branch,
            architecture: req.architecture.as_deref(),
            tags: &tags,
            lost_retries,
            team_id,
            visibility: req.visibility.unwrap_or_default(),
        },
    )
    .await?;
    if inserted.is_none() {
        return Err(ApiError::Conflict(format!(
            "a project named '{}' already exists",
            req.name
        )));
    }
    let p = find(&st, &req.name).await?;
    projects::update(&st.db, p.id, &settings, next_run, None).await?;
    let p = find(&st, &req.name).await?;
    who.audit(
        &st,
        "project_created",
        Some(format!("project {}", req.name)),
        json!({ "team": req.team, "visibility": p.visibility, "branch_url": p.branch_url }),
    )
    .await;
    let role = access::role_on(&st, &who, &p)
        .await?
        .unwrap_or(Role::Viewer);
    Ok((StatusCode::CREATED, Json(with_role(p, role))))
}

/// `GET /api/projects`: anyone signed in; the projects they may see, each with their role.
pub async fn list(
    State(st): State<Arc<AppState>>,
    who: Principal,
) -> ApiResult<Json<Vec<Project>>> {
    let rows = access::roles(&st, &who).await?;
    Ok(Json(
        rows.into_iter().map(|(p, r)| with_role(p, r)).collect(),
    ))
}

/// `GET /api/projects/{name}`: viewers.
pub async fn show(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<Project>> {
    let a = access::project(&st, &who, &name, Role::Viewer, "viewing").await?;
    Ok(Json(with_role(a.project, a.role)))
}

/// `PATCH /api/projects/{name}`: maintainers (moving it to another team: a maintainer there
/// too; out of every team: admins).
pub async fn update(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
    Json(patch): Json<PatchProject>,
) -> ApiResult<Json<Project>> {
    let p = access::project(&st, &who, &name, Role::Maintainer, "changing settings")
        .await?
        .project;
    let team = match &patch.team {
        Some(t) => Some(team_for(&st, &who, t.as_deref()).await?),
        None => None,
    };
    if let Some(u) = &patch.branch_url {
        validate_branch_url(u, url_policy(&st))
            .and_then(|_| check_branch_host(u, &st.cfg.master.branch_hosts))
            .map_err(|m| ApiError::invalid("branch_url", m))?;
    }
    if let Some(b) = &patch.branch {
        validate_branch_name(b).map_err(|m| ApiError::invalid("branch", m))?;
    }
    if let Some(Some(a)) = &patch.architecture {
        check_arch(a)?;
    }
    if let Some(t) = &patch.tags {
        check_tags(t)?;
    }
    if let Some(n) = patch.lost_retries {
        check_retries(n)?;
    }
    let next_run = check_settings(&st, Some(&p), &patch)?;
    projects::update(&st.db, p.id, &patch, next_run, team).await?;
    who.audit(
        &st,
        "project_changed",
        Some(format!("project {name}")),
        serde_json::to_value(&patch).unwrap_or_default(),
    )
    .await;
    let a = access::project(&st, &who, &name, Role::Viewer, "viewing").await;
    match a {
        Ok(a) => Ok(Json(with_role(a.project, a.role))),
        // Moved to a team the person is not in, and private: gone from their view.
        Err(_) => Ok(Json(find(&st, &name).await?.into_api())),
    }
}

/// Deletes a project with its builds, logs and artifacts. Refused while a build is active.
/// Maintainers.
pub async fn delete(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let p = access::project(&st, &who, &name, Role::Maintainer, "deleting a project")
        .await?
        .project;
    let rows = crate::db::builds::list(&st.db, Some(&name), None, i64::MAX).await?;
    if rows.iter().any(|b| b.state().is_active()) {
        return Err(ApiError::Conflict(format!(
            "project '{name}' has a build running; cancel it first"
        )));
    }
    projects::delete(&st.db, p.id).await?;
    who.audit(
        &st,
        "project_deleted",
        Some(format!("project {name}")),
        json!({}),
    )
    .await;
    for b in rows {
        if let Err(e) = st.artifacts.delete_build(kiln_shared::BuildId(b.id)).await {
            tracing::warn!(
                build = b.id,
                "removing the artifacts of a deleted project: {e}"
            );
        }
        let dir = st.storage.build_dir(kiln_shared::BuildId(b.id));
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("removing {}: {e}", dir.display());
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
