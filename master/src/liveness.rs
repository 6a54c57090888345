//! Marks builds lost when their slave has been silent for `master.lost_timeout_secs`, records why,
//! and queues a retry when the project allows one (`lost_retries`, default 1). Also ends builds
//! that ran past their project's `timeout_minutes`: failed, "timed out", and stopped on the slave
//! (its whole process group).

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
        if let Err(e) = time_out(&state).await {
            tracing::warn!("time-out sweep failed: {e:#}");
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

/// Fails (and stops) builds running longer than their project allows, at the clock's now.
pub async fn time_out(state: &AppState) -> anyhow::Result<usize> {
    let now = state.clock.now();
    let over = builds::timed_out(&state.db, now).await?;
    for (id, slave, minutes) in &over {
        let reason = format!("timed out after {minutes} minute(s) (the project's timeout_minutes)");
        let t = builds::transition(
            &state.db,
            *id,
            kiln_shared::BuildState::Failed,
            builds::Change {
                reason: Some(&reason),
                ..Default::default()
            },
        )
        .await?;
        if let builds::Transition::Done { .. } = t {
            tracing::warn!(build = %id, "{reason}");
            if let Some(s) = slave {
                state.hub.send(
                    kiln_shared::SlaveId(*s),
                    kiln_shared::frames::MasterFrame::Cancel {
                        build: *id,
                        reason: reason.clone(),
                    },
                );
            }
            let _ = state.storage.append_master_note(*id, &reason).await;
            state.build_ended(*id).await;
        }
    }
    Ok(over.len())
}
