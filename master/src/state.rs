//! [`AppState`]: everything a request handler or background task needs. What happens to a build
//! (queued, changed, ended, lost) is in [`crate::lifecycle`]; this module only holds the parts.

use crate::db;
use crate::hub::Hub;
use crate::storage::Storage;
use chrono::{DateTime, Utc};
use kiln_shared::config::Config;
use kiln_shared::frames::ConsoleEvent;
use kiln_shared::SlaveId;
use sqlx::PgPool;
use std::sync::Arc;

pub struct AppState {
    pub db: PgPool,
    pub cfg: Arc<Config>,
    pub storage: Storage,
    /// Artifact bytes: the data dir or an object store (`[storage]`).
    pub artifacts: crate::objects::ArtifactStore,
    pub hub: Hub,
    pub clock: Arc<dyn crate::clock::Clock>,
    /// Time zone of schedules that name none.
    pub default_tz: chrono_tz::Tz,
    /// When this master started (its clock): a slave's silence counts only from here, since
    /// the master could not hear anyone before.
    pub started_at: DateTime<Utc>,
    /// Whether PostgreSQL answers (and the embedded cluster's keeper).
    pub database: Arc<crate::database::Database>,
    /// Signs and checks per-build upload tokens.
    pub upload_keys: crate::upload_token::UploadKeys,
    /// Cookies, failed sign-ins, OpenID Connect providers.
    pub auth: crate::auth::AuthState,
    /// Mail and webhooks: the transports and the outbox workers' wake-ups.
    pub notify: crate::notify::Notifier,
    /// Signs builds' `SHA256SUMS` (`[signing]`), when configured.
    pub signer: Option<crate::signing::Signer>,
    /// What `GET /metrics` reports that only this process knows, and its scrape token.
    pub metrics: crate::metrics::Metrics,
}

impl AppState {
    /// A slave as the API shows it: the database row plus what only the hub knows.
    pub fn slave_api(&self, row: db::slaves::SlaveRow) -> kiln_shared::api::Slave {
        let id = SlaveId(row.id);
        let mut s = row.into_api();
        s.draining = self.hub.is_draining(id);
        s
    }

    /// Tells consoles that a slave changed.
    pub async fn slave_changed(&self, id: SlaveId) {
        if let Ok(Some(s)) = db::slaves::get(&self.db, id).await {
            self.hub.publish(ConsoleEvent::Slave(self.slave_api(s)));
        }
    }
}
