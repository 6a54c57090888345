//! Retention: in the background, deletes ended builds (rows, logs, artifacts) that their project
//! no longer keeps (`keep_builds`, `keep_days`). Release builds are always kept; running builds
//! are never touched. Ended sessions and stale sign-in flows go too. Files go first, on a blocking thread, so no request or build waits on it.
//! Artifacts in an object store (`[storage] kind = "s3"`) are deleted from the bucket before the
//! build's row (`lifecycle::delete_build`): a store that does not answer leaves the build for the
//! next pass rather than an object no row points to.

use crate::db::builds;
use crate::state::AppState;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(state: Arc<AppState>) {
    let every = Duration::from_secs(u64::from(state.cfg.master.retention_interval_secs));
    loop {
        tokio::time::sleep(every).await;
        let a = &state.cfg.auth;
        let ended = crate::db::accounts::sweep(
            &state.db,
            state.clock.now(),
            a.session_idle_secs,
            a.session_max_secs,
        );
        if let Err(e) = ended.await {
            tracing::warn!("removing ended sessions failed: {e}");
        }
        match sweep(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("retention removed {n} build(s)"),
            Err(e) => tracing::warn!("retention pass failed: {e:#}"),
        }
    }
}

/// One pass; returns how many builds were removed.
pub async fn sweep(state: &AppState) -> anyhow::Result<usize> {
    let now = state.clock.now();
    let expired = builds::expired(&state.db, now).await?;
    for id in &expired {
        state.delete_build(*id).await?;
    }
    Ok(expired.len())
}
