//! Database access, one file per aggregate. Plain SQL; migrations live in `/migrations`.

pub mod access;
pub mod accounts;
pub mod artifacts;
pub mod builds;
pub mod migrations;
pub mod notifications;
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

/// Where a connection goes, in words, without its password: `postgres://kiln@db:5432/kiln
/// (config key database.url)`, or the embedded cluster's socket.
pub fn describe(opts: &PgConnectOptions, embedded: bool) -> String {
    let user = opts.get_username();
    let db = opts.get_database().unwrap_or(user);
    match (opts.get_socket(), embedded) {
        (Some(dir), true) => format!(
            "the embedded PostgreSQL (socket in {}, database {db})",
            dir.display()
        ),
        (Some(dir), false) => format!(
            "postgres://{user}@/{db}?host={} (config key database.url)",
            dir.display()
        ),
        (None, _) => format!(
            "postgres://{user}@{}:{}/{db} (config key database.url)",
            opts.get_host(),
            opts.get_port()
        ),
    }
}

/// The connect options of a [`Target`] (for the embedded cluster, creating its database first
/// if needed) and their description.
async fn options(target: Target<'_>) -> Result<(PgConnectOptions, String)> {
    let (opts, embedded) = match target {
        Target::Url(url) => (
            PgConnectOptions::from_str(url).context("config key database.url")?,
            false,
        ),
        Target::Embedded(pg) => {
            ensure_database(pg.connect_options("postgres")?).await?;
            (pg.connect_options("kiln")?, true)
        }
    };
    let described = describe(&opts, embedded);
    Ok((
        opts.log_statements(tracing::log::LevelFilter::Trace),
        described,
    ))
}

pub async fn connect(target: Target<'_>, max_connections: u32) -> Result<PgPool> {
    let (opts, described) = options(target).await?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_with(opts)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {described}"))
}

/// One connection to the configured database, at once or with the reason (no pool waiting
/// for a server that refuses): for one-off commands (`kiln-master migrate --check`). The
/// embedded cluster is started if it is not running (and left running if it was).
pub async fn connect_once(
    cfg: &kiln_shared::config::Config,
) -> Result<(
    sqlx::PgConnection,
    Option<crate::embedded_pg::EmbeddedPostgres>,
)> {
    let mut pg = None;
    let target = match &cfg.database.url {
        Some(url) => Target::Url(url),
        None => {
            let mut cluster = crate::embedded_pg::EmbeddedPostgres::new(
                cfg.data_dir(),
                cfg.database.pg_bin_dir.as_deref(),
                &cfg.database.embedded_user,
            )?;
            cluster
                .start()
                .context("starting the embedded PostgreSQL")?;
            cluster.leave_running_if_reused();
            pg = Some(cluster);
            Target::Embedded(pg.as_ref().expect("just set"))
        }
    };
    let (opts, described) = options(target).await?;
    let conn = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sqlx::PgConnection::connect_with(&opts),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within 10 s"))
    .and_then(|r| r.map_err(anyhow::Error::from))
    .with_context(|| format!("cannot connect to PostgreSQL at {described}"))?;
    Ok((conn, pg))
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

/// Applies the pending migrations. A database this binary must not touch (a migration changed
/// after it was applied, one it does not know, one that failed part-way) is refused first,
/// saying what to do.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    let status = {
        let mut conn = pool
            .acquire()
            .await
            .context("reading the applied migrations")?;
        migrations::status(&mut conn)
            .await
            .context("reading the applied migrations (_sqlx_migrations)")?
    };
    if let Some(e) = status.error() {
        anyhow::bail!("{e}");
    }
    for p in &status.pending {
        tracing::info!("applying migration {p}");
    }
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations")
}
