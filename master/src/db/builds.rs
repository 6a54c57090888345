//! The `builds` aggregate and its state machine. Every change of state goes through
//! [`transition`], which checks the arrow against [`BuildState::can_become`] under a row lock and
//! records time and reason in `build_events`, in one transaction.

use chrono::{DateTime, Utc};
use kiln_shared::{api, BuildId, BuildState, SlaveId};
use sqlx::{FromRow, PgConnection, PgExecutor, PgPool};

#[derive(Debug, Clone, FromRow)]
pub struct BuildRow {
    pub id: i64,
    pub project_id: i64,
    pub project: String,
    pub state: String,
    pub reason: Option<String>,
    pub trigger: String,
    pub priority: i32,
    pub waiting_reason: Option<String>,
    pub rebuild_of: Option<i64>,
    pub release: Option<String>,
    pub requested_commit: Option<String>,
    pub commit_sha: Option<String>,
    pub branch_url: String,
    pub branch: String,
    pub slave_id: Option<i64>,
    pub slave: Option<String>,
    pub retry_of: Option<i64>,
    pub attempt: i32,
    pub log_lines: i64,
    pub created_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl BuildRow {
    pub fn state(&self) -> BuildState {
        // The CHECK constraint keeps the column to the known names.
        self.state.parse().unwrap_or(BuildState::Failed)
    }

    pub fn into_api(self) -> api::Build {
        api::Build {
            id: BuildId(self.id),
            state: self.state(),
            project: self.project,
            reason: self.reason,
            commit: self.commit_sha,
            requested_commit: self.requested_commit,
            release: self.release,
            trigger: self.trigger,
            priority: self.priority,
            waiting_reason: if self.state == "queued" {
                self.waiting_reason
            } else {
                None
            },
            rebuild_of: self.rebuild_of.map(BuildId),
            branch_url: self.branch_url,
            branch: self.branch,
            slave: self.slave,
            retry_of: self.retry_of.map(BuildId),
            log_lines: self.log_lines,
            created_at: self.created_at,
            dispatched_at: self.dispatched_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }
}

const SELECT: &str = "SELECT b.id, b.project_id, p.name AS project, b.state, b.reason, b.trigger,
        b.priority, b.waiting_reason, b.rebuild_of, b.release, b.requested_commit, b.commit_sha, b.branch_url, b.branch, b.slave_id,
        s.name AS slave, b.retry_of, b.attempt, b.log_lines, b.created_at, b.dispatched_at,
        b.started_at, b.finished_at
    FROM builds b JOIN projects p ON p.id = b.project_id LEFT JOIN slaves s ON s.id = b.slave_id";

pub struct NewBuild<'a> {
    pub project_id: i64,
    pub trigger: &'a str,
    pub release: Option<&'a str>,
    pub requested_commit: Option<&'a str>,
    pub branch_url: &'a str,
    pub branch: &'a str,
    pub retry_of: Option<BuildId>,
    pub attempt: i32,
    pub priority: i32,
    pub rebuild_of: Option<BuildId>,
}

pub async fn insert(db: &mut PgConnection, b: NewBuild<'_>) -> sqlx::Result<BuildId> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO builds (project_id, state, trigger, release, requested_commit, branch_url,
                             branch, retry_of, attempt, priority, rebuild_of)
         VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(b.project_id)
    .bind(b.trigger)
    .bind(b.release)
    .bind(b.requested_commit)
    .bind(b.branch_url)
    .bind(b.branch)
    .bind(b.retry_of.map(|b| b.0))
    .bind(b.attempt)
    .bind(b.priority)
    .bind(b.rebuild_of.map(|b| b.0))
    .fetch_one(&mut *db)
    .await?;
    sqlx::query("INSERT INTO build_events (build_id, to_state, reason) VALUES ($1, 'queued', $2)")
        .bind(id)
        .bind(match b.retry_of {
            Some(prev) => format!("requeued: build {prev} was lost with its slave"),
            None => format!("requested ({})", b.trigger),
        })
        .execute(&mut *db)
        .await?;
    Ok(BuildId(id))
}

pub async fn get(db: impl PgExecutor<'_>, id: BuildId) -> sqlx::Result<Option<BuildRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE b.id = $1"))
        .bind(id.0)
        .fetch_optional(db)
        .await
}

pub async fn list(
    db: impl PgExecutor<'_>,
    project: Option<&str>,
    state: Option<BuildState>,
    limit: i64,
) -> sqlx::Result<Vec<BuildRow>> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE ($1::text IS NULL OR p.name = $1) AND ($2::text IS NULL OR b.state = $2)
         ORDER BY b.id DESC LIMIT $3"
    ))
    .bind(project)
    .bind(state.map(|s| s.as_str()))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Builds a slave holds according to the database.
pub async fn active_for_slave(
    db: impl PgExecutor<'_>,
    slave: SlaveId,
) -> sqlx::Result<Vec<(BuildId, BuildState)>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, state FROM builds WHERE slave_id = $1 AND state IN ('dispatched','running')",
    )
    .bind(slave.0)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, st)| Some((BuildId(id), st.parse().ok()?)))
        .collect())
}

/// What a slave offers, for matching builds to it.
pub struct SlaveOffer<'a> {
    pub id: SlaveId,
    pub arch: &'a str,
    pub emulates: &'a [String],
    pub tags: &'a [String],
}

/// Claims the next queued build this slave can take, in the caller's transaction: the row is
/// locked with `FOR UPDATE SKIP LOCKED`, so two dispatchers never claim the same build.
///
/// Order: highest priority first; among equal priorities the project that was served longest ago
/// (so one project's 50 queued builds do not starve another's one); then first in, first out.
/// A project at its `max_running` limit is skipped. Architecture: the slave's own, or one it
/// emulates when the project allows emulation.
pub async fn claim_next(
    tx: &mut PgConnection,
    slave: &SlaveOffer<'_>,
) -> sqlx::Result<Option<BuildRow>> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT b.id, b.project_id FROM builds b JOIN projects p ON p.id = b.project_id
         WHERE b.state = 'queued'
           AND (p.architecture IS NULL OR p.architecture = $1
                OR (p.allow_emulation AND p.architecture = ANY($2)))
           AND p.tags <@ $3
           AND (p.max_running IS NULL OR p.max_running >
                (SELECT count(*) FROM builds r
                 WHERE r.project_id = p.id AND r.state IN ('dispatched','running')))
         ORDER BY b.priority DESC, p.last_dispatched_at ASC NULLS FIRST, b.id
         LIMIT 1
         FOR UPDATE OF b SKIP LOCKED",
    )
    .bind(slave.arch)
    .bind(slave.emulates)
    .bind(slave.tags)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, project)) = row else {
        return Ok(None);
    };
    sqlx::query(
        "UPDATE builds SET state = 'dispatched', slave_id = $2, dispatched_at = now(),
             waiting_reason = NULL WHERE id = $1",
    )
    .bind(id)
    .bind(slave.id.0)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE projects SET last_dispatched_at = clock_timestamp() WHERE id = $1")
        .bind(project)
        .execute(&mut *tx)
        .await?;
    record_event(
        &mut *tx,
        BuildId(id),
        Some(BuildState::Queued),
        BuildState::Dispatched,
        None,
    )
    .await?;
    get(&mut *tx, BuildId(id)).await
}

/// A queued build with what its project asks of a slave.
#[derive(Debug, Clone, FromRow)]
pub struct Waiting {
    pub id: i64,
    pub waiting_reason: Option<String>,
    pub architecture: Option<String>,
    pub allow_emulation: bool,
    pub tags: Vec<String>,
    pub max_running: Option<i32>,
    pub running: i64,
}

pub async fn waiting(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<Waiting>> {
    sqlx::query_as(
        "SELECT b.id, b.waiting_reason, p.architecture, p.allow_emulation, p.tags, p.max_running,
                (SELECT count(*) FROM builds r WHERE r.project_id = p.id
                   AND r.state IN ('dispatched','running')) AS running
         FROM builds b JOIN projects p ON p.id = b.project_id
         WHERE b.state = 'queued' ORDER BY b.priority DESC, b.id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn set_waiting_reason(
    db: impl PgExecutor<'_>,
    id: i64,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE builds SET waiting_reason = $2 WHERE id = $1 AND state = 'queued'")
        .bind(id)
        .bind(reason)
        .execute(db)
        .await
        .map(|_| ())
}

/// Running builds past their project's `timeout_minutes` at `now`.
pub async fn timed_out(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<(BuildId, Option<i64>, i32)>> {
    let rows: Vec<(i64, Option<i64>, i32)> = sqlx::query_as(
        "SELECT b.id, b.slave_id, p.timeout_minutes FROM builds b JOIN projects p ON p.id = b.project_id
         WHERE b.state IN ('dispatched','running') AND p.timeout_minutes IS NOT NULL
           AND COALESCE(b.started_at, b.dispatched_at) + make_interval(mins => p.timeout_minutes) < $1",
    )
    .bind(now)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, s, m)| (BuildId(id), s, m))
        .collect())
}

/// Ended builds that the project's retention no longer keeps: beyond the newest `keep_builds`,
/// or finished more than `keep_days` ago. Release builds are always kept.
pub async fn expired(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> sqlx::Result<Vec<BuildId>> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "WITH ranked AS (
            SELECT b.id, b.state, b.release, b.finished_at, p.keep_builds, p.keep_days,
                   row_number() OVER (PARTITION BY b.project_id ORDER BY b.id DESC) AS n
            FROM builds b JOIN projects p ON p.id = b.project_id
            WHERE p.keep_builds IS NOT NULL OR p.keep_days IS NOT NULL)
         SELECT id FROM ranked
         WHERE release IS NULL
           AND state IN ('succeeded','failed','cancelled','lost')
           AND ((keep_builds IS NOT NULL AND n > keep_builds)
             OR (keep_days IS NOT NULL AND finished_at < $1 - make_interval(days => keep_days)))
         ORDER BY id",
    )
    .bind(now)
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().map(BuildId).collect())
}

pub async fn delete(db: impl PgExecutor<'_>, id: BuildId) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM builds WHERE id = $1 AND state IN ('succeeded','failed','cancelled','lost')",
    )
    .bind(id.0)
    .execute(db)
    .await
    .map(|_| ())
}

async fn record_event(
    db: &mut PgConnection,
    id: BuildId,
    from: Option<BuildState>,
    to: BuildState,
    reason: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO build_events (build_id, from_state, to_state, reason) VALUES ($1, $2, $3, $4)",
    )
    .bind(id.0)
    .bind(from.map(|s| s.as_str()))
    .bind(to.as_str())
    .bind(reason)
    .execute(db)
    .await
    .map(|_| ())
}

#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    Done {
        from: BuildState,
    },
    /// The build is in a state from which this arrow is not allowed (or held by another slave).
    Refused {
        current: BuildState,
    },
    NotFound,
}

/// Extra columns set along with a change of state.
#[derive(Default)]
pub struct Change<'a> {
    pub reason: Option<&'a str>,
    pub commit: Option<&'a str>,
    /// Only if the build is held by this slave.
    pub held_by: Option<SlaveId>,
}

/// Moves a build to `to` if the state machine allows it, in its own transaction.
pub async fn transition(
    pool: &PgPool,
    id: BuildId,
    to: BuildState,
    change: Change<'_>,
) -> sqlx::Result<Transition> {
    let mut tx = pool.begin().await?;
    let r = transition_in(&mut tx, id, to, change).await?;
    tx.commit().await?;
    Ok(r)
}

pub async fn transition_in(
    tx: &mut PgConnection,
    id: BuildId,
    to: BuildState,
    change: Change<'_>,
) -> sqlx::Result<Transition> {
    let row: Option<(String, Option<i64>)> =
        sqlx::query_as("SELECT state, slave_id FROM builds WHERE id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((state, slave)) = row else {
        return Ok(Transition::NotFound);
    };
    let from: BuildState = state.parse().unwrap_or(BuildState::Failed);
    let wrong_slave = change.held_by.is_some_and(|s| slave != Some(s.0));
    if !from.can_become(to) || wrong_slave {
        return Ok(Transition::Refused { current: from });
    }
    sqlx::query(
        "UPDATE builds SET state = $2,
            reason = COALESCE($3, reason),
            commit_sha = COALESCE($4, commit_sha),
            started_at = CASE WHEN $2 = 'running' THEN now() ELSE started_at END,
            finished_at = CASE WHEN $2 IN ('succeeded','failed','cancelled','lost')
                               THEN now() ELSE finished_at END,
            slave_id = CASE WHEN $2 = 'queued' THEN NULL ELSE slave_id END,
            dispatched_at = CASE WHEN $2 = 'queued' THEN NULL ELSE dispatched_at END
         WHERE id = $1",
    )
    .bind(id.0)
    .bind(to.as_str())
    .bind(change.reason)
    .bind(change.commit)
    .execute(&mut *tx)
    .await?;
    record_event(tx, id, Some(from), to, change.reason).await?;
    Ok(Transition::Done { from })
}

/// Marks a build lost and, if its project allows another attempt, queues a fresh build of the
/// same request. Returns the new build's id.
pub async fn mark_lost(pool: &PgPool, id: BuildId, reason: &str) -> sqlx::Result<Option<BuildId>> {
    let mut tx = pool.begin().await?;
    let t = transition_in(
        &mut tx,
        id,
        BuildState::Lost,
        Change {
            reason: Some(reason),
            ..Default::default()
        },
    )
    .await?;
    if !matches!(t, Transition::Done { .. }) {
        tx.commit().await?;
        return Ok(None);
    }
    #[derive(FromRow)]
    struct Retry {
        project_id: i64,
        priority: i32,
        trigger: String,
        release: Option<String>,
        requested_commit: Option<String>,
        branch_url: String,
        branch: String,
        attempt: i32,
        lost_retries: i32,
    }
    let r: Retry = sqlx::query_as(
        "SELECT b.project_id, b.priority, b.trigger, b.release, b.requested_commit, b.branch_url, b.branch,
                b.attempt, p.lost_retries
         FROM builds b JOIN projects p ON p.id = b.project_id WHERE b.id = $1",
    )
    .bind(id.0)
    .fetch_one(&mut *tx)
    .await?;
    let new = if r.attempt < r.lost_retries {
        Some(
            insert(
                &mut tx,
                NewBuild {
                    project_id: r.project_id,
                    trigger: &r.trigger,
                    release: r.release.as_deref(),
                    requested_commit: r.requested_commit.as_deref(),
                    branch_url: &r.branch_url,
                    branch: &r.branch,
                    retry_of: Some(id),
                    attempt: r.attempt + 1,
                    priority: r.priority,
                    rebuild_of: None,
                },
            )
            .await?,
        )
    } else {
        None
    };
    tx.commit().await?;
    Ok(new)
}

/// Active builds whose slave has been silent for longer than `timeout_secs`.
pub async fn held_by_silent_slaves(
    db: impl PgExecutor<'_>,
    timeout_secs: i64,
) -> sqlx::Result<Vec<(BuildId, String, Option<DateTime<Utc>>)>> {
    let rows: Vec<(i64, String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT b.id, s.name, s.last_seen FROM builds b JOIN slaves s ON s.id = b.slave_id
         WHERE b.state IN ('dispatched','running')
           AND (s.last_seen IS NULL OR s.last_seen < now() - make_interval(secs => $1))",
    )
    .bind(timeout_secs as f64)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, n, t)| (BuildId(id), n, t))
        .collect())
}

pub async fn set_log_lines(
    db: impl PgExecutor<'_>,
    id: BuildId,
    n: u64,
    bytes: u64,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE builds SET log_lines = $2, log_bytes = $3 WHERE id = $1")
        .bind(id.0)
        .bind(n as i64)
        .bind(bytes as i64)
        .execute(db)
        .await
        .map(|_| ())
}
