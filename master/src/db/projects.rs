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
    pub created_at: DateTime<Utc>,
    pub last_build: Option<i64>,
    pub last_state: Option<String>,
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
            created_at: self.created_at,
            last_build: self.last_build.map(BuildId),
            last_state: self.last_state.and_then(|s| s.parse::<BuildState>().ok()),
        }
    }
}

const SELECT: &str = "SELECT p.id, p.name, p.branch_url, p.branch, p.architecture, p.tags,
        p.lost_retries, p.created_at, lb.id AS last_build, lb.state AS last_state
    FROM projects p
    LEFT JOIN LATERAL (SELECT b.id, b.state FROM builds b WHERE b.project_id = p.id
                       ORDER BY b.id DESC LIMIT 1) lb ON true";

pub struct NewProject<'a> {
    pub name: &'a str,
    pub branch_url: &'a str,
    pub branch: &'a str,
    pub architecture: Option<&'a str>,
    pub tags: &'a [String],
    pub lost_retries: i32,
}

/// Inserts a project; `None` when the name is taken.
pub async fn insert(db: impl PgExecutor<'_>, p: NewProject<'_>) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO projects (name, branch_url, branch, architecture, tags, lost_retries)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(p.name)
    .bind(p.branch_url)
    .bind(p.branch)
    .bind(p.architecture)
    .bind(p.tags)
    .bind(p.lost_retries)
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

/// Applies the fields present in `patch` (already validated).
pub async fn update(db: impl PgExecutor<'_>, id: i64, patch: &PatchProject) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE projects SET
            branch_url = COALESCE($2, branch_url),
            branch = COALESCE($3, branch),
            architecture = CASE WHEN $4 THEN $5 ELSE architecture END,
            tags = COALESCE($6, tags),
            lost_retries = COALESCE($7, lost_retries)
         WHERE id = $1",
    )
    .bind(id)
    .bind(patch.branch_url.as_deref())
    .bind(patch.branch.as_deref())
    .bind(patch.architecture.is_some())
    .bind(patch.architecture.clone().flatten())
    .bind(patch.tags.as_deref())
    .bind(patch.lost_retries)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn delete(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM projects WHERE id = $1")
        .bind(id)
        .execute(db)
        .await
        .map(|_| ())
}
