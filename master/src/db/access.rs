//! The access epoch: a process-wide counter that moves whenever who may see what may have
//! changed (a session ended, a token revoked, a team membership, a project's visibility or
//! team, a user's admin flag). Long-lived connections keep their access verdicts only while
//! the epoch stands still ([`crate::auth::live`]), so they need no database query per event
//! and still notice a change at once.
//!
//! Two sources move it: the write functions of this crate (at once, in this process), and the
//! `kiln_access` notifications the database's triggers send on commit (migration
//! `0015_access_notify.sql`), which also carry changes made by another process (the
//! `kiln-master` commands, another master, an admin's `psql`).

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static EPOCH: AtomicU64 = AtomicU64::new(0);

/// The channel the triggers notify.
const CHANNEL: &str = "kiln_access";

/// The current epoch: a verdict read after this call holds while `current()` returns it.
pub fn current() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// Access may have changed: every cached verdict is read again.
pub fn changed() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
}

/// Listens for the triggers' notifications until the process ends. While the listening
/// connection is down, notifications may be lost: the epoch moves on every failure and on every
/// (re)connection, so nothing is trusted across the gap.
pub async fn listen(db: PgPool) {
    loop {
        match PgListener::connect_with(&db).await {
            Ok(mut l) => match l.listen(CHANNEL).await {
                Ok(()) => {
                    changed();
                    loop {
                        match l.try_recv().await {
                            Ok(Some(_)) => changed(),
                            // The connection was lost; it is made again, listening again, on
                            // the next call.
                            Ok(None) => changed(),
                            Err(sqlx::Error::PoolClosed) => return,
                            Err(e) => {
                                changed();
                                tracing::warn!("listening for access changes: {e}");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!("listening for access changes: {e}"),
            },
            Err(e) => tracing::debug!("connecting to listen for access changes: {e}"),
        }
        changed();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
