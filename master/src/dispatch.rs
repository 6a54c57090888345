//! The dispatcher: hands queued builds to connected slaves with free capacity.
//!
//! It runs when poked (a build was queued, a slave connected or finished a build) and once a
//! second as a safety net. Each claim is one transaction (`builds::claim_next`, `FOR UPDATE SKIP
//! LOCKED`), so a build never goes to two slaves even with several masters on one database. A
//! claimed build whose `Assign` cannot be delivered goes back to the queue.

use crate::db::builds::{self, Change, SlaveOffer};
use crate::waiting::{why_waiting, Needs, Offer};
use crate::AppState;
use kiln_shared::frames::{Job, MasterFrame};
use kiln_shared::{BuildId, BuildState};
use std::sync::Arc;
use std::time::Duration;

pub async fn run(state: Arc<AppState>) {
    loop {
        tokio::select! {
            _ = state.hub.wake_dispatch.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Err(e) = dispatch_round(&state).await {
            tracing::warn!("dispatch round failed: {e:#}");
        }
        if let Err(e) = explain_waiting(&state).await {
            tracing::warn!("explaining waiting builds failed: {e:#}");
        }
    }
}

/// One pass over the connected slaves; returns how many builds were handed out.
pub async fn dispatch_round(state: &AppState) -> anyhow::Result<usize> {
    let mut handed = 0;
    for (slave_id, slave) in state.hub.connected() {
        if slave.draining {
            continue;
        }
        let mut active = builds::active_for_slave(&state.db, slave_id).await?.len() as u32;
        while active < slave.capacity {
            let mut tx = state.db.begin().await?;
            let offer = SlaveOffer {
                id: slave_id,
                arch: &slave.arch,
                emulates: &slave.emulates,
                tags: &slave.tags,
            };
            let Some(b) = builds::claim_next(&mut tx, &offer).await? else {
                break;
            };
            tx.commit().await?;
            let id = BuildId(b.id);
            let job = Job {
                build: id,
                project: b.project.clone(),
                branch_url: b.branch_url.clone(),
                branch: b.branch.clone(),
                commit: b.requested_commit.clone(),
                release: b.release.clone(),
                allow_file_urls: state.cfg.master.allow_file_urls,
                upload_path: format!("/api/slave/builds/{id}/artifacts"),
            };
            if state.hub.send(slave_id, MasterFrame::Assign(job)) {
                tracing::info!(build = %id, slave = %slave.name, "dispatched");
                handed += 1;
                active += 1;
                state.build_changed(id).await;
            } else {
                builds::transition(
                    &state.db,
                    id,
                    BuildState::Queued,
                    Change {
                        reason: Some("its slave disconnected before the job reached it"),
                        ..Default::default()
                    },
                )
                .await?;
                break;
            }
        }
    }
    Ok(handed)
}

/// Records on each queued build why it still waits (only when the reason changed).
pub async fn explain_waiting(state: &AppState) -> anyhow::Result<()> {
    let queued = builds::waiting(&state.db, 500).await?;
    if queued.is_empty() {
        return Ok(());
    }
    let connected = state.hub.connected();
    let mut active = Vec::with_capacity(connected.len());
    for (id, _) in &connected {
        active.push(builds::active_for_slave(&state.db, *id).await?.len() as u32);
    }
    let offers: Vec<Offer> = connected
        .iter()
        .zip(&active)
        .map(|((_, s), a)| Offer {
            name: &s.name,
            arch: &s.arch,
            emulates: &s.emulates,
            tags: &s.tags,
            capacity: s.capacity,
            active: *a,
            draining: s.draining,
        })
        .collect();
    for w in queued {
        let reason = why_waiting(
            &Needs {
                architecture: w.architecture.as_deref(),
                allow_emulation: w.allow_emulation,
                tags: &w.tags,
                max_running: w.max_running,
                running: w.running,
            },
            &offers,
        );
        if w.waiting_reason.as_deref() != Some(reason.as_str()) {
            builds::set_waiting_reason(&state.db, w.id, &reason).await?;
            state.build_changed(BuildId(w.id)).await;
        }
    }
    Ok(())
}
