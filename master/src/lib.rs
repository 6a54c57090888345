//! The Kiln master as a library: `main.rs` is a thin shell around [`build`], and tests start the
//! same server on a port-0 listener.

pub mod api;
pub mod auth;
pub mod clock;
pub mod db;
pub mod dispatch;
pub mod embedded_pg;
pub mod error;
pub mod git;
pub mod hub;
pub mod init;
pub mod liveness;
pub mod retention;
pub mod schedule;
pub mod scheduler;
pub mod storage;
pub mod waiting;
pub mod web;
pub mod ws;

use anyhow::{Context, Result};
use axum::routing::get;
use axum::Router;
use kiln_shared::config::Config;
use kiln_shared::frames::ConsoleEvent;
use kiln_shared::{BuildId, SlaveId};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Everything a request handler or background task needs.
pub struct AppState {
    pub db: PgPool,
    pub cfg: Arc<Config>,
    pub storage: storage::Storage,
    pub hub: hub::Hub,
    pub clock: Arc<dyn clock::Clock>,
    /// Time zone of schedules that name none.
    pub default_tz: chrono_tz::Tz,
}

impl AppState {
    /// Tells consoles that a build changed.
    pub async fn build_changed(&self, id: BuildId) {
        if let Ok(Some(b)) = db::builds::get(&self.db, id).await {
            self.hub.publish(ConsoleEvent::Build(b.into_api()));
        }
    }

    pub async fn slave_changed(&self, id: SlaveId) {
        if let Ok(Some(s)) = db::slaves::get(&self.db, id).await {
            self.hub.publish(ConsoleEvent::Slave(self.slave_api(s)));
        }
    }

    /// A slave as the API shows it: the database row plus what only the hub knows.
    pub fn slave_api(&self, row: db::slaves::SlaveRow) -> kiln_shared::api::Slave {
        let id = SlaveId(row.id);
        let mut s = row.into_api();
        s.draining = self.hub.is_draining(id);
        s
    }

    pub fn publish_log_end(&self, build: BuildId) {
        self.hub.publish(ConsoleEvent::LogEnd { build });
    }

    /// After a build reached a terminal state: close its log file, tell consoles (the build, and
    /// that its log is complete), and let the dispatcher use the slot it freed.
    pub async fn build_ended(&self, id: BuildId) {
        self.storage.close_log(id);
        self.build_changed(id).await;
        self.publish_log_end(id);
        self.hub.wake_dispatch.notify_one();
    }

    /// Marks a build lost (with why), queues its retry if allowed, and tells everyone.
    pub async fn lose_build(&self, id: BuildId, reason: &str) -> Result<()> {
        let retry = db::builds::mark_lost(&self.db, id, reason).await?;
        tracing::warn!(build = %id, ?retry, "build lost: {reason}");
        let _ = self
            .storage
            .append_master_note(id, &format!("build lost: {reason}"))
            .await;
        self.build_ended(id).await;
        if let Some(r) = retry {
            self.build_changed(r).await;
        }
        Ok(())
    }
}

/// Connects to the configured database, or starts the embedded cluster.
pub async fn open_database(
    cfg: &Config,
) -> Result<(PgPool, Option<embedded_pg::EmbeddedPostgres>)> {
    match &cfg.database.url {
        Some(url) => Ok((
            db::connect(db::Target::Url(url), cfg.database.max_connections).await?,
            None,
        )),
        None => {
            let mut pg = embedded_pg::EmbeddedPostgres::new(
                cfg.data_dir(),
                cfg.database.pg_bin_dir.as_deref(),
                &cfg.database.embedded_user,
            )?;
            pg.start().context("starting the embedded PostgreSQL")?;
            let pool = db::connect(
                db::Target::Socket(&pg.socket_dir),
                cfg.database.max_connections,
            )
            .await?;
            Ok((pool, Some(pg)))
        }
    }
}

/// A running master.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Stops accepting, lets requests finish, stops background tasks.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        for t in &self.background {
            t.abort();
        }
        self.serve.await??;
        self.state.db.close().await;
        Ok(())
    }

    /// Waits until the server stops (after a shutdown request), then stops background tasks.
    pub async fn wait(self) -> Result<()> {
        let r = self.serve.await;
        for t in &self.background {
            t.abort();
        }
        self.state.db.close().await;
        r??;
        Ok(())
    }

    pub fn shutdown_handle(&self) -> tokio::sync::watch::Sender<bool> {
        self.shutdown.clone()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    api::router()
        .route("/ws/slave", get(ws::slave::upgrade))
        .route("/ws/console", get(ws::console::upgrade))
        .merge(web::router(&state.cfg))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// The master's default time zone: `master.timezone`, else the machine's (`TZ`, /etc/timezone,
/// /etc/localtime), else UTC.
pub fn default_timezone(cfg: &Config) -> Result<chrono_tz::Tz> {
    if let Some(name) = &cfg.master.timezone {
        return schedule::parse_timezone(name)
            .map_err(|m| anyhow::anyhow!("config key master.timezone: {m}"));
    }
    let from_machine = std::env::var("TZ")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/timezone").ok())
        .or_else(|| {
            std::fs::read_link("/etc/localtime").ok().and_then(|p| {
                let s = p.to_string_lossy().into_owned();
                s.split_once("zoneinfo/").map(|(_, z)| z.to_string())
            })
        });
    Ok(from_machine
        .and_then(|z| schedule::parse_timezone(z.trim().trim_start_matches(':')).ok())
        .unwrap_or(chrono_tz::UTC))
}

/// Builds the master on an open database and a bound listener, with the system clock.
pub async fn build(cfg: Config, db: PgPool, listener: TcpListener) -> Result<Server> {
    build_with_clock(cfg, db, listener, Arc::new(clock::SystemClock)).await
}

/// Builds the master with a given clock (tests set the time instead of sleeping).
pub async fn build_with_clock(
    cfg: Config,
    db: PgPool,
    listener: TcpListener,
    clock: Arc<dyn clock::Clock>,
) -> Result<Server> {
    let default_tz = default_timezone(&cfg)?;
    db::migrate(&db).await?;
    db::slaves::all_offline(&db).await?;
    let storage_dir = cfg.path(&cfg.master.storage_dir);
    let storage = storage::Storage::new(storage_dir.clone()).with_context(|| {
        format!(
            "config key master.storage_dir: cannot use {}",
            storage_dir.display()
        )
    })?;
    let state = Arc::new(AppState {
        db,
        cfg: Arc::new(cfg),
        storage,
        hub: hub::Hub::default(),
        clock,
        default_tz,
    });
    let background = vec![
        tokio::spawn(dispatch::run(state.clone())),
        tokio::spawn(liveness::run(state.clone())),
        tokio::spawn(scheduler::run(state.clone())),
        tokio::spawn(retention::run(state.clone())),
    ];
    let addr = listener.local_addr()?;
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let app = router(state.clone());
    let serve = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await
    });
    tracing::info!("kiln-master listening on http://{addr}");
    Ok(Server {
        addr,
        state,
        serve,
        shutdown: tx,
        background,
    })
}
