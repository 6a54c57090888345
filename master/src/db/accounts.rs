//! People and what they may do: users, their identities at sign-in providers, teams and
//! memberships, group mappings, sessions, API tokens, and the short-lived state of sign-ins in
//! progress. Secrets are stored only as hashes (the callers hash them).

use chrono::{DateTime, Utc};
use kiln_shared::api::Role;
use sqlx::{FromRow, PgExecutor, PgPool};

/// SQL that ranks a role column (`viewer` 1 … `admin` 4) so MAX() picks the highest.
const RANK: &str = "CASE role WHEN 'viewer' THEN 1 WHEN 'builder' THEN 2 \
                    WHEN 'maintainer' THEN 3 WHEN 'admin' THEN 4 END";

fn role_of_rank(rank: i32) -> Option<Role> {
    Some(match rank {
        1 => Role::Viewer,
        2 => Role::Builder,
        3 => Role::Maintainer,
        4 => Role::Admin,
        _ => return None,
    })
}

pub fn parse_role(s: &str) -> Role {
    Role::parse(s).unwrap_or(Role::Viewer)
}

// ---- users --------------------------------------------------------------------------------

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub admin: bool,
    pub password_hash: Option<String>,
    pub must_change_password: bool,
    pub created_at: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
}

const USER: &str = "SELECT id, username, email, admin, password_hash, must_change_password,
                           created_at, last_login FROM users";

pub async fn user_by_name(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as(&format!("{USER} WHERE username = $1"))
        .bind(name)
        .fetch_optional(db)
        .await
}

pub async fn user_by_id(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as(&format!("{USER} WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn users(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<UserRow>> {
    sqlx::query_as(&format!("{USER} ORDER BY username"))
        .fetch_all(db)
        .await
}

pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub admin: bool,
    pub password_hash: Option<&'a str>,
    pub must_change_password: bool,
}

/// Inserts a user; `None` when the name is taken.
pub async fn insert_user(db: impl PgExecutor<'_>, u: NewUser<'_>) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO users (username, email, admin, password_hash, must_change_password)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username) DO NOTHING RETURNING id",
    )
    .bind(u.username)
    .bind(u.email)
    .bind(u.admin)
    .bind(u.password_hash)
    .bind(u.must_change_password)
    .fetch_optional(db)
    .await
}

pub async fn set_password(
    db: impl PgExecutor<'_>,
    user: i64,
    hash: &str,
    must_change: bool,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET password_hash = $2, must_change_password = $3 WHERE id = $1")
        .bind(user)
        .bind(hash)
        .bind(must_change)
        .execute(db)
        .await
        .map(|_| ())
}

pub async fn signed_in(
    db: impl PgExecutor<'_>,
    user: i64,
    at: DateTime<Utc>,
    email: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET last_login = $2, email = COALESCE($3, email) WHERE id = $1")
        .bind(user)
        .bind(at)
        .bind(email)
        .execute(db)
        .await
        .map(|_| ())
}

// ---- identities at providers ----------------------------------------------------------------

#[derive(Debug, Clone, FromRow)]
pub struct IdentityRow {
    pub provider: String,
    pub subject: String,
    pub user_id: i64,
    pub name: Option<String>,
    pub next_refresh: Option<DateTime<Utc>>,
    pub refresh_failures: i32,
}

const IDENTITY: &str =
    "SELECT provider, subject, user_id, name, next_refresh, refresh_failures FROM identities";

pub async fn identity(
    db: impl PgExecutor<'_>,
    provider: &str,
    subject: &str,
) -> sqlx::Result<Option<IdentityRow>> {
    sqlx::query_as(&format!("{IDENTITY} WHERE provider = $1 AND subject = $2"))
        .bind(provider)
        .bind(subject)
        .fetch_optional(db)
        .await
}

/// Links (or re-links) `provider`/`subject` to `user`, with the provider's name for them.
pub async fn link_identity(
    db: impl PgExecutor<'_>,
    provider: &str,
    subject: &str,
    user: i64,
    name: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO identities (provider, subject, user_id, name) VALUES ($1, $2, $3, $4)
         ON CONFLICT (provider, subject) DO UPDATE SET user_id = $3, name = COALESCE($4, identities.name)",
    )
    .bind(provider)
    .bind(subject)
    .bind(user)
    .bind(name)
    .execute(db)
    .await
    .map(|_| ())
}

/// Identities at `provider` whose membership refresh is due at `now` (never refreshed counts).
pub async fn identities_due(
    db: impl PgExecutor<'_>,
    provider: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<IdentityRow>> {
    sqlx::query_as(&format!(
        "{IDENTITY} WHERE provider = $1 AND (next_refresh IS NULL OR next_refresh <= $2)
         ORDER BY next_refresh NULLS FIRST"
    ))
    .bind(provider)
    .bind(now)
    .fetch_all(db)
    .await
}

/// Records a refresh: when the next is due and how many failed in a row (0 after a success).
pub async fn set_refresh(
    db: impl PgExecutor<'_>,
    provider: &str,
    subject: &str,
    next: DateTime<Utc>,
    failures: i32,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE identities SET next_refresh = $3, refresh_failures = $4
         WHERE provider = $1 AND subject = $2",
    )
    .bind(provider)
    .bind(subject)
    .bind(next)
    .bind(failures)
    .execute(db)
    .await
    .map(|_| ())
}

/// How a user can sign in: `local` when they have a password, and each linked provider.
pub async fn logins_of(db: &PgPool, user: &UserRow) -> sqlx::Result<Vec<String>> {
    let mut out: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT provider FROM identities WHERE user_id = $1")
            .bind(user.id)
            .fetch_all(db)
            .await?;
    if user.password_hash.is_some() {
        out.insert(0, "local".into());
    }
    Ok(out)
}

// ---- teams and memberships ------------------------------------------------------------------

#[derive(Debug, Clone, FromRow)]
pub struct TeamRow {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

pub async fn team_by_name(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Option<TeamRow>> {
    sqlx::query_as("SELECT id, name, created_at FROM teams WHERE name = $1")
        .bind(name)
        .fetch_optional(db)
        .await
}

pub async fn teams(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<TeamRow>> {
    sqlx::query_as("SELECT id, name, created_at FROM teams ORDER BY name")
        .fetch_all(db)
        .await
}

/// Inserts a team; `None` when the name is taken.
pub async fn insert_team(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO teams (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(name)
    .fetch_optional(db)
    .await
}

#[derive(Debug, Clone, FromRow)]
pub struct MemberRow {
    pub username: String,
    pub role: String,
    pub source: String,
}

pub async fn members(db: impl PgExecutor<'_>, team: i64) -> sqlx::Result<Vec<MemberRow>> {
    sqlx::query_as(
        "SELECT u.username, m.role, m.source FROM team_members m JOIN users u ON u.id = m.user_id
         WHERE m.team_id = $1 ORDER BY u.username, m.source",
    )
    .bind(team)
    .fetch_all(db)
    .await
}

pub async fn team_projects(db: impl PgExecutor<'_>, team: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT name FROM projects WHERE team_id = $1 ORDER BY name")
        .bind(team)
        .fetch_all(db)
        .await
}

/// Puts `user` in `team` with `role`, as `source` says (`manual` or a provider).
pub async fn set_member(
    db: impl PgExecutor<'_>,
    team: i64,
    user: i64,
    source: &str,
    role: Role,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO team_members (team_id, user_id, source, role) VALUES ($1, $2, $3, $4)
         ON CONFLICT (team_id, user_id, source) DO UPDATE SET role = $4",
    )
    .bind(team)
    .bind(user)
    .bind(source)
    .bind(role.as_str())
    .execute(db)
    .await?;
    super::access::changed();
    Ok(())
}

/// Takes `user` out of `team` (every way they were in it); false when they were not.
pub async fn remove_member(db: impl PgExecutor<'_>, team: i64, user: i64) -> sqlx::Result<bool> {
    let removed = sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND user_id = $2")
        .bind(team)
        .bind(user)
        .execute(db)
        .await?
        .rows_affected()
        > 0;
    super::access::changed();
    Ok(removed)
}

/// Each team `user` is in, with their highest role there.
pub async fn memberships(db: impl PgExecutor<'_>, user: i64) -> sqlx::Result<Vec<(String, Role)>> {
    let rows: Vec<(String, i32)> = sqlx::query_as(&format!(
        "SELECT t.name, MAX({RANK}) FROM team_members m JOIN teams t ON t.id = m.team_id
         WHERE m.user_id = $1 GROUP BY t.name ORDER BY t.name"
    ))
    .bind(user)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(t, r)| role_of_rank(r).map(|r| (t, r)))
        .collect())
}

/// `user`'s highest role in team `team`, if a member.
pub async fn role_in_team(
    db: impl PgExecutor<'_>,
    user: i64,
    team: i64,
) -> sqlx::Result<Option<Role>> {
    let rank: Option<i32> = sqlx::query_scalar(&format!(
        "SELECT MAX({RANK}) FROM team_members WHERE team_id = $1 AND user_id = $2"
    ))
    .bind(team)
    .bind(user)
    .fetch_one(db)
    .await?;
    Ok(rank.and_then(role_of_rank))
}

/// Replaces the memberships `provider` gave `user` by those its group mappings give for
/// `groups` (the highest role per team), and keeps `groups` with the person's identity there
/// (for [`remap_provider`]). Manual memberships stay.
pub async fn set_provider_memberships(
    db: &PgPool,
    user: i64,
    provider: &str,
    groups: &[String],
) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE identities SET groups = $3 WHERE user_id = $1 AND provider = $2")
        .bind(user)
        .bind(provider)
        .bind(groups)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM team_members WHERE user_id = $1 AND source = $2")
        .bind(user)
        .bind(provider)
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO team_members (team_id, user_id, source, role)
         SELECT DISTINCT ON (team_id) team_id, $1, $2, role FROM group_mappings
          WHERE provider = $2 AND grp = ANY($3)
          ORDER BY team_id, {RANK} DESC"
    ))
    .bind(user)
    .bind(provider)
    .bind(groups)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    super::access::changed();
    Ok(())
}

/// After a mapping of `provider` changed: every person known there gets the memberships the
/// mappings now give for the groups the provider last reported (a deleted mapping takes its
/// access away at once; a new one gives it without a new sign-in).
pub async fn remap_provider(db: &PgPool, provider: &str) -> sqlx::Result<()> {
    let people: Vec<(i64, Vec<String>)> =
        sqlx::query_as("SELECT user_id, groups FROM identities WHERE provider = $1")
            .bind(provider)
            .fetch_all(db)
            .await?;
    for (user, groups) in people {
        set_provider_memberships(db, user, provider, &groups).await?;
    }
    Ok(())
}

// ---- group mappings ---------------------------------------------------------------------------

#[derive(Debug, Clone, FromRow)]
pub struct MappingRow {
    pub id: i64,
    pub team: String,
    pub provider: String,
    pub grp: String,
    pub role: String,
}

pub async fn mappings(db: impl PgExecutor<'_>, team: i64) -> sqlx::Result<Vec<MappingRow>> {
    sqlx::query_as(
        "SELECT m.id, t.name AS team, m.provider, m.grp, m.role FROM group_mappings m
         JOIN teams t ON t.id = m.team_id WHERE m.team_id = $1 ORDER BY m.provider, m.grp",
    )
    .bind(team)
    .fetch_all(db)
    .await
}

/// Adds a mapping; `None` when the team already maps that group of that provider.
pub async fn insert_mapping(
    db: impl PgExecutor<'_>,
    team: i64,
    provider: &str,
    group: &str,
    role: Role,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO group_mappings (team_id, provider, grp, role) VALUES ($1, $2, $3, $4)
         ON CONFLICT (team_id, provider, grp) DO NOTHING RETURNING id",
    )
    .bind(team)
    .bind(provider)
    .bind(group)
    .bind(role.as_str())
    .fetch_optional(db)
    .await
}

pub async fn delete_mapping(db: impl PgExecutor<'_>, team: i64, id: i64) -> sqlx::Result<bool> {
    sqlx::query("DELETE FROM group_mappings WHERE team_id = $1 AND id = $2")
        .bind(team)
        .bind(id)
        .execute(db)
        .await
        .map(|r| r.rows_affected() > 0)
}

/// The groups of `provider` that some team maps (for Launchpad: the teams to ask about).
pub async fn mapped_groups(db: impl PgExecutor<'_>, provider: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT DISTINCT grp FROM group_mappings WHERE provider = $1 ORDER BY grp")
        .bind(provider)
        .fetch_all(db)
        .await
}

// ---- sessions --------------------------------------------------------------------------------

#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub user_id: i64,
    pub csrf_token: String,
    pub via: String,
    pub created_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

impl SessionRow {
    /// When the session ends unless it is used again: the earlier of its idle and absolute
    /// time-outs.
    pub fn ends_at(&self, idle_secs: u64, max_secs: u64) -> DateTime<Utc> {
        let idle = chrono::Duration::seconds(idle_secs as i64);
        let max = chrono::Duration::seconds(max_secs as i64);
        (self.last_seen + idle).min(self.created_at + max)
    }
}

pub struct NewSession<'a> {
    pub id_sha256: &'a str,
    pub user: i64,
    pub csrf_token: &'a str,
    pub via: &'a str,
    pub now: DateTime<Utc>,
    pub address: Option<&'a str>,
}

pub async fn insert_session(db: impl PgExecutor<'_>, s: NewSession<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id_sha256, user_id, csrf_token, via, created_at, last_seen, address)
         VALUES ($1, $2, $3, $4, $5, $5, $6)",
    )
    .bind(s.id_sha256)
    .bind(s.user)
    .bind(s.csrf_token)
    .bind(s.via)
    .bind(s.now)
    .bind(s.address)
    .execute(db)
    .await
    .map(|_| ())
}

/// The session with this id hash, if it is still within both time-outs at `now`; a session
/// past either is deleted. `touch`: this is the person's own request, which counts as use
/// (events the master pushes to an open console do not keep a session alive).
pub async fn live_session(
    db: &PgPool,
    id_sha256: &str,
    now: DateTime<Utc>,
    idle_secs: u64,
    max_secs: u64,
    touch: bool,
) -> sqlx::Result<Option<SessionRow>> {
    let row: Option<SessionRow> = sqlx::query_as(
        "SELECT user_id, csrf_token, via, created_at, last_seen FROM sessions WHERE id_sha256 = $1",
    )
    .bind(id_sha256)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    if now > row.ends_at(idle_secs, max_secs) {
        delete_session(db, id_sha256).await?;
        return Ok(None);
    }
    // Written at most once a minute (or half the idle time-out, if shorter): a session's last
    // use need not be exact.
    let every = chrono::Duration::seconds((idle_secs as i64 / 2).clamp(1, 60));
    if touch && now - row.last_seen >= every {
        sqlx::query("UPDATE sessions SET last_seen = $2 WHERE id_sha256 = $1")
            .bind(id_sha256)
            .bind(now)
            .execute(db)
            .await?;
    }
    Ok(Some(row))
}

pub async fn delete_session(db: impl PgExecutor<'_>, id_sha256: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE id_sha256 = $1")
        .bind(id_sha256)
        .execute(db)
        .await?;
    super::access::changed();
    Ok(())
}

/// Ends every session of `user` but `keep` (after a password change).
pub async fn delete_other_sessions(
    db: impl PgExecutor<'_>,
    user: i64,
    keep: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id_sha256 IS DISTINCT FROM $2")
        .bind(user)
        .bind(keep)
        .execute(db)
        .await?;
    super::access::changed();
    Ok(())
}

/// Deletes sessions past their time-outs, and sign-in flows and nonces older than a day.
pub async fn sweep(
    db: &PgPool,
    now: DateTime<Utc>,
    idle_secs: u64,
    max_secs: u64,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE last_seen < $1 OR created_at < $2")
        .bind(now - chrono::Duration::seconds(idle_secs as i64))
        .bind(now - chrono::Duration::seconds(max_secs as i64))
        .execute(db)
        .await?;
    let day = now - chrono::Duration::days(1);
    sqlx::query("DELETE FROM login_flows WHERE created_at < $1")
        .bind(day)
        .execute(db)
        .await?;
    sqlx::query("DELETE FROM used_nonces WHERE seen_at < $1")
        .bind(day)
        .execute(db)
        .await
        .map(|_| ())
}

// ---- API tokens -------------------------------------------------------------------------------

#[derive(Debug, Clone, FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenRow {
    pub fn into_api(self) -> kiln_shared::api::ApiToken {
        kiln_shared::api::ApiToken {
            id: self.id,
            name: self.name,
            role: parse_role(&self.role),
            created_at: self.created_at,
            expires_at: self.expires_at,
            last_used: self.last_used,
        }
    }
}

const TOKEN: &str =
    "SELECT id, user_id, name, role, created_at, expires_at, last_used, revoked_at FROM api_tokens";

pub async fn insert_token(
    db: impl PgExecutor<'_>,
    user: i64,
    name: &str,
    role: Role,
    token_sha256: &str,
    expires_at: Option<DateTime<Utc>>,
) -> sqlx::Result<TokenRow> {
    insert_token_from(db, user, name, role, token_sha256, expires_at, false).await
}

/// As [`insert_token`]; `from_config`: the admin token of `master.admin_token_sha256`.
pub async fn insert_token_from(
    db: impl PgExecutor<'_>,
    user: i64,
    name: &str,
    role: Role,
    token_sha256: &str,
    expires_at: Option<DateTime<Utc>>,
    from_config: bool,
) -> sqlx::Result<TokenRow> {
    sqlx::query_as(
        "INSERT INTO api_tokens (user_id, name, role, token_sha256, expires_at, from_config)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, user_id, name, role, created_at, expires_at, last_used, revoked_at",
    )
    .bind(user)
    .bind(name)
    .bind(role.as_str())
    .bind(token_sha256)
    .bind(expires_at)
    .bind(from_config)
    .fetch_one(db)
    .await
}

/// The token with this hash, revoked or not.
pub async fn token_by_hash(
    db: impl PgExecutor<'_>,
    token_sha256: &str,
) -> sqlx::Result<Option<TokenRow>> {
    sqlx::query_as(&format!("{TOKEN} WHERE token_sha256 = $1"))
        .bind(token_sha256)
        .fetch_optional(db)
        .await
}

pub async fn token_used(db: impl PgExecutor<'_>, id: i64, at: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE api_tokens SET last_used = $2
         WHERE id = $1 AND (last_used IS NULL OR last_used < $2 - interval '1 minute')",
    )
    .bind(id)
    .bind(at)
    .execute(db)
    .await
    .map(|_| ())
}

/// The live (unrevoked) tokens of `user`, newest first.
pub async fn tokens_of(db: impl PgExecutor<'_>, user: i64) -> sqlx::Result<Vec<TokenRow>> {
    sqlx::query_as(&format!(
        "{TOKEN} WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id DESC"
    ))
    .bind(user)
    .fetch_all(db)
    .await
}

pub async fn token_by_id(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<TokenRow>> {
    sqlx::query_as(&format!("{TOKEN} WHERE id = $1 AND revoked_at IS NULL"))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn revoke_token(
    db: impl PgExecutor<'_>,
    id: i64,
    at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let revoked =
        sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(at)
            .execute(db)
            .await?
            .rows_affected()
            > 0;
    super::access::changed();
    Ok(revoked)
}

// ---- sign-ins in progress, nonces -------------------------------------------------------------

/// Keeps what a sign-in at `provider` needs when the browser comes back, under the hash of
/// the random key the browser carries.
pub async fn flow_put(
    db: impl PgExecutor<'_>,
    key_sha256: &str,
    provider: &str,
    data: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO login_flows (key_sha256, provider, data) VALUES ($1, $2, $3)")
        .bind(key_sha256)
        .bind(provider)
        .bind(data)
        .execute(db)
        .await
        .map(|_| ())
}

/// Takes (deletes and returns) the flow of `provider` with this key hash if it is younger than
/// `max_age_secs`. A key works once.
pub async fn flow_take(
    db: impl PgExecutor<'_>,
    key_sha256: &str,
    provider: &str,
    max_age_secs: i64,
) -> sqlx::Result<Option<serde_json::Value>> {
    sqlx::query_scalar(
        "DELETE FROM login_flows WHERE key_sha256 = $1 AND provider = $2
         AND created_at > now() - make_interval(secs => $3) RETURNING data",
    )
    .bind(key_sha256)
    .bind(provider)
    .bind(max_age_secs as f64)
    .fetch_optional(db)
    .await
}

/// Records a response nonce of `provider`; false when it was seen before (a replay).
pub async fn nonce_fresh(
    db: impl PgExecutor<'_>,
    provider: &str,
    nonce: &str,
) -> sqlx::Result<bool> {
    sqlx::query("INSERT INTO used_nonces (provider, nonce) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(provider)
        .bind(nonce)
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
}

// ---- audit -------------------------------------------------------------------------------------

pub struct Audit<'a> {
    pub actor: Option<&'a str>,
    pub action: &'a str,
    pub target: Option<String>,
    pub address: Option<String>,
    pub detail: serde_json::Value,
}

pub async fn audit(db: impl PgExecutor<'_>, a: Audit<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (actor, action, target, address, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(a.actor)
    .bind(a.action)
    .bind(a.target)
    .bind(a.address)
    .bind(a.detail)
    .execute(db)
    .await
    .map(|_| ())
}

#[derive(Debug, Clone, FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub address: Option<String>,
    pub detail: serde_json::Value,
}

/// Newest first: up to `limit` entries older than `before` (an id), of `action` when given.
pub async fn audit_list(
    db: impl PgExecutor<'_>,
    before: Option<i64>,
    action: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<AuditRow>> {
    sqlx::query_as(
        "SELECT id, at, actor, action, target, address, detail FROM audit_log
         WHERE ($1::bigint IS NULL OR id < $1) AND ($2::text IS NULL OR action = $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(before)
    .bind(action)
    .bind(limit)
    .fetch_all(db)
    .await
}
