//! The Kiln master as a library: `main.rs` is a thin shell around [`build`], and tests start the
//! same server on a port-0 listener. This file holds only the module list, the router and
//! [`build`]; what happens to a build is in [`lifecycle`], the shared parts in [`state`].

pub mod api;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod database;
pub mod db;
pub mod dispatch;
pub mod embedded_pg;
pub mod error;
pub mod fanout;
pub mod git;
pub mod hub;
pub mod init;
pub mod lifecycle;
pub mod listener;
pub mod liveness;
pub mod login;
pub mod matching;
pub mod metrics;
pub mod notify;
pub mod objects;
pub mod retention;
pub mod schedule;
pub mod scheduler;
pub mod signing;
pub mod state;
pub mod storage;
pub mod tls;
pub mod upload_token;
pub mod web;
pub mod ws;

use anyhow::{Context, Result};
use axum::routing::get;
use axum::Router;
use kiln_shared::config::Config;
use sqlx::PgPool;
use state::AppState;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A running master.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    /// The TLS context when serving HTTPS (re-read with [`Server::tls_reloader`]).
    tls: Option<listener::Tls>,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Stops accepting, lets requests finish, closes slave sessions, stops background tasks.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the server stops (after a shutdown request), then stops background tasks and
    /// closes the slave sessions (they reconnect to the next master), within a bounded time, and
    /// stops the embedded PostgreSQL if it runs one.
    pub async fn wait(self) -> Result<()> {
        let r = self.serve.await;
        for t in &self.background {
            t.abort();
        }
        self.state.hub.close_all();
        let closing = self.state.hub.sessions_closed();
        if tokio::time::timeout(std::time::Duration::from_secs(10), closing)
            .await
            .is_err()
        {
            tracing::warn!("slave sessions did not close within 10 s; stopping anyway");
        }
        if tokio::time::timeout(std::time::Duration::from_secs(5), self.state.db.close())
            .await
            .is_err()
        {
            tracing::warn!("database connections did not close within 5 s; stopping anyway");
        }
        let database = self.state.database.clone();
        let _ = tokio::task::spawn_blocking(move || database.stop_embedded()).await;
        r??;
        Ok(())
    }

    pub fn shutdown_handle(&self) -> tokio::sync::watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// `https://addr` or `http://addr`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A function that re-reads the certificate and key (for SIGHUP); open connections stay.
    pub fn tls_reloader(&self) -> Option<impl Fn() -> Result<()> + Send + 'static> {
        let current = self.tls.clone()?;
        let cfg = self.state.cfg.clone();
        Some(move || {
            let (cert, key) = tls::files(&cfg).context("no [master.tls] in the config")?;
            current.reload(tls::server_config(&cert, &key)?);
            Ok(())
        })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    use api::guard;
    use axum::middleware::{from_fn, from_fn_with_state};
    let index = state
        .cfg
        .master
        .console_dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(state.cfg.path(d).join("index.html")).ok());
    let csp = Arc::new(web::console_csp(index.as_deref()));
    api::router()
        .merge(login::router())
        .route("/ws/slave", get(ws::slave::upgrade))
        .route("/ws/console", get(ws::console::upgrade))
        // The console's HTML is served only outside /api/ and /ws/.
        .route("/api", axum::routing::any(guard::unknown_route))
        .route("/api/{*rest}", axum::routing::any(guard::unknown_route))
        .route("/ws", axum::routing::any(guard::unknown_route))
        .route("/ws/{*rest}", axum::routing::any(guard::unknown_route))
        .merge(web::router(&state.cfg))
        .layer(from_fn_with_state(state.clone(), guard::database_gate))
        .layer(from_fn(guard::json_errors))
        .layer(from_fn(guard::refuse_bad_input))
        .layer(from_fn(move |req, next| {
            web::security_headers(csp.clone(), req, next)
        }))
        // Requests are traced by method and path only: a query string may hold a token.
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<axum::body::Body>| {
                    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
                },
            ),
        )
        .with_state(state)
}

/// Which background loops a master runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loops {
    /// Dispatch, liveness, scheduler and retention: a real master.
    All,
    /// Only the dispatcher; the test drives `liveness::sweep`, `liveness::time_out`,
    /// `scheduler::tick` and `retention::sweep` itself, at the times it sets on its clock.
    DispatchOnly,
}

/// Builds the master on an open database and a bound listener, with the system clock.
pub async fn build(cfg: Config, db: PgPool, listener: TcpListener) -> Result<Server> {
    build_with(cfg, db, listener, Arc::new(clock::SystemClock), Loops::All).await
}

/// Builds the master with a given clock and set of loops (tests set the time instead of
/// sleeping, and run the sweeps themselves).
pub async fn build_with(
    cfg: Config,
    db: PgPool,
    listener: TcpListener,
    clock: Arc<dyn clock::Clock>,
    loops: Loops,
) -> Result<Server> {
    let default_tz = schedule::default_timezone(&cfg)?;
    let addr = listener.local_addr()?;
    let tls = match tls::files(&cfg) {
        Some((cert, key)) => Some(listener::Tls::new(tls::server_config(&cert, &key)?)),
        None => {
            tls::check_plain_http(&cfg, addr)?;
            None
        }
    };
    let oidc = login::oidc::discover(&cfg).await?;
    let secure_cookies = auth::secure_cookies(&cfg, tls.is_some(), addr);
    let upload_keys = upload_token::UploadKeys::load_or_create(cfg.data_dir())
        .context("the upload signing key (upload-keys in the data dir)")?;
    db::migrate(&db).await?;
    // Slaves no master has heard for the lost time-out are offline (those of another master
    // serving this farm stay as they are).
    db::slaves::unheard_offline(
        &db,
        chrono::Utc::now() - chrono::Duration::seconds(i64::from(cfg.master.lost_timeout_secs)),
        &[],
    )
    .await?;
    let storage_dir = cfg.path(&cfg.master.storage_dir);
    let storage = storage::Storage::new(storage_dir.clone()).with_context(|| {
        format!(
            "config key master.storage_dir: cannot use {}",
            storage_dir.display()
        )
    })?;
    let artifacts = objects::ArtifactStore::open(&cfg, storage_dir)?;
    let notify = notify::Notifier::new(&cfg, &db).await?;
    let signer = signing::Signer::load(&cfg)?;
    let metrics = metrics::Metrics::new(&cfg)?;
    let state = Arc::new(AppState {
        notify,
        signer,
        metrics,
        db,
        cfg: Arc::new(cfg),
        storage,
        artifacts,
        hub: hub::Hub::default(),
        started_at: clock.now(),
        clock,
        default_tz,
        database: Arc::default(),
        upload_keys,
        auth: auth::AuthState {
            secure_cookies,
            limiter: Default::default(),
            oidc,
        },
    });
    auth::adopt_admin_token(&state).await?;
    // Health knows where the schema stands from the first request on.
    state.database.refresh_schema(&state.db).await;
    let mut background = vec![
        tokio::spawn(state.database.clone().watch(state.db.clone())),
        tokio::spawn(dispatch::run(state.clone())),
    ];
    background.extend(fanout::spawn(state.clone()));
    if loops == Loops::All {
        background.push(tokio::spawn(liveness::run(state.clone())));
        background.push(tokio::spawn(scheduler::run(state.clone())));
        background.push(tokio::spawn(retention::run(state.clone())));
        background.extend(notify::outbox::spawn(state.clone()));
        if state.cfg.auth.launchpad.is_some() {
            background.push(tokio::spawn(login::launchpad::refresh_loop(state.clone())));
        }
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let app = router(state.clone());
    // One accept loop for HTTP and HTTPS: connection limits, header and idle time-outs.
    let serve = tokio::spawn(listener::serve(
        listener,
        app,
        tls.clone(),
        state.cfg.master.connections.clone(),
        rx,
    ));
    tracing::info!(
        "kiln-master listening on {}://{addr}",
        if tls.is_some() { "https" } else { "http" }
    );
    Ok(Server {
        addr,
        state,
        tls,
        serve,
        shutdown: tx,
        background,
    })
}
