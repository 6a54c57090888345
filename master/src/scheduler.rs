//! The scheduler: queues a project's build when its schedule is due.
//!
//! One master runs a pass at a time: a pass first takes a transaction-scoped advisory lock
//! ([`projects::SCHEDULER_LOCK_KEY`], with `pg_try_advisory_xact_lock` in a transaction of its
//! own that it holds to the end of the pass, so a pass holds two pooled connections), and a
//! master that finds it taken skips its pass (another master is running one; the next pass
//! comes 10 s later).
//!
//! Each pass reads the due projects, and for each one: asks the branch head when the project
//! builds only if changed (`git ls-remote`, up to the git time-out, with no lock held), then locks
//! the project row (`FOR UPDATE SKIP LOCKED`) and re-checks that its slot is still pending (so a
//! slot runs once even without the advisory lock, which is defence in depth) before
//! queuing at most one build and moving `next_run` to the first slot after now, in one
//! transaction. So a master that was down over several slots runs the build once on start (or not
//! at all when `master.catch_up_missed` is off), never once per missed slot; with
//! `only_if_changed` the build is skipped when the head equals the commit of the project's last
//! successful build, and the queued build is pinned to that head.

use crate::db::{builds, projects};
use crate::schedule::{parse_timezone, Schedule};
use crate::state::AppState;
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use kiln_shared::BuildId;
use std::sync::Arc;

/// A slot more than this late counts as missed while the master was down.
const LATE: i64 = 300;

/// What a pass decided for one project.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Queued(BuildId),
    SkippedUnchanged,
    SkippedMissed,
}

/// Pure part: should a slot due at `due` run at `now`?
pub fn runs_now(due: DateTime<Utc>, now: DateTime<Utc>, catch_up_missed: bool) -> bool {
    now >= due && (catch_up_missed || now - due <= Duration::seconds(LATE))
}

pub fn project_tz(state: &AppState, p: &projects::ProjectRow) -> Tz {
    p.timezone
        .as_deref()
        .and_then(|t| parse_timezone(t).ok())
        .unwrap_or(state.default_tz)
}

/// The next run of `schedule` after `now` in `tz`, if the schedule parses.
pub fn next_run(schedule: Option<&str>, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Schedule::parse(schedule?).ok()?.next_after(tz, now)
}

pub async fn run(state: Arc<AppState>) {
    loop {
        let now = state.clock.now();
        if let Err(e) = tick(&state, now).await {
            tracing::warn!("scheduler pass failed: {e:#}");
        }
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    }
}

/// One scheduler pass at `now`; nothing if another master's pass holds the scheduler lock.
pub async fn tick(state: &AppState, now: DateTime<Utc>) -> anyhow::Result<Vec<(String, Decision)>> {
    // Held (and the lock with it) until the pass ends; on an error, dropping it rolls back.
    let mut guard = state.db.begin().await?;
    if !projects::try_lock_scheduler(&mut guard).await? {
        tracing::debug!("scheduler pass skipped: another master is running one");
        return Ok(vec![]);
    }
    let mut out = vec![];
    for p in projects::due(&state.db, now).await? {
        if let Some(d) = handle_slot(state, &p, now).await? {
            out.push((p.name, d));
        }
    }
    // Nothing was written in it: ending it releases the lock.
    guard.rollback().await?;
    Ok(out)
}

/// Handles one due project's slot; `None` if another pass handled it meanwhile.
async fn handle_slot(
    state: &AppState,
    p: &projects::ProjectRow,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Decision>> {
    let next = next_run(p.schedule.as_deref(), project_tz(state, p), now);
    let slot = p.next_run.unwrap_or(now);
    let mut runs = runs_now(slot, now, state.cfg.master.catch_up_missed);
    if let Err(why) =
        kiln_shared::branch_url::check_branch_host(&p.branch_url, &state.cfg.master.branch_hosts)
    {
        if runs {
            tracing::warn!(project = %p.name, "scheduled build skipped: {why}");
        }
        runs = false;
    }
    // The slow part first, with no lock held.
    let head = if runs && p.only_if_changed {
        crate::git::branch_head(&p.branch_url, &p.branch, state.cfg.master.allow_file_urls)
            .await
            .ok()
    } else {
        None
    };
    let mut tx = state.db.begin().await?;
    if !projects::lock_slot(&mut tx, p.id, p.next_run).await? {
        return Ok(None);
    }
    projects::set_next_run(&mut *tx, p.id, next).await?;
    let unchanged = head.is_some() && head == projects::last_good_commit(&mut *tx, p.id).await?;
    let decision = if !runs {
        tx.commit().await?;
        Decision::SkippedMissed
    } else if unchanged {
        tx.commit().await?;
        Decision::SkippedUnchanged
    } else {
        let b = state
            .queue_build(
                tx,
                builds::NewBuild {
                    project_id: p.id,
                    trigger: "schedule",
                    release: None,
                    requested_commit: head.as_deref(),
                    branch_url: &p.branch_url,
                    branch: &p.branch,
                    path: p.path.as_deref(),
                    retry_of: None,
                    attempt: 0,
                    priority: p.priority,
                    rebuild_of: None,
                    release_notes: None,
                    requested_by: None,
                },
            )
            .await?;
        Decision::Queued(BuildId(b.id))
    };
    tracing::info!(project = %p.name, ?decision, ?next, "schedule due");
    Ok(Some(decision))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_slot_missed_during_downtime_runs_once_or_not_at_all() {
        let due = t("2026-11-20T02:00:00Z");
        // On time, or a little late: runs.
        assert!(runs_now(due, t("2026-11-20T02:00:30Z"), false));
        // Master down for four days: runs once with catch-up, skipped without.
        assert!(runs_now(due, t("2026-11-24T09:00:00Z"), true));
        assert!(!runs_now(due, t("2026-11-24T09:00:00Z"), false));
        // Not yet due.
        assert!(!runs_now(due, t("2026-11-20T01:59:00Z"), true));
        // And whatever the downtime, the next slot is the first after now: one build, not four.
        let tz = chrono_tz::UTC;
        assert_eq!(
            next_run(Some("daily 02:00"), tz, t("2026-11-24T09:00:00Z")),
            Some(t("2026-11-25T02:00:00Z"))
        );
    }
}
