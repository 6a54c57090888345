//! What a person may do with a project, read from the database each time:
//!
//! - a site admin: everything;
//! - a member of the project's team: their role there (viewer, builder or maintainer);
//! - anyone signed in, on a `public` project: viewer;
//! - anyone else: the project does not exist for them (404, never 403).
//!
//! An API token's role caps the result (a viewer token of a maintainer only views).

use super::Principal;
use crate::db::accounts;
use crate::db::projects::{self, ProjectRow};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use kiln_shared::api::Role;

/// A project and the role the person holds on it (at least viewer).
pub struct ProjectAccess {
    pub project: ProjectRow,
    pub role: Role,
}

/// `p`'s role on `project`, `None` when it is hidden from them.
pub async fn role_on(
    st: &AppState,
    p: &Principal,
    project: &ProjectRow,
) -> ApiResult<Option<Role>> {
    let base = if p.user.admin {
        Some(Role::Admin)
    } else {
        let member = match project.team_id {
            Some(team) => accounts::role_in_team(&st.db, p.user.id, team).await?,
            None => None,
        };
        member.or((project.visibility == "public").then_some(Role::Viewer))
    };
    Ok(base.map(|r| r.min(p.cap)))
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("no project named '{name}'"))
}

/// 403 naming the role `doing` needs, when `role` is below `need`.
pub fn require(role: Role, need: Role, project: &str, doing: &str) -> ApiResult<()> {
    if role >= need {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "{doing} needs the {} role on project '{project}'; you have {}",
        need.as_str(),
        role.as_str()
    )))
}

/// The project named `name` if `p` may see it and holds `need` on it: 404 when hidden or
/// absent, 403 when visible but the role is too low.
pub async fn project(
    st: &AppState,
    p: &Principal,
    name: &str,
    need: Role,
    doing: &str,
) -> ApiResult<ProjectAccess> {
    let project = projects::get(&st.db, name)
        .await?
        .ok_or_else(|| not_found(name))?;
    let role = role_on(st, p, &project)
        .await?
        .ok_or_else(|| not_found(name))?;
    require(role, need, name, doing)?;
    Ok(ProjectAccess { project, role })
}

/// The project of build `id`, as [`project`] checks it; a hidden build is "no build".
pub async fn build(
    st: &AppState,
    p: &Principal,
    id: i64,
    need: Role,
    doing: &str,
) -> ApiResult<ProjectAccess> {
    let missing = || ApiError::NotFound(format!("no build {id}"));
    let project_id: Option<i64> = sqlx::query_scalar("SELECT project_id FROM builds WHERE id = $1")
        .bind(id)
        .fetch_optional(&st.db)
        .await?;
    let project = match project_id {
        Some(pid) => projects::get_by_id(&st.db, pid).await?,
        None => None,
    }
    .ok_or_else(missing)?;
    let role = role_on(st, p, &project).await?.ok_or_else(missing)?;
    require(role, need, &project.name, doing)?;
    Ok(ProjectAccess { project, role })
}

/// The ids of the projects `p` may see; `None`: all of them (an admin).
pub async fn visible_projects(st: &AppState, p: &Principal) -> ApiResult<Option<Vec<i64>>> {
    if p.user.admin {
        return Ok(None);
    }
    let ids = sqlx::query_scalar(
        "SELECT id FROM projects WHERE visibility = 'public'
            OR team_id IN (SELECT team_id FROM team_members WHERE user_id = $1)",
    )
    .bind(p.user.id)
    .fetch_all(&st.db)
    .await?;
    Ok(Some(ids))
}

/// Every visible project with the person's role on it, in one pass.
pub async fn roles(st: &AppState, p: &Principal) -> ApiResult<Vec<(ProjectRow, Role)>> {
    let rows = projects::list(&st.db).await?;
    let teams: std::collections::HashMap<String, Role> = accounts::memberships(&st.db, p.user.id)
        .await?
        .into_iter()
        .collect();
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let role = if p.user.admin {
                Some(Role::Admin)
            } else {
                row.team
                    .as_ref()
                    .and_then(|t| teams.get(t).copied())
                    .or((row.visibility == "public").then_some(Role::Viewer))
            }?;
            Some((row, role.min(p.cap)))
        })
        .collect())
}

/// Drops from each slave's `builds` those of projects hidden from `p` (the slaves list shows
/// where builds run, never which hidden builds exist).
pub async fn hide_builds(
    st: &AppState,
    p: &Principal,
    slaves: &mut [kiln_shared::api::Slave],
) -> ApiResult<()> {
    if p.user.admin {
        return Ok(());
    }
    let ids: Vec<i64> = slaves
        .iter()
        .flat_map(|s| s.builds.iter().map(|b| b.0))
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let visible: std::collections::HashSet<i64> = sqlx::query_scalar(
        "SELECT b.id FROM builds b JOIN projects p ON p.id = b.project_id
          WHERE b.id = ANY($1) AND (p.visibility = 'public'
             OR p.team_id IN (SELECT team_id FROM team_members WHERE user_id = $2))",
    )
    .bind(&ids)
    .bind(p.user.id)
    .fetch_all(&st.db)
    .await?
    .into_iter()
    .collect();
    for s in slaves {
        s.builds.retain(|b| visible.contains(&b.0));
    }
    Ok(())
}
