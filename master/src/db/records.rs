//! `build_records`: what a build's image carries (issue 18), one row per build.

use kiln_shared::record::{AptSource, BuildRecord, ImageLayout, Package};
use kiln_shared::BuildId;
use sqlx::types::Json;
use sqlx::PgExecutor;

/// Stores (or replaces: a slave that restarted sends it again) a build's record.
pub async fn put(db: impl PgExecutor<'_>, build: BuildId, r: &BuildRecord) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO build_records (build_id, sources, packages, images)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (build_id) DO UPDATE
            SET sources = $2, packages = $3, images = $4, received_at = now()",
    )
    .bind(build.0)
    .bind(Json(&r.sources))
    .bind(Json(&r.packages))
    .bind(Json(&r.images))
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn sources(
    db: impl PgExecutor<'_>,
    build: BuildId,
) -> sqlx::Result<Option<Vec<AptSource>>> {
    column(db, build, "sources").await
}

pub async fn packages(
    db: impl PgExecutor<'_>,
    build: BuildId,
) -> sqlx::Result<Option<Vec<Package>>> {
    column(db, build, "packages").await
}

pub async fn images(
    db: impl PgExecutor<'_>,
    build: BuildId,
) -> sqlx::Result<Option<Vec<ImageLayout>>> {
    column(db, build, "images").await
}

/// One column of a build's record; `None` when the build has none.
async fn column<T: serde::de::DeserializeOwned + Send + Unpin + 'static>(
    db: impl PgExecutor<'_>,
    build: BuildId,
    name: &'static str,
) -> sqlx::Result<Option<T>> {
    let row: Option<Json<T>> = sqlx::query_scalar(&format!(
        "SELECT {name} FROM build_records WHERE build_id = $1"
    ))
    .bind(build.0)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|j| j.0))
}

/// The newest succeeded build of a project that has a record (of its release `release`, when
/// given).
pub async fn latest_with_record(
    db: impl PgExecutor<'_>,
    project_id: i64,
    release: Option<&str>,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT b.id FROM builds b JOIN build_records r ON r.build_id = b.id
          WHERE b.project_id = $1 AND b.state = 'succeeded'
            AND ($2::text IS NULL OR b.release = $2)
          ORDER BY b.id DESC LIMIT 1",
    )
    .bind(project_id)
    .bind(release)
    .fetch_optional(db)
    .await
}
