//! The `projects` aggregate.

use chrono::{DateTime, Utc};
use kiln_shared::api::{self, PatchProject};
use kiln_shared::{BuildId, BuildState};
use sqlx::{FromRow, PgExecutor};

#[derive(Debug, Clone, FromRow)]
pub struct ProjectRow {
    pub id: i64,
    pub name: String,
    pub branch_url: String,
    pub branch: String,
    pub architecture: Option<String>,
    pub tags: Vec<String>,
    pub lost_retries: i32,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub only_if_changed: bool,
    pub priority: i32,
    pub timeout_minutes: Option<i32>,
    pub keep_builds: Option<i32>,
    pub keep_days: Option<i32>,
    pub max_running: Option<i32>,
    pub allow_emulation: bool,
    pub backend: Option<String>,
    pub path: Option<String>,
    pub next_run: Option<DateTime<Utc>>,
    pub disk_bytes: i64,
    pub created_at: DateTime<Utc>,
    pub last_build: Option<i64>,
    pub last_state: Option<String>,
    pub team_id: Option<i64>,
    pub team: Option<String>,
    pub visibility: String,
    pub source_rewrites: sqlx::types::Json<std::collections::BTreeMap<String, String>>,
}

impl ProjectRow {
    pub fn into_api(self) -> api::Project {
        api::Project {
            name: self.name,
            branch_url: self.branch_url,
            branch: self.branch,
            architecture: self.architecture,
            tags: self.tags,
            lost_retries: self.lost_retries,
            schedule: self.schedule,
            timezone: self.timezone,
            only_if_changed: self.only_if_changed,
            priority: self.priority,
            timeout_minutes: self.timeout_minutes,
            keep_builds: self.keep_builds,
            keep_days: self.keep_days,
            max_running: self.max_running,
            allow_emulation: self.allow_emulation,
            backend: self.backend,
            path: self.path,
            next_run: self.next_run,
            disk_bytes: self.disk_bytes,
            created_at: self.created_at,
            last_build: self.last_build.map(BuildId),
            last_state: self.last_state.and_then(|s| s.parse::<BuildState>().ok()),
            team: self.team,
            visibility: if self.visibility == "public" {
                api::Visibility::Public
            } else {
                api::Visibility::Private
            },
            role: None,
            source_rewrites: self.source_rewrites.0,
        }
    }
}

const SELECT: &str = "SELECT p.id, p.name, p.branch_url, p.branch, p.architecture, p.tags,
        p.lost_retries, p.schedule, p.timezone, p.only_if_changed, p.priority, p.timeout_minutes,
        p.keep_builds, p.keep_days, p.max_running, p.allow_emulation, p.backend, p.path, p.next_run,
        (COALESCE((SELECT sum(a.size) FROM artifacts a JOIN builds b ON b.id = a.build_id
                   WHERE b.project_id = p.id), 0)
         + COALESCE((SELECT sum(b.log_bytes) FROM builds b WHERE b.project_id = p.id), 0))::bigint
            AS disk_bytes,
        p.created_at, lb.id AS last_build, lb.state AS last_state,
        p.team_id, t.name AS team, p.visibility, p.source_rewrites
    FROM projects p
    LEFT JOIN teams t ON t.id = p.team_id
    LEFT JOIN LATERAL (SELECT b.id, b.state FROM builds b WHERE b.project_id = p.id
                       ORDER BY b.id DESC LIMIT 1) lb ON true";

pub struct NewProject<'a> {
    pub name: &'a str,
    pub branch_url: &'a str,
    pub branch: &'a str,
    pub architecture: Option<&'a str>,
    pub tags: &'a [String],
    pub lost_retries: i32,
    pub team_id: Option<i64>,
    pub visibility: api::Visibility,
}

/// Inserts a project; `None` when the name is taken.
pub async fn insert(db: impl PgExecutor<'_>, p: NewProject<'_>) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO projects (name, branch_url, branch, architecture, tags, lost_retries,
                               team_id, visibility)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(p.name)
    .bind(p.branch_url)
    .bind(p.branch)
    .bind(p.architecture)
    .bind(p.tags)
    .bind(p.lost_retries)
    .bind(p.team_id)
    .bind(p.visibility.as_str())
    .fetch_optional(db)
    .await
}

pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<ProjectRow>> {
    sqlx::query_as(&format!("{SELECT} ORDER BY p.name"))
        .fetch_all(db)
        .await
}

pub async fn get(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Option<ProjectRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE p.name = $1"))
        .bind(name)
        .fetch_optional(db)
        .await
}

pub async fn get_by_id(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<ProjectRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE p.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Applies the fields present in `patch` (already validated). `next_run` is the caller's
/// recomputation when the schedule or time zone changed; `team` the id of `patch.team`.
pub async fn update(
    db: impl PgExecutor<'_>,
    id: i64,
    patch: &PatchProject,
    next_run: Option<Option<DateTime<Utc>>>,
    team: Option<Option<i64>>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE projects SET
            branch_url = COALESCE($2, branch_url),
            branch = COALESCE($3, branch),
            architecture = CASE WHEN $4 THEN $5 ELSE architecture END,
            tags = COALESCE($6, tags),
            lost_retries = COALESCE($7, lost_retries),
            schedule = CASE WHEN $8 THEN $9 ELSE schedule END,
            timezone = CASE WHEN $10 THEN $11 ELSE timezone END,
            only_if_changed = COALESCE($12, only_if_changed),
            priority = COALESCE($13, priority),
            timeout_minutes = CASE WHEN $14 THEN $15 ELSE timeout_minutes END,
            keep_builds = CASE WHEN $16 THEN $17 ELSE keep_builds END,
            keep_days = CASE WHEN $18 THEN $19 ELSE keep_days END,
            max_running = CASE WHEN $20 THEN $21 ELSE max_running END,
            allow_emulation = COALESCE($22, allow_emulation),
            next_run = CASE WHEN $23 THEN $24 ELSE next_run END,
            backend = CASE WHEN $25 THEN $26 ELSE backend END,
            team_id = CASE WHEN $27 THEN $28 ELSE team_id END,
            visibility = COALESCE($29, visibility),
            source_rewrites = COALESCE($30, source_rewrites),
            path = CASE WHEN $31 THEN $32 ELSE path END
         WHERE id = $1",
    )
    .bind(id)
    .bind(patch.branch_url.as_deref())
    .bind(patch.branch.as_deref())
    .bind(patch.architecture.is_some())
    .bind(patch.architecture.clone().flatten())
    .bind(patch.tags.as_deref())
    .bind(patch.lost_retries)
    .bind(patch.schedule.is_some())
    .bind(patch.schedule.clone().flatten())
    .bind(patch.timezone.is_some())
    .bind(patch.timezone.clone().flatten())
    .bind(patch.only_if_changed)
    .bind(patch.priority)
    .bind(patch.timeout_minutes.is_some())
    .bind(patch.timeout_minutes.flatten())
    .bind(patch.keep_builds.is_some())
    .bind(patch.keep_builds.flatten())
    .bind(patch.keep_days.is_some())
    .bind(patch.keep_days.flatten())
    .bind(patch.max_running.is_some())
    .bind(patch.max_running.flatten())
    .bind(patch.allow_emulation)
    .bind(next_run.is_some())
    .bind(next_run.flatten())
    .bind(patch.backend.is_some())
    .bind(patch.backend.clone().flatten())
    .bind(team.is_some())
    .bind(team.flatten())
    .bind(patch.visibility.map(|v| v.as_str()))
    .bind(patch.source_rewrites.as_ref().map(sqlx::types::Json))
    .bind(patch.path.is_some())
    .bind(patch.path.clone().flatten())
    .execute(db)
    .await?;
    super::access::changed();
    Ok(())
}

pub async fn delete(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM projects WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    super::access::changed();
    Ok(())
}

/// Projects whose schedule is due at `now` (read without locks: the scheduler asks the branch
/// head of each before it locks it with [`lock_slot`]).
pub async fn due(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> sqlx::Result<Vec<ProjectRow>> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE p.schedule IS NOT NULL AND p.next_run <= $1 ORDER BY p.next_run"
    ))
    .bind(now)
    .fetch_all(db)
    .await
}

/// The key of the advisory lock a scheduler pass holds (`pg_try_advisory_xact_lock`, one
/// 64-bit key): the ASCII of "kilnschd". Masters serving one farm share it, so only one of them
/// runs a pass at a time and the others skip theirs. The only other one-key advisory locks of
/// Kiln are hashes of text (`login`); the two-key ones (`artifacts`) are a separate key space.
pub const SCHEDULER_LOCK_KEY: i64 = 0x6B69_6C6E_7363_6864;

/// Takes the scheduler's advisory lock ([`SCHEDULER_LOCK_KEY`]) for the rest of the transaction
/// on `tx`, without waiting: false if another master holds it (its pass is running).
pub async fn try_lock_scheduler(tx: &mut sqlx::PgConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(SCHEDULER_LOCK_KEY)
        .fetch_one(&mut *tx)
        .await
}

/// Locks project `id` for handling its slot `next_run`, if that slot is still pending (nobody
/// handled it meanwhile and the schedule did not change); false otherwise.
pub async fn lock_slot(
    tx: &mut sqlx::PgConnection,
    id: i64,
    next_run: Option<DateTime<Utc>>,
) -> sqlx::Result<bool> {
    let row: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM projects WHERE id = $1 AND schedule IS NOT NULL
           AND next_run IS NOT DISTINCT FROM $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(id)
    .bind(next_run)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.is_some())
}

pub async fn set_next_run(
    db: impl PgExecutor<'_>,
    id: i64,
    next: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE projects SET next_run = $2 WHERE id = $1")
        .bind(id)
        .bind(next)
        .execute(db)
        .await
        .map(|_| ())
}

/// The commit of the project's newest successful build.
pub async fn last_good_commit(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT commit_sha FROM builds WHERE project_id = $1 AND state = 'succeeded'
         ORDER BY id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
    .map(Option::flatten)
}

/// Bytes each project stores: `(name, of logs, of artifacts)`, the parts of its `disk_bytes`
/// (for `GET /metrics`).
pub async fn stored_bytes(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(String, i64, i64)>> {
    sqlx::query_as(
        "SELECT p.name,
                COALESCE((SELECT sum(b.log_bytes) FROM builds b WHERE b.project_id = p.id), 0)::bigint,
                COALESCE((SELECT sum(a.size) FROM artifacts a JOIN builds b ON b.id = a.build_id
                          WHERE b.project_id = p.id), 0)::bigint
         FROM projects p ORDER BY p.name",
    )
    .fetch_all(db)
    .await
}
