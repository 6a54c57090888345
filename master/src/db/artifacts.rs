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
