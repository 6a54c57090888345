//! Liveness: marks builds lost when their slave has been silent for `master.lost_timeout_secs`
//! *while this master could hear it*, and fails builds that ran past their project's
//! `timeout_minutes`.
//!
//! Whose silence it is: a slave's silence counts from the latest of its last frame here, the
//! last time any master serving the farm recorded hearing it (`slaves.last_seen`, written once a
//! heartbeat interval) and this master's start (the master's clock), so a master that was down
//! for an hour loses nothing whose slave reconnects within the time-out after the master is back,
//! and a slave held by another master is not lost while that master hears it. Slaves no master
//! has heard for the time-out are marked offline (a master that died cannot do it itself). A slave whose builds are lost
//! for silence is unregistered from the hub in the same step (its session closes), so nothing
//! more is dispatched to it; it comes back with a new hello.

use crate::db::builds;
use crate::lifecycle::EndedBy;
use crate::state::AppState;
use kiln_shared::{BuildId, BuildState};
use std::sync::Arc;
use std::time::Duration;

pub async fn run(state: Arc<AppState>) {
    let every = u64::from(state.cfg.master.heartbeat_secs.max(1));
    let mut n = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Err(e) = sweep(&state).await {
            tracing::warn!("liveness sweep failed: {e:#}");
        }
        if let Err(e) = time_out(&state).await {
            tracing::warn!("time-out sweep failed: {e:#}");
        }
        n += 1;
        if n.is_multiple_of(every) {
            if let Err(e) = record_last_seen(&state).await {
                tracing::warn!("recording when slaves were last seen failed: {e:#}");
            }
            if let Err(e) = unheard_offline(&state).await {
                tracing::warn!("marking unheard slaves offline failed: {e:#}");
            }
        }
    }
}

/// Writes when each slave was last heard from (the hub's memory) to the database, in one
/// statement, once a heartbeat interval: what the slaves page shows as "last seen".
pub async fn record_last_seen(state: &AppState) -> anyhow::Result<()> {
    let heard = state.hub.all_heard();
    if !heard.is_empty() {
        crate::db::slaves::seen_at(&state.db, &heard).await?;
    }
    Ok(())
}

/// Marks offline the slaves no master has heard for the lost time-out (not those connected
/// here).
async fn unheard_offline(state: &AppState) -> anyhow::Result<()> {
    let timeout = chrono::Duration::seconds(i64::from(state.cfg.master.lost_timeout_secs));
    let before = state.clock.now() - timeout;
    if state.started_at > before {
        return Ok(());
    }
    let here: Vec<i64> = state.hub.connected().iter().map(|(id, _)| id.0).collect();
    for id in crate::db::slaves::unheard_offline(&state.db, before, &here).await? {
        state.slave_changed(id).await;
    }
    Ok(())
}

/// Loses the builds of slaves silent past the time-out at the clock's now; returns them.
pub async fn sweep(state: &AppState) -> anyhow::Result<Vec<BuildId>> {
    let timeout = i64::from(state.cfg.master.lost_timeout_secs);
    let now = state.clock.now();
    let mut lost = vec![];
    // Revoking a slave loses its builds itself; these are what a revoke interrupted left.
    for id in builds::orphaned(&state.db).await? {
        match state
            .lose_build(id, "its slave was revoked while it held the build")
            .await
        {
            Ok(crate::db::builds::Transition::Done { .. }) => lost.push(id),
            Ok(_) => {}
            Err(e) => tracing::warn!(build = %id, "losing a build whose slave is gone: {e}"),
        }
    }
    for h in builds::held(&state.db, &state.hub.instance).await? {
        let (id, slave, name) = (h.build, h.slave, h.name);
        let heard = state.hub.last_heard(slave).max(h.seen_elsewhere);
        let since = heard.map_or(state.started_at, |h| h.max(state.started_at));
        if now - since <= chrono::Duration::seconds(timeout) {
            continue;
        }
        let seen = heard.map_or_else(
            || "not since the master started".to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        );
        let reason = format!(
            "slave '{name}' stopped responding (last heard from {seen}; timeout {timeout} s)"
        );
        if state.hub.disconnect(slave) {
            tracing::warn!(slave = %name, "closing the session of a silent slave");
        }
        state.lose_build(id, &reason).await?;
        lost.push(id);
    }
    Ok(lost)
}

/// Fails (and stops) builds running longer than their project allows, at the clock's now.
pub async fn time_out(state: &AppState) -> anyhow::Result<usize> {
    let over = builds::timed_out(&state.db, state.clock.now()).await?;
    for (id, minutes) in &over {
        let reason = format!("timed out after {minutes} minute(s) (the project's timeout_minutes)");
        state
            .end_build(
                *id,
                BuildState::Failed,
                Some(&reason),
                EndedBy::Master {
                    stop_on_slave: true,
                },
            )
            .await?;
    }
    Ok(over.len())
}
