//! People, teams and their access: `/api/me`, `/api/users`, `/api/teams` (members and group
//! mappings), `/api/tokens`, `/api/audit`. Who may call what is in each handler's doc line.

use crate::auth::principal::Via;
use crate::auth::{new_token, password, sha256_hex, AdminUser, Principal};
use crate::db::accounts::{self, UserRow};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use kiln_shared::api::{
    validate_name, ApiToken, ApiTokenCreated, AuditEntry, ChangePassword, Mapping, Me, Member,
    NewApiToken, NewMapping, NewTeam, NewUser, Role, SetMember, Team, TeamRole, User, UserCreated,
};
use serde_json::json;
use std::sync::Arc;

fn team_roles(rows: Vec<(String, Role)>) -> Vec<TeamRole> {
    rows.into_iter()
        .map(|(team, role)| TeamRole { team, role })
        .collect()
}

/// What `GET /api/me` says about `user` (signed in through a session with `csrf`, or a token
/// capped at `token_role`).
pub async fn me_of(
    st: &AppState,
    user: &UserRow,
    csrf: Option<String>,
    token_role: Option<Role>,
) -> ApiResult<Me> {
    let via = if token_role.is_some() {
        "token"
    } else {
        "session"
    };
    Ok(Me {
        username: user.username.clone(),
        admin: user.admin,
        email: user.email.clone(),
        teams: team_roles(accounts::memberships(&st.db, user.id).await?),
        csrf_token: csrf,
        via: via.into(),
        must_change_password: user.must_change_password,
        token_role,
    })
}

/// `GET /api/me`: anyone signed in.
pub async fn me(State(st): State<Arc<AppState>>, p: Principal) -> ApiResult<Json<Me>> {
    let (csrf, role) = match &p.via {
        Via::Session { csrf_token, .. } => (Some(csrf_token.clone()), None),
        Via::Token { .. } => (None, Some(p.cap)),
    };
    Ok(Json(me_of(&st, &p.user, csrf, role).await?))
}

/// `POST /api/me/password`: anyone with a local password; other sessions of theirs end.
pub async fn change_password(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Json(req): Json<ChangePassword>,
) -> ApiResult<StatusCode> {
    let stored = p.user.password_hash.clone().ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "'{}' has no local password (they sign in with a provider)",
            p.name()
        ))
    })?;
    if let Some(why) = password::weakness(&req.new) {
        return Err(ApiError::invalid("new", why));
    }
    let current = req.current.clone();
    let ok = tokio::task::spawn_blocking(move || password::verify(&current, Some(&stored)))
        .await
        .unwrap_or(false);
    if !ok {
        return Err(ApiError::invalid(
            "current",
            "the current password is wrong",
        ));
    }
    let new = req.new.clone();
    let hash = tokio::task::spawn_blocking(move || password::hash(&new))
        .await
        .map_err(|e| ApiError::Internal(e.into()))??;
    accounts::set_password(&st.db, p.user.id, &hash, false).await?;
    let keep = match &p.via {
        Via::Session { id_sha256, .. } => Some(id_sha256.as_str()),
        Via::Token { .. } => None,
    };
    accounts::delete_other_sessions(&st.db, p.user.id, keep).await?;
    p.audit(
        &st,
        "password_changed",
        Some(format!("user {}", p.name())),
        json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

async fn user_api(st: &AppState, u: UserRow) -> ApiResult<User> {
    Ok(User {
        logins: accounts::logins_of(&st.db, &u).await?,
        teams: team_roles(accounts::memberships(&st.db, u.id).await?),
        username: u.username,
        email: u.email,
        admin: u.admin,
        created_at: u.created_at,
        last_login: u.last_login,
    })
}

/// `GET /api/users`: admins.
pub async fn list_users(
    State(st): State<Arc<AppState>>,
    _: AdminUser,
) -> ApiResult<Json<Vec<User>>> {
    let mut out = Vec::new();
    for u in accounts::users(&st.db).await? {
        out.push(user_api(&st, u).await?);
    }
    Ok(Json(out))
}

fn check_email(email: Option<&str>) -> ApiResult<()> {
    match email {
        Some(e) if !e.contains('@') || e.len() > 254 || e.chars().any(char::is_whitespace) => Err(
            ApiError::invalid("email", format!("'{e}' is not an e-mail address")),
        ),
        _ => Ok(()),
    }
}

/// Creates a local account; `None` password: a one-time password, returned. Shared by
/// `POST /api/users` and `kiln-master user add`.
pub async fn create_user(st: &AppState, req: &NewUser) -> ApiResult<(UserRow, Option<String>)> {
    create_user_in(&st.db, req).await
}

pub async fn create_user_in(
    db: &sqlx::PgPool,
    req: &NewUser,
) -> ApiResult<(UserRow, Option<String>)> {
    validate_name("user name", &req.username).map_err(|m| ApiError::invalid("username", m))?;
    check_email(req.email.as_deref())?;
    let (plain, one_time) = match &req.password {
        Some(p) => {
            if let Some(why) = password::weakness(p) {
                return Err(ApiError::invalid("password", why));
            }
            (p.clone(), None)
        }
        None => {
            let p = password::one_time();
            (p.clone(), Some(p))
        }
    };
    let hash = tokio::task::spawn_blocking(move || password::hash(&plain))
        .await
        .map_err(|e| ApiError::Internal(e.into()))??;
    let id = accounts::insert_user(
        db,
        accounts::NewUser {
            username: &req.username,
            email: req.email.as_deref(),
            admin: req.admin.unwrap_or(false),
            password_hash: Some(&hash),
            must_change_password: one_time.is_some(),
        },
    )
    .await?
    .ok_or_else(|| ApiError::Conflict(format!("a user named '{}' already exists", req.username)))?;
    let row = accounts::user_by_id(db, id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("user {id} vanished")))?;
    Ok((row, one_time))
}

/// `POST /api/users`: admins.
pub async fn add_user(
    State(st): State<Arc<AppState>>,
    AdminUser(p): AdminUser,
    Json(req): Json<NewUser>,
) -> ApiResult<(StatusCode, Json<UserCreated>)> {
    let (row, password) = create_user(&st, &req).await?;
    p.audit(
        &st,
        "user_created",
        Some(format!("user {}", row.username)),
        json!({ "admin": row.admin }),
    )
    .await;
    let user = user_api(&st, row).await?;
    Ok((StatusCode::CREATED, Json(UserCreated { user, password })))
}

async fn team_api(st: &AppState, t: accounts::TeamRow) -> ApiResult<Team> {
    let members = accounts::members(&st.db, t.id)
        .await?
        .into_iter()
        .map(|m| Member {
            username: m.username,
            role: accounts::parse_role(&m.role),
            source: m.source,
        })
        .collect();
    Ok(Team {
        projects: accounts::team_projects(&st.db, t.id).await?,
        name: t.name,
        members,
        created_at: t.created_at,
    })
}

/// The team named `name`, as `p` may see it: admins see every team, others only their own
/// (404 for the rest).
async fn find_team(st: &AppState, p: &Principal, name: &str) -> ApiResult<accounts::TeamRow> {
    let missing = || ApiError::NotFound(format!("no team named '{name}'"));
    let team = accounts::team_by_name(&st.db, name)
        .await?
        .ok_or_else(missing)?;
    if !p.is_admin()
        && accounts::role_in_team(&st.db, p.user.id, team.id)
            .await?
            .is_none()
    {
        return Err(missing());
    }
    Ok(team)
}

/// `GET /api/teams`: admins see every team; others the teams they are in.
pub async fn list_teams(
    State(st): State<Arc<AppState>>,
    p: Principal,
) -> ApiResult<Json<Vec<Team>>> {
    let mine: Vec<String> = accounts::memberships(&st.db, p.user.id)
        .await?
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let mut out = Vec::new();
    for t in accounts::teams(&st.db).await? {
        if p.is_admin() || mine.contains(&t.name) {
            out.push(team_api(&st, t).await?);
        }
    }
    Ok(Json(out))
}

/// `POST /api/teams`: admins.
pub async fn add_team(
    State(st): State<Arc<AppState>>,
    AdminUser(p): AdminUser,
    Json(req): Json<NewTeam>,
) -> ApiResult<(StatusCode, Json<Team>)> {
    validate_name("team name", &req.name).map_err(|m| ApiError::invalid("name", m))?;
    accounts::insert_team(&st.db, &req.name)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("a team named '{}' already exists", req.name)))?;
    p.audit(
        &st,
        "team_created",
        Some(format!("team {}", req.name)),
        json!({}),
    )
    .await;
    let t = find_team(&st, &p, &req.name).await?;
    Ok((StatusCode::CREATED, Json(team_api(&st, t).await?)))
}

fn team_role(role: Role) -> ApiResult<Role> {
    if role == Role::Admin {
        return Err(ApiError::invalid(
            "role",
            "a team role is viewer, builder or maintainer (admin is a property of the account)",
        ));
    }
    Ok(role)
}

async fn find_user(st: &AppState, name: &str) -> ApiResult<UserRow> {
    accounts::user_by_name(&st.db, name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user named '{name}'")))
}

/// `PUT /api/teams/{name}/members/{user}`: admins.
pub async fn set_member(
    State(st): State<Arc<AppState>>,
    AdminUser(p): AdminUser,
    Path((team, user)): Path<(String, String)>,
    Json(req): Json<SetMember>,
) -> ApiResult<Json<Team>> {
    let role = team_role(req.role)?;
    let t = find_team(&st, &p, &team).await?;
    let u = find_user(&st, &user).await?;
    accounts::set_member(&st.db, t.id, u.id, "manual", role).await?;
    p.audit(
        &st,
        "member_set",
        Some(format!("team {team}")),
        json!({ "user": user, "role": role }),
    )
    .await;
    Ok(Json(team_api(&st, t).await?))
}

/// `DELETE /api/teams/{name}/members/{user}`: admins. Memberships a provider's group mapping
/// gave come back at that person's next sign-in while the mapping stays.
pub async fn remove_member(
    State(st): State<Arc<AppState>>,
    AdminUser(p): AdminUser,
    Path((team, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let t = find_team(&st, &p, &team).await?;
    let u = find_user(&st, &user).await?;
    if !accounts::remove_member(&st.db, t.id, u.id).await? {
        return Err(ApiError::NotFound(format!(
            "'{user}' is not a member of team '{team}'"
        )));
    }
    p.audit(
        &st,
        "member_removed",
        Some(format!("team {team}")),
        json!({ "user": user }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

fn mapping_api(m: accounts::MappingRow) -> Mapping {
    Mapping {
        id: m.id,
        team: m.team,
        provider: m.provider,
        group: m.grp,
        role: accounts::parse_role(&m.role),
    }
}

/// `GET /api/teams/{name}/mappings`: admins.
pub async fn list_mappings(
    State(st): State<Arc<AppState>>,
    AdminUser(p): AdminUser,
    Path(team): Path<String>,
) -> ApiResult<Json<Vec<Mapping>>> {
    let t = find_team(&st, &p, &team).await?;
    let rows = accounts::mappings(&st.db, t.id).await?;
    Ok(Json(rows.into_iter().map(mapping_api).collect()))
}

/// Whether `provider` names a sign-in provider configured on this master.
fn known_provider(st: &AppState, provider: &str) -> bool {
    let a = &st.cfg.auth;
    match provider.strip_prefix("oidc:") {
        Some(name) => a.oidc.iter().any(|p| p.name == name),
        None => provider == "launchpad" && a.launchpad.is_some(),
    }
}

/// `POST /api/teams/{name}/mappings`: admins.
pub async fn add_mapping(
    State(st): State<Arc<AppState>>,
    AdminUser(p): AdminUser,
    Path(team): Path<String>,
    Json(req): Json<NewMapping>,
) -> ApiResult<(StatusCode, Json<Mapping>)> {
    let role = team_role(req.role)?;
    if !known_provider(&st, &req.provider) {
        return Err(ApiError::invalid(
            "provider",
            format!(
                "'{}' is not a configured sign-in provider (launchpad or oidc:NAME from [auth] in the config)",
                req.provider
            ),
        ));
    }
    let group = req.group.trim();
    if group.is_empty() || group.len() > 255 || group.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "group",
            "a group is 1-255 characters without control characters",
        ));
    }
    let t = find_team(&st, &p, &team).await?;
    let id = accounts::insert_mapping(&st.db, t.id, &req.provider, group, role)
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "team '{team}' already maps group '{group}' of {}",
                req.provider
            ))
        })?;
    accounts::remap_provider(&st.db, &req.provider).await?;
    p.audit(
        &st,
        "mapping_added",
        Some(format!("team {team}")),
        json!({ "id": id, "provider": req.provider, "group": group, "role": role }),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(Mapping {
            id,
            team,
            provider: req.provider,
            group: group.to_string(),
            role,
        }),
    ))
}

/// `DELETE /api/teams/{name}/mappings/{id}`: admins.
pub async fn delete_mapping(
    State(st): State<Arc<AppState>>,
    AdminUser(p): AdminUser,
    Path((team, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    let t = find_team(&st, &p, &team).await?;
    let provider = accounts::mappings(&st.db, t.id)
        .await?
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| m.provider)
        .ok_or_else(|| ApiError::NotFound(format!("team '{team}' has no mapping {id}")))?;
    accounts::delete_mapping(&st.db, t.id, id).await?;
    // Those who were in the team through it are out at once.
    accounts::remap_provider(&st.db, &provider).await?;
    p.audit(
        &st,
        "mapping_removed",
        Some(format!("team {team}")),
        json!({ "id": id }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/tokens`: anyone signed in; their own live tokens.
pub async fn list_tokens(
    State(st): State<Arc<AppState>>,
    p: Principal,
) -> ApiResult<Json<Vec<ApiToken>>> {
    let rows = accounts::tokens_of(&st.db, p.user.id).await?;
    Ok(Json(rows.into_iter().map(|t| t.into_api()).collect()))
}

/// The highest role someone holds anywhere: admin, else their best team role, else viewer.
async fn highest_role(st: &AppState, p: &Principal) -> ApiResult<Role> {
    if p.user.admin {
        return Ok(Role::Admin.min(p.cap));
    }
    let best = accounts::memberships(&st.db, p.user.id)
        .await?
        .into_iter()
        .map(|(_, r)| r)
        .max()
        .unwrap_or(Role::Viewer);
    Ok(best.min(p.cap))
}

/// `POST /api/tokens`: anyone signed in through a session (a token may not make tokens: a
/// leaked one could otherwise outlive its own revocation); the role at most their own.
pub async fn add_token(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Json(req): Json<NewApiToken>,
) -> ApiResult<(StatusCode, Json<ApiTokenCreated>)> {
    if matches!(p.via, Via::Token { .. }) {
        return Err(ApiError::Forbidden(
            "API tokens are made by a signed-in person (the console's Tokens page), not by another token".into(),
        ));
    }
    let name = req.name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "a token's name is 1-100 characters without control characters",
        ));
    }
    let highest = highest_role(&st, &p).await?;
    let role = req.role.unwrap_or(highest);
    if role > highest {
        return Err(ApiError::Forbidden(format!(
            "a token may not carry more than your own role ({}); asked for {}",
            highest.as_str(),
            role.as_str()
        )));
    }
    if let Some(e) = req.expires_at {
        if e <= st.clock.now() {
            return Err(ApiError::invalid("expires_at", "expires_at is in the past"));
        }
    }
    let secret = new_token("kiln_");
    let row = accounts::insert_token(
        &st.db,
        p.user.id,
        name,
        role,
        &sha256_hex(&secret),
        req.expires_at,
    )
    .await?;
    p.audit(
        &st,
        "token_created",
        Some(format!("token {}", row.id)),
        json!({ "name": name, "role": role }),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(ApiTokenCreated {
            token: row.into_api(),
            secret,
        }),
    ))
}

/// `DELETE /api/tokens/{id}`: its owner, or an admin.
pub async fn revoke_token(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    let missing = || ApiError::NotFound(format!("no token {id}"));
    let t = accounts::token_by_id(&st.db, id)
        .await?
        .ok_or_else(missing)?;
    if t.user_id != p.user.id && !p.is_admin() {
        return Err(missing());
    }
    accounts::revoke_token(&st.db, id, st.clock.now()).await?;
    p.audit(
        &st,
        "token_revoked",
        Some(format!("token {id}")),
        json!({ "name": t.name }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    before: Option<i64>,
    action: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/audit?before=ID&action=A&limit=N`: admins; newest first, at most 500.
pub async fn audit(
    State(st): State<Arc<AppState>>,
    _: AdminUser,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let rows = accounts::audit_list(&st.db, q.before, q.action.as_deref(), limit).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: r.at,
                actor: r.actor,
                action: r.action,
                target: r.target,
                address: r.address,
                detail: r.detail,
            })
            .collect(),
    ))
}
