//! The master owns its database connection's health: a watchdog asks PostgreSQL every second
//! whether it answers, so requests fail fast with 503 while it is away (instead of waiting on the
//! pool), `GET /api/health` tells the truth, and the background loops skip their rounds. When the
//! database is the embedded cluster, the watchdog also restarts it (with back-off) when it is
//! gone, saying why in the log.
//!
//! The same watchdog reads where the schema stands (`_sqlx_migrations` against the migrations
//! this binary embeds, `db::migrations`) after each answer, so health also says when the
//! database is not the schema this master needs (a migration pending, changed after it was
//! applied, or one only a newer master knows). Health reads only what the watchdog kept: a
//! poll of `/api/health` never reaches PostgreSQL.

use crate::embedded_pg::EmbeddedPostgres;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How often the watchdog asks, and how long one answer may take.
const EVERY: Duration = Duration::from_secs(1);
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// Restarts of the embedded cluster back off up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Database {
    down: AtomicBool,
    /// Why it is down (the last error seen).
    error: Mutex<Option<String>>,
    embedded: OnceLock<Arc<Mutex<EmbeddedPostgres>>>,
    /// Where the schema stood at the last look: `None` before the first one.
    schema: Mutex<Option<Schema>>,
}

/// The schema as the watchdog last read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    /// What is wrong (`db::migrations::Status::problem`), or why it could not be read.
    pub problem: Option<String>,
    /// In a few words: `current (migration 11 (image record))`, or the problem.
    pub summary: String,
}

impl Database {
    /// Whether PostgreSQL answered the watchdog's last question.
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }

    /// `None` when up; else why not.
    pub fn trouble(&self) -> Option<String> {
        if self.is_up() {
            return None;
        }
        Some(
            self.error
                .lock()
                .expect("database state poisoned")
                .clone()
                .unwrap_or_else(|| "not answering".into()),
        )
    }

    /// The schema as last read; `None` before the first look.
    pub fn schema(&self) -> Option<Schema> {
        self.schema.lock().expect("schema state poisoned").clone()
    }

    /// Reads where the schema stands now and keeps it (the master's start does this once, the
    /// watchdog after each answer). One small read of `_sqlx_migrations`.
    pub async fn refresh_schema(&self, pool: &PgPool) {
        let read = async {
            let mut conn = pool.acquire().await?;
            crate::db::migrations::status(&mut conn).await
        };
        let now = match tokio::time::timeout(ANSWER_WITHIN, read).await {
            Ok(Ok(status)) => Schema {
                problem: status.problem(),
                summary: status.summary(),
            },
            Ok(Err(e)) => {
                let why = format!("cannot read the applied migrations (_sqlx_migrations): {e}");
                Schema {
                    problem: Some(why.clone()),
                    summary: why,
                }
            }
            // A slow answer says nothing new about the schema: keep what was known.
            Err(_) => return,
        };
        let mut kept = self.schema.lock().expect("schema state poisoned");
        if kept.as_ref() != Some(&now) {
            match &now.problem {
                Some(p) => tracing::error!("the database's schema is not this master's: {p}"),
                None if kept.is_some() => {
                    tracing::info!("the database's schema is current again: {}", now.summary)
                }
                None => {}
            }
            *kept = Some(now);
        }
    }

    /// Hands the embedded cluster to the watchdog (it restarts it, and stops it at the end).
    pub fn supervise(&self, pg: EmbeddedPostgres) {
        let _ = self.embedded.set(Arc::new(Mutex::new(pg)));
    }

    /// Stops the embedded cluster, if this master runs one.
    pub fn stop_embedded(&self) {
        if let Some(pg) = self.embedded.get() {
            pg.lock().expect("embedded pg poisoned").stop();
        }
    }

    fn mark_down(&self, why: String) {
        let was_up = !self.down.swap(true, Ordering::SeqCst);
        if was_up {
            tracing::error!("the database stopped answering: {why}");
        }
        *self.error.lock().expect("database state poisoned") = Some(why);
    }

    fn mark_up(&self) {
        if self.down.swap(false, Ordering::SeqCst) {
            tracing::info!("the database answers again");
        }
    }

    /// The watchdog: runs for the master's life.
    pub async fn watch(self: Arc<Self>, pool: PgPool) {
        let mut backoff = EVERY;
        let mut next_restart = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(EVERY).await;
            match tokio::time::timeout(ANSWER_WITHIN, sqlx::query("SELECT 1").execute(&pool)).await
            {
                Ok(Ok(_)) => {
                    self.mark_up();
                    backoff = EVERY;
                    self.refresh_schema(&pool).await;
                    continue;
                }
                Ok(Err(e)) => self.mark_down(e.to_string()),
                Err(_) => self.mark_down(format!("no answer within {ANSWER_WITHIN:?}")),
            }
            let Some(pg) = self.embedded.get().cloned() else {
                continue;
            };
            if tokio::time::Instant::now() < next_restart {
                continue;
            }
            next_restart = tokio::time::Instant::now() + backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            let restarted = tokio::task::spawn_blocking(move || {
                let mut pg = pg.lock().expect("embedded pg poisoned");
                pg.ensure_running()
            })
            .await;
            match restarted {
                Ok(Ok(true)) => tracing::warn!("the embedded PostgreSQL had stopped; restarted it"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(
                    "cannot restart the embedded PostgreSQL (next try in {backoff:?}): {e:#}"
                ),
                Err(e) => tracing::error!("restarting the embedded PostgreSQL panicked: {e}"),
            }
        }
    }
}
