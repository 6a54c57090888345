//! Marks builds lost when their slave has been silent for `master.lost_timeout_secs`, records why,
//! and queues a retry when the project allows one (`lost_retries`, default 1).

use crate::db::builds;
use crate::AppState;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(state: Arc<AppState>) {
    let timeout = i64::from(state.cfg.master.lost_timeout_secs);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Err(e) = sweep(&state, timeout).await {
            tracing::warn!("liveness sweep failed: {e:#}");
        }
    }
}

async fn sweep(state: &AppState, timeout: i64) -> anyhow::Result<()> {
    for (id, slave, last_seen) in builds::held_by_silent_slaves(&state.db, timeout).await? {
        let seen = last_seen
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "never".into());
        let reason = format!(
            "slave '{slave}' stopped responding (last heard from {seen}; timeout {timeout} s)"
        );
        state.lose_build(id, &reason).await?;
    }
    Ok(())
}
