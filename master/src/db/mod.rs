//! Database access, one file per aggregate. Plain SQL; migrations live in `/migrations`.

pub mod accounts;
pub mod artifacts;
pub mod builds;
pub mod notify;
pub mod projects;
pub mod records;
pub mod slaves;

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::str::FromStr;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Where the database is.
pub enum Target<'a> {
    Url(&'a str),
    /// The embedded cluster (started): its socket, superuser and password.
    Embedded(&'a crate::embedded_pg::EmbeddedPostgres),
}

pub async fn connect(target: Target<'_>, max_connections: u32) -> Result<PgPool> {
    let opts = match target {
        Target::Url(url) => PgConnectOptions::from_str(url).context("config key database.url")?,
        Target::Embedded(pg) => {
            ensure_database(pg.connect_options("postgres")?).await?;
            pg.connect_options("kiln")?
        }
    }
    .log_statements(tracing::log::LevelFilter::Trace);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_with(opts)
        .await
        .context("cannot connect to PostgreSQL")
}

/// Connects to the configured database, or starts the embedded cluster.
pub async fn open(
    cfg: &kiln_shared::config::Config,
) -> Result<(PgPool, Option<crate::embedded_pg::EmbeddedPostgres>)> {
    match &cfg.database.url {
        Some(url) => Ok((
            connect(Target::Url(url), cfg.database.max_connections).await?,
            None,
        )),
        None => {
            let mut pg = crate::embedded_pg::EmbeddedPostgres::new(
                cfg.data_dir(),
                cfg.database.pg_bin_dir.as_deref(),
                &cfg.database.embedded_user,
            )?;
            pg.start().context("starting the embedded PostgreSQL")?;
            let pool = connect(Target::Embedded(&pg), cfg.database.max_connections).await?;
            Ok((pool, Some(pg)))
        }
    }
}

/// The embedded cluster starts with only the `postgres` database; create `kiln` once.
async fn ensure_database(opts: PgConnectOptions) -> Result<()> {
    let mut conn = sqlx::PgConnection::connect_with(&opts)
        .await
        .context("cannot connect to the embedded PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'kiln')")
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        sqlx::query("CREATE DATABASE kiln")
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}

pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations")
}
