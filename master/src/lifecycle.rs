//! The life of a build in the master, as one surface. Every door (REST, the slave WebSocket,
//! liveness, the scheduler, uploads, retention) goes through these functions, so what happens
//! when a build is queued, changes or ends is written once, here:
//!
//! - [`AppState::queue_build`]: insert (in the caller's transaction, after its checks), re-read,
//!   tell consoles, wake the dispatcher;
//! - [`AppState::start_build`]: its slave started it (`running`);
//! - [`AppState::build_changed`]: tell consoles the build's new row;
//! - [`AppState::end_build`]: the terminal transition and everything that follows it
//!   ([`AppState::end_build_in`] when the caller's transaction must commit with it);
//! - [`AppState::lose_build`]: `end_build` to `lost` (which queues the retry);
//! - [`AppState::requeue_unreached`]: a job that never reached its slave, queued again;
//! - [`AppState::delete_build`]: retention's end of a build's files and row.

use crate::db::builds::{self, BuildRow, Change, NewBuild, Transition};
use crate::state::AppState;
use kiln_shared::frames::{ConsoleEvent, MasterFrame};
use kiln_shared::{BuildId, BuildState, SlaveId};
use sqlx::{Postgres, Transaction};

/// Who ends a build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedBy {
    /// The master decided (a cancel, a time-out, a rejected upload, a lost slave). Its reason is
    /// written into the build's log as a `[kiln-master]` line; with `stop_on_slave` the slave
    /// holding the build is told to stop it (its whole process group).
    Master { stop_on_slave: bool },
    /// The slave holding the build reported its result; it counts only while that slave still
    /// holds the build.
    Slave(SlaveId),
}

impl AppState {
    /// Queues a build: inserts it in `tx` (in which the caller made its checks, e.g. the
    /// scheduler's row lock), commits, and returns the row as created, before the dispatcher can
    /// move it on; then tells consoles and wakes the dispatcher.
    pub async fn queue_build(
        &self,
        mut tx: Transaction<'_, Postgres>,
        new: NewBuild<'_>,
    ) -> sqlx::Result<BuildRow> {
        let id = builds::insert(&mut tx, new).await?;
        // Read in the transaction: after the commit a dispatcher may already have claimed it.
        let row = builds::get(&mut *tx, id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        // Consoles get the row as it is now (a dispatcher's claim may have overtaken it).
        self.build_changed(id).await;
        self.hub.wake();
        Ok(row)
    }

    /// The slave holding a build says it started (its branch fetched, `commit` the one it
    /// builds): `dispatched` → `running` if that slave still holds it, counted as a build started
    /// (`GET /metrics`); consoles get the build either way.
    pub async fn start_build(
        &self,
        id: BuildId,
        slave: SlaveId,
        commit: &str,
    ) -> sqlx::Result<Transition> {
        let t = builds::transition(
            &self.db,
            id,
            BuildState::Running,
            Change {
                commit: Some(commit),
                held_by: Some(slave),
                ..Change::default()
            },
        )
        .await?;
        if matches!(t, Transition::Done { .. }) {
            self.metrics.build_started();
        }
        self.build_changed(id).await;
        Ok(t)
    }

    /// Tells consoles that a build changed (its row as it is now).
    pub async fn build_changed(&self, id: BuildId) {
        match builds::get(&self.db, id).await {
            Ok(Some(b)) => self.hub.publish(ConsoleEvent::Build(b.into_api())),
            Ok(None) => {}
            Err(e) => tracing::warn!(build = %id, "cannot read the build to publish it: {e}"),
        }
    }

    /// Ends a build: moves it to the terminal state `to` (with `reason`; failed, cancelled and
    /// lost builds always have one) if the state machine allows it. When it does:
    /// 1. a lost build's retry is queued in the same transaction (if the project allows one);
    /// 2. a master's reason goes into the build's log, and the slave is told to stop if asked;
    /// 3. the log index (`log_lines`, `log_bytes`) is brought up to the log file in the same
    ///    transaction (never seen ended with a stale index), and the file closes;
    /// 4. the notifications it fires are queued in the outbox in the same transaction;
    /// 5. consoles get the build, the end of its log, and the retry; the dispatcher wakes for
    ///    the slot (and the retry), the outbox workers for the notifications.
    ///
    /// Anything else (already ended, held by another slave, unknown) changes nothing and is
    /// returned as it is.
    pub async fn end_build(
        &self,
        id: BuildId,
        to: BuildState,
        reason: Option<&str>,
        by: EndedBy,
    ) -> sqlx::Result<Transition> {
        let tx = self.db.begin().await?;
        self.end_build_in(tx, id, to, reason, by).await
    }

    /// [`AppState::end_build`] in the caller's transaction `tx`, which commits with the ending
    /// (or alone, when the build had already ended): what the caller changed in it is seen
    /// together with the ended build, never before or after it.
    pub async fn end_build_in(
        &self,
        mut tx: Transaction<'_, Postgres>,
        id: BuildId,
        to: BuildState,
        reason: Option<&str>,
        by: EndedBy,
    ) -> sqlx::Result<Transition> {
        debug_assert!(to.is_terminal(), "end_build to {to}");
        let held_by = match by {
            EndedBy::Slave(s) => Some(s),
            EndedBy::Master { .. } => None,
        };
        let t = builds::transition_in(
            &mut tx,
            id,
            to,
            Change {
                reason,
                held_by,
                ..Change::default()
            },
        )
        .await?;
        let Transition::Done { from, slave } = t else {
            tx.commit().await?;
            return Ok(t);
        };
        let why = reason.unwrap_or("");
        // Under the row lock, so the ended build is never seen with a log index behind its file:
        // the log is sealed (the master's reason its last line), and lines a slave still sends
        // are refused from now on.
        let note = match (by, reason) {
            (EndedBy::Master { .. }, Some(r)) if to == BuildState::Lost => {
                Some(format!("build lost: {r}"))
            }
            (EndedBy::Master { .. }, Some(r)) => Some(r.to_string()),
            _ => None,
        };
        let (sealed, token) = match self.storage.seal_log(id, note.as_deref()).await {
            Ok(seal) => (Ok((seal.lines, seal.bytes)), Some(seal.token)),
            Err(e) => {
                tracing::warn!(build = %id, "cannot end the log with the master's note: {e}");
                (self.storage.log_size(id).await, None)
            }
        };
        let recorded = async {
            match sealed {
                Ok((lines, bytes)) => builds::set_log_lines(&mut *tx, id, lines, bytes).await?,
                Err(e) => tracing::warn!(build = %id, "cannot read the log's size: {e}"),
            }
            let retry = if to == BuildState::Lost {
                builds::queue_retry(&mut tx, id).await?
            } else {
                None
            };
            // Who hears about it: outbox rows in this transaction, so none is lost or sent for
            // an ending that did not happen.
            let ended = builds::get(&mut *tx, id).await?;
            let notified = match &ended {
                Some(row) => crate::notify::queue_build_end(&mut tx, row).await?,
                None => 0,
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>((retry, ended, notified))
        }
        .await;
        let (retry, ended, notified) = match recorded {
            Ok(r) => r,
            Err(e) => {
                // The build did not end: its log goes on. (Unless the commit landed and only its
                // answer was lost: then the build has ended and its seal stays.)
                let ended = builds::holder(&self.db, id)
                    .await
                    .is_ok_and(|h| h.is_some_and(|(_, s)| s.is_terminal()));
                let unsealed = match &token {
                    Some(t) if !ended => self.storage.unseal_log(id, Some(t)).await,
                    _ => Ok(()),
                };
                if let Err(e) = unsealed {
                    tracing::warn!(build = %id, "cannot reopen the log of a build still running: {e}");
                }
                return Err(e);
            }
        };
        if let Some(s) = slave {
            self.hub.ended_on(s);
        }
        // How long it ran: from its start (or its dispatch, when it never started) to its end.
        let ran = ended.as_ref().and_then(|r| {
            let from = r.started_at.or(r.dispatched_at)?;
            (r.finished_at? - from).to_std().ok()
        });
        self.metrics.build_ended(to, ran);
        if notified > 0 {
            self.notify.wake();
        }
        tracing::info!(build = %id, %from, %to, ?retry, "build ended {why}");
        if let (
            EndedBy::Master {
                stop_on_slave: true,
            },
            true,
            Some(s),
        ) = (by, from.is_active(), slave)
        {
            // A slave away gets it through reconciliation (`Forget`) when it returns.
            self.hub.send_anywhere(
                s,
                MasterFrame::Cancel {
                    build: id,
                    reason: why.to_string(),
                },
            );
        }
        self.storage.close_log(id);
        // The row as the transaction left it (under the row lock): what a read now would give.
        if let Some(row) = ended {
            self.hub.publish(ConsoleEvent::Build(row.into_api()));
        }
        self.hub.publish(ConsoleEvent::LogEnd { build: id });
        if let Some(r) = retry {
            self.build_changed(r).await;
        }
        self.hub.wake();
        Ok(t)
    }

    /// Marks a build lost (with why); its retry is queued if the project allows one.
    pub async fn lose_build(&self, id: BuildId, reason: &str) -> sqlx::Result<Transition> {
        self.end_build(
            id,
            BuildState::Lost,
            Some(reason),
            EndedBy::Master {
                stop_on_slave: false,
            },
        )
        .await
    }

    /// A build whose job never reached its slave (`dispatched`, never started) goes back to the
    /// queue as the same build, not as a lost attempt and a retry: nothing of it ran. The
    /// slave's session is told wherever it is, so that what it remembers the slave holding
    /// moves on (a slave ignores a cancel of a build it does not hold).
    pub async fn requeue_unreached(
        &self,
        id: BuildId,
        slave: SlaveId,
        reason: &str,
    ) -> sqlx::Result<Transition> {
        let t = builds::transition(
            &self.db,
            id,
            BuildState::Queued,
            Change {
                reason: Some(reason),
                held_by: Some(slave),
                ..Default::default()
            },
        )
        .await?;
        if let Transition::Done { slave: Some(s), .. } = &t {
            self.hub.ended_on(*s);
            self.hub.send_anywhere(
                *s,
                MasterFrame::Cancel {
                    build: id,
                    reason: "its job did not reach the slave; it is queued again".into(),
                },
            );
            self.build_changed(id).await;
            self.hub.wake();
        }
        Ok(t)
    }

    /// Removes an ended build's files and row (retention). Active builds are never touched.
    pub async fn delete_build(&self, id: BuildId) -> anyhow::Result<()> {
        self.artifacts.delete_build(id).await?;
        let dir = self.storage.build_dir(id);
        self.storage.close_log(id);
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await??;
        builds::delete(&self.db, id).await?;
        Ok(())
    }
}
