//! The dispatcher: hands queued builds to connected slaves with free capacity.
//!
//! It runs when poked (a build was queued, a slave connected or finished a build) and once a
//! second as a safety net. A round reads the slaves' load and the head of each project's queue,
//! then more of the projects that more than one free slot fits (a few queries per round,
//! whatever the number of slaves or queued builds), decides
//! in memory with [`crate::matching::plan`] (the same rules that explain waiting builds), then
//! claims each chosen build with a conditional update (`queued` → `dispatched` only if still
//! queued, the row selected `FOR NO KEY UPDATE SKIP LOCKED`), so a build cancelled meanwhile is
//! skipped and, with several masters on one database, never goes to two slaves. A claimed build
//! whose `Assign` cannot be delivered goes back to the queue.

use crate::db::builds::{self, Candidate};
use crate::hub::ConnectedSlave;
use crate::matching::{plan, refusal, why_waiting, Needs, Offer, Queued};
use crate::state::AppState;
use kiln_shared::frames::{Job, MasterFrame};
use kiln_shared::{BuildId, SlaveId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub async fn run(state: Arc<AppState>) {
    loop {
        tokio::select! {
            _ = state.hub.wake_dispatch.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let began = std::time::Instant::now();
        if let Err(e) = round(&state).await {
            tracing::warn!("dispatch round failed: {e:#}");
        }
        state.metrics.dispatch_round(began.elapsed());
    }
}

/// What one round knows: the connected slaves with their load, those an admin disabled, and
/// the queue's candidates.
struct View {
    slaves: Vec<(SlaveId, ConnectedSlave, u32)>,
    disabled: HashSet<SlaveId>,
    candidates: Vec<Candidate>,
}

/// The slaves an admin disabled: connected ones stay connected and get no new builds.
async fn disabled_slaves(db: &sqlx::PgPool) -> sqlx::Result<HashSet<SlaveId>> {
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM slaves WHERE NOT enabled")
        .fetch_all(db)
        .await?;
    Ok(ids.into_iter().map(SlaveId).collect())
}

impl View {
    async fn read(state: &AppState) -> anyhow::Result<View> {
        // The queue first: most rounds (a build started or ended, the queue emptied by the
        // last round) find nothing queued, and then the slaves need not be read.
        let heads = builds::candidates(&state.db, 1, None).await?;
        if heads.is_empty() {
            return Ok(View {
                slaves: vec![],
                disabled: HashSet::new(),
                candidates: heads,
            });
        }
        let active = builds::active_per_slave(&state.db).await?;
        let disabled = disabled_slaves(&state.db).await?;
        let slaves: Vec<_> = state
            .hub
            .connected()
            .into_iter()
            .map(|(id, s)| {
                let a = active.get(&id).copied().unwrap_or(0);
                (id, s, a)
            })
            .collect();
        let mut view = View {
            slaves,
            disabled,
            candidates: heads,
        };
        // Projects that more than one free slot fits need more than their head this round.
        let offers = view.offers(state);
        let room: Vec<(i64, i64)> = view
            .candidates
            .iter()
            .map(|c| (c.project_id, room_for(c, &offers)))
            .filter(|(_, room)| *room > 1)
            .collect();
        drop(offers);
        if let Some(per) = room.iter().map(|(_, r)| *r).max() {
            let wide: Vec<i64> = room.iter().map(|(p, _)| *p).collect();
            let more = builds::candidates(&state.db, per, Some(&wide)).await?;
            view.candidates.retain(|c| !wide.contains(&c.project_id));
            view.candidates.extend(more);
            view.candidates.sort_by_key(|c| c.id);
        }
        Ok(view)
    }

    fn offers(&self, state: &AppState) -> Vec<Offer<'_>> {
        let now = state.clock.now();
        let quiet_after = chrono::Duration::seconds(2 * i64::from(state.cfg.master.heartbeat_secs));
        self.slaves
            .iter()
            .map(|(id, s, active)| Offer {
                name: &s.name,
                arch: &s.arch,
                emulates: &s.emulates,
                tags: &s.tags,
                backends: &s.backends,
                capacity: s.capacity,
                active: *active,
                disabled: self.disabled.contains(id),
                draining: s.draining,
                heard_recently: state
                    .hub
                    .last_heard(*id)
                    .is_some_and(|t| now - t <= quiet_after),
            })
            .collect()
    }
}

/// How many of `c`'s project's builds could start now: the free slots of the slaves that fit
/// it, within the project's `max_running`.
fn room_for(c: &Candidate, offers: &[Offer]) -> i64 {
    let free: i64 = offers
        .iter()
        .filter(|o| refusal(&needs(c), o).is_none())
        .map(|o| i64::from(o.capacity.saturating_sub(o.active)))
        .sum();
    match c.max_running {
        Some(m) => free.min((i64::from(m) - c.running).max(0)),
        None => free,
    }
}

fn needs(c: &Candidate) -> Needs<'_> {
    Needs {
        architecture: c.architecture.as_deref(),
        allow_emulation: c.allow_emulation,
        tags: &c.tags,
        backend: c.backend.as_deref(),
        max_running: c.max_running,
        running: c.running,
    }
}

/// One round: hands out what can run now, then records why the rest waits. Returns how many
/// builds were handed out.
pub async fn round(state: &AppState) -> anyhow::Result<usize> {
    let view = View::read(state).await?;
    let chosen = {
        let queued: Vec<Queued> = view
            .candidates
            .iter()
            .map(|c| Queued {
                id: c.id,
                project: c.project_id,
                priority: c.priority,
                last_served: c.last_dispatched_at,
                needs: needs(c),
                warm: c
                    .last_slave_id
                    .and_then(|w| view.slaves.iter().position(|(id, _, _)| id.0 == w)),
            })
            .collect();
        plan(&queued, &view.offers(state))
    };
    let mut handed = 0;
    for (build, si) in chosen {
        let (slave, s, _) = &view.slaves[si];
        let timeout = view
            .candidates
            .iter()
            .find(|c| c.id == build)
            .and_then(|c| c.timeout_minutes);
        if assign(state, BuildId(build), *slave, &s.name, timeout).await? {
            handed += 1;
        }
    }
    // When the queue moved, explain what is left from a fresh view.
    let view = if handed > 0 {
        View::read(state).await?
    } else {
        view
    };
    explain_waiting(state, &view).await?;
    Ok(handed)
}

/// Claims `build` for `slave` and sends it the job; true if the slave got it.
/// Builds without a time-out get upload tokens valid this long (minutes).
const UPLOAD_TOKEN_NO_TIMEOUT_MINUTES: u64 = 7 * 24 * 60;
/// Past the build's time-out, its upload token stays valid this much longer (minutes).
const UPLOAD_TOKEN_MARGIN_MINUTES: u64 = 30;

async fn assign(
    state: &AppState,
    build: BuildId,
    slave: SlaveId,
    name: &str,
    timeout_minutes: Option<i32>,
) -> anyhow::Result<bool> {
    let mut tx = state.db.begin().await?;
    let Some(b) = builds::claim(&mut tx, build, slave).await? else {
        return Ok(false);
    };
    tx.commit().await?;
    let minutes = timeout_minutes
        .and_then(|m| u64::try_from(m).ok())
        .unwrap_or(UPLOAD_TOKEN_NO_TIMEOUT_MINUTES)
        + UPLOAD_TOKEN_MARGIN_MINUTES;
    let now = u64::try_from(state.clock.now().timestamp()).unwrap_or_default();
    let upload_token = state
        .upload_keys
        .issue(build.0, slave.0, now, minutes * 60)?;
    let job = Job {
        build,
        project: b.project.clone(),
        branch_url: b.branch_url.clone(),
        branch: b.branch.clone(),
        commit: b.requested_commit.clone(),
        release: b.release.clone(),
        path: b.path.clone(),
        allow_file_urls: state.cfg.master.allow_file_urls,
        upload_path: format!("/api/slave/builds/{build}/artifacts"),
        upload_token,
    };
    if state.hub.send(slave, MasterFrame::Assign(job)) {
        tracing::info!(%build, slave = %name, "dispatched");
        state.build_changed(build).await;
        return Ok(true);
    }
    state
        .requeue_unreached(
            build,
            slave,
            "its slave disconnected before the job reached it",
        )
        .await?;
    Ok(false)
}

/// Records on every queued build why it still waits (only where the reason changed). The builds
/// of one project ask the same of a slave, so the reason is decided per project.
async fn explain_waiting(state: &AppState, view: &View) -> anyhow::Result<()> {
    let mut heads: HashMap<i64, &Candidate> = HashMap::new();
    for c in &view.candidates {
        heads.entry(c.project_id).or_insert(c);
    }
    if heads.is_empty() {
        return Ok(());
    }
    // The reason speaks of the whole farm: the slaves other masters hold count too (as
    // heard from; what they hold is read from the builds).
    let elsewhere = crate::db::slaves::online_elsewhere(&state.db, &state.hub.instance).await?;
    let active = if elsewhere.is_empty() {
        HashMap::new()
    } else {
        builds::active_per_slave(&state.db).await?
    };
    let mut offers = view.offers(state);
    offers.extend(elsewhere.iter().map(|s| Offer {
        name: &s.name,
        arch: s.arch.as_deref().unwrap_or_default(),
        emulates: &s.emulates,
        tags: &s.tags,
        backends: &s.backends,
        capacity: u32::try_from(s.capacity).unwrap_or(0),
        active: active.get(&SlaveId(s.id)).copied().unwrap_or(0),
        disabled: !s.enabled,
        draining: false,
        heard_recently: true,
    }));
    for (project, c) in heads {
        let reason = why_waiting(&needs(c), &offers);
        if c.waiting_reason.as_deref() == Some(reason.as_str()) && c.unexplained == 0 {
            continue;
        }
        for id in builds::set_waiting_reason(&state.db, project, &reason).await? {
            state.build_changed(id).await;
        }
    }
    Ok(())
}
