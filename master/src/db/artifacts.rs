//! The `artifacts` index (the files themselves live in storage).

use kiln_shared::{api, BuildId};
use sqlx::{FromRow, PgExecutor};

#[derive(Debug, Clone, FromRow)]
pub struct ArtifactRow {
    pub name: String,
    pub size: i64,
    pub sha256: String,
}

impl ArtifactRow {
    pub fn into_api(self) -> api::Artifact {
        api::Artifact {
            name: self.name,
            size: self.size,
            sha256: self.sha256,
        }
    }
}

pub async fn upsert(
    db: impl PgExecutor<'_>,
    build: BuildId,
    name: &str,
    size: i64,
    sha256: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO artifacts (build_id, name, size, sha256) VALUES ($1, $2, $3, $4)
         ON CONFLICT (build_id, name) DO UPDATE SET size = $3, sha256 = $4, created_at = now()",
    )
    .bind(build.0)
    .bind(name)
    .bind(size)
    .bind(sha256)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn list(db: impl PgExecutor<'_>, build: BuildId) -> sqlx::Result<Vec<ArtifactRow>> {
    sqlx::query_as("SELECT name, size, sha256 FROM artifacts WHERE build_id = $1 ORDER BY name")
        .bind(build.0)
        .fetch_all(db)
        .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    build: BuildId,
    name: &str,
) -> sqlx::Result<Option<ArtifactRow>> {
    sqlx::query_as("SELECT name, size, sha256 FROM artifacts WHERE build_id = $1 AND name = $2")
        .bind(build.0)
        .bind(name)
        .fetch_optional(db)
        .await
}

/// Serialises the final step of artifact uploads of one project (checking its limits, storing
/// the file and its row), for the rest of the transaction `tx`.
pub async fn lock_project_usage(tx: &mut sqlx::PgConnection, project: i64) -> sqlx::Result<()> {
    // An advisory lock in a class of its own ('kiln' as a number), keyed by the project id.
    sqlx::query("SELECT pg_advisory_xact_lock(1802071150, hashint8($1))")
        .bind(project)
        .execute(tx)
        .await
        .map(|_| ())
}

/// Bytes of stored artifacts: `(of the build, of every build of the project)`, not counting the
/// build's artifact `except` (which an upload of the same name replaces).
pub async fn usage(
    db: impl PgExecutor<'_>,
    build: BuildId,
    project: i64,
    except: &str,
) -> sqlx::Result<(u64, u64)> {
    // The project's total is kept by triggers (`0017_project_artifact_bytes.sql`): the build's
    // own artifacts are summed, the project's read from its row.
    let (b, p): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(size) FILTER (WHERE name <> $3), 0)::BIGINT,
                (COALESCE((SELECT artifact_bytes FROM projects WHERE id = $2), 0)
                 - COALESCE(SUM(size) FILTER (WHERE name = $3), 0))::BIGINT
         FROM artifacts WHERE build_id = $1",
    )
    .bind(build.0)
    .bind(project)
    .bind(except)
    .fetch_one(db)
    .await?;
    Ok((b.max(0) as u64, p.max(0) as u64))
}

/// Removes every artifact row of a build; returns the names removed (their files go next).
pub async fn delete_for_build(
    db: impl PgExecutor<'_>,
    build: BuildId,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("DELETE FROM artifacts WHERE build_id = $1 RETURNING name")
        .bind(build.0)
        .fetch_all(db)
        .await
}
