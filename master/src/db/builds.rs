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
    pub path: Option<String>,
    pub slave_id: Option<i64>,
    pub slave: Option<String>,
    pub retry_of: Option<i64>,
    pub attempt: i32,
    pub log_lines: i64,
    pub created_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub release_notes: Option<String>,
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
            path: self.path,
            slave: self.slave,
            retry_of: self.retry_of.map(BuildId),
            log_lines: self.log_lines,
            created_at: self.created_at,
            dispatched_at: self.dispatched_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            release_notes: self.release_notes,
        }
    }
}

const SELECT: &str = "SELECT b.id, b.project_id, p.name AS project, b.state, b.reason, b.trigger,
        b.priority, b.waiting_reason, b.rebuild_of, b.release, b.requested_commit, b.commit_sha, b.branch_url, b.branch, b.path, b.slave_id,
        s.name AS slave, b.retry_of, b.attempt, b.log_lines, b.created_at, b.dispatched_at,
        b.started_at, b.finished_at, b.release_notes
    FROM builds b JOIN projects p ON p.id = b.project_id LEFT JOIN slaves s ON s.id = b.slave_id";

pub struct NewBuild<'a> {
    pub project_id: i64,
    pub trigger: &'a str,
    pub release: Option<&'a str>,
    pub requested_commit: Option<&'a str>,
    pub branch_url: &'a str,
    pub branch: &'a str,
    /// The directory of the branch to build in.
    pub path: Option<&'a str>,
    pub retry_of: Option<BuildId>,
    pub attempt: i32,
    pub priority: i32,
    pub rebuild_of: Option<BuildId>,
    pub release_notes: Option<&'a str>,
    /// Who asked for it (a user name); `None` for the scheduler.
    pub requested_by: Option<&'a str>,
}

pub async fn insert(db: &mut PgConnection, b: NewBuild<'_>) -> sqlx::Result<BuildId> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO builds (project_id, state, trigger, release, requested_commit, branch_url,
                             branch, retry_of, attempt, priority, rebuild_of, release_notes,
                             requested_by, path)
         VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
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
    .bind(b.release_notes)
    .bind(b.requested_by)
    .bind(b.path)
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

/// The name of the unique index on a project's release names (`0007_unique_release.sql`).
pub const RELEASE_UNIQUE: &str = "builds_release_unique";

/// The first build of project `project_id` that carries the release name `release`, if any.
pub async fn with_release(
    db: impl PgExecutor<'_>,
    project_id: i64,
    release: &str,
) -> sqlx::Result<Option<BuildId>> {
    let id: Option<i64> =
        sqlx::query_scalar("SELECT min(id) FROM builds WHERE project_id = $1 AND release = $2")
            .bind(project_id)
            .bind(release)
            .fetch_one(db)
            .await?;
    Ok(id.map(BuildId))
}

/// Who holds build `id` and its state, without the rest of the row (read for every log frame).
pub async fn holder(
    db: impl PgExecutor<'_>,
    id: BuildId,
) -> sqlx::Result<Option<(Option<i64>, BuildState)>> {
    read_holder(db, id, "").await
}

async fn read_holder(
    db: impl PgExecutor<'_>,
    id: BuildId,
    lock: &str,
) -> sqlx::Result<Option<(Option<i64>, BuildState)>> {
    let row: Option<(Option<i64>, String)> = sqlx::query_as(&format!(
        "SELECT slave_id, state FROM builds WHERE id = $1 {lock}"
    ))
    .bind(id.0)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(s, state)| (s, state.parse().unwrap_or(BuildState::Failed))))
}

/// [`holder`], locking the row (`FOR SHARE`) until the caller's transaction ends: the build
/// cannot end before what the caller records with it commits (the read waits for an end in
/// flight).
pub async fn holder_locked(
    db: impl PgExecutor<'_>,
    id: BuildId,
) -> sqlx::Result<Option<(Option<i64>, BuildState)>> {
    read_holder(db, id, "FOR SHARE").await
}

/// Whether the build is dispatched to or running on `slave`, read as [`holder_locked`] does.
pub async fn held_by_locked(
    db: impl PgExecutor<'_>,
    id: BuildId,
    slave: Option<i64>,
) -> sqlx::Result<bool> {
    Ok(holder_locked(db, id)
        .await?
        .is_some_and(|(s, state)| state.is_active() && s == slave))
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
    list_visible(db, project, state, limit, None).await
}

/// As [`list`], only builds of the projects in `projects` (`None`: all).
pub async fn list_visible(
    db: impl PgExecutor<'_>,
    project: Option<&str>,
    state: Option<BuildState>,
    limit: i64,
    projects: Option<&[i64]>,
) -> sqlx::Result<Vec<BuildRow>> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE ($1::text IS NULL OR p.name = $1) AND ($2::text IS NULL OR b.state = $2)
           AND ($4::bigint[] IS NULL OR b.project_id = ANY($4))
         ORDER BY b.id DESC LIMIT $3"
    ))
    .bind(project)
    .bind(state.map(|s| s.as_str()))
    .bind(limit)
    .bind(projects)
    .fetch_all(db)
    .await
}

/// What a console's queue starts from (its snapshot, also after a `Resync`), at most `cap`
/// builds of `projects` (`None`: all): the `newest` builds, every build not ended, and every
/// build ended in the last `recent_secs`. Over the cap, what a console may wrongly show as
/// running comes first: dispatched and running builds, then ended ones, then queued; newest
/// first within each. A console that missed an event (its master died
/// between a commit and telling the others, or it fell behind) has only recent changes to
/// catch up on, and a build it shows as running may be older than the newest.
pub async fn list_for_console(
    db: impl PgExecutor<'_>,
    projects: Option<&[i64]>,
    newest: i64,
    recent_secs: f64,
    cap: i64,
) -> sqlx::Result<Vec<BuildRow>> {
    // Three indexed reads (the newest ids, the partial indexes of queued and active builds,
    // `builds_finished`), then the rows.
    sqlx::query_as(&format!(
        "WITH picked AS (
            (SELECT id FROM builds WHERE $1::bigint[] IS NULL OR project_id = ANY($1)
              ORDER BY id DESC LIMIT $2)
            UNION
            SELECT id FROM builds WHERE state = 'queued'
              AND ($1::bigint[] IS NULL OR project_id = ANY($1))
            UNION
            SELECT id FROM builds WHERE state IN ('dispatched','running')
              AND ($1::bigint[] IS NULL OR project_id = ANY($1))
            UNION
            SELECT id FROM builds WHERE finished_at > now() - make_interval(secs => $3)
              AND ($1::bigint[] IS NULL OR project_id = ANY($1)))
         {SELECT} WHERE b.id IN (SELECT id FROM picked)
          ORDER BY CASE WHEN b.state IN ('dispatched','running') THEN 0
                        WHEN b.state = 'queued' THEN 2 ELSE 1 END, b.id DESC LIMIT $4"
    ))
    .bind(projects)
    .bind(newest)
    .bind(recent_secs)
    .bind(cap)
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

/// Claims a queued build for a slave: `queued` → `dispatched` only if it is still queued (a
/// cancel or another dispatcher may have got there first; then `None`). The row is selected
/// `FOR NO KEY UPDATE SKIP LOCKED` (the lock the update itself takes, so rows that refer to the
/// build can still be inserted meanwhile): of masters claiming it at once exactly one gets it
/// and the others get `None` at once instead of waiting on its lock; a build whose row another
/// transaction holds just then is left queued for a later round. The project's
/// `last_dispatched_at` moves on, for fairness between projects.
pub async fn claim(
    tx: &mut PgConnection,
    id: BuildId,
    slave: SlaveId,
) -> sqlx::Result<Option<BuildRow>> {
    let project: Option<i64> = sqlx::query_scalar(
        "UPDATE builds SET state = 'dispatched', slave_id = $2, dispatched_at = now(),
             waiting_reason = NULL
         WHERE id = (SELECT id FROM builds WHERE id = $1 AND state = 'queued'
                     FOR NO KEY UPDATE SKIP LOCKED)
         RETURNING project_id",
    )
    .bind(id.0)
    .bind(slave.0)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(project) = project else {
        return Ok(None);
    };
    sqlx::query(
        "UPDATE projects SET last_dispatched_at = clock_timestamp(), last_slave_id = $2
         WHERE id = $1",
    )
    .bind(project)
    .bind(slave.0)
    .execute(&mut *tx)
    .await?;
    record_event(
        &mut *tx,
        id,
        Some(BuildState::Queued),
        BuildState::Dispatched,
        None,
    )
    .await?;
    get(&mut *tx, id).await
}

/// A queued build with what its project asks of a slave (see `crate::matching`).
#[derive(Debug, Clone, FromRow)]
pub struct Candidate {
    pub id: i64,
    pub project_id: i64,
    pub priority: i32,
    pub waiting_reason: Option<String>,
    pub last_dispatched_at: Option<DateTime<Utc>>,
    pub architecture: Option<String>,
    pub allow_emulation: bool,
    pub tags: Vec<String>,
    pub backend: Option<String>,
    pub max_running: Option<i32>,
    pub timeout_minutes: Option<i32>,
    /// The slave that last took a build of the project (its caches are warm for it).
    pub last_slave_id: Option<i64>,
    /// The project's builds dispatched or running now.
    pub running: i64,
    /// The project's queued builds without a waiting reason yet (queued, or put back in the
    /// queue, since the last explanation). [`set_waiting_reason`] gives every queued build of a
    /// project the same reason, so with none unexplained they all say what the head says.
    pub unexplained: i64,
}

/// The queued builds one dispatch round needs, in one query: the first `per_project` of each
/// project in queue order (priority, then first in, first out), of every project or of `only`.
/// A project's builds all ask the same of a slave, so no round can hand out more of a project
/// than there are free slots that fit it, and the head of each project is enough to explain why
/// the rest wait. Each part is an index probe per project (migration 0009), so the cost follows
/// the number of projects, not the length of the queue or of the history.
///
/// A plain read, no `FOR UPDATE SKIP LOCKED`: it runs outside any transaction, so row locks
/// would end with the statement and decide nothing, and builds another master is claiming must
/// still count for explaining the queue. Exclusivity is [`claim`]'s, which does lock the row.
pub async fn candidates(
    db: impl PgExecutor<'_>,
    per_project: i64,
    only: Option<&[i64]>,
) -> sqlx::Result<Vec<Candidate>> {
    sqlx::query_as(
        "SELECT c.id, c.project_id, c.priority, c.waiting_reason, p.last_dispatched_at,
                p.architecture, p.allow_emulation, p.tags, p.backend, p.max_running,
                p.timeout_minutes, p.last_slave_id,
                (SELECT count(*) FROM builds r WHERE r.project_id = p.id
                   AND r.state IN ('dispatched','running')) AS running,
                (SELECT count(*) FROM builds u WHERE u.project_id = p.id AND u.state = 'queued'
                   AND u.waiting_reason IS NULL) AS unexplained
         FROM projects p
         CROSS JOIN LATERAL (
             SELECT b.id, b.project_id, b.priority, b.waiting_reason FROM builds b
             WHERE b.project_id = p.id AND b.state = 'queued'
             ORDER BY b.priority DESC, b.id
             LIMIT $1) c
         WHERE $2::BIGINT[] IS NULL OR p.id = ANY($2)
         ORDER BY c.id",
    )
    .bind(per_project.max(1))
    .bind(only)
    .fetch_all(db)
    .await
}

/// How many builds each slave holds (dispatched or running), in one query.
pub async fn active_per_slave(
    db: impl PgExecutor<'_>,
) -> sqlx::Result<std::collections::HashMap<SlaveId, u32>> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT slave_id, count(*) FROM builds
         WHERE state IN ('dispatched','running') AND slave_id IS NOT NULL GROUP BY slave_id",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(s, n)| (SlaveId(s), u32::try_from(n).unwrap_or(u32::MAX)))
        .collect())
}

/// Sets why the queued builds of a project wait; returns the builds whose reason changed.
pub async fn set_waiting_reason(
    db: impl PgExecutor<'_>,
    project_id: i64,
    reason: &str,
) -> sqlx::Result<Vec<BuildId>> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE builds SET waiting_reason = $2
         WHERE project_id = $1 AND state = 'queued' AND waiting_reason IS DISTINCT FROM $2
         RETURNING id",
    )
    .bind(project_id)
    .bind(reason)
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().map(BuildId).collect())
}

/// Builds held by a slave past their project's `timeout_minutes` at `now`: (build, minutes).
pub async fn timed_out(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<(BuildId, i32)>> {
    let rows: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT b.id, p.timeout_minutes FROM builds b JOIN projects p ON p.id = b.project_id
         WHERE b.state IN ('dispatched','running') AND p.timeout_minutes IS NOT NULL
           AND COALESCE(b.started_at, b.dispatched_at) + make_interval(mins => p.timeout_minutes) < $1",
    )
    .bind(now)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(id, m)| (BuildId(id), m)).collect())
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
        /// The slave that held the build before the change.
        slave: Option<SlaveId>,
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
    Ok(Transition::Done {
        from,
        slave: slave.map(SlaveId),
    })
}

/// In the transaction that marked build `id` lost: queues a fresh build of the same request if
/// its project allows another attempt (`lost_retries`). Returns the new build's id.
pub async fn queue_retry(tx: &mut PgConnection, id: BuildId) -> sqlx::Result<Option<BuildId>> {
    #[derive(FromRow)]
    struct Retry {
        project_id: i64,
        priority: i32,
        trigger: String,
        release: Option<String>,
        requested_commit: Option<String>,
        branch_url: String,
        branch: String,
        path: Option<String>,
        attempt: i32,
        lost_retries: i32,
        release_notes: Option<String>,
        requested_by: Option<String>,
    }
    let r: Retry = sqlx::query_as(
        "SELECT b.project_id, b.priority, b.trigger, b.release, b.requested_commit, b.branch_url, b.branch,
                b.path, b.attempt, p.lost_retries, b.release_notes, b.requested_by
         FROM builds b JOIN projects p ON p.id = b.project_id WHERE b.id = $1",
    )
    .bind(id.0)
    .fetch_one(&mut *tx)
    .await?;
    if r.attempt >= r.lost_retries {
        return Ok(None);
    }
    insert(
        tx,
        NewBuild {
            project_id: r.project_id,
            trigger: &r.trigger,
            release: r.release.as_deref(),
            requested_commit: r.requested_commit.as_deref(),
            branch_url: &r.branch_url,
            branch: &r.branch,
            path: r.path.as_deref(),
            retry_of: Some(id),
            attempt: r.attempt + 1,
            priority: r.priority,
            rebuild_of: None,
            release_notes: r.release_notes.as_deref(),
            requested_by: r.requested_by.as_deref(),
        },
    )
    .await
    .map(Some)
}

/// Every build held by a slave now (dispatched or running), with the slave's id and name.
/// A build a slave holds, with the slave's name and, when another master instance than
/// `instance` holds the slave's session now, when that master last recorded hearing it.
pub struct Held {
    pub build: BuildId,
    pub slave: SlaveId,
    pub name: String,
    pub seen_elsewhere: Option<DateTime<Utc>>,
}

/// Builds dispatched to `slave` (never started) more than `secs` seconds ago.
pub async fn dispatched_before(
    db: impl PgExecutor<'_>,
    slave: SlaveId,
    secs: u32,
) -> sqlx::Result<Vec<BuildId>> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM builds WHERE slave_id = $1 AND state = 'dispatched'
            AND dispatched_at < now() - make_interval(secs => $2)",
    )
    .bind(slave.0)
    .bind(f64::from(secs))
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().map(BuildId).collect())
}

/// Builds dispatched or running whose slave was removed (revoked while they ran): nobody will
/// report them.
pub async fn orphaned(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<BuildId>> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM builds WHERE state IN ('dispatched','running') AND slave_id IS NULL",
    )
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().map(BuildId).collect())
}

pub async fn held(db: impl PgExecutor<'_>, instance: &str) -> sqlx::Result<Vec<Held>> {
    let rows: Vec<(i64, i64, String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT b.id, s.id, s.name,
                CASE WHEN s.online AND s.master_instance IS DISTINCT FROM $1 THEN s.last_seen END
           FROM builds b JOIN slaves s ON s.id = b.slave_id
          WHERE b.state IN ('dispatched','running') ORDER BY b.id",
    )
    .bind(instance)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(b, s, name, seen_elsewhere)| Held {
            build: BuildId(b),
            slave: SlaveId(s),
            name,
            seen_elsewhere,
        })
        .collect())
}

pub async fn set_log_lines(
    db: impl PgExecutor<'_>,
    id: BuildId,
    n: u64,
    bytes: u64,
) -> sqlx::Result<()> {
    write_log_lines(db, id, n, bytes, "").await
}

/// [`set_log_lines`] while the build runs: once it has ended, its end wrote the final count
/// (a running count that waited for the end's row lock must not overwrite it).
pub async fn set_running_log_lines(
    db: impl PgExecutor<'_>,
    id: BuildId,
    n: u64,
    bytes: u64,
) -> sqlx::Result<()> {
    write_log_lines(db, id, n, bytes, "AND state IN ('dispatched','running')").await
}

async fn write_log_lines(
    db: impl PgExecutor<'_>,
    id: BuildId,
    n: u64,
    bytes: u64,
    only: &str,
) -> sqlx::Result<()> {
    sqlx::query(&format!(
        "UPDATE builds SET log_lines = $2, log_bytes = $3 WHERE id = $1 {only}"
    ))
    .bind(id.0)
    .bind(n as i64)
    .bind(bytes as i64)
    .execute(db)
    .await
    .map(|_| ())
}

/// Queued builds counted by project and waiting reason (`None`: not explained yet), for
/// `GET /metrics`.
pub async fn queued_by_reason(
    db: impl PgExecutor<'_>,
) -> sqlx::Result<Vec<(String, Option<String>, i64)>> {
    sqlx::query_as(
        "SELECT p.name, b.waiting_reason, count(*) FROM builds b
         JOIN projects p ON p.id = b.project_id
         WHERE b.state = 'queued' GROUP BY p.name, b.waiting_reason ORDER BY p.name, 2",
    )
    .fetch_all(db)
    .await
}
